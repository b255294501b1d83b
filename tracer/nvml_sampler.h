// NVML's device view during a trace: per-GPU used/total memory and per-
// process used memory, sampled on a thread. libnvidia-ml is opened at run
// time (no build dependency); where it is absent the sampler says so and the
// trace goes on without it.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/result.h"
#include "common/records.h"

namespace vs::tracer {

struct NvmlSamples {
  std::vector<vs::GpuMemorySample> gpus;
  std::vector<vs::GpuProcessSample> processes;
};

class NvmlSampler {
 public:
  // Opens `library` (default: libnvidia-ml.so.1 from the loader's search path)
  // and initializes NVML. The error says why NVML is unavailable.
  static Result<std::unique_ptr<NvmlSampler>> open(const std::string& library);
  ~NvmlSampler();

  const std::vector<vs::GpuRecord>& gpus() const { return gpus_; }
  NvmlSamples sample_once();
  // Samples every `interval` on a thread until stop(), handing each sample to `sink`.
  void start(std::chrono::milliseconds interval, std::function<void(NvmlSamples&&)> sink);
  void stop();

 private:
  NvmlSampler() = default;
  struct Api;
  std::unique_ptr<Api> api_;
  void* handle_ = nullptr;
  std::vector<vs::GpuRecord> gpus_;
  std::vector<void*> devices_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
};

}  // namespace vs::tracer
