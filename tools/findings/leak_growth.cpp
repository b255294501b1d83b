// leak_growth: per process, outstanding GPU memory that kept reaching new highs
// through the end of the process's activity and was not given back.
#include <algorithm>
#include <cmath>

#include "tools/findings/registry.h"

namespace vs::tools::findings {
namespace {

// Equal time slices of a process's activity: enough to tell growth spread over the run from one step up.
constexpr int kLeakSlices = 20;
// A quarter of the slices: growth that recurs through the run, not a warm-up step or two.
constexpr int kLeakMinGrowingSlices = 5;
// The last quarter of the slices: growth that goes on to the end of the activity, not one that stopped.
constexpr int kLeakLateSlice = kLeakSlices * 3 / 4;
// A new high counts when it exceeds the last by more than this: less than one 2 MiB segment of PyTorch's
// small pool, so that no new segment is missed and no rounding counts.
constexpr std::int64_t kLeakNewHighBytes = kMiB;
// Growth over the second half, above the few large segments (20 MiB and up) a caching allocator adds as a
// workload settles.
constexpr std::int64_t kLeakMinGrowthBytes = 64 * kMiB;
// The end within 10% of the high: the memory was not given back.
constexpr std::int64_t kLeakMinEndPctOfHigh = 90;

constexpr KindSeverity kLeakGrowthKind{
    "leak_growth", Severity::High,
    "a live process whose memory keeps growing runs out of GPU memory in the end: the workload fails, or starves "
    "the others on the GPU"};
constexpr KindSeverity kKinds[] = {kLeakGrowthKind};

// Per process: when outstanding GPU memory last grew, was it still growing
// at the end of the process's activity, and was it given back?
void leak_growth(Ctx& c, std::vector<Finding>& out, std::vector<std::string>& notes) {
  std::map<std::int64_t, std::vector<const Ctx::Allocation*>> by_pid;
  for (const Ctx::Allocation& a : c.allocations())
    if (a.gpu) by_pid[a.pid].push_back(&a);
  for (const auto& [pid, allocations] : by_pid) {
    std::int64_t first = allocations.front()->alloc_ts;
    for (const Ctx::Allocation* a : allocations) first = std::min(first, a->alloc_ts);
    std::int64_t last = c.value(
        "SELECT ts_ns FROM call_rows WHERE pid = ? AND ts_ns <= ? AND session_id = ? ORDER BY ts_ns DESC LIMIT 1",
        {pid, c.session.end_ns, c.session.id});
    std::int64_t span = last - first + 1;
    if (span <= 1) continue;
    std::vector<std::int64_t> level(kLeakSlices, 0);
    auto slice = [&](std::int64_t ts) {
      return static_cast<std::size_t>(std::min<std::int64_t>(kLeakSlices - 1, (ts - first) * kLeakSlices / span));
    };
    for (const Ctx::Allocation* a : allocations) {
      if (a->alloc_ts <= last) level[slice(a->alloc_ts)] += a->bytes;
      const bool released = a->end_reason == "freed" || a->end_reason == "superseded";
      if (released && a->free_ts && *a->free_ts <= last) level[slice(*a->free_ts)] -= a->bytes;
    }
    std::int64_t high = 0;
    int growing = 0, growing_late = 0, last_growing = -1;
    for (int i = 0; i < kLeakSlices; ++i) {
      if (i > 0) level[i] += level[i - 1];
      if (level[i] > high + kLeakNewHighBytes) {
        ++growing;
        if (i >= kLeakLateSlice) ++growing_late;
        last_growing = i;
      }
      high = std::max(high, level[i]);
    }
    const std::int64_t mid = level[kLeakSlices / 2 - 1], end = level[kLeakSlices - 1];
    const bool fired = growing >= kLeakMinGrowingSlices && growing_late >= 1 && end - mid >= kLeakMinGrowthBytes &&
                       end * 100 >= high * kLeakMinEndPctOfHigh;
    if (!fired) {
      notes.push_back(c.who(pid) + ": new high in " + std::to_string(growing) + " of " + std::to_string(kLeakSlices) +
                      " slices (" + std::to_string(growing_late) + " in the last quarter), " +
                      fmt_bytes(end - mid) + " over the second half, " + fmt_bytes(end) + " of a " +
                      fmt_bytes(high) + " high at the end");
      continue;
    }
    const std::int64_t mid_ns = first + span / 2;
    const std::string held = " FROM allocations WHERE session_id = ? AND pid = ? AND " + std::string(kGpuKindsSql) +
                             " AND alloc_ts_ns >= ? AND (free_ts_ns IS NULL OR free_ts_ns > ?)";
    const std::vector<store::SqlValue> held_params{c.session.id, pid, mid_ns, last};
    std::int64_t held_count = 0, held_bytes = 0, released_at_exit = 0;
    c.query("SELECT COUNT(*), COALESCE(SUM(bytes), 0), COALESCE(SUM(end_reason = 'process_exit'), 0)" + held,
            held_params, [&](const store::Row& r) {
              held_count = r.i64(0);
              held_bytes = r.i64(1);
              released_at_exit = r.i64(2);
            });
    std::string sizes;
    c.query("SELECT bytes, COUNT(*)" + held + " GROUP BY bytes ORDER BY COUNT(*) DESC, bytes DESC LIMIT 3", held_params,
            [&](const store::Row& r) {
              sizes += (sizes.empty() ? "" : ", ") + fmt_bytes(r.i64(0)) + " x " + std::to_string(r.i64(1));
            });
    Finding f(kLeakGrowthKind);
    f.pid = pid;
    f.size = static_cast<double>(end - mid);
    const double seconds = static_cast<double>(last - mid_ns) / 1e9;
    const Process& p = c.processes[pid];
    f.title = c.who(pid) + ": outstanding GPU memory grew by " + fmt_bytes(end - mid) +
              " in the second half of its activity and was not given back";
    f.summary = "Outstanding GPU memory of " + c.who(pid) + " went from " + fmt_bytes(mid) + " at " + c.t(mid_ns) +
                " to " + fmt_bytes(end) + " at " + c.t(last) + " (+" + fmt_bytes(end - mid) + ", " +
                fmt_bytes(static_cast<std::int64_t>(static_cast<double>(end - mid) / std::max(seconds, 1e-9))) +
                "/s); it reached a new high in " + std::to_string(growing) + " of " + std::to_string(kLeakSlices) +
                " equal slices of the process's activity (" + c.t(first) + " to " + c.t(last) +
                "), the last in slice " + std::to_string(last_growing + 1) + ". " + std::to_string(held_count) +
                " allocations made in the second half (" + fmt_bytes(held_bytes) + "; most common sizes: " + sizes +
                ") were still held at its last call" +
                (released_at_exit > 0 ? "; they were released only when the process exited at " + c.t(p.end_ns) + "."
                                      : p.exited ? "." : "; the process was still running when the trace ended.");
    f.rule = "outstanding GPU memory (device, async, managed, VMM physical) of one process reached a new high (by > " +
             std::to_string(kLeakNewHighBytes / kMiB) + " MiB) in >= " + std::to_string(kLeakMinGrowingSlices) + " of " + std::to_string(kLeakSlices) +
             " equal slices of its activity (first allocation to last call), at least once in the last quarter, "
             "rose >= " + fmt_bytes(kLeakMinGrowthBytes) + " over the second half, and ended >= " +
             std::to_string(kLeakMinEndPctOfHigh) + "% of its high";
    f.numbers = {{"growth_bytes", end - mid},       {"start_outstanding_bytes", mid},
                 {"end_outstanding_bytes", end},    {"high_bytes", high},
                 {"growing_slices", growing},        {"slices", kLeakSlices},
                 {"growth_start_t_ms", c.session.t_ms(mid_ns)}, {"last_call_t_ms", c.session.t_ms(last)},
                 {"growth_rate_bytes_per_s", std::llround(static_cast<double>(end - mid) / std::max(seconds, 1e-9))},
                 {"held_allocations", held_count},   {"held_bytes", held_bytes}};
    f.allocation_ids = c.ids("SELECT id" + held + " ORDER BY bytes DESC, id LIMIT " + std::to_string(kMaxIds), held_params);
    c.drill(f, "leak_candidates", {{"pid", pid}}, "growth slope and fit, and the allocation patterns responsible");
    c.drill(f, "allocation_timeline", {{"pid", pid}}, "the outstanding-bytes curve over time, with NVML's view");
    c.drill(f, "outstanding_allocations", held_at_end(c, pid), "what was held at the end, by size and calling library");
    out.push_back(std::move(f));
  }
}

}  // namespace

constexpr Rule kLeakGrowthRule{"leak_growth", kKinds, leak_growth};

}  // namespace vs::tools::findings
