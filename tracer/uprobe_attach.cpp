#include "tracer/uprobe_attach.h"

#include <bpf/bpf.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <thread>

#include "tracer/helper_process.h"

namespace vs::tracer {
namespace {

// From the 6.6 UAPI (linux/bpf.h), absent from Debian 12's headers.
constexpr unsigned kBpfTraceUprobeMulti = 48;  // enum bpf_attach_type BPF_TRACE_UPROBE_MULTI
constexpr unsigned kBpfFUprobeMultiReturn = 1;  // BPF_F_UPROBE_MULTI_RETURN

// The link_create part of union bpf_attr for uprobe_multi links.
struct UprobeMultiLinkAttr {
  std::uint32_t prog_fd;
  std::uint32_t target_fd;
  std::uint32_t attach_type;
  std::uint32_t flags;
  std::uint64_t path;
  std::uint64_t offsets;
  std::uint64_t ref_ctr_offsets;
  std::uint64_t cookies;
  std::uint32_t cnt;
  std::uint32_t uprobe_flags;
  std::uint32_t pid;
  std::uint32_t pad;
};

int create_uprobe_multi_link(int prog_fd, const std::string& path, const std::vector<UprobeSite>& sites,
                             bool is_return) {
  std::vector<std::uint64_t> offsets, cookies;
  for (const auto& s : sites) {
    offsets.push_back(s.offset);
    cookies.push_back(s.cookie);
  }
  union {
    UprobeMultiLinkAttr link;
    char bytes[sizeof(union bpf_attr)];
  } attr;
  std::memset(&attr, 0, sizeof(attr));
  attr.link.prog_fd = static_cast<std::uint32_t>(prog_fd);
  attr.link.attach_type = kBpfTraceUprobeMulti;
  attr.link.path = reinterpret_cast<std::uint64_t>(path.c_str());
  attr.link.offsets = reinterpret_cast<std::uint64_t>(offsets.data());
  attr.link.cookies = reinterpret_cast<std::uint64_t>(cookies.data());
  attr.link.cnt = static_cast<std::uint32_t>(sites.size());
  attr.link.uprobe_flags = is_return ? kBpfFUprobeMultiReturn : 0;
  return static_cast<int>(syscall(__NR_bpf, BPF_LINK_CREATE, &attr, sizeof(attr)));
}

}  // namespace

const char* attach_mode_name(AttachMode mode) { return mode == AttachMode::UprobeMulti ? "uprobe_multi" : "perf"; }

void prepare_uprobe_program(bpf_program* prog, AttachMode mode) {
  bpf_program__set_expected_attach_type(
      prog, mode == AttachMode::UprobeMulti ? static_cast<bpf_attach_type>(kBpfTraceUprobeMulti)
                                            : static_cast<bpf_attach_type>(0));
}

Status UprobeLinks::attach(AttachMode mode, bpf_program* prog, const std::string& path,
                           const std::vector<UprobeSite>& sites, bool is_return) {
  if (sites.empty()) return Status::success();
  const char* what = is_return ? "uretprobes" : "uprobes";
  if (mode == AttachMode::UprobeMulti) {
    int fd = create_uprobe_multi_link(bpf_program__fd(prog), path, sites, is_return);
    if (fd < 0)
      return Error{std::string("attaching ") + what + " (uprobe_multi) to " + path + " failed: " + std::strerror(errno)};
    multi_fds_.push_back(fd);
    return Status::success();
  }
  std::vector<bpf_link*> made;
  for (const auto& s : sites) {
    LIBBPF_OPTS(bpf_uprobe_opts, opts, .bpf_cookie = s.cookie, .retprobe = is_return);
    bpf_link* link = bpf_program__attach_uprobe_opts(prog, -1, path.c_str(), s.offset, &opts);
    if (!link) {
      int err = errno;
      for (auto* l : made) bpf_link__destroy(l);
      return Error{std::string("attaching ") + what + " to " + path + " at offset " + std::to_string(s.offset) +
                   " failed: " + std::strerror(err)};
    }
    made.push_back(link);
  }
  perf_links_.insert(perf_links_.end(), made.begin(), made.end());
  return Status::success();
}

void UprobeLinks::detach_all() {
  detach_all_multi();
  for (auto* l : perf_links_) bpf_link__destroy(l);
  perf_links_.clear();
}

void UprobeLinks::detach_all_multi() {
  // Each close waits for the kernel to quiesce the probes (tens of ms): in parallel.
  std::vector<std::thread> closers;
  for (int fd : multi_fds_) closers.emplace_back([fd] { close(fd); });
  for (auto& t : closers) t.join();
  multi_fds_.clear();
}

void UprobeLinks::close_in_background() {
  detach_all_multi();
  if (perf_links_.empty()) return;
  // A perf-event uprobe is unregistered (the slow part) when the last
  // reference to it goes. The child keeps its copies of the link descriptors
  // until this process has closed its own, which the pipe's end tells it.
  int handoff[2];
  if (pipe2(handoff, O_CLOEXEC) != 0) {
    detach_all();
    return;
  }
  std::vector<int> link_fds;
  for (auto* l : perf_links_) link_fds.push_back(bpf_link__fd(l));
  std::vector<unsigned> kept(link_fds.begin(), link_fds.end());  // what the child keeps open, in order
  kept.push_back(static_cast<unsigned>(handoff[0]));
  std::sort(kept.begin(), kept.end());
  pid_t pid = fork();
  if (pid < 0) {
    close(handoff[0]);
    close(handoff[1]);
    detach_all();
    return;
  }
  if (pid == 0) {
    // Only system calls here (the parent has other threads). Everything but
    // the links goes at once: no terminal, pipe or file of the caller's stays
    // open for the seconds this takes.
    close_fds_except(kept);
    char byte;
    while (read(handoff[0], &byte, 1) < 0 && errno == EINTR) {
    }
    for (int fd : link_fds) close(fd);
    _exit(0);
  }
  close(handoff[0]);
  detach_all();  // cheap now: the child still holds every link
  close(handoff[1]);
}

}  // namespace vs::tracer
