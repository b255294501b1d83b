// The tracer: loads the BPF object, attaches the scheduler and lifecycle
// programs, attaches the call probes to each CUDA library, and hands the
// records of its ring buffers to an EventSink. Every libbpf failure comes
// back as an Error that says what to do about it.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/result.h"
#include "common/records.h"
#include "tracer/bpf/events.h"
#include "tracer/discovery.h"
#include "tracer/uprobe_attach.h"

namespace vs::tracer {

struct TracerOptions {
  bool trace_all = false;     // every process that calls CUDA
  bool launches = false;      // also probe kernel launches (costly)
  bool sched_events = false;  // also record raw context switches
  bool perf_links = false;    // one perf-event link per probe even where uprobe_multi links work
  std::uint32_t calls_ring_mib = 64;
};

class EventSink {
 public:
  virtual ~EventSink() = default;
  // `sched` is set when the call was switched out at least once.
  virtual void on_call(const vs_call_event& ev, const vs_call_sched* sched) = 0;
  // The path of a file that makes calls, ahead of the first call record naming it.
  virtual void on_object(const vs_object_event& ev) = 0;
  virtual void on_lifecycle(const vs_lifecycle_event& ev) = 0;
  virtual void on_sched(const vs_sched_event& ev) = 0;
};

struct TracerCounters {
  std::uint64_t values[VS_STAT_COUNT]{};
  std::uint64_t operator[](vs_stat s) const { return values[s]; }
};

struct AttachResult {
  vs::LibraryRecord library;
  std::vector<vs::ProbeRecord> probes;
};

class Tracer {
 public:
  // Checks privileges and BTF, loads the programs, attaches the scheduler and
  // lifecycle programs. Picks uprobe_multi links when the kernel has them.
  static Result<std::unique_ptr<Tracer>> open(const TracerOptions& options);
  ~Tracer();

  AttachMode attach_mode() const { return mode_; }
  // Attaches entry and return probes to every catalog function `lib` defines.
  // A failure is reported in the result (library.error), not thrown.
  AttachResult attach_library(const LibraryCandidate& lib);
  bool is_attached(std::uint64_t dev, std::uint64_t ino) const;
  // Tells the mmap watch that this file (kernel dev_t encoding) needs no stop.
  void mark_known_file(std::uint32_t kernel_dev, std::uint64_t ino);
  // Continues a process the mmap watch stopped (VS_LC_CUDA_MMAP), and tells the
  // guardian (helper_process.h) that it need not.
  void resume(std::uint32_t pid);
  Status trace_pid(std::uint32_t pid);
  // Waits up to timeout_ms, then delivers everything available: lifecycle
  // records after the call records that were submitted before them.
  Status poll(int timeout_ms, EventSink& sink);
  TracerCounters counters() const;
  // Stops recording calls; returns the time it took in milliseconds. uprobe_multi
  // links are detached; perf-event links (one per probe, ~0.1 s each to close,
  // one after another in the kernel) are made inert, and closed by finish_detach.
  double detach_uprobes();
  // Last thing before exiting: perf-event links are handed to a child process
  // that closes them, so that vramscope exits at once.
  void finish_detach();

 private:
  Tracer() = default;
  struct Impl;
  std::unique_ptr<Impl> impl_;
  AttachMode mode_ = AttachMode::Perf;
};

}  // namespace vs::tracer
