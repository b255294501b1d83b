#include "tests/tools/synthetic_trace.h"

#include <stdlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <tuple>
#include <unordered_map>

#include "common/cuda_api.h"
#include "store/pairing.h"
#include "store/store.h"
#include "tests/test_sample.h"

namespace vs::test::synthetic {

namespace {
constexpr std::string_view kSitePackages = "/opt/torch/.venv/lib/python3.12/site-packages/";
std::string site_package(std::string_view rest) { return std::string(kSitePackages) + std::string(rest); }

constexpr std::uint64_t kStream = 0x5603e1a0b4c0;   // PyTorch's current stream
constexpr std::uint64_t kContext = 0x5603e0f3a2d0;  // the primary context's CUcontext
constexpr std::uint64_t kAddressBase = 0x7f0000000000;
constexpr std::uint64_t kReservedBase = 0x302000000;  // where the driver put PyTorch's reservation on the H100
constexpr std::uint64_t kReservedBytes = 64 * kGiB;
constexpr std::uint64_t kSegmentAlign = 2 * kMiB;
constexpr std::uint64_t kHostBuffer = 0x7f8000001000;  // the pinned 4 bytes .item() copies into

// Durations measured on the H100 traces (examples/traces), rounded.
constexpr std::int64_t kContextInitNs = 110 * kMs;
constexpr std::int64_t kMallocNs = 100 * kUs, kFreeNs = 70 * kUs;
constexpr std::int64_t kVmmCreateNs = 30 * kUs, kVmmMapNs = 12 * kUs, kVmmSetAccessNs = 60 * kUs;
constexpr std::int64_t kVmmUnmapNs = 45 * kUs, kVmmReleaseNs = 30 * kUs, kVmmReserveNs = 40 * kUs;
constexpr std::int64_t kCopyNs = 20 * kUs, kSyncNs = 10 * kUs;
constexpr std::int64_t kLoadCopyNsPerMiB = 40 * kUs;  // host-to-device at ~25 GB/s
// A driver call made inside a runtime call starts this long after it and returns this long before it.
constexpr std::int64_t kNestedInsetNs = 2 * kUs;

vs::LibraryRecord library(std::string path, Layer layer, std::int64_t attached_ts_ns) {
  vs::LibraryRecord lib;
  lib.path = std::move(path);
  lib.kind = layer == Layer::Runtime ? "runtime" : "driver";
  lib.found_by = "maps";
  lib.attach_mode = "uprobe_multi";
  lib.attached_ts_ns = attached_ts_ns;
  for (const ApiInfo& api : all_apis())
    if (api.layer == layer && !api.launch) ++lib.probes_attached;
  return lib;
}

std::vector<vs::ProbeRecord> probes(Layer layer) {
  std::vector<vs::ProbeRecord> out;
  std::int64_t offset = 0x10000;
  for (const ApiInfo& api : all_apis())
    if (api.layer == layer)
      out.push_back({std::string(api.name), offset += 0x100, api.launch ? "disabled" : "attached", std::nullopt});
  return out;
}

}  // namespace

const std::string kTorchAllocatorLib = site_package("torch/lib/libc10_cuda.so");
const std::string kTorchCudaLib = site_package("torch/lib/libtorch_cuda.so");
const std::string kCudartLib = site_package("nvidia/cu13/lib/libcudart.so.13");
const std::string kXlaPluginLib = site_package("jax_plugins/xla_cuda13/xla_cuda_plugin.so");
const std::string kCupyRuntimeLib = site_package("cupy_backends/cuda/api/runtime.cpython-312-x86_64-linux-gnu.so");

TempDir::TempDir(std::string_view prefix) {
  std::string tmpl = (std::filesystem::temp_directory_path() / (std::string(prefix) + "_XXXXXX")).string();
  if (mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp " + tmpl + ": " + std::strerror(errno));
  path_ = tmpl;
}

TempDir::~TempDir() {
  std::error_code ignored;  // a destructor cannot report it; the directory is under /tmp
  std::filesystem::remove_all(path_, ignored);
}

// ---- TraceBuilder ----

TraceBuilder::TraceBuilder(TraceOptions options) : options_(options) {}

void TraceBuilder::process(std::uint32_t pid, std::string comm, std::string cmdline, std::int64_t first_ts_ns,
                           std::string how_found) {
  processes_.push_back({pid, std::move(comm), std::move(cmdline), std::move(how_found), first_ts_ns});
}

Call& TraceBuilder::call(std::uint32_t pid, std::string_view api, std::int64_t ts_ns, std::int64_t dur_ns) {
  return calls_.emplace_back(static_cast<std::int64_t>(calls_.size()) + 1, api, pid).ts(ts_ns, dur_ns);
}

void TraceBuilder::exit(std::uint32_t pid, std::int64_t ts_ns, int exit_code) { exits_.push_back({pid, ts_ns, exit_code}); }

std::int64_t TraceBuilder::last_event_ns() const {
  std::int64_t last = options_.session_start_ns;
  for (const Call& c : calls_) last = std::max(last, c.r.ts_ns + c.r.dur_ns);
  for (const Exit& e : exits_) last = std::max(last, e.ts_ns);
  for (const ProcessSeen& p : processes_) last = std::max(last, p.first_ts_ns);
  return last;
}

void TraceBuilder::write(const std::string& path) const {
  if (std::filesystem::exists(path)) throw std::runtime_error("synthetic trace: " + path + " exists already");
  auto opened = store::TraceWriter::open(path);
  if (!opened.ok()) throw std::runtime_error("synthetic trace: opening " + path + ": " + opened.error().message);
  store::TraceWriter& w = *opened.value();

  const std::int64_t start = options_.session_start_ns;
  const std::int64_t end = last_event_ns() + options_.session_tail_ns;
  vs::SessionInfo session;
  session.host = "synthetic";
  session.kernel = "6.1.0-synthetic";
  session.mode = "launch";
  session.options_json = R"({"launches":false,"sched_events":false})";
  session.version = "synthetic";
  if (!processes_.empty()) session.command = processes_.front().cmdline;
  session.start_ts_ns = start;
  session.realtime_offset_ns = 1'764'000'000 * kSec;
  session.nvml = options_.nvml_interval_ns > 0
                     ? std::optional("sampled every " + std::to_string(options_.nvml_interval_ns / kMs) + " ms")
                     : std::optional<std::string>("disabled (--no-nvml)");
  if (w.begin_session(session) == 0) throw std::runtime_error("synthetic trace: " + w.flush().message());
  w.add_library(library(kCudartLib, Layer::Runtime, start), probes(Layer::Runtime));
  w.add_library(library(site_package("nvidia/cu13/lib/libcuda.so.1"), Layer::Driver, start), probes(Layer::Driver));
  if (options_.nvml_interval_ns > 0) w.add_gpu({0, "NVIDIA H100 80GB HBM3", "GPU-synthetic-0", "580.159.04", kGpuTotalBytes});

  // The file's call ids follow entry time (the tracer's sequence); nested calls point at their parent's.
  std::vector<vs::CallRecord> calls;
  for (const Call& c : calls_) calls.push_back(c.r);
  std::sort(calls.begin(), calls.end(), [](const auto& a, const auto& b) { return std::tie(a.ts_ns, a.id) < std::tie(b.ts_ns, b.id); });
  std::unordered_map<std::int64_t, std::int64_t> file_id;  // provisional -> file
  for (std::size_t i = 0; i < calls.size(); ++i) file_id[calls[i].id] = w.next_call_id() + static_cast<std::int64_t>(i);
  for (auto& c : calls) {
    c.id = file_id.at(c.id);
    if (c.parent_id) c.parent_id = file_id.at(*c.parent_id);
  }

  // Everything in the order the tracer delivers it: a process when first seen, a call when it returns
  // (a nested call first: it returns before its parent), an exit, NVML samples.
  enum Type { kProcess, kCall, kExit, kSample };
  struct Event {
    std::int64_t ts;
    Type type;
    std::int64_t order;  // among events of one instant and type
    std::size_t index;
  };
  std::vector<Event> events;
  for (std::size_t i = 0; i < processes_.size(); ++i) events.push_back({processes_[i].first_ts_ns, kProcess, 0, i});
  for (std::size_t i = 0; i < calls.size(); ++i) events.push_back({calls[i].ts_ns + calls[i].dur_ns, kCall, -calls[i].id, i});
  for (std::size_t i = 0; i < exits_.size(); ++i) events.push_back({exits_[i].ts_ns, kExit, 0, i});
  if (options_.nvml_interval_ns > 0)
    for (std::int64_t ts = start + options_.nvml_interval_ns; ts < end; ts += options_.nvml_interval_ns)
      events.push_back({ts, kSample, 0, 0});
  std::stable_sort(events.begin(), events.end(),
                   [](const Event& a, const Event& b) { return std::tie(a.ts, a.type, a.order) < std::tie(b.ts, b.type, b.order); });

  // NVML's per-process used bytes: the context plus the process's GPU memory, as pairing counts it (one
  // Pairing per live process that made a call, so that its totals are the process's).
  std::map<std::uint32_t, store::Pairing> pairing_by_pid;
  for (const Event& e : events) {
    switch (e.type) {
      case kProcess: {
        const ProcessSeen& p = processes_[e.index];
        vs::ProcessRecord rec;
        rec.pid = p.pid;
        rec.comm = p.comm;
        rec.cmdline = p.cmdline;
        rec.first_ts_ns = p.first_ts_ns;
        rec.how_found = p.how_found;
        w.process_seen(rec);
        break;
      }
      case kCall:
        pairing_by_pid[calls[e.index].pid].on_call(calls[e.index]);
        w.add_call(calls[e.index]);
        break;
      case kExit:
        pairing_by_pid.erase(exits_[e.index].pid);
        w.process_exited(exits_[e.index].pid, exits_[e.index].ts_ns, exits_[e.index].code);
        break;
      case kSample: {
        std::uint64_t used = 0;
        for (const auto& [pid, process] : pairing_by_pid) {
          const std::uint64_t process_used = options_.context_bytes + process.totals().device_bytes();
          w.add_gpu_process_sample({e.ts, 0, pid, process_used});
          used += process_used;
        }
        w.add_gpu_memory_sample({e.ts, 0, used, kGpuTotalBytes});
        break;
      }
    }
  }
  vs::SessionEnd session_end;
  session_end.end_ts_ns = end;
  session_end.attach_ms = 1.2;
  session_end.detach_ms = 85;
  if (Status st = w.end_session(session_end); !st) throw std::runtime_error("synthetic trace " + path + ": " + st.message());
}

// ---- ProcessScript ----

ProcessScript::ProcessScript(TraceBuilder& trace, std::uint32_t pid, Allocator allocator, std::int64_t start_ns,
                             std::int64_t call_gap_ns)
    : trace_(trace),
      pid_(pid),
      allocator_(allocator),
      now_(start_ns),
      call_gap_ns_(call_gap_ns),
      next_address_(allocator == Allocator::ExpandableSegments ? kReservedBase : kAddressBase),
      next_handle_(0x2d4e0000 + pid * 0x100000ull) {}

Call& ProcessScript::driver_call(std::string_view api, std::int64_t dur_ns) {
  Call& c = trace_.call(pid_, api, now_, dur_ns).caller(kTorchAllocatorLib);
  now_ += dur_ns + call_gap_ns_;
  return c;
}

void ProcessScript::runtime_call(std::string_view api, const std::string& caller, std::int64_t dur_ns,
                                 std::string_view driver_api, const Args& args) {
  Call& outer = trace_.call(pid_, api, now_, dur_ns).caller(caller).device(0);
  Call& inner = trace_.call(pid_, driver_api, now_ + kNestedInsetNs, dur_ns - 2 * kNestedInsetNs)
                    .caller(kCudartLib)
                    .parent(outer.r.id, api);
  for (Call* c : {&outer, &inner}) {
    c->r.ptr = args.ptr;
    c->r.bytes = args.bytes;
    c->r.stream = args.stream;
  }
  now_ += dur_ns + call_gap_ns_;
}

void ProcessScript::init_context() {
  Call& sync = trace_.call(pid_, "cudaDeviceSynchronize", now_, kContextInitNs).caller(kTorchAllocatorLib).device(0);
  trace_.call(pid_, "cuCtxSetCurrent", now_ + 20 * kUs, 20 * kUs)
      .caller(kCudartLib)
      .handle(kContext)
      .parent(sync.r.id, "cudaDeviceSynchronize");
  trace_.call(pid_, "cuDevicePrimaryCtxRetain", now_ + 50 * kUs, kContextInitNs - 60 * kUs)
      .caller(kCudartLib)
      .handle(kContext)
      .device(0)
      .parent(sync.r.id, "cudaDeviceSynchronize");
  now_ += kContextInitNs + call_gap_ns_;
}

std::uint64_t ProcessScript::alloc(std::uint64_t bytes) {
  const std::uint64_t address = next_address_;
  next_address_ += (bytes + kSegmentAlign - 1) / kSegmentAlign * kSegmentAlign;
  Segment segment{bytes, 0};
  switch (allocator_) {
    case Allocator::Caching:
      runtime_call("cudaMalloc", kTorchAllocatorLib, kMallocNs, "cuMemAlloc_v2", {address, bytes, std::nullopt});
      break;
    case Allocator::MallocAsync:
      runtime_call("cudaMallocAsync", kTorchAllocatorLib, kMallocNs, "cuMemAllocAsync", {address, bytes, kStream});
      break;
    case Allocator::ExpandableSegments:
      if (!reserved_) {
        driver_call("cuMemAddressReserve", kVmmReserveNs).ptr(kReservedBase).bytes(kReservedBytes);
        reserved_ = true;
      }
      segment.handle = next_handle_++;
      driver_call("cuMemCreate", kVmmCreateNs).handle(segment.handle).bytes(bytes).device(0);
      driver_call("cuMemMap", kVmmMapNs).ptr(address).bytes(bytes).handle(segment.handle);
      driver_call("cuMemSetAccess", kVmmSetAccessNs).ptr(address).bytes(bytes).device(0);
      break;
  }
  segments_[address] = segment;
  return address;
}

void ProcessScript::free(std::uint64_t address) {
  auto it = segments_.find(address);
  if (it == segments_.end())
    throw std::logic_error("synthetic trace: pid " + std::to_string(pid_) + " frees a segment it does not hold");
  switch (allocator_) {
    case Allocator::Caching:
      runtime_call("cudaFree", kTorchAllocatorLib, kFreeNs, "cuMemFree_v2", {address, std::nullopt, std::nullopt});
      break;
    case Allocator::MallocAsync:
      runtime_call("cudaFreeAsync", kTorchAllocatorLib, kFreeNs, "cuMemFreeAsync", {address, std::nullopt, kStream});
      break;
    case Allocator::ExpandableSegments:
      driver_call("cuMemUnmap", kVmmUnmapNs).ptr(address).bytes(it->second.bytes);
      driver_call("cuMemRelease", kVmmReleaseNs).handle(it->second.handle);
      break;
  }
  segments_.erase(it);
}

std::vector<std::uint64_t> ProcessScript::held() const {
  std::vector<std::uint64_t> out;
  for (const auto& [address, segment] : segments_) out.push_back(address);
  return out;
}

void ProcessScript::copy_to_device(std::uint64_t bytes) {
  const std::uint64_t to = segments_.empty() ? kAddressBase : segments_.rbegin()->first;
  runtime_call("cudaMemcpyAsync", kTorchCudaLib, kCopyNs + static_cast<std::int64_t>(bytes / kMiB) * kLoadCopyNsPerMiB,
               "cuMemcpyHtoDAsync_v2", {to, bytes, kStream});
}

void ProcessScript::heartbeat() {
  runtime_call("cudaMemcpyAsync", kTorchCudaLib, kCopyNs, "cuMemcpyDtoHAsync_v2", {kHostBuffer, 4, kStream});
  runtime_call("cudaStreamSynchronize", kTorchCudaLib, kSyncNs, "cuStreamSynchronize", {std::nullopt, std::nullopt, kStream});
}

void ProcessScript::exit(int code) { trace_.exit(pid_, now_, code); }

// ---- Workloads ----

Phase Phase::grow(int iterations, std::uint64_t bytes_per_iteration, std::uint64_t transient_bytes) {
  Phase p;
  p.iterations = iterations;
  p.kept_bytes = bytes_per_iteration;
  p.transient_bytes = transient_bytes;
  return p;
}

Phase Phase::flat(int iterations, std::uint64_t transient_bytes) { return grow(iterations, 0, transient_bytes); }

Phase Phase::release_burst(std::size_t keep_segments) {
  Phase p;
  p.kind = Kind::ReleaseBurst;
  p.keep_segments = keep_segments;
  return p;
}

Phase Phase::idle(std::int64_t ns) {
  Phase p;
  p.kind = Kind::Idle;
  p.idle_ns = ns;
  return p;
}

void run(TraceBuilder& trace, const Workload& w) {
  const std::int64_t start = trace.options().session_start_ns + w.start_offset_ns;
  trace.process(w.pid, w.comm, w.cmdline, start, w.how_found);
  ProcessScript p(trace, w.pid, w.allocator, start, w.call_gap_ns);
  p.idle(w.startup_ns / 2);
  p.init_context();
  p.idle(std::max<std::int64_t>(0, start + w.startup_ns - p.now()));
  for (int i = 0; i < w.model_segments; ++i) {
    const std::int64_t due = p.now() + w.model_load_ns / w.model_segments;
    p.alloc(w.model_bytes / static_cast<std::uint64_t>(w.model_segments));
    p.copy_to_device(w.model_bytes / static_cast<std::uint64_t>(w.model_segments));
    p.idle(std::max<std::int64_t>(0, due - p.now()));
  }
  p.heartbeat();
  for (const Phase& phase : w.phases) {
    switch (phase.kind) {
      case Phase::Kind::Iterations:
        for (int i = 0; i < phase.iterations; ++i) {
          const std::optional<std::uint64_t> transient =
              phase.transient_bytes > 0 ? std::optional(p.alloc(phase.transient_bytes)) : std::nullopt;
          if (phase.kept_bytes > 0) p.alloc(phase.kept_bytes);
          if (phase.heartbeat) p.heartbeat();
          if (transient) p.free(*transient);
          p.idle(w.iteration_gap_ns);
        }
        break;
      case Phase::Kind::ReleaseBurst: {
        const auto held = p.held();
        for (std::size_t i = phase.keep_segments; i < held.size(); ++i) p.free(held[i]);
        break;
      }
      case Phase::Kind::Idle:
        p.idle(phase.idle_ns);
        break;
    }
  }
  if (w.exit_after_ns) {
    p.idle(*w.exit_after_ns);
    p.exit();
  }
}

void write_trace(const std::string& path, const std::vector<Workload>& workloads, const TraceOptions& options) {
  TraceBuilder trace(options);
  for (const Workload& w : workloads) run(trace, w);
  trace.write(path);
}

// ---- Scenarios ----

Workload leak_after_startup(const LeakShape& shape, Allocator allocator) {
  Workload w;
  w.allocator = allocator;
  w.cmdline = "python3 serve.py --keep-outputs";
  w.phases = {Phase::grow(shape.iterations, shape.bytes_per_iteration, shape.transient_bytes)};
  return w;
}

Workload leak_after_slow_model_build(const LeakShape& shape, std::int64_t model_load_ns) {
  Workload w = leak_after_startup(shape);
  w.startup_ns -= model_load_ns;  // the same time to the first request
  w.model_load_ns = model_load_ns;
  return w;
}

Workload plateau(const GrowthThenFlat& shape) {
  Workload w;
  w.cmdline = "python3 serve.py --max-context 4096";
  w.phases = {Phase::grow(shape.growth_iterations, shape.bytes_per_iteration),
              Phase::flat(shape.flat_iterations, shape.flat_transient_bytes)};
  return w;
}

Workload grows_to_the_end(const GrowthThenFlat& shape) {
  Workload w = plateau(shape);
  w.exit_after_ns = std::nullopt;  // the trace stopped (--duration) while it ran
  return w;
}

Workload steady(const SteadyShape& shape) {
  Workload w;
  w.cmdline = "python3 train.py";
  w.phases = {Phase::flat(shape.iterations, shape.transient_bytes)};
  return w;
}

Workload step_then_flat(const StepShape& shape) {
  Workload w;
  w.cmdline = "python3 serve.py --load-adapter";
  w.phases = {Phase::flat(shape.flat_before, shape.transient_bytes), Phase::grow(1, shape.step_bytes, shape.transient_bytes),
              Phase::flat(shape.flat_after, shape.transient_bytes)};
  return w;
}

std::vector<Workload> leaking_and_steady(const LeakShape& leak, const SteadyShape& steady_shape) {
  Workload leaking = leak_after_startup(leak);
  leaking.pid = 5001;
  leaking.cmdline = "python3 worker.py --rank 0";
  Workload healthy = steady(steady_shape);
  healthy.pid = 5002;
  healthy.cmdline = "python3 worker.py --rank 1";
  healthy.how_found = "fork";
  return {leaking, healthy};
}

Workload empty_cache_with_live_tensors(const EmptyCacheShape& shape) {
  Workload w;
  w.cmdline = "python3 infer.py --unload";
  w.phases = {Phase::grow(shape.iterations, shape.bytes_per_iteration),
              Phase::release_burst(static_cast<std::size_t>(w.model_segments)), Phase::idle(shape.after_ns)};
  return w;
}

std::vector<Scenario> scenarios() {
  return {
      {"leak after start-up (cudaMalloc)", {leak_after_startup()}},
      {"leak after start-up (expandable segments)", {leak_after_startup({}, Allocator::ExpandableSegments)}},
      {"leak after start-up (cudaMallocAsync)",
       {leak_after_startup({.transient_bytes = 8 * kMiB}, Allocator::MallocAsync)}},
      {"leak after a slow model build", {leak_after_slow_model_build()}},
      {"plateau (allocating)", {plateau({.flat_transient_bytes = 16 * kMiB})}},
      {"plateau (heartbeats only)", {plateau()}},
      {"steady", {steady()}},
      {"step then flat", {step_then_flat()}},
      {"leaking and steady", leaking_and_steady()},
      {"empty_cache with live tensors", {empty_cache_with_live_tensors()}},
      {"grows to the end", {grows_to_the_end()}},
  };
}

std::vector<Scenario> sampled_scenarios() {
  std::vector<Scenario> all = scenarios(), taken;
  const int every = test_sample_every();
  for (std::size_t i = 0; i < all.size(); i += static_cast<std::size_t>(every)) taken.push_back(std::move(all[i]));
  return taken;
}

}  // namespace vs::test::synthetic
