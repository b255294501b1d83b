// The traces `vramscope mcp --allow-trace` records while it serves: started by
// an agent (trace_start), each in its own thread with its own tracer::Recording
// writing into the trace directory, watched (trace_status) and analysed while it
// records, stopped by the agent (trace_stop), at its duration, when its
// processes have all exited, when the client that started it goes away, or when
// the server stops. Attach only: launching a program is not offered.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"
#include "live/trace_dir.h"
#include "store/pairing.h"

namespace vs::live {

struct TraceRequest {
  std::vector<std::uint32_t> pids;  // these processes and what they fork; or
  bool all = false;                 // every process that uses CUDA
  std::chrono::milliseconds duration{60000};
  bool launches = false;
  bool sched_events = false;
  std::string owner;  // the MCP session that asked: its traces stop when it ends
};

struct TraceState {
  std::int64_t session_id = 0;
  std::string file;
  std::string state;        // attaching | recording | finishing | finished | failed
  std::string stop_reason;  // once stopping: stopped | duration | processes_exited | client_gone | server_stopping | write_failed | error
  std::vector<std::uint32_t> pids;
  bool all = false;
  std::string owner;
  double elapsed_s = 0, duration_s = 0;
  std::uint64_t calls = 0;
  double calls_per_s = 0;  // over the last second or so
  std::uint64_t records_lost = 0;
  int libraries_attached = 0;
  std::size_t live_processes = 0;
  store::OutstandingTotals outstanding;  // what the traced processes hold now, by kind
  std::map<std::uint32_t, store::OutstandingTotals> outstanding_by_pid;
  std::optional<std::string> error;
};

struct TraceLimits {
  std::size_t max_traces = 4;                        // recording at once
  std::chrono::seconds max_duration{3600};           // --max-trace-seconds
  bool keep_tracing = false;                         // --keep-tracing: a client's traces outlive it
};

// What the server is told as traces come and go (both may be empty).
struct TraceEvents {
  std::function<void()> sessions_changed;               // a session appeared, or ended
  std::function<void(std::int64_t session_id)> updated;  // new records (called often: the server rate-limits)
};

class TraceManager {
 public:
  TraceManager(TraceDir dir, TraceLimits limits, TraceEvents events);
  ~TraceManager();  // stops every trace ('server_stopping') and waits for them
  TraceManager(const TraceManager&) = delete;
  TraceManager& operator=(const TraceManager&) = delete;

  const TraceDir& dir() const { return dir_; }
  const TraceLimits& limits() const { return limits_; }

  // Starts a trace and returns once its probes are attached (or it failed): the
  // Error says why (not root, no BPF, no such process, a pid already traced, too
  // many traces, no CUDA library). `progress` hears the steps; `cancelled` stops
  // the trace (an Error is returned) if the client gave up before start returns.
  Result<TraceState> start(const TraceRequest& request, const std::function<void(const std::string&)>& progress,
                           const std::function<bool()>& cancelled);
  // A trace this server started (recording or ended), or an Error naming those there are.
  Result<TraceState> status(std::int64_t session_id) const;
  // Stops it, flushes it, ends its session in the file (indexes, summaries);
  // returns its final state. Stopping an ended trace returns its state.
  Result<TraceState> stop(std::int64_t session_id, const std::string& reason = "stopped");
  std::vector<TraceState> list() const;
  // Every pid a recording trace attaches to (gpu_processes says which are traced).
  std::vector<std::uint32_t> traced_pids() const;
  bool recording_all() const;
  // The client `owner` went away: its traces stop, unless keep_tracing.
  void owner_gone(const std::string& owner);

 private:
  struct Trace;
  void run(const std::shared_ptr<Trace>& trace);
  std::int64_t next_session_id() const;

  TraceDir dir_;
  TraceLimits limits_;
  TraceEvents events_;
  mutable std::mutex mutex_;
  std::mutex start_mutex_;  // one start at a time: session ids and files are chosen under it
  std::map<std::int64_t, std::shared_ptr<Trace>> traces_;
};

}  // namespace vs::live
