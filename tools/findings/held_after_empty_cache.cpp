// held_after_empty_cache: per process, the framework allocator released its
// cache after its last allocation (empty_cache(), or an out-of-memory retry:
// both return every segment with no live block in it) and memory stayed held
// after it: those segments hold live tensors, a reference that was not dropped.
// The seeds' "VRAM not released after inference" case.
#include <algorithm>

#include "tools/findings/framework_memory.h"
#include "tools/findings/registry.h"

namespace vs::tools::findings {
namespace {

// PyTorch keeps its own cuBLAS/cuBLASLt workspaces live by design: after a clean release 34-128 MiB of
// segments stay (examples/corpus released_clean_*, examples/traces empty_cache); twice that is something else.
constexpr std::int64_t kLiveMinBytes = 256 * kMiB;

constexpr KindSeverity kHeldAfterEmptyCacheKind{
    "held_after_empty_cache", Severity::Medium,
    "memory the user believes released stays taken for as long as the process lives, because something still "
    "references the tensors; it does not grow by itself"};
constexpr KindSeverity kKinds[] = {kHeldAfterEmptyCacheKind};

// "tensor" for "tensors".
std::string objects_one(const FrameworkAllocator& fw) {
  std::string s(fw.objects);
  if (!s.empty() && s.back() == 's') s.pop_back();
  return s;
}

void held_after_empty_cache(Ctx& c, std::vector<Finding>& out, std::vector<std::string>& notes) {
  if (c.framework_callers.empty()) return;  // allocator_cache_held notes it
  for (const FrameworkMemory& m : framework_memory(c)) {
    const std::int64_t pid = m.pid;
    const FrameworkAllocator& fw = *m.allocator;
    const std::string name(fw.name);
    if (!m.released_after_last_alloc()) {
      notes.push_back(c.who(pid) + ": " + name + " released nothing after its last allocation");
      continue;
    }
    const std::int64_t held = m.held_bytes();
    if (m.released_for_oom_retry()) {
      notes.push_back(c.who(pid) + ": " + name + " released " + fmt_bytes(m.released_bytes_after_last_alloc) +
                      " after an allocation failed at " + c.t(m.last_failed_alloc_ns) +
                      " (its out-of-memory retry, not the program's release); the " + fmt_bytes(held) + " that stayed was in use");
      continue;
    }
    if (held < kLiveMinBytes) {
      notes.push_back(c.who(pid) + ": " + fmt_bytes(held) + " stayed after " + name + " released " +
                      fmt_bytes(m.released_bytes_after_last_alloc) + " at " + c.t(m.last_release_ns));
      continue;
    }
    std::int64_t first_alloc = INT64_MAX, last_alloc = 0;
    for (const Ctx::Allocation* a : m.held) {
      first_alloc = std::min(first_alloc, a->alloc_ts);
      last_alloc = std::max(last_alloc, a->alloc_ts);
    }
    const Process& p = c.processes[pid];
    const std::int64_t end = p.end_ns > 0 ? p.end_ns : c.session.end_ns;
    Finding f(kHeldAfterEmptyCacheKind);
    f.pid = pid;
    f.size = static_cast<double>(held);
    f.title = c.who(pid) + ": " + fmt_bytes(held) + " stayed held after " + name +
              " released its cache: live " + std::string(fw.objects) + ", still referenced";
    f.summary = "After its last allocation, " + name + " returned " +
                std::to_string(m.releases_after_last_alloc) + " segments (" +
                fmt_bytes(m.released_bytes_after_last_alloc) + "), the last at " + c.t(m.last_release_ns) +
                ": releasing the cache (the program's release, or an out-of-memory retry) returns every segment "
                "with no live " + objects_one(fw) + " in it. " + std::to_string(m.held.size()) + " segments (" +
                fmt_bytes(held) + ") stayed " +
                (p.exited ? "until the process exited at " + c.t(end) : "until the end of the trace") + ": they held live " +
                std::string(fw.objects) + ", so something still references them (a list of outputs or parameters, "
                "an optimizer and its state, a hook, a notebook variable). They were allocated from " +
                c.t(first_alloc) + " to " + c.t(last_alloc) + ". This is not the allocator's cache, and releasing "
                "the cache (" + std::string(fw.release) + ") cannot return it: drop the reference. The part in use: " +
                std::string(fw.live) + ".";
    f.rule = "the framework allocator's GPU memory (device, VMM physical, managed) freed by it after its last "
             "allocation, not after a failed one (its own out-of-memory retry), and >= " + fmt_bytes(kLiveMinBytes) +
             " of it still held after that, to the process's exit or the trace's end";
    f.numbers = {{"held_bytes", held},
                 {"held_segments", m.held.size()},
                 {"released_segments", m.releases_after_last_alloc},
                 {"released_bytes", m.released_bytes_after_last_alloc},
                 {"last_release_t_ms", c.session.t_ms(m.last_release_ns)},
                 {"last_alloc_t_ms", c.session.t_ms(m.last_alloc_ns)},
                 {"held_first_alloc_t_ms", c.session.t_ms(first_alloc)},
                 {"held_last_alloc_t_ms", c.session.t_ms(last_alloc)}};
    f.allocation_ids = c.largest_allocations([&](const auto& a) { return m.holds(a); });
    c.drill(f, "outstanding_allocations", held_at_end(c, pid), "the segments still held, by size and calling library");
    c.drill(f, "allocation_timeline", {{"pid", pid}}, "the release and what stayed, over time");
    out.push_back(std::move(f));
  }
}

}  // namespace

constexpr Rule kHeldAfterEmptyCacheRule{"held_after_empty_cache", kKinds, held_after_empty_cache};

}  // namespace vs::tools::findings
