#include "src/demo_traces.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <functional>

namespace vs::demo {
namespace {

// Symbols defined by the generated demo_traces.S (.incbin of each trace.db).
struct Blob {
  std::string_view name;
  const unsigned char* begin;
  const unsigned char* end;
};

}  // namespace
}  // namespace vs::demo

#define VS_DEMO_TRACE(name)                                \
  extern "C" const unsigned char vs_demo_##name##_begin[]; \
  extern "C" const unsigned char vs_demo_##name##_end[];
#include "demo_trace_list.inc"
#undef VS_DEMO_TRACE

namespace vs::demo {
namespace {

const std::vector<Blob>& blobs() {
  static const std::vector<Blob> all = {
#define VS_DEMO_TRACE(name) {#name, vs_demo_##name##_begin, vs_demo_##name##_end},
#include "demo_trace_list.inc"
#undef VS_DEMO_TRACE
  };
  return all;
}

}  // namespace

std::vector<std::string_view> names() {
  std::vector<std::string_view> out;
  for (const auto& b : blobs()) out.push_back(b.name);
  return out;
}

Result<std::string> materialize(std::string_view name) {
  const Blob* blob = nullptr;
  std::string known;
  for (const auto& b : blobs()) {
    known += (known.empty() ? "" : ", ") + std::string(b.name);
    if (b.name == name) blob = &b;
  }
  if (!blob) return Error{"no demo trace named '" + std::string(name) + "'; there are: " + known};
  std::string_view bytes(reinterpret_cast<const char*>(blob->begin), static_cast<std::size_t>(blob->end - blob->begin));
  const char* runtime_dir = std::getenv("XDG_RUNTIME_DIR");
  std::string dir = runtime_dir && *runtime_dir ? runtime_dir : "/tmp";
  // The content hash in the name: a stale file from another build is never reused.
  std::string path = dir + "/vramscope-demo-" + std::string(name) + "-" +
                     std::to_string(std::hash<std::string_view>{}(bytes) & 0xffffffff) + "-" +
                     std::to_string(getuid()) + ".db";
  struct stat st {};
  if (stat(path.c_str(), &st) == 0 && static_cast<std::size_t>(st.st_size) == bytes.size() && st.st_uid == getuid())
    return path;
  std::string tmp = path + ".tmp" + std::to_string(getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_EXCL, 0600);
  if (fd < 0) return Error{"cannot write the demo trace to " + tmp + ": " + std::strerror(errno)};
  std::size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n <= 0) {
      int err = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      return Error{"cannot write the demo trace to " + tmp + ": " + std::strerror(err)};
    }
    done += static_cast<std::size_t>(n);
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) return Error{"cannot rename " + tmp + ": " + std::strerror(errno)};
  return path;
}

}  // namespace vs::demo
