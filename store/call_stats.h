// What the tools report per CUDA API about a set of calls (api_latency,
// offcpu_attribution, trace_overview, compare_sessions), computed in one place:
// the writer builds it per (session, pid, API) when a session ends
// (store/summaries.h), and the tools build it the same way when they scan a
// selection that the summaries do not cover. One definition of every number,
// so a tool answers the same whichever path it took.
//
// Every result is independent of the order the calls come in (a scan through
// an index and a scan in rowid order give the same stats): ties are broken by
// the lowest call id, preemptor groups by (pid, comm).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/result.h"
#include "store/reader.h"

namespace vs::store {

// One call, as read from call_rows (kCallSampleColumns).
struct CallSample {
  std::int64_t id = 0, ts_ns = 0, dur_ns = 0;
  std::int64_t off_cpu_ns = 0, runq_ns = 0, switches = 0;
  std::int64_t ret = 0;
  std::int64_t bytes = 0;  // NULL reads as 0
  bool nested = false;     // parent_id IS NOT NULL: made inside another traced call
  std::optional<std::int64_t> preempted_by;
  std::string preempted_by_comm;
  std::int64_t longest_off_ns = 0;  // NULL reads as 0
};

// The call_rows columns read_call_sample() expects, in order.
inline constexpr const char* kCallSampleColumns =
    "id, ts_ns, dur_ns, off_cpu_ns, runq_ns, switches, ret, bytes, parent_id IS NOT NULL, preempted_by, "
    "preempted_by_comm, longest_off_ns";
inline constexpr int kCallSampleColumnCount = 12;
// The sample in columns [first, first + kCallSampleColumnCount) of `row`.
CallSample read_call_sample(const Row& row, int first);

// A task that held the CPU while descheduled calls were off it (the task that
// ran during each call's longest off-CPU interval), for calls with switches > 0.
struct PreemptorGroup {
  std::int64_t pid = 0;
  std::string comm;  // data from the traced system
  std::int64_t calls = 0;
  std::int64_t longest_off_total_ns = 0;
};
// Most CPU time taken first, then most calls, then pid and comm: one order for any input order.
void rank_preemptors(std::vector<PreemptorGroup>& groups);

// CallStats::Tail. At namespace scope: clang (14) does not see a nested struct
// with default member initializers as default-constructible inside its
// enclosing class, so std::optional<Tail>::emplace() did not compile.
struct CallStatsTail {
  std::int64_t ns = 0, off_cpu_ns = 0, runq_ns = 0;  // their SUM(dur_ns), SUM(off_cpu_ns), SUM(runq_ns)
  std::int64_t nested = 0;                             // made inside another traced call
  // SUM(off_cpu_ns) per preempted_by_comm, over those with a preemptor and a comm.
  std::map<std::string, std::int64_t> off_cpu_ns_by_preemptor;
  std::vector<std::int64_t> slowest_call_ids;  // up to kSlowestTailCalls, longest first, then lowest id
};

struct CallStats {
  std::int64_t calls = 0;
  std::int64_t failed = 0;    // ret != 0
  std::int64_t nested = 0;    // made inside another traced call (cuMemAlloc_v2 inside cudaMalloc)
  std::int64_t ok_bytes = 0;  // SUM(bytes) of the calls with ret = 0 (whether bytes add up depends on the op)
  std::int64_t total_ns = 0;
  std::int64_t max_ns = 0, max_call_id = 0;  // the lowest id among the longest calls
  // Exact nearest-rank percentiles of dur_ns (common/percentiles.h).
  std::int64_t p50_ns = 0, p90_ns = 0, p99_ns = 0, p999_ns = 0;
  // Off-CPU accounting: "descheduled" = switches > 0.
  std::int64_t descheduled = 0, off_cpu_ns = 0, runq_ns = 0;
  std::optional<std::int64_t> p99_switched_ns, p99_unswitched_ns;  // nullopt: no such call
  std::int64_t p99_without_off_cpu_ns = 0;  // p99 of dur_ns - off_cpu_ns
  std::int64_t p99_without_runq_ns = 0;     // p99 of dur_ns - runq_ns
  std::int64_t tail_calls = 0;              // dur_ns >= p99_ns
  std::int64_t tail_descheduled = 0;        // of those, descheduled
  std::optional<std::int64_t> slowest_descheduled_ns, slowest_descheduled_call_id;
  std::int64_t first_ts_ns = 0, last_ts_ns = 0;  // call entries
  // The calls not nested in another traced call: the program's own time, counted once.
  std::int64_t top_level_calls = 0, top_level_failed = 0, top_level_ns = 0, top_level_off_cpu_ns = 0,
               top_level_runq_ns = 0;
  // Every group, most CPU time taken first (then most calls, then pid, comm).
  std::vector<PreemptorGroup> preemptors;

  // The tail: the tail_calls calls with dur_ns >= p99_ns, as findings' preemption rule weighs them.
  using Tail = CallStatsTail;
  std::optional<Tail> tail;  // nullopt: read from summaries built before schema 3
};
inline constexpr std::size_t kSlowestTailCalls = 10;

// Collects calls and computes their CallStats. Memory: 25 bytes per call
// (three 64-bit times and two bits) for the percentiles and the tail, plus one
// group per distinct preemptor and a comm per call with one; finish() needs 8
// more bytes per call while it runs.
class CallStatsBuilder {
 public:
  void add(const CallSample& call);
  // Adds another builder's calls (the summaries' all-process row is the union of the per-process ones).
  void merge(const CallStatsBuilder& other);
  bool empty() const { return timings_.empty(); }
  // The counters, sums and extremes of the calls so far (no percentiles, tails or preemptors: finish()'s).
  const CallStats& counters() const { return sums_; }
  CallStats finish() const;

  // The builder's calls and counters in a few bytes per call (call_bucket_stats.state), and
  // merge() from such bytes: the same result as merging the builder they came from.
  std::string encode() const;
  Status merge_encoded(std::string_view bytes);

 private:
  struct Timing {
    std::int64_t dur_ns, off_cpu_ns, runq_ns;
  };
  std::vector<Timing> timings_;
  std::vector<bool> switched_, nested_;
  // For the tail: the calls with a preemptor's comm (index in timings_), and the kSlowestTailCalls
  // longest calls as (-dur_ns, id), ascending.
  std::vector<std::pair<std::size_t, std::string>> preemptor_comms_;
  std::vector<std::pair<std::int64_t, std::int64_t>> slowest_;
  CallStats sums_;  // the counters, sums and extremes; percentiles and preemptors are left to finish()
  std::map<std::pair<std::int64_t, std::string>, PreemptorGroup> preemptors_;

  void merge_counters(const CallStats& other);
  void keep_slowest(std::pair<std::int64_t, std::int64_t> call);
};

}  // namespace vs::store
