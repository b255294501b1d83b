// preallocated_pool: per process and framework allocator, a first allocation
// that takes a large share of the GPU at once: XLA (JAX) takes 75% of the GPU
// at start by default, TensorFlow nearly all of it, an RMM pool what it is
// configured with. nvidia-smi and every other process see it as used from
// then on, whatever the program's arrays need: "JAX takes 75% of my GPU".
#include <algorithm>
#include <cmath>

#include "tools/findings/framework_memory.h"
#include "tools/findings/registry.h"

namespace vs::tools::findings {
namespace {

// A quarter of the GPU in one allocation before anything else: no framework asks that for its first
// array (PyTorch's largest first segment is the first tensor's size rounded to 2 MiB; a model's weights come
// in many allocations), while XLA's default takes 75%, XLA_PYTHON_CLIENT_MEM_FRACTION as low as .25 is
// still a preallocation, and RMM's default initial pool is half the GPU.
constexpr double kPreallocatedShare = 0.25;

constexpr KindSeverity kPreallocatedPoolKind{
    "preallocated_pool", Severity::Low,
    "by design and bounded, but other processes on the GPU cannot have that memory, and nvidia-smi shows it used "
    "whatever the program needs"};
constexpr KindSeverity kKinds[] = {kPreallocatedPoolKind};

// The GPU's memory in bytes as NVML saw it (0: unknown). With GPUs of different sizes, the largest: the
// share stated is then the smallest it can be.
std::int64_t gpu_total_bytes(Ctx& c) {
  std::int64_t total = c.value("SELECT MAX(total_bytes) FROM gpus WHERE session_id = ?", {c.session.id});
  if (total <= 0) total = c.value("SELECT MAX(total_bytes) FROM gpu_memory_samples WHERE session_id = ?", {c.session.id});
  return total;
}

void preallocated_pool(Ctx& c, std::vector<Finding>& out, std::vector<std::string>& notes) {
  if (c.framework_callers.empty()) return;  // allocator_cache_held notes it
  const std::int64_t total = gpu_total_bytes(c);
  if (total <= 0) {
    notes.push_back("the GPU's size is not in the trace (no NVML): preallocation cannot be told from a large first "
                    "allocation");
    return;
  }
  for (const FrameworkMemory& m : framework_memory(c)) {
    const FrameworkAllocator& fw = *m.allocator;
    const Ctx::Allocation& first = *m.first;
    const double share = static_cast<double>(first.bytes) / static_cast<double>(total);
    if (share < kPreallocatedShare) {
      notes.push_back(c.who(m.pid) + ": " + std::string(fw.name) + "'s first allocation was " + fmt_bytes(first.bytes));
      continue;
    }
    const Process& p = c.processes[m.pid];
    const std::int64_t end = p.end_ns > 0 ? p.end_ns : c.session.end_ns;
    const bool freed = first.end_reason == "freed";
    const std::int64_t until = freed ? first.free_ts.value_or(end) : end;
    const std::string pct = std::to_string(static_cast<int>(std::lround(share * 100)));
    Finding f(kPreallocatedPoolKind);
    f.pid = m.pid;
    f.size = static_cast<double>(first.bytes);
    f.title = c.who(m.pid) + ": " + std::string(fw.name) + " preallocated " + fmt_bytes(first.bytes) + " (" + pct +
              "% of the GPU) at " + c.t(first.alloc_ts) + "; other processes see it as used";
    f.summary = std::string(fw.name) + "'s first allocation took " + fmt_bytes(first.bytes) + " of the GPU's " +
                fmt_bytes(total) + " (" + pct + "%) at once, at " + c.t(first.alloc_ts) + ", before the program's " +
                std::string(fw.objects) + " needed it: a preallocated pool, which it serves them from. It was " +
                (freed ? "returned at " + c.t(until)
                       : p.exited ? "held until the process exited at " + c.t(end)
                                  : "still held at the end of the trace") +
                ". nvidia-smi and every other process see it as used all that time; how much the program really "
                "uses is the allocator's own number: " + std::string(fw.live) + ". To take less: " +
                std::string(fw.settings) + ".";
    f.rule = "the first allocation of a framework allocator in the process (device, VMM physical, managed) is >= " +
             std::to_string(static_cast<int>(kPreallocatedShare * 100)) + "% of the GPU's memory (NVML's total)";
    f.numbers = {{"preallocated_bytes", first.bytes},
                 {"gpu_total_bytes", total},
                 {"share_pct", std::round(share * 1000) / 10},
                 {"t_ms", c.session.t_ms(first.alloc_ts)},
                 {"held_until_t_ms", c.session.t_ms(until)}};
    f.allocation_ids = {first.id};
    c.drill(f, "allocation_timeline", {{"pid", m.pid}}, "the pool next to NVML's view of the GPU");
    c.drill(f, "outstanding_allocations", held_at_end(c, m.pid), "what the allocator holds besides the pool");
    out.push_back(std::move(f));
  }
}

}  // namespace

constexpr Rule kPreallocatedPoolRule{"preallocated_pool", kKinds, preallocated_pool};

}  // namespace vs::tools::findings
