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

std::map<std::int64_t, FrameworkMemory> framework_memory(Ctx& c) {
  std::map<std::int64_t, FrameworkMemory> by_pid;
  std::vector<const Ctx::Allocation*> mine;
  for (const Ctx::Allocation& a : c.allocations())
    if (a.gpu && a.kind != "async" && c.framework_callers.count(a.caller_id)) mine.push_back(&a);
  for (const Ctx::Allocation* a : mine) {
    auto [it, inserted] = by_pid.try_emplace(a->pid);
    FrameworkMemory& m = it->second;
    if (inserted) {
      m.pid = a->pid;
      m.caller = a->caller_id;
    }
    m.caller = std::min(m.caller, a->caller_id);
    m.last_alloc_ns = std::max(m.last_alloc_ns, a->alloc_ts);
    if (a->end_reason == "freed") {
      ++m.frees;
      m.freed_bytes += a->bytes;
      m.last_release_ns = std::max(m.last_release_ns, a->free_ts.value_or(0));
    } else if (a->end_reason.empty() || a->end_reason == "process_exit") {
      m.held.push_back(a);
    }
  }
  // Failed allocations (out of memory) by the allocator, through the APIs whose top-level calls failed.
  std::string failing;
  for (const auto& [api_id, s] : c.call_stats()) {
    const std::string& op = c.apis[api_id].op;
    if (s.top_level_failed > 0 && (op == "alloc" || op == "vmm_create"))
      failing += (failing.empty() ? "" : ",") + std::to_string(api_id);
  }
  if (!failing.empty() && !c.framework_callers.empty()) {
    std::string callers;
    for (auto id : c.framework_callers) callers += (callers.empty() ? "" : ",") + std::to_string(id);
    c.query("SELECT pid, MAX(ts_ns) FROM call_rows WHERE " + c.scope_of_apis() + " AND api_id IN (" + failing +
                ") AND ret = 2 AND parent_id IS NULL AND caller_id IN (" + callers + ") GROUP BY pid",
            c.params(), [&](const store::Row& r) {
              if (auto it = by_pid.find(r.i64(0)); it != by_pid.end()) it->second.last_failed_alloc_ns = r.i64(1);
            });
  }
  for (const Ctx::Allocation* a : mine) {
    FrameworkMemory& m = by_pid[a->pid];
    if (a->end_reason == "freed" && a->free_ts && *a->free_ts > m.last_alloc_ns) {
      ++m.releases_after_last_alloc;
      m.released_bytes_after_last_alloc += a->bytes;
    }
  }
  return by_pid;
}

}  // namespace vs::tools::findings
