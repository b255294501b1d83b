#include "tracer/gpu_processes.h"

#include <dirent.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "tracer/discovery.h"

namespace vs::tracer {
namespace {

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string read_link(const std::string& path) {
  char buf[256];
  const ssize_t n = readlink(path.c_str(), buf, sizeof buf - 1);
  return n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : "";
}

std::uint32_t parse_u32(std::string_view s) {
  std::uint32_t v = 0;
  std::from_chars(s.data(), s.data() + s.size(), v);
  return v;
}

// The last pid of the NSpid line of /proc/PID/status: the process's pid in its own namespace.
std::uint32_t namespace_pid(const std::string& status) {
  const std::size_t at = status.find("\nNSpid:");
  if (at == std::string::npos) return 0;
  const std::size_t end = status.find('\n', at + 1);
  std::istringstream fields(status.substr(at + 7, end == std::string::npos ? std::string::npos : end - at - 7));
  std::string field, last;
  while (fields >> field) last = field;
  return parse_u32(last);
}

// The unified hierarchy's line ("0::/system.slice/docker-abc.scope"), else the first line.
std::string cgroup_of(const std::string& text) {
  std::istringstream lines(text);
  std::string line, first;
  while (std::getline(lines, line)) {
    if (line.rfind("0::", 0) == 0) return line;
    if (first.empty()) first = line;
  }
  return first;
}

void describe(GpuProcess& p) {
  const std::string dir = "/proc/" + std::to_string(p.pid);
  p.comm = read_file(dir + "/comm");
  if (!p.comm.empty() && p.comm.back() == '\n') p.comm.pop_back();
  p.cmdline = read_file(dir + "/cmdline");
  std::replace(p.cmdline.begin(), p.cmdline.end(), '\0', ' ');
  while (!p.cmdline.empty() && p.cmdline.back() == ' ') p.cmdline.pop_back();
  p.pid_namespace = read_link(dir + "/ns/pid");
  p.namespace_pid = namespace_pid(read_file(dir + "/status"));
  p.cgroup = cgroup_of(read_file(dir + "/cgroup"));
}

}  // namespace

std::uint64_t GpuProcess::nvml_used_bytes() const {
  std::uint64_t bytes = 0;
  for (const GpuUse& u : nvml) bytes += u.used_bytes;
  return bytes;
}

GpuProcessList list_gpu_processes(NvmlSampler* nvml, const std::string& nvml_status) {
  GpuProcessList out;
  out.nvml_status = nvml ? "" : (nvml_status.empty() ? "NVML not opened" : nvml_status);
  std::map<std::uint32_t, GpuProcess> by_pid;
  if (nvml) {
    for (const auto& s : nvml->sample_once().processes) {
      GpuProcess& p = by_pid[s.pid];
      p.pid = s.pid;
      p.nvml.push_back({s.gpu_index, s.used_bytes});
    }
  }
  // Every process whose maps name libcuda or libcudart (by file name: reading each mapped file's symbols,
  // as tracing does for static runtimes, would cost seconds on a busy host).
  if (DIR* proc = opendir("/proc")) {
    while (dirent* e = readdir(proc)) {
      const std::uint32_t pid = parse_u32(e->d_name);
      if (pid == 0) continue;
      ++out.processes_scanned;
      auto maps = read_maps(pid);
      if (!maps) continue;
      std::set<std::string> libraries;
      for (const MapsEntry& m : *maps)
        if (!m.path.empty() && !kind_from_filename(m.path).empty()) libraries.insert(m.path);
      if (libraries.empty()) continue;
      GpuProcess& p = by_pid[pid];
      p.pid = pid;
      p.cuda_libraries.assign(libraries.begin(), libraries.end());
    }
    closedir(proc);
  }
  for (auto& [pid, p] : by_pid) {
    describe(p);
    out.processes.push_back(std::move(p));
  }
  std::stable_sort(out.processes.begin(), out.processes.end(), [](const GpuProcess& a, const GpuProcess& b) {
    return a.nvml_used_bytes() > b.nvml_used_bytes();
  });
  return out;
}

}  // namespace vs::tracer
