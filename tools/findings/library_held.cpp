// library_held: per process that uses a framework allocator, GPU memory other
// libraries (cuBLAS, cuDNN) allocated themselves and still held.
#include <algorithm>
#include <map>
#include <set>
#include <tuple>

#include "tools/findings/registry.h"

namespace vs::tools::findings {
namespace {

// Below 1 MiB, the libraries' handles and small buffers: nothing a memory budget would notice.
constexpr std::int64_t kLibraryMinBytes = kMiB;
// Allocation call ids per `IN (...)` query: far below SQLite's limit on an expression's terms.
constexpr std::size_t kIdsPerQuery = 500;

constexpr KindSeverity kLibraryHeldKind{
    "library_held", Severity::Low,
    "a fixed cost the framework's own statistics do not show: it surprises a memory budget but does not grow"};
constexpr KindSeverity kKinds[] = {kLibraryHeldKind};

std::string id_list(const std::set<std::int64_t>& ids) {
  std::string s;
  for (auto id : ids) s += (s.empty() ? "" : ",") + std::to_string(id);
  return s;
}

// Per process that uses a framework allocator: GPU memory other libraries allocated themselves and still held.
void library_held(Ctx& c, std::vector<Finding>& out, std::vector<std::string>& notes) {
  if (c.framework_callers.empty()) return;  // allocator_cache_held notes it
  struct Lib {
    std::int64_t caller, api_id, count, bytes;
  };
  std::set<std::int64_t> framework_pids;  // whatever the kind of memory they allocated through it
  std::map<std::int64_t, std::set<const FrameworkAllocator*>> pid_allocators;
  for (const Ctx::Allocation& a : c.allocations())
    if (auto fw = c.framework_callers.find(a.caller_id); fw != c.framework_callers.end()) {
      framework_pids.insert(a.pid);
      pid_allocators[a.pid].insert(fw->second);
    }
  // The held GPU allocations of other callers in those processes, grouped by (pid, caller, allocating API).
  std::vector<const Ctx::Allocation*> held;
  for (const Ctx::Allocation& a : c.allocations())
    if (a.gpu && framework_pids.count(a.pid) && a.caller_id != 0 && !c.framework_callers.count(a.caller_id) &&
        (a.end_reason.empty() || a.end_reason == "process_exit"))
      held.push_back(&a);
  std::map<std::int64_t, std::int64_t> api_of_call;
  for (std::size_t at = 0; at < held.size(); at += kIdsPerQuery) {
    std::set<std::int64_t> ids;
    for (std::size_t i = at; i < std::min(held.size(), at + kIdsPerQuery); ++i) ids.insert(held[i]->alloc_call_id);
    c.query("SELECT id, api_id FROM call_rows WHERE id IN (" + id_list(ids) + ")", {},
            [&](const store::Row& r) { api_of_call[r.i64(0)] = r.i64(1); });
  }
  std::map<std::tuple<std::int64_t, std::int64_t, std::int64_t>, Lib> groups;  // (pid, caller, api)
  for (const Ctx::Allocation* a : held) {
    auto api = api_of_call.find(a->alloc_call_id);
    if (api == api_of_call.end()) continue;  // as the join: an allocation whose call is not stored
    Lib& l = groups.try_emplace({a->pid, a->caller_id, api->second}, Lib{a->caller_id, api->second, 0, 0}).first->second;
    ++l.count;
    l.bytes += a->bytes;
  }
  std::map<std::int64_t, std::vector<Lib>> by_pid;
  for (const auto& [key, l] : groups) by_pid[std::get<0>(key)].push_back(l);
  // Most bytes first, then (caller, api).
  for (auto& [pid, libs] : by_pid)
    std::stable_sort(libs.begin(), libs.end(), [](const Lib& a, const Lib& b) { return a.bytes > b.bytes; });
  for (const auto& [pid, libs] : by_pid) {
    std::int64_t total = 0, count = 0;
    std::string list;
    std::set<std::int64_t> callers;
    for (const Lib& l : libs) {
      total += l.bytes;
      count += l.count;
      callers.insert(l.caller);
      list += (list.empty() ? "" : "; ") + quote_untrusted(c.callers[l.caller], 60) + " " + fmt_bytes(l.bytes) + " (" +
              std::to_string(l.count) + " x " + c.apis[l.api_id].name + ")";
    }
    if (total < kLibraryMinBytes) {
      notes.push_back(c.who(pid) + ": other libraries held " + fmt_bytes(total));
      continue;
    }
    Finding f(kLibraryHeldKind);
    f.pid = pid;
    f.size = static_cast<double>(total);
    std::string name;  // the allocators the process's memory went through, e.g. "PyTorch's caching allocator"
    for (const FrameworkAllocator& fw : framework_allocators())
      if (pid_allocators[pid].count(&fw)) name += (name.empty() ? "" : " and ") + std::string(fw.name);
    f.title = c.who(pid) + ": " + fmt_bytes(total) + " of GPU memory held by libraries outside " + name;
    f.summary = "Allocated by the libraries themselves, not through " + name + ", and still held at the end of the "
                "process: " + list + ". This memory is not in the framework's own statistics but is in nvidia-smi's; "
                "cuBLAS, for one, allocates its workspace itself.";
    f.rule = ">= " + fmt_bytes(kLibraryMinBytes) + " of GPU memory allocated by callers other than the framework "
             "allocator's library, in a process that uses it, and never freed by a call";
    f.numbers = {{"held_bytes", total}, {"held_allocations", count}, {"libraries", callers.size()}};
    f.allocation_ids = c.largest_allocations([&](const auto& a) {
      return a.gpu && a.pid == pid && a.caller_id != 0 && !c.framework_callers.count(a.caller_id) &&
             (a.end_reason.empty() || a.end_reason == "process_exit");
    });
    c.drill(f, "outstanding_allocations", held_at_end(c, pid), "held memory grouped by calling library");
    out.push_back(std::move(f));
  }
}

}  // namespace

constexpr Rule kLibraryHeldRule{"library_held", kKinds, library_held};

}  // namespace vs::tools::findings
