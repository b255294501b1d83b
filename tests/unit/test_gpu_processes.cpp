// gpu_processes (tracer/gpu_processes.h) against a real process that maps the fake CUDA libraries and the fake
// NVML reporting it: found by its mappings and by NVML, described from /proc.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <fstream>
#include <sstream>
#include <thread>

#include "tracer/gpu_processes.h"

using namespace vs::tracer;

namespace {

const std::string kFixtures = VS_FIXTURE_DIR;

// The fixture workload, sleeping `ms` before its scenario: it maps libcudart and libcuda at start.
struct SleepingWorkload {
  pid_t pid = -1;
  explicit SleepingWorkload(int ms) {
    pid = fork();
    if (pid == 0) {  // the child
      const std::string exe = kFixtures + "/workload", delay = std::to_string(ms);
      execl(exe.c_str(), exe.c_str(), "delay", delay.c_str(), "basic", static_cast<char*>(nullptr));
      _exit(127);
    }
  }
  ~SleepingWorkload() { stop(); }
  void stop() {
    if (pid <= 0) return;  // never kill(-1) or kill(0): every process, or the whole group
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
    pid = -1;
  }
  // Waits until its maps name the fake runtime.
  bool mapped() const {
    for (int i = 0; i < 200; ++i) {
      std::ifstream maps("/proc/" + std::to_string(pid) + "/maps");
      std::stringstream s;
      s << maps.rdbuf();
      if (s.str().find("libcudart.so") != std::string::npos) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  }
};

const GpuProcess* find(const GpuProcessList& list, pid_t pid) {
  for (const auto& p : list.processes)
    if (static_cast<pid_t>(p.pid) == pid) return &p;
  return nullptr;
}

bool has_library(const GpuProcess& p, const std::string& name) {
  for (const auto& l : p.cuda_libraries)
    if (l.find(name) != std::string::npos) return true;
  return false;
}

}  // namespace

TEST_CASE("gpu_processes: a process mapping CUDA, with NVML's view of it", "[gpu_processes]") {
  SleepingWorkload w(10000);
  REQUIRE(w.pid > 0);
  REQUIRE(w.mapped());
  setenv("FAKE_NVML_PID", std::to_string(w.pid).c_str(), 1);
  auto nvml = NvmlSampler::open(kFixtures + "/libnvidia-ml.so.1");
  REQUIRE(nvml.ok());
  const GpuProcessList list = list_gpu_processes(nvml->get());
  unsetenv("FAKE_NVML_PID");
  CHECK(list.nvml_status.empty());
  CHECK(list.processes_scanned > 1);
  const GpuProcess* p = find(list, w.pid);
  REQUIRE(p);
  CHECK(p->comm == "workload");
  CHECK(p->cmdline == kFixtures + "/workload delay 10000 basic");
  CHECK(has_library(*p, "libcudart.so"));
  CHECK(has_library(*p, "libcuda.so"));
  REQUIRE(p->nvml.size() == 1);
  CHECK(p->nvml[0].gpu_index == 0);
  CHECK(p->nvml[0].used_bytes == 512ull << 20);
  // Same pid namespace as the test: its own pid there is its pid here.
  char self_ns[256] = {};
  REQUIRE(readlink("/proc/self/ns/pid", self_ns, sizeof self_ns - 1) > 0);
  CHECK(p->pid_namespace == self_ns);
  CHECK(p->namespace_pid == static_cast<std::uint32_t>(w.pid));
  CHECK_FALSE(p->cgroup.empty());
  // Listed first: the only process NVML gives memory to.
  CHECK(list.processes.front().pid == static_cast<std::uint32_t>(w.pid));
  // The test process maps no CUDA library and NVML does not name it.
  CHECK_FALSE(find(list, getpid()));
}

TEST_CASE("gpu_processes: without NVML, the mappings alone, and why NVML is missing", "[gpu_processes]") {
  SleepingWorkload w(10000);
  REQUIRE(w.pid > 0);
  REQUIRE(w.mapped());
  const GpuProcessList list = list_gpu_processes(nullptr, "libnvidia-ml.so.1: not found");
  CHECK(list.nvml_status == "libnvidia-ml.so.1: not found");
  const GpuProcess* p = find(list, w.pid);
  REQUIRE(p);
  CHECK(p->nvml.empty());
  CHECK(has_library(*p, "libcudart.so"));
  // A process that exited is gone from the next scan.
  const pid_t gone = w.pid;
  w.stop();
  CHECK_FALSE(find(list_gpu_processes(nullptr), gone));
}
