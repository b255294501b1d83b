// Synthetic traces written through the real store (TraceWriter and its
// pairing), shaped like PyTorch recordings on a GPU: the allocator's calls from
// libc10_cuda with the runtime's nested driver calls, the heartbeat of
// `.item()` (a device-to-host copy and a stream synchronization) in every
// iteration, a quiet start-up (imports, model build) before the model load,
// NVML's per-process view. For property tests over workloads the shipped
// traces do not cover, and for the rules' boundary tests.
//
// Three levels: TraceBuilder takes calls by API name at given instants;
// ProcessScript writes one process's calls along its own clock (alloc, free,
// heartbeat, idle); Workload + write_trace() compose whole runs from
// parameters, and the scenario functions return the Workloads of named cases
// with defaults that any field can override:
//
//   auto w = synthetic::leak_after_startup({.iterations = 50});
//   w.iteration_gap_ns = 150 * synthetic::kMs;  // paced requests
//   synthetic::write_trace(path, {w});
#pragma once

#include <cstdint>
#include <deque>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tests/unit/call_builder.h"

namespace vs::test::synthetic {

inline constexpr std::uint64_t kMiB = 1ull << 20;
inline constexpr std::uint64_t kGiB = 1ull << 30;
inline constexpr std::int64_t kUs = 1'000;
inline constexpr std::int64_t kMs = 1'000'000;
inline constexpr std::int64_t kSec = 1'000'000'000;

// The files that make the calls, as a pip-installed PyTorch maps them.
extern const std::string kTorchAllocatorLib;  // .../torch/lib/libc10_cuda.so: the caching allocator
extern const std::string kTorchCudaLib;       // .../torch/lib/libtorch_cuda.so: tensor copies and syncs
extern const std::string kCudartLib;          // .../nvidia/cu13/lib/libcudart.so.13: the runtime's driver calls
extern const std::string kXlaPluginLib;       // .../jax_plugins/xla_cuda13/xla_cuda_plugin.so: JAX's XLA allocator
extern const std::string kCupyRuntimeLib;     // .../cupy_backends/cuda/api/runtime...so: CuPy's memory pool's calls
inline constexpr std::uint64_t kGpuTotalBytes = 80ull << 30;  // the GPU that NVML shows (an H100 80GB)

// A new directory under the system's temporary directory, removed with its files when it goes.
class TempDir {
 public:
  explicit TempDir(std::string_view prefix = "vs_synthetic");
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::string file(std::string_view name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

struct TraceOptions {
  std::int64_t session_start_ns = 100 * kSec;  // CLOCK_MONOTONIC of a host up for a while
  std::int64_t nvml_interval_ns = 100 * kMs;   // NVML samples (0: none, as with --no-nvml)
  std::uint64_t context_bytes = 520 * kMiB;    // what NVML sees per process beyond its allocations
  std::int64_t session_tail_ns = 100 * kMs;    // from the last event to the session's end
};

// Calls, processes and exits in any order; write() stores them in the order a
// tracer records them: each call when it returns (a nested driver call before
// the runtime call around it), ids by entry time across processes.
class TraceBuilder {
 public:
  explicit TraceBuilder(TraceOptions options = {});

  const TraceOptions& options() const { return options_; }
  // A process seen at first_ts_ns; how_found as processes.how_found ('launched', 'fork', 'pid', ...).
  void process(std::uint32_t pid, std::string comm, std::string cmdline, std::int64_t first_ts_ns,
               std::string how_found = "launched");
  // A call of `pid`'s main thread. Set its arguments on the result: .ptr(), .bytes(), .handle(),
  // .device(), .stream(), .ret(), .caller(), and .parent(id, api) with the id of an enclosing call as
  // `call(...).r.id` gave it (a provisional id: the file's ids follow entry time, assigned by write()).
  Call& call(std::uint32_t pid, std::string_view api, std::int64_t ts_ns, std::int64_t dur_ns);
  void exit(std::uint32_t pid, std::int64_t ts_ns, int exit_code = 0);
  // The latest instant of any call's return or process event so far.
  std::int64_t last_event_ns() const;
  // Creates `path` (which must not exist) and writes the session through store::TraceWriter, ending it
  // session_tail_ns after the last event. Throws std::runtime_error saying what failed.
  void write(const std::string& path) const;

 private:
  struct ProcessSeen {
    std::uint32_t pid;
    std::string comm, cmdline, how_found;
    std::int64_t first_ts_ns;
  };
  struct Exit {
    std::uint32_t pid;
    std::int64_t ts_ns;
    int code;
  };
  TraceOptions options_;
  std::vector<ProcessSeen> processes_;
  std::deque<Call> calls_;  // a deque: the references call() returns stay valid
  std::vector<Exit> exits_;
};

// The API families through which a framework gets GPU memory.
enum class Allocator {
  Caching,             // cudaMalloc / cudaFree (PyTorch's default caching allocator)
  ExpandableSegments,  // cuMemAddressReserve, cuMemCreate + cuMemMap + cuMemSetAccess, cuMemUnmap + cuMemRelease
  MallocAsync,         // cudaMallocAsync / cudaFreeAsync (PYTORCH_CUDA_ALLOC_CONF=backend:cudaMallocAsync)
};

// One process's calls along its own clock: each call starts call_gap_ns after the previous one returned.
class ProcessScript {
 public:
  ProcessScript(TraceBuilder& trace, std::uint32_t pid, Allocator allocator, std::int64_t start_ns,
                std::int64_t call_gap_ns = 5 * kUs);

  std::int64_t now() const { return now_; }
  void idle(std::int64_t ns) { now_ += ns; }
  // The first CUDA call: cudaDeviceSynchronize creating the primary context (~100 ms).
  void init_context();
  // A segment of `bytes` through the allocator's APIs; returns its key for free().
  std::uint64_t alloc(std::uint64_t bytes);
  void free(std::uint64_t segment);
  // Segments allocated and not freed, oldest first.
  std::vector<std::uint64_t> held() const;
  // A host-to-device copy of `bytes` (loading weights).
  void copy_to_device(std::uint64_t bytes);
  // What `.item()` makes: cudaMemcpyAsync device-to-host of 4 bytes, then cudaStreamSynchronize.
  void heartbeat();
  // Exits now; the store releases what it still holds (end_reason 'process_exit').
  void exit(int code = 0);

 private:
  struct Segment {
    std::uint64_t bytes;
    std::uint64_t handle;  // ExpandableSegments: the physical allocation mapped there
  };
  struct Args {
    std::optional<std::uint64_t> ptr, bytes, stream;
  };
  // A runtime call from `caller` on device 0, with the driver call the runtime makes inside it (which
  // sees the same pointer, size and stream).
  void runtime_call(std::string_view api, const std::string& caller, std::int64_t dur_ns, std::string_view driver_api,
                    const Args& args);
  // A driver call of the framework's allocator itself (the VMM API).
  Call& driver_call(std::string_view api, std::int64_t dur_ns);

  TraceBuilder& trace_;
  std::uint32_t pid_;
  Allocator allocator_;
  std::int64_t now_, call_gap_ns_;
  std::uint64_t next_address_, next_handle_;
  bool reserved_ = false;                       // ExpandableSegments: the address range is reserved
  std::map<std::uint64_t, Segment> segments_;  // by address, which grows with each allocation: oldest first
};

// A stretch of a workload: iterations, a release burst, or idle time.
struct Phase {
  enum class Kind { Iterations, ReleaseBurst, Idle };
  Kind kind = Kind::Iterations;
  int iterations = 0;
  std::uint64_t kept_bytes = 0;       // allocated in each iteration and never freed
  std::uint64_t transient_bytes = 0;  // allocated and freed again in each iteration
  bool heartbeat = true;              // each iteration ends with heartbeat()
  std::size_t keep_segments = 0;      // ReleaseBurst: the oldest segments stay held (live tensors)
  std::int64_t idle_ns = 0;           // Idle

  static Phase grow(int iterations, std::uint64_t bytes_per_iteration, std::uint64_t transient_bytes = 0);
  static Phase flat(int iterations, std::uint64_t transient_bytes = 0);  // 0: no allocation call, only heartbeats
  // empty_cache(): frees every held segment but the keep_segments oldest, in one burst.
  static Phase release_burst(std::size_t keep_segments);
  static Phase idle(std::int64_t ns);
};

// One process from start to exit: start-up (quiet), context, model load, phases, exit.
struct Workload {
  std::uint32_t pid = 4242;
  std::string comm = "python3";
  std::string cmdline = "python3 serve.py";
  std::string how_found = "launched";
  Allocator allocator = Allocator::Caching;
  std::int64_t start_offset_ns = 20 * kMs;  // from the session start to the process's start
  // From the process's start to its model load (imports, building the model): no call but the
  // context's creation, halfway through.
  std::int64_t startup_ns = 10 * kSec;
  std::uint64_t model_bytes = 2 * kGiB;  // loaded in model_segments allocations, each copied to the device
  int model_segments = 4;
  std::int64_t model_load_ns = 0;  // the model's allocations spread evenly over this long (0: back to back)
  std::vector<Phase> phases;
  std::int64_t iteration_gap_ns = 2 * kMs;  // idle after each iteration: the pacing of requests or steps
  std::int64_t call_gap_ns = 5 * kUs;       // between the calls of an iteration
  std::optional<std::int64_t> exit_after_ns = 50 * kMs;  // idle after the last call; nullopt: runs past the end
};

// Writes the workloads' calls into `trace`.
void run(TraceBuilder& trace, const Workload& workload);
// The workloads in one new trace file at `path` (throws std::runtime_error on failure).
void write_trace(const std::string& path, const std::vector<Workload>& workloads, const TraceOptions& options = {});

// ---- Scenarios: named workloads, each parametrized by its shape ----

struct LeakShape {
  int iterations = 200;
  std::uint64_t bytes_per_iteration = 20 * kMiB;  // kept by every iteration
  std::uint64_t transient_bytes = 0;              // also allocated and freed in every iteration
};
// A model load after a long quiet start-up, then iterations that each keep bytes (outputs held
// with their autograd graph), until the process exits.
Workload leak_after_startup(const LeakShape& shape = {}, Allocator allocator = Allocator::Caching);

struct GrowthThenFlat {
  int growth_iterations = 100;
  std::uint64_t bytes_per_iteration = 20 * kMiB;
  int flat_iterations = 200;
  std::uint64_t flat_transient_bytes = 0;  // allocated and freed in each flat iteration; 0: heartbeats only
};
// Growth that stops (a KV cache reaching its cap), then flat iterations: not a leak.
Workload plateau(const GrowthThenFlat& shape = {});
// Growth to the end of the trace with only a few iterations after the last growth: too short to tell.
Workload grows_to_the_end(const GrowthThenFlat& shape = {.flat_iterations = 3});

struct SteadyShape {
  int iterations = 300;
  std::uint64_t transient_bytes = 64 * kMiB;  // allocated and freed in every iteration
};
// Every iteration allocates and frees the same bytes.
Workload steady(const SteadyShape& shape = {});

struct StepShape {
  int flat_before = 50;
  std::uint64_t step_bytes = 1 * kGiB;  // one allocation, kept (a workspace, a second model)
  int flat_after = 200;
  std::uint64_t transient_bytes = 16 * kMiB;
};
Workload step_then_flat(const StepShape& shape = {});

// Two workers started together: the first (pid 5001) leaks, the second (pid 5002) is steady.
// The same leak after a model built layer by layer: its allocations spread over `model_load_ns`.
Workload leak_after_slow_model_build(const LeakShape& shape = {}, std::int64_t model_load_ns = 5 * kSec);

std::vector<Workload> leaking_and_steady(const LeakShape& leak = {}, const SteadyShape& steady_shape = {});

struct EmptyCacheShape {
  int iterations = 40;
  std::uint64_t bytes_per_iteration = 64 * kMiB;  // the allocator's cache grows by a segment per iteration
  std::int64_t after_ns = 2 * kSec;               // alive (idle) after empty_cache(), then exits
};
// `del model; torch.cuda.empty_cache()` with a stray reference to the weights: a burst of cudaFree from
// libc10_cuda returns every cached segment, the model's segments stay held (live tensors).
Workload empty_cache_with_live_tensors(const EmptyCacheShape& shape = {});

struct Scenario {
  std::string name;
  std::vector<Workload> workloads;
};
// Every scenario above with its defaults (the leak under each allocator, the plateau with and without
// allocation calls in its flat part).
std::vector<Scenario> scenarios();
// What the loops that write and analyze every scenario take: all of them, or every Nth with
// VRAMSCOPE_TEST_SAMPLE=N (tests/test_sample.h), the first included.
std::vector<Scenario> sampled_scenarios();

}  // namespace vs::test::synthetic
