// offcpu_attribution: is a latency tail the CUDA call itself, or the OS taking
// the CPU away while it ran? Per API, from the off-CPU accounting the tracer
// does in the kernel for every call (off_cpu_ns, runq_ns, switches, preemptor).
#include <cmath>
#include <cstdio>

#include "common/percentiles.h"
#include "tools/api_stats.h"

namespace vs::tools {
namespace {

constexpr const char* kVerdictRule =
    "Let p99 be the nearest-rank p99 of all calls and 'the tail' the calls with dur >= p99. "
    "scheduling: at least half of the tail was descheduled and removing runqueue wait (dur - runq) lowers p99 by "
    ">= 50%. blocking: at least half of the tail was descheduled and removing off-CPU time (dur - off_cpu) lowers "
    "p99 by >= 50%, but runqueue wait does not: the call slept (waited in the driver, on the GPU or a lock). "
    "partly_off_cpu: removing off-CPU time lowers p99 by >= 10%. in_call: otherwise; the tail is time spent "
    "running inside the call. With fewer than 100 calls p99 is the max, so one call decides.";

// Percent to 0.01 (the exact ns totals are alongside): 0.33 rather than 0.3323330135968926.
double pct(double part, double whole) { return whole > 0 ? std::round(10000.0 * part / whole) / 100.0 : 0.0; }

json optional_ns(const std::optional<std::int64_t>& v) { return v ? json(*v) : json(nullptr); }

json attribute(const ApiInfo& api, const store::CallStats& s) {
  const auto p99 = static_cast<double>(s.p99_ns);
  double cut_off = s.p99_ns > 0 ? 1.0 - static_cast<double>(s.p99_without_off_cpu_ns) / p99 : 0.0;
  double cut_runq = s.p99_ns > 0 ? 1.0 - static_cast<double>(s.p99_without_runq_ns) / p99 : 0.0;
  bool tail_descheduled = 2 * s.tail_descheduled >= s.tail_calls && s.tail_descheduled > 0;
  std::string verdict = tail_descheduled && cut_runq >= 0.5  ? "scheduling"
                        : tail_descheduled && cut_off >= 0.5 ? "blocking"
                        : cut_off >= 0.1                     ? "partly_off_cpu"
                                                             : "in_call";
  json preemptors = json::array();
  for (std::size_t i = 0; i < s.preemptors.size() && i < 5; ++i)
    preemptors.push_back({{"pid", s.preemptors[i].pid},
                          {"comm", clean_untrusted(s.preemptors[i].comm, 32)},
                          {"calls", s.preemptors[i].calls},
                          {"longest_off_total_ns", s.preemptors[i].longest_off_total_ns}});
  const auto calls = static_cast<double>(s.calls), total = static_cast<double>(s.total_ns);
  return {{"api", api.name},
          {"layer", api.layer},
          {"calls", s.calls},
          {"descheduled_calls", s.descheduled},
          {"descheduled_pct", pct(static_cast<double>(s.descheduled), calls)},
          {"total_ns", s.total_ns},
          {"off_cpu_ns", s.off_cpu_ns},
          {"runq_ns", s.runq_ns},
          {"off_cpu_pct", pct(static_cast<double>(s.off_cpu_ns), total)},
          {"runq_pct", pct(static_cast<double>(s.runq_ns), total)},
          {"p50_ns", s.p50_ns},
          {"p99_ns", s.p99_ns},
          {"p99_switched_ns", optional_ns(s.p99_switched_ns)},
          {"p99_unswitched_ns", optional_ns(s.p99_unswitched_ns)},
          {"p99_without_off_cpu_ns", s.p99_without_off_cpu_ns},
          {"p99_without_runq_ns", s.p99_without_runq_ns},
          {"tail_calls", s.tail_calls},
          {"tail_descheduled_calls", s.tail_descheduled},
          {"verdict", verdict},
          {"slowest_descheduled_call_id", optional_ns(s.slowest_descheduled_call_id)},
          {"preemptors", std::move(preemptors)}};
}

std::string verdict_words(const json& a) {
  std::string v = a["verdict"];
  if (v == "scheduling") return "tail explained by scheduling (runqueue wait)";
  if (v == "blocking") return "tail is the call sleeping off-CPU (blocked), not preemption";
  if (v == "partly_off_cpu") return "off-CPU time explains part of the tail";
  if (a["descheduled_calls"].get<std::int64_t>() == 0) return "no call descheduled: the tail is in the call itself";
  if (a["p99_switched_ns"].get<std::int64_t>() > a["p99_ns"].get<std::int64_t>())
    return "p99 is time in the call itself; the descheduled calls are rarer than 1% and lie beyond p99 (they set "
           "the max)";
  return "tail is time in the call itself, not scheduling";
}

std::string render(const json& out) {
  std::string text = "offcpu_attribution: session " + std::to_string(out["session_id"].get<std::int64_t>()) + ", " +
                     std::to_string(out["calls"].get<std::int64_t>()) + " calls, " +
                     std::to_string(out["descheduled_calls"].get<std::int64_t>()) + " descheduled";
  if (!out["filter"].empty()) text += ", filter " + out["filter"].dump();
  text += "; ranked by off-CPU time; p99 = exact nearest rank\n";
  for (const auto& a : out["apis"]) {
    char line[512];
    std::snprintf(line, sizeof line,
                  "%s: %lld calls, %lld descheduled (%.1f%%); off-CPU %.1f%% of wall time (runq %.1f%%); p50 %s, "
                  "p99 %s -> %s without off-CPU, %s without runq wait; p99 with switches %s vs without %s",
                  a["api"].get<std::string>().c_str(), static_cast<long long>(a["calls"].get<std::int64_t>()),
                  static_cast<long long>(a["descheduled_calls"].get<std::int64_t>()), a["descheduled_pct"].get<double>(),
                  a["off_cpu_pct"].get<double>(), a["runq_pct"].get<double>(), fmt_ns(a["p50_ns"]).c_str(),
                  fmt_ns(a["p99_ns"]).c_str(), fmt_ns(a["p99_without_off_cpu_ns"]).c_str(),
                  fmt_ns(a["p99_without_runq_ns"]).c_str(),
                  a["p99_switched_ns"].is_null() ? "-" : fmt_ns(a["p99_switched_ns"]).c_str(),
                  a["p99_unswitched_ns"].is_null() ? "-" : fmt_ns(a["p99_unswitched_ns"]).c_str());
    text += line;
    std::string takers;
    for (const auto& p : a["preemptors"])
      takers += (takers.empty() ? "" : ", ") + quote_untrusted(p["comm"].get<std::string>(), 32) + " pid " +
                std::to_string(p["pid"].get<std::int64_t>()) + " (" + std::to_string(p["calls"].get<std::int64_t>()) +
                "x, " + fmt_ns(p["longest_off_total_ns"]) + ")";
    if (!takers.empty()) text += "; CPU taken by " + takers;
    text += " => " + verdict_words(a);
    if (!a["slowest_descheduled_call_id"].is_null())
      text += " [slowest descheduled call id " + std::to_string(a["slowest_descheduled_call_id"].get<std::int64_t>()) + "]";
    text += "\n";
  }
  if (out["apis"].size() < out["apis_total"].get<std::size_t>())
    text += "(" + std::to_string(out["apis_total"].get<std::size_t>() - out["apis"].size()) +
            " more APIs; raise `limit` or filter by api)\n";
  if (out["apis"].empty()) text += "no calls in this selection\n";
  return text;
}

Result<ToolOutput> run(const ToolInput& in) {
  auto selection = resolve_selection(in.db, in.args);
  if (!selection) return selection.error();
  const auto& [session, window, apis, filter] = *selection;

  auto stats = per_api_stats(in.db, session, window, filter);
  if (!stats) return stats.error();
  auto out = ranked_api_rows(in, *selection, *stats, attribute, "off_cpu_ns");
  if (!out) return out.error();
  std::int64_t descheduled = 0;
  for (const auto& [api_id, api_stats] : *stats) descheduled += api_stats.descheduled;
  (*out)["descheduled_calls"] = descheduled;
  (*out)["verdict_rule"] = kVerdictRule;
  (*out)["percentile_method"] = kPercentileMethod;
  auto cov = coverage(in.db, session);
  if (!cov) return cov.error();
  (*out)["coverage"] = *cov;
  std::string text = render(*out);
  return ToolOutput{std::move(*out), bound_text(std::move(text), coverage_line(*cov)), {}};
}

}  // namespace

extern const ToolSpec kOffcpuAttribution{
    "offcpu_attribution", "Off-CPU attribution of call latency",
    "Use when a CUDA call's tail latency (p99, max) is far above its median, to learn whether the OS took the "
    "CPU away during the calls (descheduled, waiting in the runqueue, and which tasks ran instead) or the time "
    "was spent inside the call. Gives per API a verdict with the rule, and the call ids to drill into.",
    run};

}  // namespace vs::tools
