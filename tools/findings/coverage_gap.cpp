// coverage_gap: losses and partial observation, which bound what every other finding means.
#include <algorithm>

#include "tools/findings/registry.h"

namespace vs::tools::findings {
namespace {

constexpr KindSeverity kLostKind{
    "coverage_gap", Severity::High,
    "records were lost or a CUDA library went unprobed: every count, byte total and pairing may be short, so "
    "no other finding can be taken as complete"};
constexpr KindSeverity kUnfinishedKind{
    "coverage_gap", Severity::Medium,
    "the session did not finish: the numbers cover only what was stored before it stopped"};
constexpr KindSeverity kAttachedKind{
    "coverage_gap", Severity::Info,
    "a process was attached while running: what it did before is not observed, as expected when attaching"};
constexpr KindSeverity kKinds[] = {kLostKind, kUnfinishedKind, kAttachedKind};

// Losses and partial observation, which bound what every other finding means.
void coverage_gap(Ctx& c, std::vector<Finding>& out, std::vector<std::string>& notes) {
  const json& cov = c.coverage;
  auto gap = [&](const KindSeverity& kind, std::string title, std::string summary, std::string rule, json numbers,
                 std::optional<std::int64_t> pid = std::nullopt) {
    Finding f(kind);
    f.pid = pid;
    f.title = std::move(title);
    f.summary = std::move(summary);
    f.rule = std::move(rule);
    f.numbers = std::move(numbers);
    c.drill(f, "trace_overview", json::object(), "libraries, probes and processes observed");
    out.push_back(std::move(f));
  };
  const std::int64_t lost = cov["call_drops"].get<std::int64_t>() + cov["unrecorded_calls"].get<std::int64_t>();
  if (lost > 0 || cov["lifecycle_drops"].get<std::int64_t>() > 0)
    gap(kLostKind, std::to_string(lost) + " calls and " + std::to_string(cov["lifecycle_drops"].get<std::int64_t>()) +
                    " process events were lost",
        "The tracer could not record every event (ring buffer full or nesting too deep): counts, bytes and pairing "
        "undercount by up to that many calls; a lost free shows up as a superseded or outstanding allocation.",
        "sessions.call_drops + unrecorded_calls + lifecycle_drops > 0",
        {{"call_drops", cov["call_drops"]}, {"unrecorded_calls", cov["unrecorded_calls"]},
         {"lifecycle_drops", cov["lifecycle_drops"]}});
  if (cov["libraries_failed"].get<std::int64_t>() > 0) {
    std::string libs;
    c.query("SELECT path, COALESCE(error, 'no probe attached') FROM libraries WHERE session_id = ? AND (error IS NOT "
            "NULL OR probes_attached = 0) LIMIT 5",
            {c.session.id}, [&](const store::Row& r) {
              libs += (libs.empty() ? "" : "; ") + quote_untrusted(short_path(r.text(0)), 80) + ": " +
                      quote_untrusted(r.text(1), 120);
            });
    gap(kLostKind, std::to_string(cov["libraries_failed"].get<std::int64_t>()) + " CUDA libraries were found but not probed",
        "Calls into them are not in the trace: " + libs + ".", "libraries with an error or no probe attached",
        {{"libraries_failed", cov["libraries_failed"]}});
  }
  if (c.session.status != "complete")
    gap(kUnfinishedKind, "the session is " + c.session.status,
        c.session.status == "recording"
            ? "The trace is still being written: numbers cover what is stored so far, and indexes are not built yet."
            : "The tracer stopped without finishing the session: the end is the last recorded call.",
        "sessions.status != 'complete'", {{"calls_recorded", cov["calls_recorded"]}});
  for (const auto& [pid, p] : c.processes) {
    if (p.how_found != "pid" && p.how_found != "running") continue;
    gap(kAttachedKind, c.who(pid) + " was already running when tracing began",
        "Only what happened after " + c.t(p.first_ns) + " is observed: memory it allocated before is not in the "
        "trace, and a free of it appears in unmatched_frees. Not observed is not absent.",
        "processes.how_found in ('pid', 'running')", {{"observed_from_t_ms", c.session.t_ms(p.first_ns)}}, pid);
  }
  if (out.empty() || std::none_of(out.begin(), out.end(), [](const Finding& f) { return f.kind == "coverage_gap"; }))
    notes.push_back("nothing lost, every library found was probed, every process traced from its start");
}

}  // namespace

constexpr Rule kCoverageGapRule{"coverage_gap", kKinds, coverage_gap};

}  // namespace vs::tools::findings
