// The integration tests need real eBPF. Where it is unavailable they do not
// run at all: the executable exits 77, which CTest reports as skipped, never
// as passed; with VRAMSCOPE_REQUIRE_BPF=1 (CI) that is a failure instead.
// tests/catch_main.cpp's main() asks vs_tests_may_run() first.
#include <bpf/bpf.h>
#include <linux/bpf.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace {

// Root, BTF, and the kernel accepts a two-instruction program.
std::string why_bpf_unavailable() {
  if (geteuid() != 0) return "not root";
  if (access("/sys/kernel/btf/vmlinux", R_OK) != 0) return "no /sys/kernel/btf/vmlinux";
  struct bpf_insn prog[] = {
      {BPF_ALU64 | BPF_MOV | BPF_K, 0, 0, 0, 0},  // r0 = 0
      {BPF_JMP | BPF_EXIT, 0, 0, 0, 0},
  };
  int fd = bpf_prog_load(BPF_PROG_TYPE_SOCKET_FILTER, "probe", "GPL", prog, 2, nullptr);
  if (fd < 0) return std::string("loading a BPF program failed: ") + std::strerror(errno);
  close(fd);
  return "";
}

}  // namespace

extern "C" int vs_tests_may_run() {
  std::string why = why_bpf_unavailable();
  if (why.empty()) return -1;
  const char* req = std::getenv("VRAMSCOPE_REQUIRE_BPF");
  if (req && std::string(req) == "1") {
    std::fprintf(stderr, "eBPF is required (VRAMSCOPE_REQUIRE_BPF=1) but unavailable: %s\n", why.c_str());
    return 1;
  }
  std::fprintf(stderr, "SKIPPED: eBPF unavailable (%s); these tests need root and a BTF kernel\n", why.c_str());
  return 77;
}
