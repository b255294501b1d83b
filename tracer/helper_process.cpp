#include "tracer/helper_process.h"

#include <bpf/bpf.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <ctime>
#include <string>

namespace vs::tracer {
namespace {

// Message building without the heap (the guardian may only make system calls).
char* append(char* out, const char* s) {
  while (*s) *out++ = *s++;
  return out;
}

char* append_decimal(char* out, std::uint32_t v) {
  char digits[10];
  int n = 0;
  do {
    digits[n++] = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v != 0);
  while (n > 0) *out++ = digits[--n];
  return out;
}

// Continues every process left in the map of stopped processes, and takes it out.
void continue_stopped(int map_fd) {
  std::uint32_t pid;
  while (bpf_map_get_next_key(map_fd, nullptr, &pid) == 0) {
    if (kill(static_cast<pid_t>(pid), SIGCONT) == 0) {
      char msg[256];
      char* end = append(msg, "vramscope: continued pid ");
      end = append_decimal(end, pid);
      end = append(end, ", stopped while vramscope probed a CUDA library it mapped: vramscope ended first, so that "
                        "process runs on untraced\n");
      (void)!write(STDERR_FILENO, msg, static_cast<std::size_t>(end - msg));
    }
    if (bpf_map_delete_elem(map_fd, &pid) != 0) return;
  }
}

}  // namespace

void close_fds_except(const std::vector<unsigned>& kept) {
  unsigned from = 0;
  for (unsigned fd : kept) {
    if (fd > from) close_range(from, fd - 1, 0);
    from = fd + 1;
  }
  close_range(from, ~0U, 0);
}

Status start_guardian(int stopped_map_fd) {
  const int self = static_cast<int>(syscall(SYS_pidfd_open, getpid(), 0));
  if (self < 0)
    return Error{std::string("cannot start the guardian process (it continues a process stopped in its mmap should "
                             "vramscope die): pidfd_open: ") +
                 std::strerror(errno) + " (needs Linux >= 5.3)"};
  std::vector<unsigned> kept = {STDERR_FILENO, static_cast<unsigned>(self), static_cast<unsigned>(stopped_map_fd)};
  std::sort(kept.begin(), kept.end());
  const pid_t pid = fork();
  if (pid < 0) {
    const int err = errno;
    close(self);
    return Error{std::string("cannot start the guardian process (it continues a process stopped in its mmap should "
                             "vramscope die): fork: ") +
                 std::strerror(err)};
  }
  if (pid == 0) {
    close_fds_except(kept);
    struct sigaction ignore {};
    ignore.sa_handler = SIG_IGN;
    for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGPIPE}) sigaction(sig, &ignore, nullptr);
    prctl(PR_SET_NAME, "vramscope-guard");
    pollfd ended{self, POLLIN, 0};  // readable once vramscope has exited
    while (poll(&ended, 1, -1) < 0 && errno == EINTR) {
    }
    continue_stopped(stopped_map_fd);
    // A watch program still running on another CPU as vramscope's links went may stop one more.
    const timespec moment{0, 200 * 1000 * 1000};
    nanosleep(&moment, nullptr);
    continue_stopped(stopped_map_fd);
    _exit(0);
  }
  close(self);
  return Status::success();
}

}  // namespace vs::tracer
