// The processes using a GPU now, for an agent that must pick one to trace
// (issue 13: the `gpu_processes` tool): NVML's per-process used memory and
// GPU index, and the processes that map a CUDA library (libcuda, libcudart),
// which NVML misses before their first allocation and, in a container, may
// report under another pid. Read from /proc and NVML only: nothing is attached.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "tracer/nvml_sampler.h"

namespace vs::tracer {

struct GpuProcess {
  std::uint32_t pid = 0;  // in vramscope's pid namespace (the host's when vramscope runs there)
  std::string comm, cmdline;  // raw: untrusted text, escaped by whoever shows it
  struct GpuUse {
    std::uint32_t gpu_index = 0;  // NVML's index
    std::uint64_t used_bytes = 0;
  };
  std::vector<GpuUse> nvml;                 // empty: NVML does not list it (or is unavailable)
  std::vector<std::string> cuda_libraries;  // mapped libcuda/libcudart files, as maps names them
  std::string pid_namespace;                // "pid:[4026531836]": differs from vramscope's inside a container
  std::uint32_t namespace_pid = 0;          // its pid inside its own pid namespace (NSpid's last)
  std::string cgroup;                       // the unified hierarchy's path ("0::/..."), names a container
  std::uint64_t nvml_used_bytes() const;
};

struct GpuProcessList {
  std::vector<GpuProcess> processes;  // most NVML memory first, then by pid
  std::string nvml_status;            // "" when NVML answered, else why not
  std::uint64_t processes_scanned = 0;
};

// Scans /proc (every process whose maps name a CUDA library) and asks `nvml` (may be null: /proc only).
GpuProcessList list_gpu_processes(NvmlSampler* nvml, const std::string& nvml_status = "");

}  // namespace vs::tracer
