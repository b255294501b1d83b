#include "tracer/nvml_sampler.h"

#include <dlfcn.h>
#include <time.h>

#include <condition_variable>
#include <mutex>

namespace vs::tracer {
namespace {

// The few NVML declarations used (nvml.h, stable ABI since NVML 11).
using nvmlReturn_t = int;
using nvmlDevice_t = void*;
constexpr nvmlReturn_t NVML_SUCCESS = 0;
constexpr nvmlReturn_t NVML_ERROR_INSUFFICIENT_SIZE = 7;
struct nvmlMemory_t {
  unsigned long long total, free, used;
};
struct nvmlProcessInfo_t {  // the _v2 layout, used by ..._v3 functions
  unsigned int pid;
  unsigned long long usedGpuMemory;
  unsigned int gpuInstanceId, computeInstanceId;
};

std::int64_t monotonic_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

}  // namespace

struct NvmlSampler::Api {
  nvmlReturn_t (*init)();
  nvmlReturn_t (*shutdown)();
  const char* (*error_string)(nvmlReturn_t);
  nvmlReturn_t (*driver_version)(char*, unsigned);
  nvmlReturn_t (*count)(unsigned*);
  nvmlReturn_t (*handle_by_index)(unsigned, nvmlDevice_t*);
  nvmlReturn_t (*name)(nvmlDevice_t, char*, unsigned);
  nvmlReturn_t (*uuid)(nvmlDevice_t, char*, unsigned);
  nvmlReturn_t (*memory)(nvmlDevice_t, nvmlMemory_t*);
  nvmlReturn_t (*processes)(nvmlDevice_t, unsigned*, nvmlProcessInfo_t*);
  std::mutex mu;
  std::condition_variable cv;
};

Result<std::unique_ptr<NvmlSampler>> NvmlSampler::open(const std::string& library) {
  std::unique_ptr<NvmlSampler> s(new NvmlSampler());
  const std::string lib = library.empty() ? "libnvidia-ml.so.1" : library;
  s->handle_ = dlopen(lib.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!s->handle_) return Error{"NVML unavailable (" + std::string(dlerror()) + "): no device view in this trace"};
  s->api_ = std::make_unique<Api>();
  Api& a = *s->api_;
  bool missing = false;
  auto load = [&](auto& fn, const char* sym) {
    fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(s->handle_, sym));
    if (!fn) missing = true;
  };
  load(a.init, "nvmlInit_v2");
  load(a.shutdown, "nvmlShutdown");
  load(a.error_string, "nvmlErrorString");
  load(a.driver_version, "nvmlSystemGetDriverVersion");
  load(a.count, "nvmlDeviceGetCount_v2");
  load(a.handle_by_index, "nvmlDeviceGetHandleByIndex_v2");
  load(a.name, "nvmlDeviceGetName");
  load(a.uuid, "nvmlDeviceGetUUID");
  load(a.memory, "nvmlDeviceGetMemoryInfo");
  load(a.processes, "nvmlDeviceGetComputeRunningProcesses_v3");
  if (missing) return Error{"NVML unavailable: " + lib + " lacks functions vramscope needs (driver older than R510?)"};
  if (nvmlReturn_t rc = a.init(); rc != NVML_SUCCESS)
    return Error{std::string("NVML unavailable: nvmlInit failed: ") + a.error_string(rc)};

  char driver[96] = {};
  a.driver_version(driver, sizeof(driver));
  unsigned n = 0;
  if (nvmlReturn_t rc = a.count(&n); rc != NVML_SUCCESS)
    return Error{std::string("NVML: cannot count devices: ") + a.error_string(rc)};
  for (unsigned i = 0; i < n; ++i) {
    nvmlDevice_t dev = nullptr;
    if (a.handle_by_index(i, &dev) != NVML_SUCCESS) continue;
    vs::GpuRecord g;
    g.index = i;
    char buf[128] = {};
    if (a.name(dev, buf, sizeof(buf)) == NVML_SUCCESS) g.name = buf;
    char uuid[96] = {};
    if (a.uuid(dev, uuid, sizeof(uuid)) == NVML_SUCCESS) g.uuid = uuid;
    g.driver_version = driver;
    nvmlMemory_t mem{};
    if (a.memory(dev, &mem) == NVML_SUCCESS) g.total_bytes = mem.total;
    s->gpus_.push_back(g);
    s->devices_.push_back(dev);
  }
  return s;
}

NvmlSampler::~NvmlSampler() {
  stop();
  if (api_ && api_->shutdown) api_->shutdown();
  if (handle_) dlclose(handle_);
}

NvmlSamples NvmlSampler::sample_once() {
  NvmlSamples out;
  std::vector<nvmlProcessInfo_t> procs(64);
  for (std::size_t i = 0; i < devices_.size(); ++i) {
    auto ts = monotonic_ns();
    nvmlMemory_t mem{};
    if (api_->memory(devices_[i], &mem) == NVML_SUCCESS)
      out.gpus.push_back({ts, gpus_[i].index, mem.used, mem.total});
    unsigned count = static_cast<unsigned>(procs.size());
    nvmlReturn_t rc = api_->processes(devices_[i], &count, procs.data());
    if (rc == NVML_ERROR_INSUFFICIENT_SIZE) {
      procs.resize(count + 16);
      count = static_cast<unsigned>(procs.size());
      rc = api_->processes(devices_[i], &count, procs.data());
    }
    if (rc != NVML_SUCCESS) continue;
    for (unsigned k = 0; k < count; ++k)
      out.processes.push_back({ts, gpus_[i].index, procs[k].pid, procs[k].usedGpuMemory});
  }
  return out;
}

void NvmlSampler::start(std::chrono::milliseconds interval, std::function<void(NvmlSamples&&)> sink) {
  stop_ = false;
  thread_ = std::thread([this, interval, sink = std::move(sink)] {
    std::unique_lock lock(api_->mu);
    while (!stop_) {
      lock.unlock();
      sink(sample_once());
      lock.lock();
      api_->cv.wait_for(lock, interval, [this] { return stop_.load(); });
    }
  });
}

void NvmlSampler::stop() {
  if (!thread_.joinable()) return;
  {
    std::lock_guard lock(api_->mu);
    stop_ = true;
  }
  api_->cv.notify_all();
  thread_.join();
}

}  // namespace vs::tracer
