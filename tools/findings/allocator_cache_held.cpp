// allocator_cache_held: per process, the framework allocator's memory still
// held at the end with no release after its last allocation: its cache (and
// the live tensors in it), which empty_cache() would return in part. When it
// did release after its last allocation, what stayed holds live tensors:
// held_after_empty_cache says so instead.
#include <algorithm>
#include <map>

#include "tools/findings/framework_memory.h"
#include "tools/findings/registry.h"

namespace vs::tools::findings {
namespace {

// Less is a few segments of the allocator's working set: not worth a user's attention.
constexpr std::int64_t kHeldMinBytes = 64 * kMiB;

constexpr KindSeverity kAllocatorCacheHeldKind{
    "allocator_cache_held", Severity::Low,
    "other processes cannot use the held memory, but it stops growing and the allocator can give its cached part "
    "back (empty_cache())"};
constexpr KindSeverity kKinds[] = {kAllocatorCacheHeldKind};

void allocator_cache_held(Ctx& c, std::vector<Finding>& out, std::vector<std::string>& notes) {
  if (c.framework_callers.empty()) {
    notes.push_back("no framework allocator (PyTorch, XLA/JAX, TensorFlow, CuPy, RMM) made calls");
    return;
  }
  for (const FrameworkMemory& m : framework_memory(c)) {
    const std::int64_t pid = m.pid;
    const FrameworkAllocator& fw = *m.allocator;
    const std::string name(fw.name);
    const std::int64_t held = m.held_bytes();
    if (m.released_after_last_alloc()) {
      notes.push_back(c.who(pid) + ": " + name + " released " + fmt_bytes(m.released_bytes_after_last_alloc) +
                      " after its last allocation (what stayed is held_after_empty_cache's)");
      continue;
    }
    const bool preallocated = std::any_of(c.earlier.begin(), c.earlier.end(), [&](const Finding& f) {
      return f.kind == "preallocated_pool" && f.pid == pid && m.holds(*m.first);
    });
    if (preallocated) {
      notes.push_back(c.who(pid) + ": " + name + " held " + fmt_bytes(held) + " at the end, its preallocated pool "
                      "included (preallocated_pool's)");
      continue;
    }
    if (held < kHeldMinBytes) {
      notes.push_back(c.who(pid) + ": " + name + " held " + fmt_bytes(held) + " at the end");
      continue;
    }
    const Process& p = c.processes[pid];
    const std::int64_t end = p.end_ns > 0 ? p.end_ns : c.session.end_ns;
    Finding f(kAllocatorCacheHeldKind);
    f.pid = pid;
    f.size = static_cast<double>(held);
    const std::string until = p.exited ? "until the process exited at " + c.t(end) + " (released at exit)"
                                       : "until the end of the trace, still held";
    f.title = c.who(pid) + ": " + name + " kept " + fmt_bytes(held) + " with no release after its last allocation";
    f.summary = name + " held " + fmt_bytes(held) + " in " + std::to_string(m.held.size()) +
                " segments from its last allocation at " + c.t(m.last_alloc_ns) + " " + until +
                ", and released nothing after that allocation. " +
                (m.frees > 0 ? "Earlier it did return memory: " + std::to_string(m.frees) + " frees of " +
                                   fmt_bytes(m.freed_bytes) + ". "
                             : "It never returned memory with a free call. ") +
                "This is its cache together with the live " + std::string(fw.objects) +
                " in it: the trace cannot split the two here, because nothing emptied the cache after the last "
                "allocation. To return the cached part: " + std::string(fw.release) + "; the part in use: " +
                std::string(fw.live) + "; nvidia-smi counts both. Settings: " + std::string(fw.settings) + ".";
    f.rule = ">= " + fmt_bytes(kHeldMinBytes) + " of the framework allocator's GPU memory (device, VMM physical, "
             "managed) held to the process's exit or the trace's end, with no free by the allocator after its last "
             "allocation";
    f.numbers = {{"held_bytes", held},
                 {"held_segments", m.held.size()},
                 {"last_alloc_t_ms", c.session.t_ms(m.last_alloc_ns)},
                 {"held_until_t_ms", c.session.t_ms(end)},
                 {"frees", m.frees},
                 {"freed_bytes", m.freed_bytes}};
    f.allocation_ids = c.largest_allocations([&](const auto& a) { return m.holds(a); });
    c.drill(f, "outstanding_allocations", held_at_end(c, pid), "the held segments, by size and age");
    c.drill(f, "allocation_timeline", {{"pid", pid}}, "when the allocator grew and gave memory back");
    out.push_back(std::move(f));
  }
}

}  // namespace

constexpr Rule kAllocatorCacheHeldRule{"allocator_cache_held", kKinds, allocator_cache_held};

}  // namespace vs::tools::findings
