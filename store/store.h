// The trace store: one writer thread owns the SQLite connection and writes
// in batched transactions with prepared statements; callers enqueue records.
// Allocation pairing (store/pairing.h) runs on the caller's thread, in event
// order, so the writer only ever inserts and updates rows.
//
// The public methods are thread-safe; records are written in the order the
// calls were made. The queue is bounded: when the disk cannot keep up, the
// calling thread waits (the tracer's ring buffer then fills and counts drops)
// rather than memory growing without bound. The first write error (a full
// disk) stops the writer: it is logged, the open transaction is rolled back,
// nothing more is written (what was committed before stays), and health(),
// flush() and end_session() return it.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/result.h"
#include "store/pairing.h"
#include "common/records.h"

struct sqlite3;

namespace vs::store {

// 2: per-API summaries (summaries, call_stats, call_stats_preemptors).
// 3: the same per run of calls (call_buckets, call_bucket_stats), for time windows.
// 4: each top-level call's ordinal in its process (call_rows.seq), and that of the calls that made and
//    ended an allocation (allocations.alloc_seq, free_seq). Readers accept 1 to 3 (the columns absent).
// 5: sessions.calls_recorded and last_call_end_ns kept at every commit while recording, so that a session
//    still recording is read without scanning its calls (TraceReader::schema_version() says whether).
inline constexpr int kSchemaVersion = 5;
// The first schema whose writer keeps sessions.calls_recorded and last_call_end_ns while recording.
inline constexpr int kSchemaKeepsSessionProgress = 5;

// The schema text (store/schema.sql, embedded at build time).
std::string_view schema_sql();
// Its indexes (store/indexes.sql), built when a session ends.
std::string_view index_sql();

// Brings the schema of a read-write connection to kSchemaVersion: creates the tables an older file
// lacks, adds the columns added since to its existing tables, sets user_version. Idempotent; the
// caller holds the transaction, if any. The error says which step failed.
Status upgrade_schema(sqlite3* db);

struct WriterStats {
  std::int64_t calls_written = 0;     // rows committed
  std::int64_t calls_queued = 0;      // rows accepted
  std::int64_t transactions = 0;
  OutstandingTotals outstanding;      // from pairing, at the last add_call
  std::map<std::uint32_t, OutstandingTotals> outstanding_by_pid;  // the same per process holding something
};

class TraceWriter final : public RecordSink {
 public:
  // Creates or opens `path` (WAL, synchronous=NORMAL), creates the schema,
  // refuses a file whose user_version is newer than kSchemaVersion.
  static Result<std::unique_ptr<TraceWriter>> open(const std::string& path);
  ~TraceWriter();  // flushes and joins the writer thread

  // Inserts the sessions row and returns its id (0 if that failed: flush() says why).
  // Must come first: the other records are ignored (with one error logged) before it.
  // A second begin_session on the same writer starts pairing afresh.
  std::int64_t begin_session(const SessionInfo& info) override;
  // Inserts the libraries row and its probes rows; returns the library id (0 on failure).
  std::int64_t add_library(const LibraryRecord& lib, const std::vector<ProbeRecord>& probes) override;
  // Insert; a second sighting of the same (pid, start) in this session is ignored.
  // Empty comm / cmdline are stored as NULL.
  void process_seen(const ProcessRecord& proc) override;
  // Updates the newest processes row of `pid` in this session (ignored if it was never seen).
  void process_exec(std::uint32_t pid, const std::string& comm, const std::string& cmdline) override;
  // Records the exit and releases what the process still held (end_reason 'process_exit').
  void process_exited(std::uint32_t pid, std::int64_t ts_ns, int exit_code) override;
  void add_call(const CallRecord& call) override;  // pairs, then enqueues
  void add_sched_event(const SchedEventRecord& ev) override;
  // NVML's device view (thread-safe: the sampler calls these from its own thread).
  void add_gpu(const GpuRecord& gpu) override;
  void add_gpu_memory_sample(const GpuMemorySample& sample) override;
  void add_gpu_process_sample(const GpuProcessSample& sample) override;
  // Flushes everything queued, writes the session's end row, builds the indexes
  // and the session's summaries (store/summaries.h).
  Status end_session(const SessionEnd& end) override;
  // Blocks until everything queued so far is committed.
  Status flush();
  // The first write error, once there was one (without waiting for the queue): the
  // writer has stopped, stats().calls_written is what the file keeps of this session.
  Status health() const override;
  WriterStats stats() const;

  // The first free call id in this file: ids of a new session start here.
  std::int64_t next_call_id() const override;

 private:
  TraceWriter();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace vs::store
