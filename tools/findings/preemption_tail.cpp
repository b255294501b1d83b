// preemption_tail: per API, a latency tail made by the CPU scheduler (the
// calling thread runnable but waiting for a CPU), not by the CUDA call.
#include <algorithm>
#include <cmath>
#include <cstdio>

#include "tools/findings/registry.h"

namespace vs::tools::findings {
namespace {

// Below 20 calls, the calls at or above p99 are one call: a single unlucky switch would make a finding.
constexpr std::int64_t kTailMinCalls = 20;
// Most of the tail's time spent runnable but off-CPU: the scheduler, more than the call, made it slow.
constexpr double kTailMinRunqShare = 0.5;
// p99 at 4 x p50 is a tail a user notices; a narrower spread is ordinary jitter.
constexpr std::int64_t kTailMinRatio = 4;

constexpr KindSeverity kPreemptionTailKind{
    "preemption_tail", Severity::Medium,
    "the slowest calls wait for a CPU: the workload runs slower than the GPU allows, though nothing fails"};
constexpr KindSeverity kKinds[] = {kPreemptionTailKind};

std::string pct(double share) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%.0f%%", share * 100);
  return buf;
}

// The calls at or above one API's p99, summed for the preemption_tail rule.
struct Tail {
  std::int64_t p99_ns = 0;
  std::int64_t calls = 0, nested = 0, dur = 0, off = 0, runq = 0, descheduled = 0;
  std::map<std::string, std::int64_t> preemptors;  // comm -> off-CPU ns
  std::vector<std::int64_t> slowest;  // up to store::kSlowestTailCalls ids: the slowest first, then the lowest id
};

// Whether call_rows has an index on (api_id, dur_ns): then each API's tail is one index range.
bool has_api_dur_index(Ctx& c) {
  return c.value("SELECT COUNT(*) FROM pragma_index_list('call_rows') l WHERE (SELECT group_concat(name, ',') FROM "
                 "(SELECT name FROM pragma_index_info(l.name) ORDER BY seqno LIMIT 2)) = 'api_id,dur_ns'",
                 {}) > 0;
}

// Reads the calls at or above each API's p99 into `tails` (keyed by api_id), for summaries built before they
// held the tails (schema 2): one index range per API when (api_id, dur_ns) is indexed; otherwise one scan of the
// selection's calls, as the (api_id, ts_ns) index would visit every call of each API anyway.
void read_tails(Ctx& c, std::map<std::int64_t, Tail>& tails) {
  const std::string columns =
      "SELECT api_id, id, dur_ns, off_cpu_ns, runq_ns, switches, "
      "CASE WHEN preempted_by IS NULL THEN '' ELSE COALESCE(preempted_by_comm, '') END, parent_id IS NOT NULL "
      "FROM call_rows WHERE " + c.scope();
  std::map<std::int64_t, std::vector<std::pair<std::int64_t, std::int64_t>>> slowest;  // api -> (-dur_ns, id)
  auto add = [&](const store::Row& r) {
    auto it = tails.find(r.i64(0));
    if (it == tails.end() || r.i64(2) < it->second.p99_ns) return;
    Tail& t = it->second;
    ++t.calls;
    slowest[r.i64(0)].push_back({-r.i64(2), r.i64(1)});
    t.dur += r.i64(2);
    t.off += r.i64(3);
    t.runq += r.i64(4);
    t.descheduled += r.i64(5) > 0;
    if (!r.text(6).empty()) t.preemptors[r.text(6)] += r.i64(3);
    t.nested += r.i64(7);
  };
  if (has_api_dur_index(c)) {
    for (const auto& [api_id, t] : tails) c.query(columns + " AND api_id = ? AND dur_ns >= ?", c.params({api_id, t.p99_ns}), add);
  } else if (!tails.empty()) {
    const auto lowest = std::min_element(tails.begin(), tails.end(), [](const auto& a, const auto& b) {
      return a.second.p99_ns < b.second.p99_ns;
    });
    c.query(columns + " AND dur_ns >= ?", c.params({lowest->second.p99_ns}), add);
  }
  for (auto& [api_id, calls] : slowest) {
    const auto kept = std::min(calls.size(), store::kSlowestTailCalls);
    std::partial_sort(calls.begin(), calls.begin() + static_cast<std::ptrdiff_t>(kept), calls.end());
    for (std::size_t i = 0; i < kept; ++i) tails[api_id].slowest.push_back(calls[i].second);
  }
}

// The tails from the per-API stats when they hold them (built by this vramscope, or scanned), else read_tails.
void fill_tails(Ctx& c, std::map<std::int64_t, Tail>& tails) {
  const auto& stats = c.call_stats();
  for (const auto& [api_id, t] : tails)
    if (!stats.at(api_id).tail) return read_tails(c, tails);
  for (auto& [api_id, t] : tails) {
    const store::CallStats& s = stats.at(api_id);
    t.calls = s.tail_calls;
    t.descheduled = s.tail_descheduled;
    t.nested = s.tail->nested;
    t.dur = s.tail->ns;
    t.off = s.tail->off_cpu_ns;
    t.runq = s.tail->runq_ns;
    t.preemptors = s.tail->off_cpu_ns_by_preemptor;
    t.slowest = s.tail->slowest_call_ids;
  }
}

// The tracer's own threads: when they held the CPU the traced thread waited for, the tail is the cost of
// observing, which the workload does not pay untraced.
constexpr std::string_view kTracerComm = "vramscope";

// Per API: is the slowest 1% slow because the thread was waiting for a CPU?
void preemption_tail(Ctx& c, std::vector<Finding>& out, std::vector<std::string>& notes) {
  const auto& stats = c.call_stats();
  std::map<std::int64_t, Tail> tails;
  for (const auto& [api_id, s] : stats)
    if (s.calls >= kTailMinCalls) tails[api_id].p99_ns = s.p99_ns;
  fill_tails(c, tails);
  for (const auto& [api_id, t] : tails) {
    const store::CallStats& s = stats.at(api_id);
    const std::int64_t n = s.calls, p50 = s.p50_ns, p99 = s.p99_ns;
    const std::string& api = c.apis[api_id].name;
    const std::int64_t tail_n = t.calls, nested = t.nested, dur = t.dur, off = t.off, runq = t.runq,
                       descheduled = t.descheduled;
    const auto& preemptors = t.preemptors;
    const double runq_share = dur > 0 ? static_cast<double>(runq) / static_cast<double>(dur) : 0;
    if (runq_share < kTailMinRunqShare || p99 < kTailMinRatio * p50 || nested == tail_n) {
      if (nested < tail_n)
        notes.push_back(api + ": p99 " + fmt_ns(p99) + " (p50 " + fmt_ns(p50) + "), " + pct(runq_share) +
                        " of the tail waiting for a CPU");
      continue;
    }
    auto top = std::max_element(preemptors.begin(), preemptors.end(),
                                [](const auto& a, const auto& b) { return a.second < b.second; });
    if (top != preemptors.end() && top->first == kTracerComm) {
      notes.push_back(api + ": p99 " + fmt_ns(p99) + " (p50 " + fmt_ns(p50) + "), " + pct(runq_share) +
                      " of the tail waiting for a CPU held mostly by the tracer itself: its cost, not the workload's");
      continue;
    }
    Finding f(kPreemptionTailKind);
    f.size = static_cast<double>(p99);
    f.title = api + "'s tail is CPU preemption: p99 " + fmt_ns(p99) + " vs p50 " + fmt_ns(p50) + ", " +
              pct(runq_share) + " of the tail spent waiting for a CPU";
    f.summary = "Of " + std::to_string(n) + " " + api + " calls, the slowest " + std::to_string(tail_n) +
                " (>= p99 = " + fmt_ns(p99) + "; p50 = " + fmt_ns(p50) + ") took " + fmt_ns(dur) + " in all, " +
                fmt_ns(off) + " of it off-CPU and " + fmt_ns(runq) + " runnable but waiting for a CPU (" +
                pct(runq_share) + "); switched out: " + std::to_string(descheduled) + " of " + std::to_string(tail_n) +
                (top != preemptors.end() ? ", the CPU held mostly by " + quote_untrusted(top->first, 32) : "") +
                ". The time went to the scheduler, not to the CUDA call.";
    f.rule = "an API with >= " + std::to_string(kTailMinCalls) + " calls whose calls at or above p99 spent >= " +
             pct(kTailMinRunqShare) + " of their duration runnable but off-CPU (runq_ns), with p99 >= " +
             std::to_string(kTailMinRatio) + " x p50";
    f.numbers = {{"calls", n},           {"p50_ns", p50},       {"p99_ns", p99},
                 {"tail_calls", tail_n}, {"tail_dur_ns", dur},   {"tail_off_cpu_ns", off},
                 {"tail_runq_ns", runq}, {"tail_runq_pct", std::round(runq_share * 1000) / 10},
                 {"tail_descheduled_calls", descheduled}};
    f.call_ids = t.slowest;
    c.drill(f, "offcpu_attribution", {{"api", api}}, "off-CPU share, p99 with vs without switches, who took the CPU");
    c.drill(f, "slowest_calls", {{"api", api}}, "the slowest calls with their scheduling details");
    out.push_back(std::move(f));
  }
  if (tails.empty()) notes.push_back("no API has >= " + std::to_string(kTailMinCalls) + " calls");
}

}  // namespace

constexpr Rule kPreemptionTailRule{"preemption_tail", kKinds, preemption_tail};

}  // namespace vs::tools::findings
