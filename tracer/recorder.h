// One recording: the tracer's records turned into rows of a RecordSink (the
// store's TraceWriter), with library coverage kept current as processes appear
// and map new files. `vramscope trace`, the MCP server's trace_start and
// bench/pipeline_bench all record through it; the caller owns the sink and the
// loop (it decides when to stop), the Recording owns the BPF side and NVML.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "common/records.h"
#include "common/result.h"
#include "tracer/decoder.h"
#include "tracer/discovery.h"
#include "tracer/loader.h"
#include "tracer/nvml_sampler.h"

namespace vs::tracer {

// A hook for vramscope's own tests (tests/integration), never for use otherwise: with
// VRAMSCOPE_TEST_HOLD=POINT in its environment, vramscope stops at POINT, says so on
// stderr, and waits there until it is killed, so that a test can kill it at that very
// moment. POINTs: "attach" (the probes are attached, the launched command is not released
// yet), "cuda_mmap" (a traced process is stopped in its mmap of a CUDA library that is not
// probed yet, before vramscope attaches to it and continues the process).
void test_hold(std::string_view point, const std::string& what);

// Receives the tracer's records and writes them to the sink; attaches to the CUDA
// libraries that traced processes map. `tracer` may be null (bench/pipeline_bench
// feeds records without BPF): nothing is attached then.
class Recorder : public EventSink {
 public:
  Recorder(RecordSink& sink, Tracer* tracer, std::int64_t id_base, bool trace_all);

  void on_call(const vs_call_event& ev, const vs_call_sched* sched) override;
  void on_object(const vs_object_event& ev) override;
  void on_lifecycle(const vs_lifecycle_event& ev) override;
  void on_sched(const vs_sched_event& ev) override;

  // A process to record from now on (`how`: launched | pid | fork | first_call | running);
  // its CUDA libraries are attached. A second note of the same pid is ignored.
  void note_process(std::uint32_t pid, std::optional<std::uint32_t> ppid, std::optional<std::uint64_t> start_ns,
                    std::uint64_t first_ts, const char* how);
  void attach(const LibraryCandidate& lib);
  // Follows files just mapped executable, for up to a second each (a runtime bundled
  // in one is probed within milliseconds, not at the next rescan).
  void scan_mapped_files();
  void rescan_live_processes();

  CallDecoder& decoder() { return decoder_; }
  std::uint64_t calls() const { return calls_; }
  std::size_t live_processes() const { return live_pids_.size(); }
  std::vector<std::uint32_t> live_pids() const { return {live_pids_.begin(), live_pids_.end()}; }
  int attached_libraries() const { return attached_libraries_; }

 private:
  std::optional<std::vector<MapsEntry>> attach_new_libraries(std::uint32_t pid);

  RecordSink& sink_;
  Tracer* tracer_;
  CallDecoder decoder_;
  bool trace_all_;
  std::uint64_t calls_ = 0;
  int attached_libraries_ = 0;
  std::set<std::uint32_t> known_pids_, live_pids_;
  std::set<std::pair<std::uint64_t, std::uint64_t>> tried_;
  ClassifiedFiles classified_;
  struct AwaitedMapping {
    std::uint32_t pid, kernel_dev;
    std::uint64_t ino;
    std::chrono::steady_clock::time_point since;
  };
  std::vector<AwaitedMapping> awaited_mappings_;
};

struct RecordingOptions {
  std::string mode = "pid";             // launch | pid | all (sessions.mode)
  std::vector<std::uint32_t> pids;      // attached to (with what they fork) once attach_libraries() succeeded
  TracerOptions tracer;                 // trace_all is set from mode
  DiscoveryInputs discovery;            // where CUDA libraries are looked for on disk
  std::optional<std::string> command;   // launch mode: the command line (sessions.command)
  std::string options_json = "{}";      // the caller's options, an object: attach_mode is added
  std::optional<std::int64_t> session_id;  // SessionInfo::id: chosen by the caller, else the file's next
  bool nvml = true;                     // sample NVML's device view
  std::string nvml_lib;                 // default libnvidia-ml.so.1
  std::chrono::milliseconds nvml_interval{1000};
};

// What a recording has seen so far; cheap (no I/O), for a progress line or trace_status.
struct RecordingCounts {
  std::uint64_t calls = 0;
  std::uint64_t records_lost = 0;  // call and lifecycle records dropped (ring buffer full)
  std::size_t live_processes = 0;
  int libraries_attached = 0;
};

class Recording {
 public:
  // Opens the BPF side (checks root, BTF) and NVML, and begins the session in `sink`,
  // which must outlive the Recording. Nothing is probed yet.
  static Result<std::unique_ptr<Recording>> open(RecordSink& sink, const RecordingOptions& options);
  ~Recording();

  std::int64_t session_id() const { return session_id_; }
  // Records `pid` and what it forks from now on (a launched command, before it runs).
  Status trace_pid(std::uint32_t pid);
  // Probes every CUDA library found on disk and mapped by the processes to trace
  // (every process in mode all), unless --cuda-lib named them. An Error, listing
  // where it looked, when none could be probed: the session is then ended 'interrupted'.
  // Then notes options.pids as traced processes.
  Status attach_libraries();
  double attach_ms() const { return attach_ms_; }
  void note_process(std::uint32_t pid, std::optional<std::uint32_t> ppid, const char* how);

  // One turn of the event loop: the records of up to `timeout_ms`, then new
  // mappings, and every 500 ms a rescan of the live processes' libraries.
  Status poll(int timeout_ms);
  RecordingCounts counts() const;
  std::vector<std::uint32_t> live_pids() const { return recorder_->live_pids(); }
  AttachMode attach_mode() const;

  // Stops recording: NVML's last sample, the probes detached, the rings drained.
  // Returns the session's end (status 'complete') for the caller to write with
  // sink.end_session (which can take long: the caller may show progress), then call
  // finish_detach(). Idempotent.
  SessionEnd stop();
  // Waits for probes detached in the background (perf-event links) to be gone.
  void finish_detach();

 private:
  Recording(RecordSink& sink, std::unique_ptr<Tracer> tracer, const RecordingOptions& options);

  RecordSink& sink_;
  std::unique_ptr<Tracer> tracer_;
  RecordingOptions options_;
  std::unique_ptr<NvmlSampler> nvml_;
  std::unique_ptr<Recorder> recorder_;
  std::int64_t session_id_ = 0;
  double attach_ms_ = 0;
  std::chrono::steady_clock::time_point last_rescan_;
  std::optional<SessionEnd> end_;
};

}  // namespace vs::tracer
