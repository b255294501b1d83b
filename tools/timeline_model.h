// Outstanding bytes as exact functions of time, shared by the memory tools
// (allocation_timeline, leak_candidates, outstanding_allocations,
// trace_overview). An allocation is held on [alloc_ts_ns, free_ts_ns): the
// value at an instant t is the sum of bytes with alloc_ts_ns <= t and
// (free_ts_ns IS NULL OR free_ts_ns > t), the definition the example-trace
// tests compare with torch.cuda.memory_stats(). Nothing is sampled: the step
// functions change exactly where allocations begin and end.
#pragma once

#include <array>
#include <cstdint>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/cuda_api.h"
#include "tools/common.h"

namespace vs::tools {

// allocations.kind names, in the order results list them (common/cuda_api.h: vs::kAllocKinds).
inline constexpr auto kAllocKinds = [] {
  std::array<std::string_view, std::size(vs::kAllocKinds)> names{};
  for (std::size_t i = 0; i < names.size(); ++i) names[i] = alloc_kind_name(vs::kAllocKinds[i]);
  return names;
}();
// Whether an allocations.kind occupies GPU memory: common/cuda_api.h's one definition, by name.
bool occupies_gpu_memory(std::string_view kind);
// How results rank kinds: 0 GPU memory, 1 pinned host memory, 2 address space.
int kind_group(std::string_view kind);

// Milliseconds rounded to the microsecond, for results.
double round_ms(double ms);

constexpr std::int64_t kNever = std::numeric_limits<std::int64_t>::max();

// One allocations row, as the time analyses need it.
struct Lifetime {
  std::int64_t id = 0;
  std::int64_t pid = 0;
  std::optional<std::int64_t> device;
  std::string kind;
  std::int64_t bytes = 0;
  std::int64_t alloc_call_id = 0;
  std::optional<std::int64_t> free_call_id;
  std::int64_t alloc_ns = 0;
  std::int64_t free_ns = kNever;  // kNever: still held when the trace ends
  bool released_at_exit = false;  // end_reason = 'process_exit': never freed by a call
  std::optional<std::int64_t> caller_id;
  // The process's activity numbers (call_rows.seq) of the calls that made and ended it; 0 / kNever: none
  // (tools/growth_model.h: ActivityIndex fills them for traces that do not store them).
  std::int64_t alloc_seq = 0;
  std::int64_t free_seq = kNever;
};

struct LifetimeFilter {
  std::int64_t from_ns = 0;  // allocations held at some instant of [from_ns, to_ns]
  std::int64_t to_ns = 0;
  std::optional<std::int64_t> pid;
  std::optional<std::vector<std::int64_t>> caller_ids;  // only these callers (objects.id)
};

// The allocations of `session` held at some instant of the window. One pass
// over allocations (O(allocations), or O(allocations of pid) through the
// allocations(pid, alloc_ts_ns) index when a pid is given).
Result<std::vector<Lifetime>> load_lifetimes(const store::TraceReader& db, const Session& session,
                                             const LifetimeFilter& filter, const Progress& progress);

// A piecewise-constant function of time on [from_ns, to_ns]: `initial` from
// from_ns on, then each step's value from its ts_ns on.
struct StepFunction {
  std::int64_t from_ns = 0;
  std::int64_t to_ns = 0;
  std::int64_t initial = 0;
  std::vector<std::pair<std::int64_t, std::int64_t>> steps;  // (ts_ns, value from then on), ts ascending

  // The value at instant ts (a change at exactly ts counts).
  std::int64_t at(std::int64_t ts_ns) const;
  // The largest value held at any instant of (after_ns, until_ns], and when it was first reached.
  std::pair<std::int64_t, std::int64_t> max_over(std::int64_t after_ns, std::int64_t until_ns) const;
  // The first change after from_ns, if any.
  std::optional<std::int64_t> first_change_ns() const;
};

// One step function per series: series_of[i] says which series lifetimes[i]
// counts in (-1: none). Changes outside (from_ns, to_ns] are folded into the
// initial value or dropped.
std::vector<StepFunction> step_functions(const std::vector<Lifetime>& lifetimes, const std::vector<int>& series_of,
                                         int series_count, std::int64_t from_ns, std::int64_t to_ns);

// Least squares line through a step function over [t0_ns, t1_ns), weighting
// every instant equally (integrals over the constant pieces, exact): bytes
// per second and R² (0 when the function is constant there).
struct LinearFit {
  double slope_bytes_per_s = 0;
  double r2 = 0;
};
LinearFit fit_line(const StepFunction& f, std::int64_t t0_ns, std::int64_t t1_ns);

// objects.id -> short library name ("libc10_cuda.so"), cleaned for output.
Result<std::map<std::int64_t, std::string>> caller_names(const store::TraceReader& db);
// The objects whose path contains `pattern` (the `caller` argument); an Error
// lists the libraries that did allocate in the session.
Result<std::vector<std::int64_t>> callers_matching(const store::TraceReader& db, const Session& session,
                                                   const std::string& pattern);
// An Error naming the session's pids when `pid` is not one of its processes.
Status require_pid(const store::TraceReader& db, const Session& session, std::int64_t pid);
// processes.exit_ts_ns per pid (absent: alive at the end); first_ts_ns per pid.
struct ProcessSpan {
  std::int64_t first_ns = 0;
  std::optional<std::int64_t> exit_ns;
};
Result<std::map<std::int64_t, ProcessSpan>> process_spans(const store::TraceReader& db, const Session& session);

}  // namespace vs::tools
