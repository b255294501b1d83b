// nvml_context_overhead: per process with NVML samples, the GPU memory NVML
// sees beyond the traced allocations (CUDA context, modules, driver).
#include <algorithm>
#include <climits>
#include <map>

#include "tools/findings/registry.h"

namespace vs::tools::findings {
namespace {

// Well below a CUDA context's cost (hundreds of MiB on recent GPUs), well above NVML's rounding and the
// driver's 2 MiB allocation granularity.
constexpr std::int64_t kNvmlMinOverheadBytes = 32 * kMiB;
// Samples compared per process, evenly spread: bounds the work on long traces, and a median of 64 is stable.
constexpr std::size_t kNvmlMaxSamples = 64;

constexpr KindSeverity kNvmlContextOverheadKind{
    "nvml_context_overhead", Severity::Info,
    "the fixed cost of using CUDA, which no program change removes: it explains why nvidia-smi shows more than "
    "the trace"};
constexpr KindSeverity kKinds[] = {kNvmlContextOverheadKind};

// Per process with NVML samples: used bytes (NVML) minus traced outstanding GPU memory at the same instants.
void nvml_context_overhead(Ctx& c, std::vector<Finding>& out, std::vector<std::string>& notes) {
  std::map<std::int64_t, std::vector<std::pair<std::int64_t, std::int64_t>>> samples;  // pid -> (ts, used)
  c.query("SELECT pid, ts_ns, SUM(used_bytes) FROM gpu_process_samples WHERE " + c.scope() +
              " GROUP BY pid, ts_ns ORDER BY pid, ts_ns",
          c.params(), [&](const store::Row& r) { samples[r.i64(0)].push_back({r.i64(1), r.i64(2)}); });
  if (samples.empty()) {
    std::string nvml;
    c.query("SELECT COALESCE(nvml, 'not recorded') FROM sessions WHERE id = ?", {c.session.id},
            [&](const store::Row& r) { nvml = r.text(0); });
    notes.push_back("no NVML per-process samples (NVML: " + quote_untrusted(nvml, 120) + ")");
    return;
  }
  // Per sampled process, its traced GPU memory as changes in time order: +bytes at each allocation, -bytes at
  // each free; outstanding bytes at an instant are the sum of the changes up to it.
  std::map<std::int64_t, std::vector<std::pair<std::int64_t, std::int64_t>>> changes;  // pid -> (ts, bytes)
  std::map<std::int64_t, std::int64_t> first_allocs;
  for (const Ctx::Allocation& a : c.allocations()) {
    if (!a.gpu || !samples.count(a.pid)) continue;
    auto& list = changes[a.pid];
    list.push_back({a.alloc_ts, a.bytes});
    if (a.free_ts) list.push_back({*a.free_ts, -a.bytes});
    auto [first, inserted] = first_allocs.emplace(a.pid, a.alloc_ts);
    if (!inserted) first->second = std::min(first->second, a.alloc_ts);
  }
  for (auto& [pid, list] : changes) std::sort(list.begin(), list.end());
  for (auto& [pid, all] : samples) {
    const std::int64_t first_alloc = first_allocs.count(pid) ? first_allocs[pid] : 0;
    // The samples from the first allocation on (before it, NVML sees the context being created), at most
    // kNvmlMaxSamples of them evenly spread.
    std::optional<std::int64_t> before_first;
    std::vector<std::pair<std::int64_t, std::int64_t>> after;
    // After the exit, NVML still shows memory the driver is tearing down while the trace counts it released.
    const auto proc = c.processes.find(pid);
    const std::int64_t exit_ns = proc != c.processes.end() && proc->second.exited ? proc->second.end_ns : INT64_MAX;
    for (auto [ts, used] : all) {
      if (first_alloc > 0 && ts < first_alloc) before_first = used;
      else if (ts < exit_ns) after.push_back({ts, used});
    }
    if (after.empty()) {
      notes.push_back(c.who(pid) + ": no NVML sample between its first allocation and its exit");
      continue;
    }
    std::vector<std::pair<std::int64_t, std::int64_t>> picked;
    const std::size_t n = std::min(after.size(), kNvmlMaxSamples);
    for (std::size_t i = 0; i < n; ++i) picked.push_back(after[i * after.size() / n]);
    std::vector<std::int64_t> overhead;
    std::int64_t nvml_max = 0, traced_at_max = 0, traced = 0;
    const auto& pid_changes = changes[pid];
    auto next_change = pid_changes.begin();
    for (auto [ts, used] : picked) {  // in time order, as the samples are
      for (; next_change != pid_changes.end() && next_change->first <= ts; ++next_change) traced += next_change->second;
      overhead.push_back(used - traced);
      if (used > nvml_max) {
        nvml_max = used;
        traced_at_max = traced;
      }
    }
    std::vector<std::int64_t> sorted = overhead;
    std::sort(sorted.begin(), sorted.end());
    const std::int64_t median = sorted[(sorted.size() - 1) / 2];
    if (median < kNvmlMinOverheadBytes) {
      notes.push_back(c.who(pid) + ": NVML exceeds traced memory by " + fmt_bytes(median) + " (median)");
      continue;
    }
    const bool attached = proc != c.processes.end() && (proc->second.how_found == "pid" || proc->second.how_found == "running");
    Finding f(kNvmlContextOverheadKind);
    f.pid = pid;
    f.size = static_cast<double>(median);
    f.title = c.who(pid) + ": NVML sees " + fmt_bytes(median) + " more GPU memory than its traced allocations";
    f.summary = "Across " + std::to_string(picked.size()) + " of " + std::to_string(all.size()) +
                " NVML samples (from its first allocation to its exit), the process's used GPU memory exceeded its traced outstanding allocations by " +
                fmt_bytes(median) + " (median; " + fmt_bytes(sorted.front()) + " to " + fmt_bytes(sorted.back()) + ")" +
                (before_first ? "; the last sample before its first allocation showed " + fmt_bytes(*before_first) : "") +
                ". At NVML's peak (" + fmt_bytes(nvml_max) + ") the trace accounted for " + fmt_bytes(traced_at_max) +
                ". The difference is the CUDA context, module images and driver overhead, which no allocation call "
                "shows" + (attached ? ", plus memory allocated before tracing began (the process was attached)" : "") +
                ".";
    f.rule = "median over NVML per-process samples from the first allocation to the exit of (used_bytes - traced outstanding GPU memory at the same instant) "
             ">= " + fmt_bytes(kNvmlMinOverheadBytes);
    f.numbers = {{"overhead_median_bytes", median}, {"overhead_min_bytes", sorted.front()},
                 {"overhead_max_bytes", sorted.back()}, {"samples_compared", picked.size()},
                 {"samples", all.size()}, {"nvml_max_used_bytes", nvml_max}};
    if (before_first) f.numbers["before_first_allocation_bytes"] = *before_first;
    c.drill(f, "allocation_timeline", {{"pid", pid}}, "traced outstanding bytes with NVML's view alongside");
    out.push_back(std::move(f));
  }
}

}  // namespace

constexpr Rule kNvmlContextOverheadRule{"nvml_context_overhead", kKinds, nvml_context_overhead};

}  // namespace vs::tools::findings
