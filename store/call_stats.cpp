#include "store/call_stats.h"

#include <algorithm>
#include <tuple>

#include "common/percentiles.h"

namespace vs::store {

CallSample read_call_sample(const Row& r, int c) {
  CallSample s;
  s.id = r.i64(c);
  s.ts_ns = r.i64(c + 1);
  s.dur_ns = r.i64(c + 2);
  s.off_cpu_ns = r.i64(c + 3);
  s.runq_ns = r.i64(c + 4);
  s.switches = r.i64(c + 5);
  s.ret = r.i64(c + 6);
  s.bytes = r.i64(c + 7);
  s.nested = r.i64(c + 8) != 0;
  if (!r.is_null(c + 9)) {
    s.preempted_by = r.i64(c + 9);
    s.preempted_by_comm = r.text(c + 10);
  }
  s.longest_off_ns = r.i64(c + 11);
  return s;
}

void rank_preemptors(std::vector<PreemptorGroup>& groups) {
  std::sort(groups.begin(), groups.end(), [](const PreemptorGroup& a, const PreemptorGroup& b) {
    return std::tie(b.longest_off_total_ns, b.calls, a.pid, a.comm) <
           std::tie(a.longest_off_total_ns, a.calls, b.pid, b.comm);
  });
}

namespace {

// The longer call, or at equal durations the lower id: the same call whatever the scan order.
bool longer(std::int64_t dur, std::int64_t id, std::int64_t than_dur, std::int64_t than_id) {
  return dur > than_dur || (dur == than_dur && id < than_id);
}

void keep_longest(std::int64_t& max_ns, std::int64_t& max_id, std::int64_t dur, std::int64_t id) {
  if (longer(dur, id, max_ns, max_id)) {
    max_ns = dur;
    max_id = id;
  }
}

void keep_slowest_descheduled(CallStats& s, std::optional<std::int64_t> dur, std::optional<std::int64_t> id) {
  if (!dur) return;
  if (!s.slowest_descheduled_ns || longer(*dur, *id, *s.slowest_descheduled_ns, *s.slowest_descheduled_call_id)) {
    s.slowest_descheduled_ns = dur;
    s.slowest_descheduled_call_id = id;
  }
}

}  // namespace

void CallStatsBuilder::add(const CallSample& c) {
  const bool switched = c.switches > 0;
  timings_.push_back({c.dur_ns, c.off_cpu_ns, c.runq_ns});
  switched_.push_back(switched);
  CallStats& s = sums_;
  if (s.calls == 0) {
    s.max_ns = c.dur_ns;
    s.max_call_id = c.id;
    s.first_ts_ns = s.last_ts_ns = c.ts_ns;
  }
  ++s.calls;
  s.failed += c.ret != 0;
  s.nested += c.nested;
  if (c.ret == 0) s.ok_bytes += c.bytes;
  s.total_ns += c.dur_ns;
  keep_longest(s.max_ns, s.max_call_id, c.dur_ns, c.id);
  s.off_cpu_ns += c.off_cpu_ns;
  s.runq_ns += c.runq_ns;
  s.first_ts_ns = std::min(s.first_ts_ns, c.ts_ns);
  s.last_ts_ns = std::max(s.last_ts_ns, c.ts_ns);
  if (!c.nested) {
    ++s.top_level_calls;
    s.top_level_failed += c.ret != 0;
    s.top_level_ns += c.dur_ns;
    s.top_level_off_cpu_ns += c.off_cpu_ns;
    s.top_level_runq_ns += c.runq_ns;
  }
  if (!switched) return;
  ++s.descheduled;
  keep_slowest_descheduled(s, c.dur_ns, c.id);
  if (!c.preempted_by) return;
  PreemptorGroup& g = preemptors_[{*c.preempted_by, c.preempted_by_comm}];
  ++g.calls;
  g.longest_off_total_ns += c.longest_off_ns;
}

void CallStatsBuilder::merge(const CallStatsBuilder& other) {
  if (other.empty()) return;
  if (empty()) {
    *this = other;
    return;
  }
  timings_.insert(timings_.end(), other.timings_.begin(), other.timings_.end());
  switched_.insert(switched_.end(), other.switched_.begin(), other.switched_.end());
  CallStats& s = sums_;
  const CallStats& o = other.sums_;
  s.calls += o.calls;
  s.failed += o.failed;
  s.nested += o.nested;
  s.ok_bytes += o.ok_bytes;
  s.total_ns += o.total_ns;
  keep_longest(s.max_ns, s.max_call_id, o.max_ns, o.max_call_id);
  s.descheduled += o.descheduled;
  s.off_cpu_ns += o.off_cpu_ns;
  s.runq_ns += o.runq_ns;
  keep_slowest_descheduled(s, o.slowest_descheduled_ns, o.slowest_descheduled_call_id);
  s.first_ts_ns = std::min(s.first_ts_ns, o.first_ts_ns);
  s.last_ts_ns = std::max(s.last_ts_ns, o.last_ts_ns);
  s.top_level_calls += o.top_level_calls;
  s.top_level_failed += o.top_level_failed;
  s.top_level_ns += o.top_level_ns;
  s.top_level_off_cpu_ns += o.top_level_off_cpu_ns;
  s.top_level_runq_ns += o.top_level_runq_ns;
  for (const auto& [key, g] : other.preemptors_) {
    PreemptorGroup& mine = preemptors_[key];
    mine.calls += g.calls;
    mine.longest_off_total_ns += g.longest_off_total_ns;
  }
}

CallStats CallStatsBuilder::finish() const {
  CallStats s = sums_;
  if (timings_.empty()) return s;
  std::vector<std::int64_t> scratch;
  scratch.reserve(timings_.size());
  // The nearest-rank p99 of value(call) over the calls that pass keep(i), or nullopt when none does.
  auto p99_of = [&](auto keep, auto value) -> std::optional<std::int64_t> {
    static constexpr int kRank[] = {kP99};
    scratch.clear();
    for (std::size_t i = 0; i < timings_.size(); ++i)
      if (keep(i)) scratch.push_back(value(timings_[i]));
    if (scratch.empty()) return std::nullopt;
    return nearest_rank_percentiles(scratch, kRank)[0];
  };

  static constexpr int kRanks[] = {kP50, kP90, kP99, kP999};
  scratch.clear();
  for (const Timing& t : timings_) scratch.push_back(t.dur_ns);
  auto p = nearest_rank_percentiles(scratch, kRanks);
  s.p50_ns = p[0];
  s.p90_ns = p[1];
  s.p99_ns = p[2];
  s.p999_ns = p[3];
  for (std::size_t i = 0; i < timings_.size(); ++i)
    if (timings_[i].dur_ns >= s.p99_ns) {
      ++s.tail_calls;
      s.tail_descheduled += switched_[i];
    }
  auto all = [](std::size_t) { return true; };
  auto dur = [](const Timing& t) { return t.dur_ns; };
  s.p99_without_off_cpu_ns = *p99_of(all, [](const Timing& t) { return t.dur_ns - t.off_cpu_ns; });
  s.p99_without_runq_ns = *p99_of(all, [](const Timing& t) { return t.dur_ns - t.runq_ns; });
  s.p99_switched_ns = p99_of([&](std::size_t i) { return switched_[i]; }, dur);
  s.p99_unswitched_ns = p99_of([&](std::size_t i) { return !switched_[i]; }, dur);

  for (const auto& [key, g] : preemptors_) {
    s.preemptors.push_back(g);
    s.preemptors.back().pid = key.first;
    s.preemptors.back().comm = key.second;
  }
  rank_preemptors(s.preemptors);
  return s;
}

}  // namespace vs::store
