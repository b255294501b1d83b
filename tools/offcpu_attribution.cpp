// offcpu_attribution: is a latency tail the CUDA call itself, or the OS taking
// the CPU away while it ran? Per API, from the off-CPU accounting the tracer
// does in the kernel for every call (off_cpu_ns, runq_ns, switches, preemptor).
#include <algorithm>
#include <cstdio>
#include <map>
#include <unordered_map>

#include "tools/call_filter.h"
#include "tools/percentiles.h"

namespace vs::tools {
namespace {

constexpr const char* kVerdictRule =
    "Let p99 be the nearest-rank p99 of all calls and 'the tail' the calls with dur >= p99. "
    "scheduling: at least half of the tail was descheduled and removing runqueue wait (dur - runq) lowers p99 by "
    ">= 50%. blocking: at least half of the tail was descheduled and removing off-CPU time (dur - off_cpu) lowers "
    "p99 by >= 50%, but runqueue wait does not: the call slept (waited in the driver, on the GPU or a lock). "
    "partly_off_cpu: removing off-CPU time lowers p99 by >= 10%. in_call: otherwise; the tail is time spent "
    "running inside the call. With fewer than 100 calls p99 is the max, so one call decides.";

struct CallTimes {
  std::int64_t dur_ns, off_cpu_ns, runq_ns;
  bool switched;
};

struct Preemptor {
  std::int64_t calls = 0;
  std::int64_t longest_off_total_ns = 0;
};

struct ApiCalls {
  std::vector<CallTimes> calls;
  std::map<std::pair<std::int64_t, std::string>, Preemptor> preemptors;  // (pid, comm)
  std::int64_t slowest_switched_ns = -1;
  std::int64_t slowest_switched_call_id = 0;
};

// Nearest-rank p99 of f(call) over the calls that pass `keep`, or null when none does.
template <class Keep, class Value>
json p99_of(const std::vector<CallTimes>& calls, std::vector<std::int64_t>& scratch, Keep keep, Value value) {
  static constexpr int kRank[] = {kP99};
  scratch.clear();
  for (const auto& c : calls)
    if (keep(c)) scratch.push_back(value(c));
  if (scratch.empty()) return nullptr;
  return nearest_rank_percentiles(scratch, kRank)[0];
}

double pct(double part, double whole) { return whole > 0 ? 100.0 * part / whole : 0.0; }

json attribute(const ApiInfo& api, const ApiCalls& a, std::vector<std::int64_t>& scratch) {
  static constexpr int kRanks[] = {kP50, kP99};
  scratch.clear();
  std::int64_t total = 0, off = 0, runq = 0, switched = 0;
  for (const auto& c : a.calls) {
    scratch.push_back(c.dur_ns);
    total += c.dur_ns;
    off += c.off_cpu_ns;
    runq += c.runq_ns;
    switched += c.switched;
  }
  auto p = nearest_rank_percentiles(scratch, kRanks);
  std::int64_t p50 = p[0], p99 = p[1];
  std::int64_t tail = 0, tail_switched = 0;
  for (const auto& c : a.calls)
    if (c.dur_ns >= p99) {
      ++tail;
      tail_switched += c.switched;
    }
  auto all = [](const CallTimes&) { return true; };
  json p99_no_off = p99_of(a.calls, scratch, all, [](const CallTimes& c) { return c.dur_ns - c.off_cpu_ns; });
  json p99_no_runq = p99_of(a.calls, scratch, all, [](const CallTimes& c) { return c.dur_ns - c.runq_ns; });
  double cut_off = p99 > 0 ? 1.0 - p99_no_off.get<double>() / static_cast<double>(p99) : 0.0;
  double cut_runq = p99 > 0 ? 1.0 - p99_no_runq.get<double>() / static_cast<double>(p99) : 0.0;
  bool tail_descheduled = 2 * tail_switched >= tail && tail_switched > 0;
  std::string verdict = tail_descheduled && cut_runq >= 0.5  ? "scheduling"
                        : tail_descheduled && cut_off >= 0.5 ? "blocking"
                        : cut_off >= 0.1                     ? "partly_off_cpu"
                                                             : "in_call";
  std::vector<std::pair<std::pair<std::int64_t, std::string>, Preemptor>> by_time(a.preemptors.begin(),
                                                                                  a.preemptors.end());
  std::sort(by_time.begin(), by_time.end(), [](const auto& x, const auto& y) {
    return x.second.longest_off_total_ns > y.second.longest_off_total_ns;
  });
  json preemptors = json::array();
  for (std::size_t i = 0; i < by_time.size() && i < 5; ++i)
    preemptors.push_back({{"pid", by_time[i].first.first},
                          {"comm", clean_untrusted(by_time[i].first.second, 32)},
                          {"calls", by_time[i].second.calls},
                          {"longest_off_total_ns", by_time[i].second.longest_off_total_ns}});
  return {{"api", api.name},
          {"layer", api.layer},
          {"calls", a.calls.size()},
          {"descheduled_calls", switched},
          {"descheduled_pct", pct(static_cast<double>(switched), static_cast<double>(a.calls.size()))},
          {"total_ns", total},
          {"off_cpu_ns", off},
          {"runq_ns", runq},
          {"off_cpu_pct", pct(static_cast<double>(off), static_cast<double>(total))},
          {"runq_pct", pct(static_cast<double>(runq), static_cast<double>(total))},
          {"p50_ns", p50},
          {"p99_ns", p99},
          {"p99_switched_ns", p99_of(a.calls, scratch, [](const CallTimes& c) { return c.switched; },
                                     [](const CallTimes& c) { return c.dur_ns; })},
          {"p99_unswitched_ns", p99_of(a.calls, scratch, [](const CallTimes& c) { return !c.switched; },
                                       [](const CallTimes& c) { return c.dur_ns; })},
          {"p99_without_off_cpu_ns", p99_no_off},
          {"p99_without_runq_ns", p99_no_runq},
          {"tail_calls", tail},
          {"tail_descheduled_calls", tail_switched},
          {"verdict", verdict},
          {"slowest_descheduled_call_id", a.slowest_switched_ns >= 0 ? json(a.slowest_switched_call_id) : json()},
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
  auto session = resolve_session(in.db, in.args);
  if (!session) return session.error();
  auto window = resolve_window(*session, in.args);
  if (!window) return window.error();
  auto apis = load_apis(in.db);
  if (!apis) return apis.error();
  auto filter = build_call_filter(in.db, *apis, *session, *window, in.args);
  if (!filter) return filter.error();

  std::unordered_map<std::int64_t, ApiCalls> by_api;
  std::int64_t calls = 0, descheduled = 0;
  Status st = in.db.query(
      "SELECT api_id, dur_ns, off_cpu_ns, runq_ns, switches, preempted_by, preempted_by_comm, longest_off_ns, id "
      "FROM call_rows WHERE " + filter->where,
      filter->params, [&](const store::Row& r) {
        ApiCalls& a = by_api[r.i64(0)];
        bool switched = r.i64(4) > 0;
        a.calls.push_back({r.i64(1), r.i64(2), r.i64(3), switched});
        ++calls;
        if (!switched) return;
        ++descheduled;
        if (r.i64(1) > a.slowest_switched_ns) {
          a.slowest_switched_ns = r.i64(1);
          a.slowest_switched_call_id = r.i64(8);
        }
        if (r.is_null(5)) return;
        Preemptor& p = a.preemptors[{r.i64(5), r.text(6)}];
        ++p.calls;
        p.longest_off_total_ns += r.i64(7);
      });
  if (!st) return Error{st.message()};

  json rows = json::array();
  std::vector<std::int64_t> scratch;
  for (const auto& [api_id, api_calls] : by_api) {
    if (in.progress.stop_requested()) return Error{"cancelled"};
    rows.push_back(attribute((*apis)[api_id], api_calls, scratch));
  }
  std::sort(rows.begin(), rows.end(), [](const json& a, const json& b) {
    return a["off_cpu_ns"] != b["off_cpu_ns"] ? a["off_cpu_ns"] > b["off_cpu_ns"] : a["api"] < b["api"];
  });
  std::size_t apis_total = rows.size();
  auto limit = static_cast<std::size_t>(arg_int(in.args, "limit", 20));
  if (rows.size() > limit) rows.erase(rows.begin() + static_cast<std::ptrdiff_t>(limit), rows.end());

  json out = {{"session_id", session->id},
              {"window", {{"from_ms", session->t_ms(window->from_ns)}, {"to_ms", session->t_ms(window->to_ns)}}},
              {"filter", filter->applied},
              {"verdict_rule", kVerdictRule},
              {"percentile_method", kPercentileMethod},
              {"calls", calls},
              {"descheduled_calls", descheduled},
              {"apis_total", apis_total},
              {"apis", std::move(rows)}};
  auto cov = coverage(in.db, *session);
  if (!cov) return cov.error();
  out["coverage"] = *cov;
  std::string text = render(out) + coverage_line(*cov);
  return ToolOutput{std::move(out), bound_text(std::move(text)), {}};
}

}  // namespace

extern const ToolSpec kOffcpuAttribution{
    "offcpu_attribution", "Off-CPU attribution of call latency",
    "Use when a CUDA call's tail latency (p99, max) is far above its median, to learn whether the OS took the "
    "CPU away during the calls (descheduled, waiting in the runqueue, and which tasks ran instead) or the time "
    "was spent inside the call. Gives per API a verdict with the rule, and the call ids to drill into.",
    run};

}  // namespace vs::tools
