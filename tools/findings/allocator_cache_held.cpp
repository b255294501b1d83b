// allocator_cache_held: per process, the framework allocator's memory held long
// after its last allocation or free.
#include <algorithm>
#include <map>

#include "tools/findings/registry.h"

namespace vs::tools::findings {
namespace {

// Less is a few segments of the allocator's working set: not worth a user's attention.
constexpr std::int64_t kHeldMinBytes = 64 * kMiB;
// Longer than the pause between the steps or requests of an active loop: the allocator was idle, not between calls.
constexpr std::int64_t kHeldMinIdleNs = 500'000'000;

constexpr KindSeverity kAllocatorCacheHeldKind{
    "allocator_cache_held", Severity::Low,
    "other processes cannot use the held memory, but it stops growing and the allocator can give it back "
    "(empty_cache())"};
constexpr KindSeverity kKinds[] = {kAllocatorCacheHeldKind};

// Per process: memory of the framework's allocator still held long after its last allocation or free.
void allocator_cache_held(Ctx& c, std::vector<Finding>& out, std::vector<std::string>& notes) {
  if (c.framework_callers.empty()) {
    notes.push_back("no framework allocator (e.g. PyTorch's libc10_cuda) made calls");
    return;
  }
  struct Row {
    std::int64_t pid, caller, last_alloc, frees, freed_bytes, last_free, held, held_count;
  };
  std::map<std::int64_t, Row> by_pid;
  for (const Ctx::Allocation& a : c.allocations()) {
    if (!a.gpu || !c.framework_callers.count(a.caller_id)) continue;
    auto [it, inserted] = by_pid.try_emplace(a.pid, Row{a.pid, a.caller_id, a.alloc_ts, 0, 0, 0, 0, 0});
    Row& r = it->second;
    r.caller = std::min(r.caller, a.caller_id);
    r.last_alloc = std::max(r.last_alloc, a.alloc_ts);
    if (a.end_reason == "freed") {
      ++r.frees;
      r.freed_bytes += a.bytes;
      r.last_free = std::max(r.last_free, a.free_ts.value_or(0));
    } else if (a.end_reason.empty() || a.end_reason == "process_exit") {
      r.held += a.bytes;
      ++r.held_count;
    }
  }
  std::vector<Row> rows;
  for (const auto& [pid, r] : by_pid) rows.push_back(r);
  for (const Row& r : rows) {
    const Process& p = c.processes[r.pid];
    const std::int64_t end = p.end_ns > 0 ? p.end_ns : c.session.end_ns;
    const std::int64_t last_call = std::max(r.last_alloc, r.last_free);
    const std::int64_t idle = end - last_call;
    const std::string name = framework_name(c.callers[r.caller]);
    if (r.held < kHeldMinBytes || idle < kHeldMinIdleNs) {
      notes.push_back(c.who(r.pid) + ": " + name + " held " + fmt_bytes(r.held) + " for " + fmt_ns(idle) +
                      " after its last call");
      continue;
    }
    Finding f(kAllocatorCacheHeldKind);
    f.pid = r.pid;
    f.size = static_cast<double>(r.held);
    const std::string until = p.exited ? "until the process exited at " + c.t(end) + " (released at exit)"
                                       : "until the end of the trace, still held";
    f.title = c.who(r.pid) + ": " + name + " kept " + fmt_bytes(r.held) + " for " + fmt_ns(idle) + " after its last " +
              (r.last_free > r.last_alloc ? "free" : "allocation");
    f.summary = name + " held " + fmt_bytes(r.held) + " in " + std::to_string(r.held_count) + " segments from its last " +
                (r.last_free > r.last_alloc ? "free" : "allocation") + " at " + c.t(last_call) + " " + until + ". " +
                (r.frees > 0 ? "Earlier it did return memory: " + std::to_string(r.frees) + " frees of " +
                                   fmt_bytes(r.freed_bytes) + " (empty_cache() or an out-of-memory retry frees cached "
                                   "segments). "
                             : "It never returned memory with a free call. ") +
                "Whether these segments still held live tensors or only cache is not observable in the trace "
                "(torch.cuda.memory_allocated() tells); nvidia-smi counts them either way.";
    f.rule = ">= " + fmt_bytes(kHeldMinBytes) + " of the framework allocator's GPU memory held >= " +
             fmt_ns(kHeldMinIdleNs) + " after its last allocation or free, to the process's exit or the trace's end";
    f.numbers = {{"held_bytes", r.held},          {"held_segments", r.held_count},
                 {"idle_ns", idle},               {"last_call_t_ms", c.session.t_ms(last_call)},
                 {"frees", r.frees},              {"freed_bytes", r.freed_bytes}};
    f.allocation_ids = c.largest_allocations([&](const auto& a) {
      return a.gpu && a.pid == r.pid && c.framework_callers.count(a.caller_id) &&
             (a.end_reason.empty() || a.end_reason == "process_exit");
    });
    c.drill(f, "outstanding_allocations", held_at_end(c, r.pid), "the held segments, by size and age");
    c.drill(f, "allocation_timeline", {{"pid", r.pid}}, "when the allocator grew and gave memory back");
    out.push_back(std::move(f));
  }
}

}  // namespace

constexpr Rule kAllocatorCacheHeldRule{"allocator_cache_held", kKinds, allocator_cache_held};

}  // namespace vs::tools::findings
