// What a framework's caching allocator (tools/findings/frameworks.h) did with
// the GPU memory it caches, per process and allocator (one process may use
// two, e.g. PyTorch and CuPy): when it last allocated, whether it
// released memory after that (empty_cache() or an out-of-memory retry returns
// every segment with no live block in it), and what it still held at the end.
// allocator_cache_held and held_after_empty_cache tell the two cases apart
// with it. Only the order of events matters here, never the time between them.
#pragma once

#include <cstdint>
#include <map>
#include <vector>

#include "tools/findings/rule.h"

namespace vs::tools::findings {

struct FrameworkMemory {
  std::int64_t pid = 0;
  const FrameworkAllocator* allocator = nullptr;
  std::int64_t caller = 0;  // the allocator's library (objects.id; the lowest if several)
  const Ctx::Allocation* first = nullptr;  // its first allocation in the process
  std::int64_t last_alloc_ns = 0;
  std::int64_t last_release_ns = 0;  // the last free by a call; 0: none
  std::int64_t releases_after_last_alloc = 0, released_bytes_after_last_alloc = 0;
  std::int64_t frees = 0, freed_bytes = 0;  // every free by a call
  std::int64_t last_failed_alloc_ns = 0;     // the last allocation by the allocator that failed out of memory
  // Never freed by a call: held at the end (or released at exit). In the order of Ctx::allocations(), so
  // ascending addresses: holds() is a binary search.
  std::vector<const Ctx::Allocation*> held;
  std::int64_t held_bytes() const;
  bool holds(const Ctx::Allocation& a) const;
  // Released after its last allocation: what stayed is what had live blocks when the cache was emptied.
  bool released_after_last_alloc() const { return releases_after_last_alloc > 0; }
  // An allocation failed after the last that succeeded: the releases after it were the allocator's own retry
  // (it frees its cache and tries again), not the program's empty_cache(), and what stayed was still in use.
  bool released_for_oom_retry() const { return released_after_last_alloc() && last_failed_alloc_ns > last_alloc_ns; }
};

// Per process and framework allocator, its cacheable memory (device, VMM physical and managed: the
// cudaMallocAsync backend's pool is the driver's, and its outstanding allocations are live tensors).
// Ordered by pid, then the allocator's place in framework_allocators().
std::vector<FrameworkMemory> framework_memory(Ctx& c);

}  // namespace vs::tools::findings
