// Records real ring-buffer records for fuzz_decoder's seed corpus (needs root
// and BPF, as `vramscope trace` does; not a test). It runs the fixture
// workload with each scenario named on the command line under the real
// Tracer, probing the fake libcudart/libcuda, and writes every record the
// rings deliver, in fuzz_decoder's framing (u8 ring, u16 size, record), to
// OUT_DIR/<scenario>. tests/fuzz/README.md has the command.
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

#include "tracer/discovery.h"
#include "tracer/loader.h"

using namespace vs;

namespace {

class Recorder : public tracer::EventSink {
 public:
  explicit Recorder(std::ofstream& out) : out_(out) {}
  void on_call(const vs_call_event& ev, const vs_call_sched* sched) override {
    if (!sched) return write(0, &ev, sizeof ev);
    vs_call_sched_event full{ev, *sched};
    full.call.type = VS_REC_CALL_SCHED;
    write(0, &full, sizeof full);
  }
  void on_object(const vs_object_event& ev) override { write(0, &ev, sizeof ev); }
  void on_lifecycle(const vs_lifecycle_event& ev) override {
    write(1, &ev, sizeof ev);
    if (ev.kind == VS_LC_CUDA_MMAP) stopped.push_back(ev);
  }
  void on_sched(const vs_sched_event&) override {}
  std::vector<vs_lifecycle_event> stopped;
  size_t records = 0;

 private:
  void write(uint8_t ring, const void* data, size_t size) {
    const uint8_t head[3] = {ring, static_cast<uint8_t>(size & 0xff), static_cast<uint8_t>(size >> 8)};
    out_.write(reinterpret_cast<const char*>(head), 3);
    out_.write(static_cast<const char*>(data), static_cast<std::streamsize>(size));
    ++records;
  }
  std::ofstream& out_;
};

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: %s FIXTURE_DIR OUT_DIR SCENARIO...\n", argv[0]);
    return 2;
  }
  const std::string fixtures = argv[1], out_dir = argv[2];
  auto tracer = tracer::Tracer::open({});
  if (!tracer) {
    std::fprintf(stderr, "%s\n", tracer.error().message.c_str());
    return 1;
  }
  for (const char* lib : {"libcudart.so.13", "libcuda.so.1"}) {
    auto candidate = tracer::classify_file(fixtures + "/" + lib, "cuda-lib", true);
    if (!candidate) return std::fprintf(stderr, "not a CUDA library: %s\n", lib), 1;
    auto attached = (*tracer)->attach_library(*candidate);
    (*tracer)->mark_known_file(static_cast<uint32_t>((major(candidate->dev) << 20) | minor(candidate->dev)),
                               candidate->ino);
    std::fprintf(stderr, "%s: %zu probes\n", lib, attached.probes.size());
  }
  for (int i = 3; i < argc; ++i) {
    std::ofstream out(out_dir + "/" + argv[i], std::ios::binary);
    Recorder recorder(out);
    int go[2];
    if (pipe(go) != 0) return 1;
    pid_t child = fork();
    if (child == 0) {
      char byte;
      close(go[1]);
      if (read(go[0], &byte, 1) != 1) _exit(1);
      const std::string workload = fixtures + "/workload";
      execl(workload.c_str(), "workload", argv[i], static_cast<char*>(nullptr));
      _exit(127);
    }
    close(go[0]);
    if (auto s = (*tracer)->trace_pid(static_cast<uint32_t>(child)); !s) std::fprintf(stderr, "%s\n", s.message().c_str());
    if (::write(go[1], "x", 1) != 1) return 1;
    close(go[1]);
    int status = 0;
    for (bool running = true; running;) {
      (void)(*tracer)->poll(100, recorder);
      for (const auto& ev : recorder.stopped) (*tracer)->resume(ev.pid);
      recorder.stopped.clear();
      running = waitpid(child, &status, WNOHANG) == 0;
    }
    for (int j = 0; j < 5; ++j) (void)(*tracer)->poll(50, recorder);
    std::fprintf(stderr, "%s: %zu records, exit status %d\n", argv[i], recorder.records, status);
  }
  (*tracer)->detach_uprobes();
  (*tracer)->finish_detach();
  return 0;
}
