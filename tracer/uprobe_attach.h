// Attaching one BPF program to many functions of one file. On kernels with
// uprobe_multi links (6.6+) that is one link per file and direction, created
// with a raw BPF_LINK_CREATE (Debian's libbpf 1.1.2 has no API for it), and
// detaching is fast; elsewhere one perf-event link per function through
// libbpf, which detaches in ~125 ms per probe.
#pragma once

#include <bpf/libbpf.h>

#include <cstdint>
#include <string>
#include <vector>

#include "common/result.h"

namespace vs::tracer {

enum class AttachMode { UprobeMulti, Perf };
const char* attach_mode_name(AttachMode mode);

// The BPF attach type a program must be loaded with for `mode`.
void prepare_uprobe_program(bpf_program* prog, AttachMode mode);

struct UprobeSite {
  std::uint64_t offset;  // file offset of the function
  std::uint64_t cookie;  // what bpf_get_attach_cookie() returns: the API id
};

// Owns every link made; destroys them all at once.
class UprobeLinks {
 public:
  UprobeLinks() = default;
  UprobeLinks(const UprobeLinks&) = delete;
  UprobeLinks& operator=(const UprobeLinks&) = delete;
  ~UprobeLinks() { detach_all(); }

  // Attaches `prog` at every site of `path`, in every process (pid -1).
  // On failure nothing of this call stays attached.
  Status attach(AttachMode mode, bpf_program* prog, const std::string& path, const std::vector<UprobeSite>& sites,
                bool is_return);
  void detach_all();
  // Perf-event links close one by one in the kernel (~0.1 s each): a child
  // process takes them over and closes them, so that this one can exit now.
  // Falls back to detach_all() if it cannot fork.
  void close_in_background();
  std::size_t size() const { return multi_fds_.size() + perf_links_.size(); }

 private:
  void detach_all_multi();
  std::vector<int> multi_fds_;
  std::vector<bpf_link*> perf_links_;
};

}  // namespace vs::tracer
