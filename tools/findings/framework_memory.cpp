#include "tools/findings/framework_memory.h"

#include <algorithm>
#include <functional>

namespace vs::tools::findings {

std::int64_t FrameworkMemory::held_bytes() const {
  std::int64_t bytes = 0;
  for (const Ctx::Allocation* a : held) bytes += a->bytes;
  return bytes;
}

bool FrameworkMemory::holds(const Ctx::Allocation& a) const {
  return std::binary_search(held.begin(), held.end(), &a, std::less<const Ctx::Allocation*>());
}

std::vector<FrameworkMemory> framework_memory(Ctx& c) {
  using Key = std::pair<std::int64_t, const FrameworkAllocator*>;  // (pid, allocator)
  std::map<Key, FrameworkMemory> by_key;
  std::vector<const Ctx::Allocation*> mine;
  for (const Ctx::Allocation& a : c.allocations())
    if (a.gpu && a.kind != "async" && c.framework_callers.count(a.caller_id)) mine.push_back(&a);
  for (const Ctx::Allocation* a : mine) {
    const FrameworkAllocator* allocator = c.framework_callers.at(a->caller_id);
    auto [it, inserted] = by_key.try_emplace({a->pid, allocator});
    FrameworkMemory& m = it->second;
    if (inserted) {
      m.pid = a->pid;
      m.allocator = allocator;
      m.caller = a->caller_id;
    }
    m.caller = std::min(m.caller, a->caller_id);
    m.last_alloc_ns = std::max(m.last_alloc_ns, a->alloc_ts);
    if (!m.first || a->alloc_ts < m.first->alloc_ts || (a->alloc_ts == m.first->alloc_ts && a->id < m.first->id))
      m.first = a;
    if (a->end_reason == "freed") {
      ++m.frees;
      m.freed_bytes += a->bytes;
      m.last_release_ns = std::max(m.last_release_ns, a->free_ts.value_or(0));
    } else if (a->end_reason.empty() || a->end_reason == "process_exit") {
      m.held.push_back(a);
    }
  }
  // Failed allocations (out of memory) by the allocator.
  for (const Ctx::OutOfMemory& f : c.out_of_memory_failures()) {
    auto allocator = c.framework_callers.find(f.caller_id);
    if (allocator == c.framework_callers.end()) continue;
    auto it = by_key.find({f.pid, allocator->second});
    if (it != by_key.end()) it->second.last_failed_alloc_ns = std::max(it->second.last_failed_alloc_ns, f.ts_ns);
  }
  for (const Ctx::Allocation* a : mine) {
    FrameworkMemory& m = by_key[{a->pid, c.framework_callers.at(a->caller_id)}];
    if (a->end_reason == "freed" && a->free_ts && *a->free_ts > m.last_alloc_ns) {
      ++m.releases_after_last_alloc;
      m.released_bytes_after_last_alloc += a->bytes;
    }
  }
  std::vector<FrameworkMemory> out;
  for (auto& [key, m] : by_key) out.push_back(std::move(m));
  return out;
}

}  // namespace vs::tools::findings
