// released_at_exit: per process that exited, the GPU memory it still held,
// which the driver released at exit.
#include <algorithm>
#include <map>
#include <set>

#include "tools/findings/registry.h"

namespace vs::tools::findings {
namespace {

// Below 1 MiB, a few small buffers a process leaves to the driver at exit, with no consequence.
constexpr std::int64_t kExitMinBytes = kMiB;

constexpr KindSeverity kReleasedAtExitKind{
    "released_at_exit", Severity::Info,
    "the driver gave the memory back when the process exited: by itself no harm, unless it grew while the "
    "process ran (leak_growth)"};
constexpr KindSeverity kKinds[] = {kReleasedAtExitKind};

// Per process that exited: what it still held, which the driver released at exit.
void released_at_exit(Ctx& c, std::vector<Finding>& out, std::vector<std::string>& notes) {
  // The processes leak_growth found growing (it runs before this rule): their growth is that finding.
  std::set<std::int64_t> leaking;
  for (const Finding& f : c.earlier)
    if (f.kind == "leak_growth" && f.pid) leaking.insert(*f.pid);
  std::map<std::int64_t, std::map<std::int64_t, std::int64_t>> bytes_by_caller;  // pid -> caller -> bytes
  std::map<std::int64_t, std::int64_t> counts;
  for (const Ctx::Allocation& a : c.allocations())
    if (a.gpu && a.end_reason == "process_exit") {
      bytes_by_caller[a.pid][a.caller_id] += a.bytes;
      ++counts[a.pid];
    }
  std::map<std::int64_t, std::vector<std::pair<std::int64_t, std::int64_t>>> by_pid;  // pid -> (caller, bytes)
  for (const auto& [pid, callers] : bytes_by_caller) {
    auto& list = by_pid[pid];
    list.assign(callers.begin(), callers.end());
    // Most bytes first, then the lowest caller id (0: not recorded).
    std::stable_sort(list.begin(), list.end(), [](const auto& a, const auto& b) { return a.second > b.second; });
  }
  if (by_pid.empty()) notes.push_back("no GPU memory was released by a process exit");
  for (const auto& [pid, callers] : by_pid) {
    std::int64_t total = 0;
    std::string list;
    for (auto [caller, bytes] : callers) {
      total += bytes;
      list += (list.empty() ? "" : ", ") + quote_untrusted(caller ? c.callers[caller] : "unknown caller", 60) + " " +
              fmt_bytes(bytes);
    }
    if (total < kExitMinBytes) continue;
    const Process& p = c.processes[pid];
    Finding f(kReleasedAtExitKind);
    f.pid = pid;
    f.size = static_cast<double>(total);
    f.title = c.who(pid) + " still held " + fmt_bytes(total) + " of GPU memory when it exited";
    f.summary = "When " + c.who(pid) + " exited at " + c.t(p.end_ns) + ", " + std::to_string(counts[pid]) +
                " allocations (" + fmt_bytes(total) + ": " + list + ") had never been freed by a call; the driver "
                "released them at exit. " +
                (leaking.count(pid) ? "Its growth while running is the leak finding above."
                                    : "Memory held until exit is not by itself a leak of a live process.");
    f.rule = "allocations.end_reason = 'process_exit' totalling >= " + fmt_bytes(kExitMinBytes) + " of GPU memory";
    f.numbers = {{"released_bytes", total}, {"released_allocations", counts[pid]},
                 {"exit_t_ms", c.session.t_ms(p.end_ns)}};
    f.allocation_ids = c.largest_allocations(
        [&](const auto& a) { return a.gpu && a.pid == pid && a.end_reason == "process_exit"; });
    c.drill(f, "outstanding_allocations", held_at_end(c, pid), "what was held at exit, by size and calling library");
    out.push_back(std::move(f));
  }
}

}  // namespace

constexpr Rule kReleasedAtExitRule{"released_at_exit", kKinds, released_at_exit};

}  // namespace vs::tools::findings
