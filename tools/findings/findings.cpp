// findings: ranked automatic findings. Each one states the rule that fired,
// the measured numbers, the call and allocation ids the other tools accept,
// and which tool to call next; the rules that did not fire say what they saw,
// so that "nothing found" is an observation, not a silence. The rules are in
// this directory, one per file, listed in registry.cpp.
#include <algorithm>
#include <tuple>

#include "tools/findings/registry.h"

namespace vs::tools {
namespace findings {
namespace {

int severity_rank(const std::string& severity) {
  for (auto s : {Severity::High, Severity::Medium, Severity::Low, Severity::Info})
    if (severity_name(s) == severity) return static_cast<int>(s);
  return static_cast<int>(Severity::Info) + 1;
}

json finding_json(const Finding& f, int rank) {
  return {{"rank", rank},
          {"kind", f.kind},
          {"severity", f.severity},
          {"title", f.title},
          {"summary", f.summary},
          {"rule", f.rule},
          {"pid", f.pid ? json(*f.pid) : json(nullptr)},
          {"evidence", {{"numbers", f.numbers}, {"call_ids", f.call_ids}, {"allocation_ids", f.allocation_ids}}},
          {"next", f.next}};
}

std::string render(const json& out, const Session& s) {
  std::string text = "findings: session " + std::to_string(s.id) +
                     (s.command.empty() ? "" : " " + quote_untrusted(s.command, 100)) + ", " +
                     fmt_ns(s.end_ns - s.start_ns) + ": " + std::to_string(out["findings_total"].get<std::int64_t>()) +
                     " findings, ranked by severity\n";
  for (const auto& f : out["findings"]) {
    text += std::to_string(f["rank"].get<int>()) + ". [" + f["severity"].get<std::string>() + "] " +
            f["kind"].get<std::string>() + ": " + f["title"].get<std::string>() + "\n   " +
            f["summary"].get<std::string>() + "\n";
    const auto& ev = f["evidence"];
    if (!ev["allocation_ids"].empty()) text += "   allocation ids: " + ev["allocation_ids"].dump() + "\n";
    if (!ev["call_ids"].empty()) text += "   call ids: " + ev["call_ids"].dump() + "\n";
    for (const auto& n : f["next"])
      text += "   next: " + n["tool"].get<std::string>() + " " + n["arguments"].dump() + "\n";
    text += "   rule: " + f["rule"].get<std::string>() + "\n";
  }
  if (out["left_out"].get<std::int64_t>() > 0)
    text += "(" + std::to_string(out["left_out"].get<std::int64_t>()) + " more; raise `limit`)\n";
  text += "checked:\n";
  for (const auto& c : out["checked"])
    text += "- " + c["kind"].get<std::string>() + ": " + std::to_string(c["fired"].get<int>()) + " fired" +
            (c["notes"].empty() ? "" : "; " + c["notes"][0].get<std::string>()) + "\n";
  return bound_text(std::move(text), coverage_line(out["coverage"]));
}

Result<ToolOutput> run(const ToolInput& in) {
  auto session = resolve_session(in.db, in.args);
  if (!session) return session.error();
  auto cov = coverage(in.db, *session);
  if (!cov) return cov.error();
  Ctx c(in.db, *session, arg_opt_int(in.args, "pid"), *cov);
  c.load();
  if (c.pid && !c.processes.count(*c.pid)) {
    std::string pids;
    c.query("SELECT DISTINCT pid FROM processes WHERE session_id = ? ORDER BY pid", {session->id},
            [&](const store::Row& r) { pids += (pids.empty() ? "" : ", ") + std::to_string(r.i64(0)); });
    return Error{"no pid " + std::to_string(*c.pid) + " in session " + std::to_string(session->id) +
                 "; its processes: " + (pids.empty() ? "none" : pids) + " (or leave pid out)"};
  }
  if (!c.status) return Error{c.status.message()};

  json checked = json::array();
  const auto registered = rules();
  for (std::size_t i = 0; i < registered.size(); ++i) {
    const Rule& rule = *registered[i];
    if (in.progress.stop_requested()) return Error{"cancelled"};
    in.progress(static_cast<double>(i), static_cast<double>(registered.size()), std::string(rule.name));
    std::vector<Finding> found;
    std::vector<std::string> notes;
    rule.run(c, found, notes);
    if (!c.status) return Error{c.status.message()};
    checked.push_back({{"kind", rule.name}, {"fired", static_cast<int>(found.size())}, {"notes", notes}});
    for (auto& f : found) c.earlier.push_back(std::move(f));
  }
  std::vector<Finding>& findings = c.earlier;
  // By severity, then by the registry's ranking of kinds, then larger first.
  std::stable_sort(findings.begin(), findings.end(), [](const Finding& a, const Finding& b) {
    auto key = [](const Finding& f) { return std::make_tuple(severity_rank(f.severity), kind_rank(f.kind), -f.size); };
    return key(a) < key(b);
  });
  const auto limit = static_cast<std::size_t>(arg_int(in.args, "limit", 20));
  json list = json::array();
  for (std::size_t i = 0; i < findings.size() && i < limit; ++i) list.push_back(finding_json(findings[i], static_cast<int>(i) + 1));
  json out = {{"session_id", session->id},
              {"pid", c.pid ? json(*c.pid) : json(nullptr)},
              {"findings", list},
              {"findings_total", findings.size()},
              {"left_out", findings.size() - list.size()},
              {"checked", checked},
              {"coverage", c.coverage}};
  std::string text = render(out, *session);
  return ToolOutput{std::move(out), std::move(text), {}};
}

}  // namespace
}  // namespace findings

extern const ToolSpec kFindings;
const ToolSpec kFindings{
    "findings", "Automatic findings",
    "Start here after trace_overview: ranked automatic findings about a session, each with the rule that fired, the "
    "measured numbers, call and allocation ids that the other tools accept, and the tool to call next. Rules: memory "
    "growth in a live process (leak), out-of-memory and other failed calls, lost records and partial observation, "
    "latency tails caused by CPU preemption, missed or unmatched frees, the framework allocator's cache held after its "
    "last call, GPU memory held by libraries outside the framework's allocator (cuBLAS, cuDNN), CUDA context overhead "
    "seen by NVML, and memory released only at process exit. `checked` says what each rule saw when it did not fire. "
    "Use pid to look at one process.",
    findings::run};

}  // namespace vs::tools
