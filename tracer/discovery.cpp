#include "tracer/discovery.h"

#include <glob.h>
#include <sys/stat.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "tracer/elf_symbols.h"

namespace fs = std::filesystem;

namespace vs::tracer {
namespace {

std::string basename_of(const std::string& path) {
  auto slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

std::vector<std::string> glob_paths(const std::string& pattern) {
  std::vector<std::string> out;
  glob_t g{};
  if (glob(pattern.c_str(), 0, nullptr, &g) == 0)
    for (std::size_t i = 0; i < g.gl_pathc; ++i) out.emplace_back(g.gl_pathv[i]);
  globfree(&g);
  return out;
}

bool is_stub(const std::string& path) { return path.find("/stubs/") != std::string::npos; }

std::string run_command(const char* cmd) {
  std::string out;
  if (FILE* p = popen(cmd, "r")) {
    char buf[4096];
    std::size_t n;
    while ((n = fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
    pclose(p);
  }
  return out;
}

// The CUDA library files in one directory.
std::vector<std::string> cuda_files_in(const std::string& dir) {
  std::vector<std::string> out;
  for (const char* pattern : {"/libcudart.so*", "/libcuda.so*"})
    for (auto& p : glob_paths(dir + pattern)) out.push_back(p);
  return out;
}

}  // namespace

std::optional<MapsEntry> parse_maps_line(const std::string& line) {
  // start-end perms offset major:minor inode [path]
  MapsEntry e;
  char perms[8] = {};
  unsigned long long start, end, offset, inode;
  unsigned major, minor;
  int consumed = 0;
  if (std::sscanf(line.c_str(), "%llx-%llx %7s %llx %x:%x %llu %n", &start, &end, perms, &offset, &major, &minor,
                  &inode, &consumed) < 7)
    return std::nullopt;
  e.start = start;
  e.end = end;
  e.perms = perms;
  e.offset = offset;
  e.dev_major = major;
  e.dev_minor = minor;
  e.inode = inode;
  if (consumed > 0 && static_cast<std::size_t>(consumed) < line.size()) e.path = line.substr(consumed);
  while (!e.path.empty() && (e.path.back() == '\n' || e.path.back() == ' ')) e.path.pop_back();
  return e;
}

std::vector<std::string> parse_ldconfig_output(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    auto arrow = line.find(" => ");
    if (arrow == std::string::npos) continue;
    auto path = line.substr(arrow + 4);
    while (!path.empty() && (path.back() == ' ' || path.back() == '\r')) path.pop_back();
    if (!kind_from_filename(path).empty()) out.push_back(path);
  }
  return out;
}

std::string kind_from_filename(const std::string& path) {
  auto base = basename_of(path);
  if (base.rfind("libcudart.so", 0) == 0) return "runtime";
  if (base.rfind("libcuda.so", 0) == 0) return "driver";
  return "";
}

std::optional<LibraryCandidate> classify_file(const std::string& path, const std::string& found_by,
                                              bool check_static) {
  std::error_code ec;
  auto real = fs::canonical(path, ec);
  if (ec || is_stub(real.string())) return std::nullopt;
  struct stat st;
  if (stat(real.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return std::nullopt;
  LibraryCandidate c;
  c.path = real.string();
  c.open_path = c.path;
  c.found_by = found_by;
  c.dev = st.st_dev;
  c.ino = st.st_ino;
  c.kind = kind_from_filename(c.path);
  if (c.kind.empty()) {
    if (!check_static) return std::nullopt;
    auto defines = elf_defines_function(c.path, "cudaMalloc");
    if (!defines || !*defines) return std::nullopt;
    c.kind = "static";
  }
  return c;
}

std::vector<std::string> wheel_lib_dirs(const std::string& prefix) {
  std::vector<std::string> out;
  for (const char* sub : {"/lib/python3*/site-packages/nvidia/*/lib", "/lib/python3*/dist-packages/nvidia/*/lib",
                          "/lib/python3*/site-packages/torch/lib"})
    for (auto& d : glob_paths(prefix + sub)) out.push_back(d);
  return out;
}

DiscoveryResult discover_on_disk(const DiscoveryInputs& in) {
  DiscoveryResult r;
  std::set<std::pair<std::uint64_t, std::uint64_t>> seen;
  auto add = [&](const std::string& path, const std::string& found_by, bool check_static) {
    if (auto c = classify_file(path, found_by, check_static))
      if (seen.insert({c->dev, c->ino}).second) r.found.push_back(*c);
  };

  if (!in.cuda_libs.empty()) {
    for (const auto& p : in.cuda_libs) {
      r.searched.push_back(p);
      add(p, "cuda-lib", true);
    }
    return r;
  }
  if (in.executable) {
    r.searched.push_back(*in.executable);
    add(*in.executable, "executable", true);
  }
  r.searched.push_back("ldconfig -p");
  for (auto& p : parse_ldconfig_output(run_command("ldconfig -p 2>/dev/null || /sbin/ldconfig -p 2>/dev/null")))
    add(p, "ld-cache", false);

  std::vector<std::string> dirs = in.extra_dirs;
  for (const char* d : {"/usr/local/cuda/lib64", "/usr/local/cuda/targets/x86_64-linux/lib", "/usr/local/nvidia/lib64",
                        "/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib/wsl/lib"})
    dirs.emplace_back(d);
  for (auto& d : glob_paths("/usr/local/cuda-*/lib64")) dirs.push_back(d);
  for (const char* prefix : {"/usr", "/usr/local"})
    for (auto& d : wheel_lib_dirs(prefix)) dirs.push_back(d);
  for (auto& d : glob_paths("/opt/*/.venv")) for (auto& w : wheel_lib_dirs(d)) dirs.push_back(w);
  for (const auto& d : dirs) {
    r.searched.push_back(d);
    for (auto& f : cuda_files_in(d)) add(f, "search-path", false);
  }
  return r;
}

std::optional<LibraryCandidate> candidate_from_fd(std::uint32_t pid, int fd) {
  std::string open_path = "/proc/" + std::to_string(pid) + "/fd/" + std::to_string(fd);
  std::error_code ec;
  auto target = fs::read_symlink(open_path, ec);
  struct stat st;
  if (ec || stat(open_path.c_str(), &st) != 0) return std::nullopt;
  LibraryCandidate c;
  c.path = target.string();
  c.open_path = open_path;
  c.kind = kind_from_filename(c.path);
  if (c.kind.empty() || is_stub(c.path)) return std::nullopt;
  c.found_by = "mmap";
  c.pid = pid;
  c.dev = st.st_dev;
  c.ino = st.st_ino;
  return c;
}

std::optional<std::vector<MapsEntry>> read_maps(std::uint32_t pid) {
  std::ifstream maps("/proc/" + std::to_string(pid) + "/maps");
  if (!maps) return std::nullopt;
  std::vector<MapsEntry> out;
  std::string line;
  while (std::getline(maps, line))
    if (auto e = parse_maps_line(line)) {
      // The kernel writes a newline in a mapped file's name as the four characters \012 (and
      // nothing else escaped, so a name can also hold them literally). The mapping's link in
      // map_files holds the name as it is, as every other source of paths (the mmap watch's
      // fd, the BPF object records) gives it: one stored form, escaped only when shown.
      if (e->path.find("\\012") != std::string::npos) {
        char range[64];
        std::snprintf(range, sizeof(range), "%llx-%llx", static_cast<unsigned long long>(e->start),
                      static_cast<unsigned long long>(e->end));
        std::error_code ec;
        auto target = fs::read_symlink("/proc/" + std::to_string(pid) + "/map_files/" + range, ec);
        // The process gone in between: the name cannot be known for sure, so none is given
        // (never the escaped form, which would then be stored as the file's path).
        e->path = !ec && !target.empty() ? target.string() : std::string();
      }
      out.push_back(std::move(*e));
    }
  return out;
}

std::vector<LibraryCandidate> cuda_libraries_in(std::uint32_t pid, const std::vector<MapsEntry>& maps,
                                                ClassifiedFiles& classified) {
  std::vector<LibraryCandidate> out;
  for (const auto& e : maps) {
    if (e.inode == 0 || e.path.empty() || e.path[0] != '/') continue;
    std::string kind = kind_from_filename(e.path);
    // Code runs only from an executable mapping: only those can hold a runtime.
    if (kind.empty() && e.perms.find('x') == std::string::npos) continue;
    if (!classified.insert({e.dev_major, e.dev_minor, e.inode}).second) continue;
    // map_files reaches the file even inside another mount namespace or when deleted.
    char range[64];
    std::snprintf(range, sizeof(range), "%llx-%llx", static_cast<unsigned long long>(e.start),
                  static_cast<unsigned long long>(e.end));
    std::string open_path = "/proc/" + std::to_string(pid) + "/map_files/" + range;
    struct stat st;
    if (stat(open_path.c_str(), &st) != 0) open_path = "/proc/" + std::to_string(pid) + "/root" + e.path;
    if (stat(open_path.c_str(), &st) != 0 || is_stub(e.path)) continue;
    if (kind.empty()) {
      auto defines = elf_defines_function(open_path, "cudaMalloc");
      if (!defines || !*defines) continue;
      kind = "static";
    }
    LibraryCandidate c;
    c.path = e.path;
    c.open_path = open_path;
    c.kind = kind;
    c.found_by = "maps";
    c.pid = pid;
    c.dev = st.st_dev;
    c.ino = st.st_ino;
    out.push_back(std::move(c));
  }
  return out;
}

std::vector<LibraryCandidate> discover_in_process(std::uint32_t pid) {
  auto maps = read_maps(pid);
  ClassifiedFiles classified;
  return maps ? cuda_libraries_in(pid, *maps, classified) : std::vector<LibraryCandidate>{};
}

}  // namespace vs::tracer
