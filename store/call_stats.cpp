#include "store/call_stats.h"

#include <algorithm>
#include <numeric>
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

void CallStatsBuilder::keep_slowest(std::pair<std::int64_t, std::int64_t> call) {
  if (slowest_.size() == kSlowestTailCalls && call >= slowest_.back()) return;
  slowest_.insert(std::upper_bound(slowest_.begin(), slowest_.end(), call), call);
  if (slowest_.size() > kSlowestTailCalls) slowest_.pop_back();
}

void CallStatsBuilder::add(const CallSample& c) {
  const bool switched = c.switches > 0;
  if (c.preempted_by && !c.preempted_by_comm.empty()) preemptor_comms_.push_back({timings_.size(), c.preempted_by_comm});
  timings_.push_back({c.dur_ns, c.off_cpu_ns, c.runq_ns});
  switched_.push_back(switched);
  nested_.push_back(c.nested);
  keep_slowest({-c.dur_ns, c.id});
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
  for (const auto& [index, comm] : other.preemptor_comms_) preemptor_comms_.push_back({timings_.size() + index, comm});
  timings_.insert(timings_.end(), other.timings_.begin(), other.timings_.end());
  switched_.insert(switched_.end(), other.switched_.begin(), other.switched_.end());
  nested_.insert(nested_.end(), other.nested_.begin(), other.nested_.end());
  for (const auto& call : other.slowest_) keep_slowest(call);
  merge_counters(other.sums_);
  for (const auto& [key, g] : other.preemptors_) {
    PreemptorGroup& mine = preemptors_[key];
    mine.calls += g.calls;
    mine.longest_off_total_ns += g.longest_off_total_ns;
  }
}

void CallStatsBuilder::merge_counters(const CallStats& o) {
  CallStats& s = sums_;
  if (s.calls == 0) {
    s = o;
    return;
  }
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
  CallStats::Tail& tail = s.tail.emplace();
  for (std::size_t i = 0; i < timings_.size(); ++i)
    if (timings_[i].dur_ns >= s.p99_ns) {
      ++s.tail_calls;
      s.tail_descheduled += switched_[i];
      tail.ns += timings_[i].dur_ns;
      tail.off_cpu_ns += timings_[i].off_cpu_ns;
      tail.runq_ns += timings_[i].runq_ns;
      tail.nested += nested_[i];
    }
  for (const auto& [index, comm] : preemptor_comms_)
    if (timings_[index].dur_ns >= s.p99_ns) tail.off_cpu_ns_by_preemptor[comm] += timings_[index].off_cpu_ns;
  for (const auto& [neg_dur, id] : slowest_)
    if (-neg_dur >= s.p99_ns) tail.slowest_call_ids.push_back(id);
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

namespace {

// The counters an encoding carries (everything add() sets; percentiles and tails are finish()'s).
using Counter = std::int64_t CallStats::*;
constexpr Counter kCounters[] = {
    &CallStats::calls,        &CallStats::failed,          &CallStats::nested,
    &CallStats::ok_bytes,     &CallStats::total_ns,        &CallStats::max_ns,
    &CallStats::max_call_id,  &CallStats::descheduled,     &CallStats::off_cpu_ns,
    &CallStats::runq_ns,      &CallStats::first_ts_ns,     &CallStats::last_ts_ns,
    &CallStats::top_level_calls, &CallStats::top_level_failed, &CallStats::top_level_ns,
    &CallStats::top_level_off_cpu_ns, &CallStats::top_level_runq_ns};

// LEB128 varints of zigzagged values: small magnitudes of either sign take one byte.
void put(std::string& out, std::int64_t v) {
  auto u = (static_cast<std::uint64_t>(v) << 1) ^ static_cast<std::uint64_t>(v >> 63);
  while (u >= 0x80) {
    out.push_back(static_cast<char>(u | 0x80));
    u >>= 7;
  }
  out.push_back(static_cast<char>(u));
}

class Reader {
 public:
  explicit Reader(std::string_view bytes) : bytes_(bytes) {}
  bool ok() const { return ok_; }
  bool at_end() const { return pos_ == bytes_.size(); }
  std::int64_t get() {
    std::uint64_t u = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (pos_ >= bytes_.size()) break;
      const auto b = static_cast<unsigned char>(bytes_[pos_++]);
      u |= static_cast<std::uint64_t>(b & 0x7f) << shift;
      if (b < 0x80) return static_cast<std::int64_t>(u >> 1) ^ -static_cast<std::int64_t>(u & 1);
    }
    ok_ = false;
    return 0;
  }
  std::string get_string() {
    const auto n = static_cast<std::size_t>(get());
    if (!ok_ || n > bytes_.size() - pos_) {
      ok_ = false;
      return {};
    }
    std::string s(bytes_.substr(pos_, n));
    pos_ += n;
    return s;
  }

 private:
  std::string_view bytes_;
  std::size_t pos_ = 0;
  bool ok_ = true;
};

// Per call: the duration as a step from the previous one (calls in duration order), then a tag.
// Tag bits: kOffCpu: off_cpu_ns and runq_ns follow; kComm: the preemptor's comm follows.
constexpr std::int64_t kSwitched = 1, kOffCpu = 2, kNested = 4, kComm = 8;

}  // namespace

std::string CallStatsBuilder::encode() const {
  std::string out;
  out.reserve(16 * std::size(kCounters) + 3 * timings_.size());
  for (Counter c : kCounters) put(out, sums_.*c);
  put(out, sums_.slowest_descheduled_ns.has_value());
  if (sums_.slowest_descheduled_ns) {
    put(out, *sums_.slowest_descheduled_ns);
    put(out, *sums_.slowest_descheduled_call_id);
  }
  std::vector<std::uint32_t> order(timings_.size());
  std::iota(order.begin(), order.end(), 0u);
  std::sort(order.begin(), order.end(), [&](auto a, auto b) { return timings_[a].dur_ns < timings_[b].dur_ns; });
  std::vector<const std::string*> comm_of(timings_.size(), nullptr);
  for (const auto& [index, comm] : preemptor_comms_) comm_of[index] = &comm;
  put(out, static_cast<std::int64_t>(timings_.size()));
  std::int64_t previous = 0;
  for (std::uint32_t i : order) {
    const Timing& t = timings_[i];
    put(out, t.dur_ns - previous);
    previous = t.dur_ns;
    const bool off = t.off_cpu_ns != 0 || t.runq_ns != 0;
    put(out, (switched_[i] ? kSwitched : 0) | (off ? kOffCpu : 0) | (nested_[i] ? kNested : 0) |
                 (comm_of[i] ? kComm : 0));
    if (off) {
      put(out, t.off_cpu_ns);
      put(out, t.runq_ns);
    }
    if (comm_of[i]) {
      put(out, static_cast<std::int64_t>(comm_of[i]->size()));
      out += *comm_of[i];
    }
  }
  put(out, static_cast<std::int64_t>(slowest_.size()));
  for (const auto& [neg_dur, id] : slowest_) {
    put(out, neg_dur);
    put(out, id);
  }
  put(out, static_cast<std::int64_t>(preemptors_.size()));
  for (const auto& [key, g] : preemptors_) {
    put(out, key.first);
    put(out, static_cast<std::int64_t>(key.second.size()));
    out += key.second;
    put(out, g.calls);
    put(out, g.longest_off_total_ns);
  }
  return out;
}

Status CallStatsBuilder::merge_encoded(std::string_view bytes) {
  Reader in(bytes);
  CallStats counters;
  for (Counter c : kCounters) counters.*c = in.get();
  if (in.get() != 0) {
    counters.slowest_descheduled_ns = in.get();
    counters.slowest_descheduled_call_id = in.get();
  }
  const std::int64_t calls = in.get();
  if (!in.ok() || calls != counters.calls || static_cast<std::size_t>(calls) > bytes.size())
    return Error{"corrupt call stats encoding: its call count"};
  const std::size_t first = timings_.size();  // (no reserve: exact reserves per merge would copy quadratically)
  std::int64_t dur = 0;
  for (std::int64_t i = 0; i < calls && in.ok(); ++i) {
    dur += in.get();
    const std::int64_t tag = in.get();
    Timing t{dur, 0, 0};
    if (tag & kOffCpu) {
      t.off_cpu_ns = in.get();
      t.runq_ns = in.get();
    }
    if (tag & kComm) preemptor_comms_.push_back({timings_.size(), in.get_string()});
    timings_.push_back(t);
    switched_.push_back((tag & kSwitched) != 0);
    nested_.push_back((tag & kNested) != 0);
  }
  std::vector<std::pair<std::int64_t, std::int64_t>> slowest;
  for (std::int64_t n = in.get(); n > 0 && in.ok(); --n) {
    const std::int64_t neg_dur = in.get();
    slowest.push_back({neg_dur, in.get()});
  }
  std::vector<std::pair<std::pair<std::int64_t, std::string>, PreemptorGroup>> preemptors;
  for (std::int64_t n = in.get(); n > 0 && in.ok(); --n) {
    std::int64_t pid = in.get();
    std::string comm = in.get_string();
    PreemptorGroup g;
    g.calls = in.get();
    g.longest_off_total_ns = in.get();
    preemptors.push_back({{pid, std::move(comm)}, g});
  }
  if (!in.ok() || !in.at_end()) {
    timings_.resize(first);
    switched_.resize(first);
    nested_.resize(first);
    std::erase_if(preemptor_comms_, [&](const auto& p) { return p.first >= first; });
    return Error{"corrupt call stats encoding (" + std::to_string(bytes.size()) + " bytes)"};
  }
  merge_counters(counters);
  for (const auto& call : slowest) keep_slowest(call);
  for (auto& [key, g] : preemptors) {
    PreemptorGroup& mine = preemptors_[key];
    mine.calls += g.calls;
    mine.longest_off_total_ns += g.longest_off_total_ns;
  }
  return {};
}

}  // namespace vs::store
