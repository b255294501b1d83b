// trace_generator: writes a large, realistic trace file through the real store
// (store::TraceWriter and its allocation pairing, fed the same records that
// src/trace_command.cpp's Recorder hands it), for benchmarking the tools on
// traces far bigger than a test workload makes.
//
//     trace_generator --db /tmp/trace-10m.db --calls 10000000 [--seed N] [--processes P] [--sessions S]
//
// The shape is taken from the PyTorch-on-H100 traces in examples/traces: an
// all-process session with 3 probed libraries and NVML's device view; runtime
// calls from libc10_cuda.so / libtorch_cuda.so, each with the driver call it
// makes (cudaMalloc -> cuMemAlloc_v2 from libcudart, parent_id set, the driver
// call delivered first as it returns first); cuBLAS, cuDNN and NCCL calling the
// driver directly; durations log-normal around the medians measured there.
// Processes take these roles in turn:
//   train        DDP rank: launches (forward on the main thread, backward on the
//                autograd thread), cuBLAS GEMMs, NCCL all-reduce, a loss sync per
//                step; caching allocator: segments allocated in bursts and held,
//                empty_cache() every few hundred steps frees the cache (segments
//                allocated before tracing began become unmatched frees)
//   train-leak   the same, and a 2 MiB segment is never given back every 25 steps
//                (a slow leak), with an out-of-memory cudaMalloc now and then
//                that the allocator answers by freeing its cache and retrying
//   serve        inference with expandable segments (driver VMM: reserve, create,
//                map, set access, unmap, release; one cuMemCreate fails), on CPUs
//                shared with a busy `sh`: often preempted
//   async        the cudaMallocAsync backend: every tensor is a cudaMallocAsync /
//                cudaFreeAsync pair (most of the allocation rows); exits before
//                the session ends
//   eval         starts at 30 % of the trace and exits at 40 % holding its
//                memory (end_reason 'process_exit')
// Calls are ordered by entry time across processes and numbered in that order.
// With --sessions S the calls are split over S sessions of the same processes
// (runs recorded one after the other into one file, for compare_sessions).
// Everything comes from one seeded generator: the same arguments write the same file.
#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <queue>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "common/cuda_api.h"
#include "store/store.h"

namespace {

using vs::ApiInfo;
using vs::Layer;
using Clock = std::chrono::steady_clock;

constexpr std::int64_t kUs = 1000, kMs = 1000 * kUs, kSec = 1000 * kMs;
constexpr std::uint64_t kMiB = 1 << 20;
constexpr std::uint64_t kGiB = kMiB << 10;

// Callers: the mapped files that make the calls, as the H100 traces name them.
const std::string kVenv = "/opt/torch/.venv/lib/python3.12/site-packages/";
const std::string kLibC10Cuda = kVenv + "torch/lib/libc10_cuda.so";
const std::string kLibTorchCuda = kVenv + "torch/lib/libtorch_cuda.so";
const std::string kLibCudart = kVenv + "nvidia/cu13/lib/libcudart.so.13";
const std::string kLibCublas = kVenv + "nvidia/cu13/lib/libcublas.so.13";
const std::string kLibCublasLt = kVenv + "nvidia/cu13/lib/libcublasLt.so.13";
const std::string kLibCudnn = kVenv + "nvidia/cudnn/lib/libcudnn_graph.so.9";
const std::string kLibNccl = kVenv + "nvidia/nccl/lib/libnccl.so.2";

const ApiInfo& api(std::string_view name) {
  const ApiInfo* a = vs::find_api(name);
  if (a == nullptr) {
    std::fprintf(stderr, "trace_generator: %.*s is not in the API catalog\n", static_cast<int>(name.size()),
                 name.data());
    std::exit(1);
  }
  return *a;
}

class Rng {
 public:
  explicit Rng(std::uint64_t seed) : g_(seed) {}
  double uniform() { return std::uniform_real_distribution<double>(0, 1)(g_); }
  std::uint64_t below(std::uint64_t n) { return g_() % n; }
  bool chance(double p) { return uniform() < p; }
  // Log-normal around `median` (the shape of call latencies: a tight body, a long tail).
  double lognormal(double median, double sigma) { return median * std::exp(sigma * normal_(g_)); }

 private:
  std::mt19937_64 g_;
  std::normal_distribution<double> normal_{0, 1};
};

// Latency of a call that is not descheduled: median and log-normal spread.
struct Latency {
  double median_ns;
  double sigma;
};

// One top-level traced call and, if `child` is set, the driver call the runtime
// makes inside it (same pointer, size, stream and handle; no device: the driver
// layer knows only a context). Times and ids are given when it is written.
struct CallSpec {
  const ApiInfo* api = nullptr;
  const std::string* caller = nullptr;
  std::uint32_t tid = 0;
  std::optional<std::uint64_t> ptr, bytes, stream, handle;
  std::optional<std::int64_t> device;
  std::int64_t ret = 0;
  const ApiInfo* child = nullptr;
  std::int64_t child_ret = 0;
  Latency latency{5 * kUs, 0.4};
  bool blocking = false;  // waits for the GPU and may sleep (off-CPU, not runnable)
  std::int64_t device_bytes_delta = 0;  // change of the process's GPU memory (for NVML's view)
  bool exit_process = false;            // not a call: the process exits here
};

enum class Role { Train, TrainLeak, Serve, Async, Eval };

const char* role_name(Role r) {
  switch (r) {
    case Role::Train: return "train";
    case Role::TrainLeak: return "train-leak";
    case Role::Serve: return "serve";
    case Role::Async: return "async";
    case Role::Eval: return "eval";
  }
  return "?";
}

struct Process {
  Role role;
  std::uint32_t pid = 0, autograd_tid = 0;
  std::int64_t device = 0;
  std::string comm, cmdline;
  double start_at = 0, stop_at = 2;  // fractions of the target row count
  bool started = false, exited = false;
  std::int64_t clock_ns = 0;  // entry time of its next call
  std::uint64_t steps = 0, rows = 0;
  std::deque<CallSpec> pending;

  // Streams (opaque handles, as the program saw them).
  std::uint64_t side_stream = 0, nccl_stream = 0;
  // Address space: a bump pointer, and freed addresses by size (cudaMalloc hands them out again).
  std::uint64_t first_address = 0, next_address = 0, next_host_address = 0, next_handle = 0;
  std::map<std::uint64_t, std::vector<std::uint64_t>> free_addresses;
  // The caching allocator's cache: segments that go back on empty_cache() and are
  // allocated again by the next step (weights, optimizer state and the leak are held
  // until exit). Segments allocated before tracing began go back on the first one.
  std::vector<std::pair<std::uint64_t, std::uint64_t>> cache, untraced_segments;  // (ptr, bytes)
  std::vector<std::uint64_t> cache_sizes;                                        // what a step needs cached
  // Expandable segments: the reserved range, and the mapped pages (ptr, bytes, handle).
  std::uint64_t reserved_base = 0, reserved_used = 0;
  std::vector<std::array<std::uint64_t, 3>> mapped;
  std::int64_t device_bytes = 0;  // outstanding GPU memory, for NVML's per-process view
};

struct Options {
  std::string db;
  std::uint64_t calls = 10'000'000;
  std::uint64_t seed = 1;
  std::uint32_t processes = 5;
  std::uint32_t sessions = 1;
  bool unfinished = false;  // the last session as a recording one reads: rows flushed, no end, indexes or summaries
};

class Generator {
 public:
  // One session of `calls` rows starting at `start_ns` (CLOCK_MONOTONIC).
  Generator(const Options& o, vs::store::TraceWriter& writer, std::int64_t start_ns, std::uint64_t calls,
            std::uint64_t seed)
      : o_(o), w_(writer), rng_(seed), start_ns_(start_ns), calls_(calls), next_nvml_ns_(start_ns), end_ns_(start_ns) {}

  void run();
  void print_processes() const;
  std::uint64_t rows() const { return rows_; }
  std::int64_t allocations_opened() const { return allocations_; }
  std::int64_t end_ns() const { return end_ns_; }
  std::int64_t session_span_ns() const { return end_ns_ - start_ns_; }

 private:
  static constexpr int kGpus = 4;
  static constexpr std::int64_t kContextBytes = 624 * static_cast<std::int64_t>(kMiB);  // NVML minus traced

  void begin_session();
  void make_processes();
  void start(Process& p);
  void stop(Process& p);
  void plan_step(Process& p);
  void write(Process& p, const CallSpec& c);
  void sample_nvml(std::int64_t until_ns);

  // Call builders: each appends to p.pending.
  CallSpec& push(Process& p, std::string_view api_name, const std::string& caller, Latency lat);
  void launch(Process& p, std::uint32_t tid, std::uint64_t stream);
  void gemm(Process& p, std::uint32_t tid, std::uint64_t stream);
  void copy(Process& p, std::string_view driver_api, std::uint64_t bytes, std::uint64_t stream);
  void stream_sync(Process& p, std::uint64_t stream, Latency lat);
  void device_sync(Process& p, Latency lat);
  std::uint64_t device_address(Process& p, std::uint64_t bytes);
  void segment_malloc(Process& p, std::uint64_t bytes, bool cached);
  void segment_free(Process& p, std::uint64_t ptr, std::uint64_t bytes);
  void empty_cache(Process& p);
  void library_setup(Process& p);
  void vmm_map(Process& p, std::uint64_t bytes);
  void vmm_unmap_last(Process& p);

  const Options& o_;
  vs::store::TraceWriter& w_;
  Rng rng_;
  const std::int64_t start_ns_;
  const std::uint64_t calls_;
  std::vector<Process> procs_;
  std::int64_t next_id_ = 0;
  std::uint64_t rows_ = 0;
  std::int64_t allocations_ = 0;
  std::int64_t next_nvml_ns_;
  std::int64_t end_ns_;
  Clock::time_point t0_ = Clock::now();
  std::uint64_t next_progress_ = 1'000'000;
};

// ---- call builders ----

CallSpec& Generator::push(Process& p, std::string_view api_name, const std::string& caller, Latency lat) {
  CallSpec& c = p.pending.emplace_back();
  c.api = &api(api_name);
  c.caller = &caller;
  c.tid = p.pid;
  c.latency = lat;
  if (c.api->layer == Layer::Runtime) c.device = p.device;
  return c;
}

void Generator::launch(Process& p, std::uint32_t tid, std::uint64_t stream) {
  CallSpec& c = push(p, "cudaLaunchKernel", kLibTorchCuda, {4.5 * kUs, 0.35});
  c.tid = tid;
  c.ptr = 0x7f3a'0000'0000 + rng_.below(4096) * 0x40;  // the kernel's host stub
  c.stream = stream;
  c.child = &api("cuLaunchKernel");
}

void Generator::gemm(Process& p, std::uint32_t tid, std::uint64_t stream) {
  CallSpec& c = push(p, "cuLaunchKernel", kLibCublasLt, {3.5 * kUs, 0.3});
  c.tid = tid;
  c.ptr = 0x7f3b'0000'0000 + rng_.below(64) * 0x100;
  c.stream = stream;
}

void Generator::copy(Process& p, std::string_view driver_api, std::uint64_t bytes, std::uint64_t stream) {
  const double transfer_ns = static_cast<double>(bytes) / 20.0;  // ~20 GB/s over PCIe, when it waits
  CallSpec& c = push(p, "cudaMemcpyAsync", kLibTorchCuda, {15 * kUs + transfer_ns / 8, 0.5});
  c.ptr = p.first_address + rng_.below(1 << 16) * 256;  // into memory the process holds
  c.bytes = bytes;
  c.stream = stream;
  c.child = &api(driver_api);
}

void Generator::stream_sync(Process& p, std::uint64_t stream, Latency lat) {
  CallSpec& c = push(p, "cudaStreamSynchronize", kLibTorchCuda, lat);
  c.stream = stream;
  c.child = &api("cuStreamSynchronize");
  c.blocking = true;
}

void Generator::device_sync(Process& p, Latency lat) {
  CallSpec& c = push(p, "cudaDeviceSynchronize", kLibC10Cuda, lat);
  c.blocking = true;
}

// A fresh address of `bytes` (2 MiB aligned, as the driver hands out segments), or a freed one of that size.
std::uint64_t Generator::device_address(Process& p, std::uint64_t bytes) {
  auto& reuse = p.free_addresses[bytes];
  if (!reuse.empty()) {
    std::uint64_t a = reuse.back();
    reuse.pop_back();
    return a;
  }
  std::uint64_t a = p.next_address;
  p.next_address += (bytes + 2 * kMiB - 1) / (2 * kMiB) * (2 * kMiB);
  return a;
}

void Generator::segment_malloc(Process& p, std::uint64_t bytes, bool cached) {
  const std::uint64_t ptr = device_address(p, bytes);
  CallSpec& c = push(p, "cudaMalloc", kLibC10Cuda, {90 * kUs, 0.5});
  c.ptr = ptr;
  c.bytes = bytes;
  c.child = &api("cuMemAlloc_v2");
  c.device_bytes_delta = static_cast<std::int64_t>(bytes);
  if (cached) p.cache.emplace_back(ptr, bytes);
}

void Generator::segment_free(Process& p, std::uint64_t ptr, std::uint64_t bytes) {
  CallSpec& c = push(p, "cudaFree", kLibC10Cuda, {70 * kUs, 0.35});
  c.ptr = ptr;
  c.child = &api("cuMemFree_v2");
  c.device_bytes_delta = -static_cast<std::int64_t>(bytes);
  p.free_addresses[bytes].push_back(ptr);
}

// torch.cuda.empty_cache(): wait for the GPU, then give back every cached segment;
// the first one after tracing began also returns segments allocated before it.
void Generator::empty_cache(Process& p) {
  device_sync(p, {60 * kUs, 0.8});
  for (auto [ptr, bytes] : p.cache) segment_free(p, ptr, bytes);
  p.cache.clear();
  for (auto [ptr, bytes] : p.untraced_segments) segment_free(p, ptr, bytes);
  p.untraced_segments.clear();
}

// What a process does once, at its first CUDA use: contexts, cuBLAS's workspace,
// cuDNN's small buffers, the pinned staging buffer.
void Generator::library_setup(Process& p) {
  for (const std::string* lib : {&kLibCudart, &kLibCublas, &kLibCublasLt, &kLibCudnn}) {
    CallSpec& c = push(p, "cuDevicePrimaryCtxRetain", *lib, {5 * kUs, 0.3});
    c.device = p.device;
    c.handle = 0x5581'0000'0000 + static_cast<std::uint64_t>(p.pid) * 0x1000;
  }
  for (std::uint64_t bytes : {std::uint64_t{1024}, std::uint64_t{131072}, 64 * kMiB}) {
    CallSpec& c = push(p, "cuMemAlloc_v2", kLibCublas, {100 * kUs, 0.5});
    c.ptr = device_address(p, bytes);
    c.bytes = bytes;
    c.device_bytes_delta = static_cast<std::int64_t>(bytes);
  }
  for (std::uint64_t bytes : {std::uint64_t{4}, std::uint64_t{25344}}) {
    CallSpec& c = push(p, "cuMemAlloc_v2", kLibCudnn, {16 * kUs, 0.3});
    c.ptr = device_address(p, bytes);
    c.bytes = bytes;
    c.device_bytes_delta = static_cast<std::int64_t>(bytes);
  }
  CallSpec& pinned = push(p, "cudaHostAlloc", kLibTorchCuda, {1.4 * kMs, 0.3});
  pinned.ptr = p.next_host_address;
  pinned.bytes = 64 * kMiB;
  pinned.child = &api("cuMemHostAlloc");
  p.next_host_address += 64 * kMiB;
}

void Generator::vmm_map(Process& p, std::uint64_t bytes) {
  const std::uint64_t handle = p.next_handle;
  p.next_handle += 0x320;
  const std::uint64_t ptr = p.reserved_base + p.reserved_used;
  p.reserved_used += bytes;
  CallSpec& create = push(p, "cuMemCreate", kLibC10Cuda, {20 * kUs, 0.4});
  create.handle = handle;
  create.bytes = bytes;
  create.device = p.device;
  create.device_bytes_delta = static_cast<std::int64_t>(bytes);
  CallSpec& map = push(p, "cuMemMap", kLibC10Cuda, {9 * kUs, 0.3});
  map.ptr = ptr;
  map.bytes = bytes;
  map.handle = handle;
  CallSpec& access = push(p, "cuMemSetAccess", kLibC10Cuda, {30 * kUs, 0.4});
  access.ptr = ptr;
  access.bytes = bytes;
  access.device = p.device;
  p.mapped.push_back({ptr, bytes, handle});
}

void Generator::vmm_unmap_last(Process& p) {
  auto [ptr, bytes, handle] = p.mapped.back();
  p.mapped.pop_back();
  p.reserved_used -= bytes;
  CallSpec& unmap = push(p, "cuMemUnmap", kLibC10Cuda, {40 * kUs, 0.4});
  unmap.ptr = ptr;
  unmap.bytes = bytes;
  CallSpec& release = push(p, "cuMemRelease", kLibC10Cuda, {25 * kUs, 0.4});
  release.handle = handle;
  release.device_bytes_delta = -static_cast<std::int64_t>(bytes);
}

// ---- what each role does ----

void Generator::start(Process& p) {
  library_setup(p);
  switch (p.role) {
    case Role::Train:
    case Role::TrainLeak:
      for (std::uint64_t bytes : {132120576ull, 132120576ull, 67108864ull}) segment_malloc(p, bytes, false);  // weights
      for (int i = 0; i < 40; ++i)
        p.cache_sizes.push_back(i % 3 == 0 ? 20 * kMiB : i % 3 == 1 ? 2 * kMiB : 12 * kMiB);
      for (int i = 0; i < 6; ++i) {
        p.untraced_segments.emplace_back(device_address(p, 20 * kMiB), 20 * kMiB);
        p.device_bytes += 20 * kMiB;
      }
      break;
    case Role::Serve: {
      // A probe of an IPC-capable handle fails (CUresult 800, not permitted), as in the expandable trace.
      CallSpec& refused = push(p, "cuMemCreate", kLibC10Cuda, {30 * kUs, 0.3});
      refused.bytes = 20 * kMiB;
      refused.device = p.device;
      refused.ret = 800;
      for (int i = 0; i < 2; ++i) {
        CallSpec& r = push(p, "cuMemAddressReserve", kLibC10Cuda, {40 * kUs, 0.3});
        r.ptr = p.next_address;
        r.bytes = 95651102720ull;  // the size of the GPU, rounded up
        if (i == 0) p.reserved_base = p.next_address;
        p.next_address += 96 * kGiB;
      }
      for (int i = 0; i < 40; ++i) vmm_map(p, 20 * kMiB);  // the model
      break;
    }
    case Role::Async:
      segment_malloc(p, 264241152ull, false);  // weights stay with the caching allocator's cudaMalloc
      break;
    case Role::Eval:
      for (std::uint64_t bytes : {64 * kMiB, 128 * kMiB, 256 * kMiB}) segment_malloc(p, bytes, false);
      break;
  }
}

void Generator::stop(Process& p) {
  CallSpec& c = p.pending.emplace_back();
  c.exit_process = true;
}

// One training step / serving request / evaluation batch, appended to p.pending.
void Generator::plan_step(Process& p) {
  const std::uint64_t n = p.steps++;
  switch (p.role) {
    case Role::Train:
    case Role::TrainLeak:
    case Role::Eval: {
      const bool training = p.role != Role::Eval;
      // The caching allocator grows to what a step needs (a burst after each empty_cache).
      if (p.cache.size() < p.cache_sizes.size())
        for (std::size_t i = p.cache.size(); i < p.cache_sizes.size(); ++i) segment_malloc(p, p.cache_sizes[i], true);
      copy(p, "cuMemcpyHtoDAsync_v2", 4 * kMiB, p.side_stream);
      for (int i = 0; i < 60; ++i) (i % 4 == 3 ? gemm(p, p.pid, 0) : launch(p, p.pid, 0));
      if (training) {
        for (int i = 0; i < 110; ++i) (i % 4 == 3 ? gemm(p, p.autograd_tid, 0) : launch(p, p.autograd_tid, 0));
        for (int i = 0; i < 4; ++i) {
          CallSpec& allreduce = push(p, "cuLaunchKernelEx", kLibNccl, {6 * kUs, 0.3});
          allreduce.ptr = 0x7f3c'0000'1000;
          allreduce.stream = p.nccl_stream;
        }
        for (int i = 0; i < 20; ++i) launch(p, p.pid, 0);  // the optimizer
      }
      copy(p, "cuMemcpyDtoHAsync_v2", 4, 0);  // loss.item()
      stream_sync(p, 0, {static_cast<double>(training ? 5 * kMs : 2 * kMs), 0.25});
      if (n % 10 == 9) {  // logging: a few metrics back to the host
        for (int i = 0; i < 3; ++i) copy(p, "cuMemcpyDtoHAsync_v2", 4, 0);
        stream_sync(p, 0, {12 * kUs, 0.4});
      }
      if (p.role == Role::TrainLeak && n % 25 == 24) segment_malloc(p, 2 * kMiB, false);  // never given back
      if (p.role == Role::TrainLeak && n % 1500 == 1499) {
        // Out of memory: the allocator frees its cache and retries.
        CallSpec& oom = push(p, "cudaMalloc", kLibC10Cuda, {150 * kUs, 0.4});
        oom.bytes = 20 * kMiB;
        oom.ret = 2;  // cudaErrorMemoryAllocation
        oom.child = &api("cuMemAlloc_v2");
        oom.child_ret = 2;  // CUDA_ERROR_OUT_OF_MEMORY
        CallSpec& info = push(p, "cudaMemGetInfo", kLibC10Cuda, {8 * kUs, 0.3});
        info.bytes = 3 * kMiB;
        info.ptr = 85520809984ull;
        empty_cache(p);
      } else if (training && n % 400 == 399) {
        empty_cache(p);
      }
      break;
    }
    case Role::Serve: {
      // A request: prefill, then decode steps; the KV cache grows and, now and then, shrinks.
      copy(p, "cuMemcpyHtoDAsync_v2", 16384 + rng_.below(65536), 0);
      const std::uint64_t pages = rng_.below(3);
      for (std::uint64_t i = 0; i < pages; ++i) vmm_map(p, rng_.chance(0.7) ? 2 * kMiB : 20 * kMiB);
      for (int i = 0; i < 40; ++i) (i % 3 == 2 ? gemm(p, p.pid, 0) : launch(p, p.pid, 0));
      const int decode = 8 + static_cast<int>(rng_.below(24));
      for (int t = 0; t < decode; ++t) {
        for (int i = 0; i < 12; ++i) (i % 3 == 2 ? gemm(p, p.pid, 0) : launch(p, p.pid, 0));
        copy(p, "cuMemcpyDtoHAsync_v2", 8, 0);
        stream_sync(p, 0, {900 * kUs, 0.3});
      }
      if (n % 40 == 39) {
        device_sync(p, {50 * kUs, 0.6});
        while (p.mapped.size() > 40) vmm_unmap_last(p);
      }
      break;
    }
    case Role::Async: {
      // Every activation is a stream-ordered allocation, freed when the stream is done with it.
      std::vector<std::pair<std::uint64_t, std::uint64_t>> live;
      for (int layer = 0; layer < 12; ++layer) {
        const auto bytes = static_cast<std::uint64_t>(rng_.lognormal(2.0 * static_cast<double>(kMiB), 1.5)) / 512 * 512 + 512;
        const std::uint64_t ptr = device_address(p, bytes);
        CallSpec& a = push(p, "cudaMallocAsync", kLibC10Cuda, {7 * kUs, 0.5});
        a.ptr = ptr;
        a.bytes = bytes;
        a.stream = 0;
        a.child = &api("cuMemAllocAsync");
        a.device_bytes_delta = static_cast<std::int64_t>(bytes);
        live.emplace_back(ptr, bytes);
        for (int i = 0; i < 6; ++i) (i % 3 == 2 ? gemm(p, p.pid, 0) : launch(p, p.pid, 0));
        if (layer >= 2) {  // two layers later, the activation is no longer needed
          auto [fptr, fbytes] = live[static_cast<std::size_t>(layer - 2)];
          CallSpec& f = push(p, "cudaFreeAsync", kLibC10Cuda, {5 * kUs, 0.5});
          f.ptr = fptr;
          f.stream = 0;
          f.child = &api("cuMemFreeAsync");
          f.device_bytes_delta = -static_cast<std::int64_t>(fbytes);
          p.free_addresses[fbytes].push_back(fptr);
        }
      }
      for (std::size_t i = live.size() - 2; i < live.size(); ++i) {
        CallSpec& f = push(p, "cudaFreeAsync", kLibC10Cuda, {5 * kUs, 0.5});
        f.ptr = live[i].first;
        f.stream = 0;
        f.child = &api("cuMemFreeAsync");
        f.device_bytes_delta = -static_cast<std::int64_t>(live[i].second);
        p.free_addresses[live[i].second].push_back(live[i].first);
      }
      copy(p, "cuMemcpyDtoHAsync_v2", 4, 0);
      stream_sync(p, 0, {3 * kMs, 0.3});
      break;
    }
  }
}

// ---- writing ----

void Generator::write(Process& p, const CallSpec& c) {
  if (c.exit_process) {
    w_.process_exited(p.pid, p.clock_ns, 0);
    p.exited = true;
    return;
  }
  // Descheduled during the call: preempted by a task that wanted the CPU (runnable
  // the whole time), or, for a call that waits on the GPU, asleep (idle ran).
  const bool contended = p.role == Role::Serve;
  std::int64_t dur = static_cast<std::int64_t>(rng_.lognormal(c.latency.median_ns, c.latency.sigma)) + 800;
  std::int64_t off_cpu = 0, runq = 0, longest = 0;
  std::uint32_t switches = 0, preempted_by = 0;
  const char* comm = nullptr;
  if (rng_.chance(contended ? 0.02 : 0.0015)) {
    switches = rng_.chance(0.8) ? 1 : 2 + static_cast<std::uint32_t>(rng_.below(3));
    longest = static_cast<std::int64_t>(rng_.lognormal(contended ? 7.5 * kMs : 2 * kMs, 0.4));
    off_cpu = longest + static_cast<std::int64_t>(switches - 1) * 300 * kUs;
    runq = off_cpu - static_cast<std::int64_t>(rng_.below(20 * kUs));
    static const std::pair<std::uint32_t, const char*> kPreemptors[] = {
        {918, "kworker/1:2"}, {14, "ksoftirqd/1"}, {2231, "dockerd"}, {31, "rcu_preempt"}};
    if (contended) {
      preempted_by = 698;
      comm = "sh";
    } else {
      std::tie(preempted_by, comm) = kPreemptors[rng_.below(4)];
    }
    dur += off_cpu;
  } else if (c.blocking && dur > 2 * kMs && rng_.chance(0.3)) {
    switches = static_cast<std::uint32_t>(dur / kMs);
    off_cpu = dur * 8 / 10;
    runq = static_cast<std::int64_t>(rng_.below(30 * kUs));
    longest = off_cpu / switches;
    preempted_by = 0;
    comm = "swapper/1";
  }

  vs::CallRecord parent;
  parent.id = next_id_++;
  parent.ts_ns = p.clock_ns;
  parent.dur_ns = dur;
  parent.pid = p.pid;
  parent.tid = c.tid;
  parent.api_id = c.api->id;
  parent.device = c.device;
  parent.stream = c.stream;
  parent.ptr = c.ptr;
  parent.bytes = c.bytes;
  parent.handle = c.handle;
  parent.ret = c.ret;
  parent.caller = *c.caller;
  parent.off_cpu_ns = off_cpu;
  parent.runq_ns = runq;
  parent.switches = switches;
  if (comm != nullptr) {
    parent.preempted_by = preempted_by;
    parent.preempted_by_comm = comm;
    parent.longest_off_ns = longest;
  }
  if (c.child != nullptr) {
    // The driver call inside: entered a little after, returned a little before;
    // the descheduling happened inside it. It returns first, so it is written first.
    vs::CallRecord child = parent;
    child.id = next_id_++;
    const std::int64_t lead = 1200 + static_cast<std::int64_t>(rng_.below(1500));
    child.ts_ns = parent.ts_ns + lead;
    child.dur_ns = std::max<std::int64_t>(dur - lead - 600 - static_cast<std::int64_t>(rng_.below(2000)), 300);
    child.api_id = c.child->id;
    child.device.reset();
    child.ret = c.child_ret;
    child.caller = kLibCudart;
    child.parent_id = parent.id;
    child.parent_api_id = parent.api_id;
    w_.add_call(child);
    ++rows_;
    ++p.rows;
  }
  w_.add_call(parent);
  ++rows_;
  ++p.rows;
  if (c.ret == 0 && (c.api->op == vs::Op::Alloc || c.api->op == vs::Op::VmmCreate || c.api->op == vs::Op::VmmMap ||
                     c.api->op == vs::Op::VmmReserve))
    ++allocations_;
  p.device_bytes += c.device_bytes_delta;
  // CPU time between calls: Python and the framework's own work.
  p.clock_ns += dur + static_cast<std::int64_t>(rng_.lognormal(7 * kUs, 0.6));
}

// NVML's device view every 100 ms: each GPU's used memory is what its processes
// hold plus their contexts (~624 MiB each in the H100 traces) and the driver's own.
void Generator::sample_nvml(std::int64_t until_ns) {
  constexpr std::uint64_t kTotal = 85520809984ull;
  for (; next_nvml_ns_ <= until_ns; next_nvml_ns_ += 100 * kMs) {
    std::int64_t used[kGpus] = {};
    for (const Process& p : procs_) {
      if (!p.started || p.exited) continue;
      const std::int64_t mine = p.device_bytes + kContextBytes;
      used[p.device] += mine;
      w_.add_gpu_process_sample({next_nvml_ns_, static_cast<std::uint32_t>(p.device), p.pid,
                                 static_cast<std::uint64_t>(mine)});
    }
    for (int g = 0; g < kGpus; ++g)
      w_.add_gpu_memory_sample({next_nvml_ns_, static_cast<std::uint32_t>(g),
                                static_cast<std::uint64_t>(used[g]) + 535 * kMiB, kTotal});
  }
}

void Generator::begin_session() {
  vs::SessionInfo info;
  info.host = "gpu-node-07";
  info.kernel = "6.8.0-49-generic";
  info.mode = "all";
  info.version = "0.1.0";
  info.options_json = nlohmann::json{{"launches", true},      {"sched_events", false}, {"cuda_libs", nlohmann::json::array()},
                                     {"pids", nlohmann::json::array()}, {"duration", ""},   {"attach_mode", "uprobe_multi"}}
                          .dump();
  info.start_ts_ns = start_ns_;
  info.realtime_offset_ns = 1795449144018603447 - 27462058453;  // as in examples/traces/empty_cache
  info.nvml = "sampled every 100 ms";
  w_.begin_session(info);

  // The libraries found, each with a probes row per catalog function.
  struct Lib {
    const char* path;
    const char* kind;
    const char* found_by;
    Layer layer;
    std::int64_t inode;
  };
  const Lib libs[] = {
      {"/usr/local/cuda-13.0/targets/x86_64-linux/lib/libcudart.so.13.0.96", "runtime", "ld-cache", Layer::Runtime, 3932711},
      {"/usr/local/nvidia/lib64/libcuda.so.580.159.04", "driver", "ld-cache", Layer::Driver, 3801102},
      {"/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cu13/lib/libcudart.so.13", "runtime", "search-path",
       Layer::Runtime, 5246088},
  };
  for (const Lib& l : libs) {
    vs::LibraryRecord lib;
    lib.path = l.path;
    lib.kind = l.kind;
    lib.found_by = l.found_by;
    lib.dev = 2049;
    lib.inode = l.inode;
    lib.attach_mode = "uprobe_multi";
    lib.attached_ts_ns = start_ns_ - 31 * kMs;
    std::vector<vs::ProbeRecord> probes;
    std::int64_t offset = 0x1a000;
    for (const ApiInfo& a : vs::all_apis()) {
      vs::ProbeRecord& pr = probes.emplace_back();
      pr.api = a.name;
      // Per-thread-stream variants are exported only by some builds.
      if (a.layer == l.layer && !a.name.ends_with("_ptsz") && !a.name.ends_with("_ptds")) {
        pr.offset = offset += 0x1c0;
        pr.status = "attached";
        ++lib.probes_attached;
      } else {
        pr.status = "missing";
        ++lib.probes_missing;
      }
    }
    w_.add_library(lib, probes);
  }
  for (int g = 0; g < kGpus; ++g)
    w_.add_gpu({static_cast<std::uint32_t>(g), "NVIDIA H100 80GB HBM3",
                "GPU-1940f67f-539b-82da-26e7-61d0b8efe4" + std::to_string(10 + g), "580.159.04", 85520809984ull});
}

void Generator::make_processes() {
  constexpr Role kRoles[] = {Role::Train, Role::TrainLeak, Role::Serve, Role::Async, Role::Eval};
  const std::uint32_t base_pid = 41200;
  for (std::uint32_t i = 0; i < o_.processes; ++i) {
    Process& p = procs_.emplace_back();
    p.role = kRoles[i % std::size(kRoles)];
    p.pid = base_pid + i * 37;
    p.autograd_tid = p.pid + 11;
    p.device = static_cast<std::int64_t>(i % kGpus);
    p.first_address = p.next_address = 0x7f10'0000'0000ull + (static_cast<std::uint64_t>(i) << 40);
    p.next_host_address = 0x7e00'0000'0000ull + (static_cast<std::uint64_t>(i) << 36);
    p.next_handle = 0x2d4f'0000ull + static_cast<std::uint64_t>(i) * 0x100000;
    p.side_stream = 0x55d3'c1a2'0000ull + static_cast<std::uint64_t>(i) * 0x1000 + 0x3c0;
    p.nccl_stream = p.side_stream + 0x800;
    switch (p.role) {
      case Role::Train:
      case Role::TrainLeak:
        p.comm = "pt_main_thread";
        p.cmdline = "/opt/torch/.venv/bin/python3 -u train.py --rank " + std::to_string(i) + " --batch-size 32";
        break;
      case Role::Serve:
        p.comm = "python3";
        p.cmdline = "python3 serve.py --port " + std::to_string(8000 + i);
        break;
      case Role::Async:
        p.comm = "python3";
        p.cmdline = "env PYTORCH_CUDA_ALLOC_CONF=backend:cudaMallocAsync python3 finetune.py";
        p.stop_at = 0.97;
        break;
      case Role::Eval:
        p.comm = "python3";
        p.cmdline = "python3 eval.py --checkpoint ckpt/step_4000.pt";
        p.start_at = 0.30;
        p.stop_at = 0.40;
        break;
    }
  }
}

void Generator::run() {
  begin_session();
  make_processes();
  // Processes by the entry time of their next call: the earliest goes next.
  auto later = [this](std::size_t a, std::size_t b) { return procs_[a].clock_ns > procs_[b].clock_ns; };
  std::priority_queue<std::size_t, std::vector<std::size_t>, decltype(later)> ready(later);
  next_id_ = w_.next_call_id();
  std::int64_t now = start_ns_;
  const auto target = static_cast<double>(calls_);
  auto activate = [&](std::size_t i) {
    Process& p = procs_[i];
    p.started = true;
    p.clock_ns = now + 150 * kUs * static_cast<std::int64_t>(i + 1);
    vs::ProcessRecord rec;
    rec.pid = p.pid;
    rec.comm = p.comm;
    rec.cmdline = p.cmdline;
    rec.first_ts_ns = p.clock_ns;
    if (p.start_at > 0) {  // started after the tracer: its first call made it known
      rec.ppid = procs_[0].pid;
      rec.start_ns = p.clock_ns - 2 * kSec;
      rec.how_found = "first_call";
    } else {
      rec.ppid = 1873;
      rec.start_ns = start_ns_ - (20 + static_cast<std::int64_t>(i)) * kSec;
      rec.how_found = "running";
    }
    w_.process_seen(rec);
    start(p);
    ready.push(i);
  };
  for (std::size_t i = 0; i < procs_.size(); ++i)
    if (procs_[i].start_at == 0) activate(i);

  while (rows_ < calls_ && !ready.empty()) {
    const std::size_t i = ready.top();
    ready.pop();
    Process& p = procs_[i];
    now = p.clock_ns;
    sample_nvml(now);
    const double done = static_cast<double>(rows_) / target;
    if (p.pending.empty()) (done >= p.stop_at ? stop(p) : plan_step(p));
    CallSpec c = std::move(p.pending.front());
    p.pending.pop_front();
    // The last row of the file: a call with a nested driver call would make two.
    if (c.child != nullptr && rows_ + 2 > calls_) c.child = nullptr;
    write(p, c);
    end_ns_ = std::max(end_ns_, p.clock_ns);
    if (!p.exited) ready.push(i);
    for (std::size_t j = 0; j < procs_.size(); ++j)
      if (!procs_[j].started && done >= procs_[j].start_at) activate(j);
    if (rows_ >= next_progress_) {
      const double s = std::chrono::duration<double>(Clock::now() - t0_).count();
      std::fprintf(stderr, "  %6.1f M calls  %6.1f s  %6.0f k calls/s  trace time %.1f s\n",
                   static_cast<double>(rows_) / 1e6, s, static_cast<double>(rows_) / s / 1e3,
                   static_cast<double>(now - start_ns_) / 1e9);
      next_progress_ += 1'000'000;
    }
  }
  end_ns_ += 3 * kMs;
  sample_nvml(end_ns_);
}

void Generator::print_processes() const {
  for (const Process& p : procs_)
    std::printf("  pid %u  %-10s  device %lld  %9llu calls  %6llu steps  %s\n", p.pid, role_name(p.role),
                static_cast<long long>(p.device), static_cast<unsigned long long>(p.rows),
                static_cast<unsigned long long>(p.steps), p.exited ? "exited" : "running at the end");
}

// "10M", "250k" or a plain number.
std::uint64_t parse_count(const std::string& text) {
  std::string digits = text;
  double mult = 1;
  if (!digits.empty() && (digits.back() == 'M' || digits.back() == 'm')) mult = 1e6, digits.pop_back();
  else if (!digits.empty() && (digits.back() == 'k' || digits.back() == 'K')) mult = 1e3, digits.pop_back();
  return static_cast<std::uint64_t>(std::stod(digits) * mult);
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  std::string calls_text = "10M";
  CLI::App app{"trace_generator: a large realistic trace written through the real store (bench/README.md)"};
  app.add_option("--db", o.db, "The trace file to write (must not exist)")->required();
  app.add_option("--calls", calls_text, "Call rows to write, e.g. 10000000 or 10M")
      ->capture_default_str()
      ->check(CLI::Validator(
          [](std::string& v) -> std::string {
            try {
              return parse_count(v) > 0 ? "" : "must be at least 1";
            } catch (const std::exception&) {
              return "not a count: " + v;
            }
          },
          "COUNT"));
  app.add_option("--seed", o.seed, "Seed of the generator: the same arguments write the same file")->capture_default_str();
  app.add_option("--processes", o.processes,
                 "Traced processes (5: train, train-leak, serve, async, eval; more repeat the roles)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--sessions", o.sessions, "Split the calls over S sessions, one after the other")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_flag("--unfinished", o.unfinished,
               "Leave the last session as a trace still recording has it: every row written, but no end, no indexes "
               "and no summaries (read back, it is 'interrupted', which tools query the same way)");
  CLI11_PARSE(app, argc, argv);
  o.calls = parse_count(calls_text);
  if (std::filesystem::exists(o.db)) {
    std::fprintf(stderr, "trace_generator: %s exists; give a new path\n", o.db.c_str());
    return 1;
  }
  auto writer = vs::store::TraceWriter::open(o.db);
  if (!writer) {
    std::fprintf(stderr, "trace_generator: %s\n", writer.error().message.c_str());
    return 1;
  }
  std::fprintf(stderr, "trace_generator: %llu calls, %u processes, %u session(s), seed %llu -> %s\n",
               static_cast<unsigned long long>(o.calls), o.processes, o.sessions,
               static_cast<unsigned long long>(o.seed), o.db.c_str());
  const auto t0 = Clock::now();
  double calls_s = 0, end_s = 0;
  std::uint64_t rows = 0;
  std::int64_t allocations = 0;
  std::int64_t start_ns = 4'210 * kSec;  // CLOCK_MONOTONIC: the host has been up 70 min
  std::vector<std::string> summaries;
  for (std::uint32_t s = 0; s < o.sessions; ++s) {
    const std::uint64_t calls = o.calls / o.sessions + (s < o.calls % o.sessions ? 1 : 0);
    const auto t1 = Clock::now();
    Generator gen(o, **writer, start_ns, calls, o.seed + s);
    gen.run();
    const auto t2 = Clock::now();
    vs::SessionEnd end;
    end.end_ts_ns = gen.end_ns();
    end.attach_ms = 31.3;
    end.detach_ms = 104.2;
    const bool last = s + 1 == o.sessions;
    if (vs::Status st = last && o.unfinished ? (*writer)->flush() : (*writer)->end_session(end); !st) {
      std::fprintf(stderr, "trace_generator: %s\n", st.message().c_str());
      return 1;
    }
    calls_s += std::chrono::duration<double>(t2 - t1).count();
    end_s += std::chrono::duration<double>(Clock::now() - t2).count();
    rows += gen.rows();
    allocations += gen.allocations_opened();
    std::printf("session %u: %llu calls over %.1f s of session time\n", s + 1,
                static_cast<unsigned long long>(gen.rows()), static_cast<double>(gen.session_span_ns()) / 1e9);
    gen.print_processes();
    start_ns = gen.end_ns() + 300 * kSec;  // the next run, 5 minutes later
  }
  writer.value().reset();  // closes the file, so its size is final
  const double total_s = std::chrono::duration<double>(Clock::now() - t0).count();
  std::printf("wrote %llu calls (%lld allocations opened) in %.1f s: %.1f s of calls (%.0f k calls/s), "
              "%.1f s end_session (flush + indexes); %.0f k calls/s end to end; %.0f MB file (%s)\n",
              static_cast<unsigned long long>(rows), static_cast<long long>(allocations), total_s, calls_s,
              static_cast<double>(rows) / calls_s / 1e3, end_s, static_cast<double>(rows) / total_s / 1e3,
              static_cast<double>(std::filesystem::file_size(o.db)) / 1e6, o.db.c_str());
  return 0;
}
