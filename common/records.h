// Passive records that flow from the tracer into the store, and the interface
// the tracer writes them through (RecordSink, implemented by the store's
// TraceWriter). The store knows nothing about BPF; the tracer knows nothing
// about SQL and does not link the store.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"

namespace vs {

struct SessionInfo {
  std::string host, kernel, mode, options_json, version;
  std::optional<std::string> command;
  std::int64_t start_ts_ns = 0;
  std::int64_t realtime_offset_ns = 0;
  std::optional<std::string> nvml;  // "sampled every N ms", or why there is no device view
  // The session's id when the caller chooses it (the MCP server numbers the sessions of its
  // trace directory across files); otherwise the file's next. Taken: begin_session fails.
  std::optional<std::int64_t> id;
};

struct SessionEnd {
  std::int64_t end_ts_ns = 0;
  double attach_ms = 0, detach_ms = 0;
  std::int64_t call_drops = 0, lifecycle_drops = 0, sched_drops = 0, unrecorded_calls = 0;
  std::string status = "complete";
};

struct ProcessRecord {
  std::uint32_t pid = 0;
  std::optional<std::uint32_t> ppid;
  std::optional<std::int64_t> start_ns;
  std::string comm, cmdline;
  std::int64_t first_ts_ns = 0;
  std::string how_found;  // launched | pid | fork | first_call | running
};

struct ProbeRecord {
  std::string api;
  std::optional<std::int64_t> offset;
  std::string status;  // attached | missing | disabled | failed
  std::optional<std::string> error;
};

struct LibraryRecord {
  std::string path, kind, found_by;
  std::optional<std::int64_t> dev, inode, pid;
  std::optional<std::string> attach_mode;
  int probes_attached = 0, probes_missing = 0;
  std::optional<std::int64_t> attached_ts_ns;
  std::optional<std::string> error;
};

// One completed call, decoded. `id` is the tracer's sequence (unique in the file).
struct CallRecord {
  std::int64_t id = 0;
  std::int64_t ts_ns = 0, dur_ns = 0;
  std::uint32_t pid = 0, tid = 0;
  std::uint16_t api_id = 0;  // common/cuda_api.h id
  std::optional<std::int64_t> device;
  std::optional<std::uint64_t> stream, ptr, bytes, handle;
  std::int64_t ret = 0;
  std::optional<std::string> caller;  // mapped file path
  std::int64_t off_cpu_ns = 0, runq_ns = 0;
  std::uint32_t switches = 0;
  std::optional<std::uint32_t> preempted_by;
  std::optional<std::string> preempted_by_comm;
  std::optional<std::int64_t> longest_off_ns;
  std::optional<std::int64_t> parent_id;
  std::uint16_t parent_api_id = 0;  // api of parent_id (0 if none): lets pairing skip nested driver calls
  bool incomplete = false;
};

struct SchedEventRecord {
  std::int64_t ts_ns = 0;
  std::uint32_t prev_tid = 0, prev_pid = 0, next_tid = 0, next_pid = 0, prev_state = 0;
  bool in_call = false;
  std::string prev_comm, next_comm;
};


// NVML's view of a GPU (what nvidia-smi shows), sampled during a trace.
struct GpuRecord {
  std::uint32_t index = 0;  // NVML index (may differ from the CUDA ordinal)
  std::string name, uuid, driver_version;
  std::uint64_t total_bytes = 0;
};

struct GpuMemorySample {
  std::int64_t ts_ns = 0;
  std::uint32_t gpu_index = 0;
  std::uint64_t used_bytes = 0, total_bytes = 0;
};

struct GpuProcessSample {
  std::int64_t ts_ns = 0;
  std::uint32_t gpu_index = 0;
  std::uint32_t pid = 0;  // as NVML reports it (the host's pid namespace)
  std::uint64_t used_bytes = 0;
};

// Where a recording goes: one session at a time, records in the order the calls
// were made. The methods are called from the tracer's thread, except the NVML
// samples (the sampler's own thread): implementations are thread-safe.
class RecordSink {
 public:
  virtual ~RecordSink() = default;
  // Starts the session and returns its id (0 if that failed: health() says why).
  virtual std::int64_t begin_session(const SessionInfo& info) = 0;
  // The first free call id: the ids of the session's calls start here.
  virtual std::int64_t next_call_id() const = 0;
  virtual std::int64_t add_library(const LibraryRecord& lib, const std::vector<ProbeRecord>& probes) = 0;
  virtual void process_seen(const ProcessRecord& proc) = 0;
  virtual void process_exec(std::uint32_t pid, const std::string& comm, const std::string& cmdline) = 0;
  virtual void process_exited(std::uint32_t pid, std::int64_t ts_ns, int exit_code) = 0;
  virtual void add_call(const CallRecord& call) = 0;
  virtual void add_sched_event(const SchedEventRecord& ev) = 0;
  virtual void add_gpu(const GpuRecord& gpu) = 0;
  virtual void add_gpu_memory_sample(const GpuMemorySample& sample) = 0;
  virtual void add_gpu_process_sample(const GpuProcessSample& sample) = 0;
  virtual Status end_session(const SessionEnd& end) = 0;
  // The first write error, once there was one: nothing more is written.
  virtual Status health() const = 0;
};

}  // namespace vs
