#include "store/store.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>
#include <variant>

#include "store/summaries.h"

namespace vs::store {
namespace {

constexpr std::size_t kRowsPerTransaction = 10000;
constexpr auto kCommitInterval = std::chrono::milliseconds(50);
// Wake the writer early once this many operations are queued.
constexpr std::size_t kWakeOps = 8192;
// Producers wait (the ring buffer then fills and the kernel side counts drops)
// rather than let the queue grow without bound when the disk cannot keep up
// (an operation is 184 bytes: this bounds the queue to about 24 MB).
constexpr std::size_t kMaxQueuedOps = 1u << 17;
constexpr std::size_t kMultiRows = 32;
constexpr int kCallColumns = 23, kAllocColumns = 16;

const char* const kInsertCall =
    "INSERT INTO call_rows (id, session_id, ts_ns, dur_ns, pid, tid, api_id, device, stream, ptr, bytes, handle, ret, "
    "caller_id, off_cpu_ns, runq_ns, switches, preempted_by, preempted_by_comm, longest_off_ns, parent_id, incomplete, "
    "seq) "
    "VALUES ";
const char* const kInsertAlloc =
    "INSERT INTO allocations (id, session_id, pid, device, kind, ptr, bytes, handle, alloc_call_id, alloc_ts_ns, "
    "caller_id, alloc_seq, free_call_id, free_ts_ns, end_reason, free_seq) VALUES ";

// "(?,?,...),(?,?,...)": `rows` groups of `columns` parameters.
std::string values_list(int columns, std::size_t rows) {
  std::string group = "(";
  for (int i = 0; i < columns; ++i) group += i ? ",?" : "?";
  group += ")";
  std::string out;
  for (std::size_t r = 0; r < rows; ++r) out += (r ? "," : "") + group;
  return out;
}

// Pointers, handles and streams are stored as the signed 64-bit integer with the same bits.
constexpr std::int64_t bits(std::uint64_t v) { return static_cast<std::int64_t>(v); }

// ---- queued operations: compact, no heap memory for the common ones ----

// A call row with its caller already interned (0: no caller) and optionals packed.
struct CallRow {
  enum : std::uint16_t {
    kDevice = 1, kStream = 2, kPtr = 4, kBytes = 8, kHandle = 16, kPreemptedBy = 32,
    kComm = 64, kLongestOff = 128, kParent = 256, kSeq = 512,
  };
  std::int64_t id, ts_ns, dur_ns, seq;
  std::int64_t device;
  std::uint64_t stream, ptr, bytes, handle;
  std::int64_t ret, caller_id, off_cpu_ns, runq_ns, longest_off_ns, parent_id;
  std::uint32_t pid, tid, switches, preempted_by;
  std::uint16_t api_id, present;
  bool incomplete;
  std::string comm;  // preempted_by_comm: a task comm fits the small-string buffer
};

struct AllocOpenRow {
  std::int64_t id, alloc_call_id, alloc_ts_ns, caller_id;
  std::uint64_t ptr, bytes;
  std::optional<std::int64_t> device, alloc_seq;
  std::optional<std::uint64_t> handle;
  std::uint32_t pid;
  AllocKind kind;
  // Filled in by the writer when the close arrives in the same transaction (one INSERT, no UPDATE).
  bool closed = false;
  std::optional<std::int64_t> free_call_id, free_seq;
  std::int64_t free_ts_ns = 0;
  std::string end_reason;
};

struct ObjectRow {
  std::int64_t id;
  std::string path;
};

struct ProcessRow {
  std::int64_t id;
  ProcessRecord rec;
};

struct ProcessExecRow {
  std::int64_t id;
  std::string comm, cmdline;
};

struct ProcessExitRow {
  std::int64_t id, ts_ns;
  int exit_code;
};

// Runs on the writer thread (session and library rows, whose ids callers wait for).
struct Task {
  std::function<void()> fn;
};

using QueuedOp = std::variant<CallRow, AllocOpenRow, AllocationClose, UnmatchedFree, ObjectRow, ProcessRow,
                              ProcessExecRow, ProcessExitRow, SchedEventRecord, GpuRecord, GpuMemorySample,
                              GpuProcessSample, Task>;

// ---- SQLite helpers ----

// The recorder's lock (see TraceWriter::open): a descriptor of its own on the trace file.
struct RecorderLock {
  int fd = -1;
  RecorderLock() = default;
  RecorderLock(const RecorderLock&) = delete;
  RecorderLock& operator=(const RecorderLock&) = delete;
  ~RecorderLock() {
    if (fd >= 0) close(fd);
  }
};

struct Db {
  sqlite3* db = nullptr;
  ~Db() {
    if (db != nullptr) sqlite3_close_v2(db);
  }
};

struct Stmt {
  sqlite3_stmt* s = nullptr;
  Stmt() = default;
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;
  ~Stmt() { sqlite3_finalize(s); }
};

std::string errmsg(sqlite3* db) {
  return db != nullptr ? std::string(sqlite3_errmsg(db)) : std::string("out of memory");
}

Status exec(sqlite3* db, const std::string& sql, const std::string& what) {
  char* msg = nullptr;
  if (sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &msg) != SQLITE_OK) {
    std::string m = msg != nullptr ? msg : errmsg(db);
    sqlite3_free(msg);
    return Error{what + ": " + m};
  }
  return {};
}

// Runs a one-row, one-column query.
Result<std::string> query_text(sqlite3* db, const char* sql, const std::string& what) {
  sqlite3_stmt* st = nullptr;
  if (sqlite3_prepare_v2(db, sql, -1, &st, nullptr) != SQLITE_OK) return Error{what + ": " + errmsg(db)};
  std::string out;
  int rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    if (const unsigned char* t = sqlite3_column_text(st, 0)) out = reinterpret_cast<const char*>(t);
    rc = sqlite3_step(st);
  }
  if (rc != SQLITE_DONE) {
    std::string m = errmsg(db);
    sqlite3_finalize(st);
    return Error{what + ": " + m};
  }
  sqlite3_finalize(st);
  return out;
}

Result<std::int64_t> query_int(sqlite3* db, const char* sql, const std::string& what) {
  auto t = query_text(db, sql, what);
  if (!t) return t.error();
  return static_cast<std::int64_t>(std::strtoll(t->c_str(), nullptr, 10));
}

// Columns added to tables of an earlier schema version: CREATE TABLE IF NOT EXISTS leaves an
// existing table as it is, so an older file gets them by ALTER TABLE. schema.sql declares them
// the same way, last in their tables, so that old and new files have one column order.
struct AddedColumn {
  const char* table;
  const char* column;
  const char* type;
};
constexpr AddedColumn kAddedColumns[] = {
    // schema 4
    {"call_rows", "seq", "INTEGER"},
    {"allocations", "alloc_seq", "INTEGER"},
    {"allocations", "free_seq", "INTEGER"},
    // schema 5
    {"sessions", "last_call_end_ns", "INTEGER"},
};

}  // namespace

Status upgrade_schema(sqlite3* db) {
  if (Status s = exec(db, std::string(schema_sql()), "creating the tables"); !s) return s;
  for (const AddedColumn& c : kAddedColumns) {
    const std::string name = std::string(c.table) + "." + c.column;
    const std::string has = std::string("SELECT count(*) FROM pragma_table_info('") + c.table + "') WHERE name = '" +
                            c.column + "'";
    auto present = query_int(db, has.c_str(), "looking for column " + name);
    if (!present) return present.error();
    if (*present > 0) continue;
    if (Status s = exec(db, std::string("ALTER TABLE ") + c.table + " ADD COLUMN " + c.column + " " + c.type,
                        "adding column " + name);
        !s)
      return s;
    // A session not ended (its recorder died) is read through these two from now on: computed once here.
    if (name == "sessions.last_call_end_ns")
      if (Status s = exec(db,
                          "UPDATE sessions SET calls_recorded = (SELECT COUNT(*) FROM call_rows c WHERE c.session_id = "
                          "sessions.id), last_call_end_ns = (SELECT MAX(ts_ns + dur_ns) FROM call_rows c WHERE "
                          "c.session_id = sessions.id) WHERE end_ts_ns IS NULL",
                          "counting the calls of the sessions not ended");
          !s)
        return s;
  }
  return exec(db, "PRAGMA user_version = " + std::to_string(kSchemaVersion), "setting the schema version");
}

// ---------------------------------------------------------------------------

struct TraceWriter::Impl {
  std::string path;
  RecorderLock lock;  // released after the connection is closed (declared before it)
  Db db;

  // ---- writer-thread state (only the writer thread touches these after open) ----
  Stmt begin, commit, rollback, ins_call, ins_call_multi, ins_alloc, ins_alloc_multi, upd_alloc, ins_unmatched,
      ins_object, ins_process, upd_exec, upd_exit, ins_sched, ins_session, ins_library, ins_probe, upd_session,
      ins_gpu, ins_gpu_memory, ins_gpu_process, upd_progress;
  std::int64_t w_session_id = 0;
  bool in_txn = false;
  std::size_t txn_rows = 0;
  std::int64_t txn_calls = 0;          // call rows in the open transaction
  // Allocations opened in the open transaction, by increasing id (pairing hands ids out in
  // order): inserted at commit, so one closed in the same transaction needs no UPDATE.
  std::vector<AllocOpenRow> pending_allocs;
  std::vector<const CallRow*> pending_calls;  // call rows not yet inserted (fewer than kMultiRows)
  std::int64_t session_calls_committed = 0;
  std::optional<std::int64_t> session_last_call_end;  // MAX(ts_ns + dur_ns) of the session's committed calls
  std::optional<std::int64_t> txn_last_call_end;      // the same over the open transaction's
  bool stopped = false;  // by the first write error: nothing is written after it

  // ---- shared state, under mu ----
  mutable std::mutex mu;
  std::condition_variable wake_cv;   // writer waits for work
  std::condition_variable done_cv;   // flush() waits for the writer
  std::condition_variable space_cv;  // producers wait for queue space
  std::vector<QueuedOp> queue;
  std::uint64_t enq_seq = 0, done_seq = 0;
  int flush_waiters = 0;
  int producers_waiting = 0;
  bool wake_sent = false, stop = false;
  std::string first_error;

  // Producer-side state (under mu): pairing, interning, process rows.
  Pairing pairing;
  std::int64_t next_allocation_id;
  PairingOps ops;  // reused by add_call
  std::int64_t session_id = 0;
  std::int64_t next_call_id_at_open = 1, max_call_id = 0;
  std::int64_t next_process_id = 1, next_object_id = 1;
  std::unordered_map<std::string, std::int64_t> objects;
  std::string last_caller;
  std::int64_t last_caller_id = 0;
  std::set<std::pair<std::uint32_t, std::optional<std::int64_t>>> processes_seen;  // this session
  std::unordered_map<std::uint32_t, std::int64_t> newest_process;                   // pid -> processes.id
  std::unordered_map<std::uint32_t, std::int64_t> top_level_calls;                  // pid -> its last call_rows.seq
  bool warned_no_session = false;

  // Stats.
  std::atomic<std::int64_t> calls_written{0}, calls_queued{0}, transactions{0};

  std::thread writer;

  explicit Impl(std::int64_t first_allocation_id)
      : pairing(first_allocation_id), next_allocation_id(first_allocation_id) {}

  // ---- error reporting (writer thread) ----
  // The first write error stops the writer (a full disk would fail every later write, and
  // rows written around a gap would not add up): the open transaction is rolled back (some
  // errors already did that), what earlier transactions committed stays, the rest is dropped.
  void fail(const std::string& what, int rc) {
    if (stopped) return;
    stopped = true;
    std::string msg = "writing trace file '" + path + "': " + what + ": " + errmsg(db.db) + " (sqlite code " +
                      std::to_string(rc) + ")";
    spdlog::error("{}", msg);
    {
      std::lock_guard l(mu);
      if (first_error.empty()) first_error = msg + "; check free disk space and that the file is writable";
    }
    if (sqlite3_get_autocommit(db.db) == 0) {
      sqlite3_step(rollback.s);
      sqlite3_reset(rollback.s);
    }
    in_txn = false;
    txn_rows = 0;
  }

  bool step(Stmt& st, const char* what) {
    int rc = sqlite3_step(st.s);
    sqlite3_reset(st.s);
    if (rc != SQLITE_DONE) {
      fail(what, rc);
      return false;
    }
    return true;
  }

  void ensure_txn() {
    if (in_txn) return;
    int rc = sqlite3_step(begin.s);
    sqlite3_reset(begin.s);
    if (rc != SQLITE_DONE) {
      fail("BEGIN", rc);
      return;
    }
    in_txn = true;
    txn_rows = 0;
    txn_calls = 0;
  }

  void commit_txn() {
    if (!pending_calls.empty()) insert_pending_calls();
    if (!pending_allocs.empty()) insert_pending_allocs();
    if (in_txn && txn_calls > 0 && !stopped) {
      // In the transaction of the calls they count, so that a reader sees both or neither.
      const std::optional<std::int64_t> end = std::max(session_last_call_end, txn_last_call_end);
      sqlite3_stmt* s = upd_progress.s;
      int rc = bind(s, 1, session_calls_committed + txn_calls) | bind(s, 2, end) | bind(s, 3, w_session_id);
      // Not write(): its row_done() would commit, from here.
      if (rc != SQLITE_OK) fail("update sessions (calls so far) (bind)", rc);
      else if (step(upd_progress, "update sessions (calls so far)")) session_last_call_end = end;
    }
    if (in_txn) {
      int rc = sqlite3_step(commit.s);
      sqlite3_reset(commit.s);
      in_txn = false;
      if (rc != SQLITE_DONE) fail("COMMIT", rc);
      else transactions.fetch_add(1, std::memory_order_relaxed);
    }
    if (stopped) txn_calls = 0;  // rolled back with the transaction
    calls_written.fetch_add(txn_calls, std::memory_order_relaxed);
    session_calls_committed += txn_calls;
    txn_rows = 0;
    txn_calls = 0;
    txn_last_call_end.reset();
  }

  void row_done() {
    if (++txn_rows >= kRowsPerTransaction) commit_txn();
  }

  // ---- binding ----
  static int bind(sqlite3_stmt* s, int i, std::int64_t v) { return sqlite3_bind_int64(s, i, v); }
  static int bind(sqlite3_stmt* s, int i, std::optional<std::int64_t> v) {
    return v ? sqlite3_bind_int64(s, i, *v) : sqlite3_bind_null(s, i);
  }
  static int bind(sqlite3_stmt* s, int i, std::optional<std::uint64_t> v) {
    return v ? sqlite3_bind_int64(s, i, bits(*v)) : sqlite3_bind_null(s, i);
  }
  static int bind(sqlite3_stmt* s, int i, double v) { return sqlite3_bind_double(s, i, v); }
  // The text must outlive the step (it does: the queued op or the caller's record).
  static int bind(sqlite3_stmt* s, int i, const std::string& v) {
    return sqlite3_bind_text(s, i, v.data(), static_cast<int>(v.size()), SQLITE_STATIC);
  }
  static int bind(sqlite3_stmt* s, int i, const std::optional<std::string>& v) {
    return v ? bind(s, i, *v) : sqlite3_bind_null(s, i);
  }
  static int bind_nonempty(sqlite3_stmt* s, int i, const std::string& v) {
    return v.empty() ? sqlite3_bind_null(s, i) : bind(s, i, v);
  }

  // Binds, steps, resets; counts the row in the transaction (and commits every kRowsPerTransaction).
  bool write(Stmt& st, int bind_rc, const char* what) {
    if (bind_rc != SQLITE_OK) {
      fail(std::string(what) + " (bind)", bind_rc);
      return false;
    }
    ensure_txn();
    const bool ok = step(st, what);
    row_done();
    return ok;
  }

  // ---- applying queued operations (writer thread) ----
  // Call rows and allocation rows go in as multi-row INSERTs of kMultiRows rows: that
  // amortizes the per-statement cost (about +30% rows/s over one row per statement).
  static int bind_call(sqlite3_stmt* s, int base, std::int64_t session, const CallRow& c) {
    auto opt = [&](int i, std::uint16_t bit, std::int64_t v) {
      return (c.present & bit) ? sqlite3_bind_int64(s, base + i, v) : sqlite3_bind_null(s, base + i);
    };
    return bind(s, base + 1, c.id) | bind(s, base + 2, session) | bind(s, base + 3, c.ts_ns) |
           bind(s, base + 4, c.dur_ns) | bind(s, base + 5, std::int64_t{c.pid}) | bind(s, base + 6, std::int64_t{c.tid}) |
           bind(s, base + 7, std::int64_t{c.api_id}) | opt(8, CallRow::kDevice, c.device) |
           opt(9, CallRow::kStream, bits(c.stream)) | opt(10, CallRow::kPtr, bits(c.ptr)) |
           opt(11, CallRow::kBytes, bits(c.bytes)) | opt(12, CallRow::kHandle, bits(c.handle)) |
           bind(s, base + 13, c.ret) |
           (c.caller_id != 0 ? bind(s, base + 14, c.caller_id) : sqlite3_bind_null(s, base + 14)) |
           bind(s, base + 15, c.off_cpu_ns) | bind(s, base + 16, c.runq_ns) | bind(s, base + 17, std::int64_t{c.switches}) |
           opt(18, CallRow::kPreemptedBy, std::int64_t{c.preempted_by}) |
           ((c.present & CallRow::kComm) ? bind(s, base + 19, c.comm) : sqlite3_bind_null(s, base + 19)) |
           opt(20, CallRow::kLongestOff, c.longest_off_ns) | opt(21, CallRow::kParent, c.parent_id) |
           bind(s, base + 22, std::int64_t{c.incomplete ? 1 : 0}) | opt(23, CallRow::kSeq, c.seq);
  }

  static int bind_alloc(sqlite3_stmt* s, int base, std::int64_t session, const AllocOpenRow& a) {
    const std::string_view kind = alloc_kind_name(a.kind);  // static storage
    int rc = bind(s, base + 1, a.id) | bind(s, base + 2, session) | bind(s, base + 3, std::int64_t{a.pid}) |
             bind(s, base + 4, a.device) |
             sqlite3_bind_text(s, base + 5, kind.data(), static_cast<int>(kind.size()), SQLITE_STATIC) |
             bind(s, base + 6, bits(a.ptr)) | bind(s, base + 7, bits(a.bytes)) | bind(s, base + 8, a.handle) |
             bind(s, base + 9, a.alloc_call_id) | bind(s, base + 10, a.alloc_ts_ns) |
             (a.caller_id != 0 ? bind(s, base + 11, a.caller_id) : sqlite3_bind_null(s, base + 11)) |
             bind(s, base + 12, a.alloc_seq);
    if (a.closed)
      return rc | bind(s, base + 13, a.free_call_id) | bind(s, base + 14, a.free_ts_ns) |
             bind(s, base + 15, a.end_reason) | bind(s, base + 16, a.free_seq);
    return rc | sqlite3_bind_null(s, base + 13) | sqlite3_bind_null(s, base + 14) | sqlite3_bind_null(s, base + 15) |
           sqlite3_bind_null(s, base + 16);
  }

  // Inserts `rows` with the multi-row statement while kMultiRows are left, then one by one.
  template <class Row, class Bind>
  std::size_t insert_rows(const std::vector<Row>& rows, Stmt& multi, Stmt& single, int columns, Bind bind_row,
                          const char* what) {
    std::size_t written = 0, i = 0;
    const std::size_t n = rows.size();
    for (; !stopped && n - i >= kMultiRows; i += kMultiRows) {
      int rc = SQLITE_OK;
      for (std::size_t r = 0; r < kMultiRows; ++r)
        rc |= bind_row(multi.s, static_cast<int>(r) * columns, rows[i + r]);
      if (rc != SQLITE_OK) fail(std::string(what) + " (bind)", rc);
      else if (step(multi, what)) written += kMultiRows;
    }
    for (; !stopped && i < n; ++i) {
      int rc = bind_row(single.s, 0, rows[i]);
      if (rc != SQLITE_OK) fail(std::string(what) + " (bind)", rc);
      else if (step(single, what)) ++written;
    }
    return written;
  }

  void apply(CallRow& c) {
    ensure_txn();
    pending_calls.push_back(&c);  // the batch holding it lives until the commit
    if (pending_calls.size() == kMultiRows) insert_pending_calls();
    row_done();
  }

  void insert_pending_calls() {
    for (const CallRow* c : pending_calls) {
      // As SQLite's MAX(ts_ns + dur_ns): both are below 2^62 (tracer/decoder.h record_ns), the sum fits.
      const std::int64_t end = c->ts_ns + c->dur_ns;
      if (!txn_last_call_end || end > *txn_last_call_end) txn_last_call_end = end;
    }
    const std::int64_t session = w_session_id;
    txn_calls += static_cast<std::int64_t>(insert_rows(
        pending_calls, ins_call_multi, ins_call, kCallColumns,
        [session](sqlite3_stmt* s, int base, const CallRow* c) { return bind_call(s, base, session, *c); },
        "insert into call_rows"));
    pending_calls.clear();
  }

  void apply(AllocOpenRow& a) {
    ensure_txn();
    if (!pending_allocs.empty() && pending_allocs.back().id >= a.id) insert_pending_allocs();  // keep them sorted
    pending_allocs.push_back(std::move(a));
    row_done();
  }

  void insert_pending_allocs() {
    const std::int64_t session = w_session_id;
    insert_rows(
        pending_allocs, ins_alloc_multi, ins_alloc, kAllocColumns,
        [session](sqlite3_stmt* s, int base, const AllocOpenRow& a) { return bind_alloc(s, base, session, a); },
        "insert into allocations");
    pending_allocs.clear();
  }

  void apply(AllocationClose& c) {
    if (!pending_allocs.empty() && c.id >= pending_allocs.front().id) {
      auto it = std::lower_bound(pending_allocs.begin(), pending_allocs.end(), c.id,
                                 [](const AllocOpenRow& a, std::int64_t id) { return a.id < id; });
      if (it != pending_allocs.end() && it->id == c.id && !it->closed) {
        it->closed = true;
        it->free_call_id = c.free_call_id;
        it->free_ts_ns = c.free_ts_ns;
        it->free_seq = c.free_seq;
        it->end_reason = std::move(c.end_reason);
        return;
      }
    }
    sqlite3_stmt* s = upd_alloc.s;
    int rc = bind(s, 1, c.free_call_id) | bind(s, 2, c.free_ts_ns) | bind(s, 3, c.end_reason) | bind(s, 4, c.free_seq) |
             bind(s, 5, c.id);
    write(upd_alloc, rc, "update allocations (free)");
  }

  void apply(UnmatchedFree& u) {
    sqlite3_stmt* s = ins_unmatched.s;
    int rc = bind(s, 1, u.call_id) | bind(s, 2, w_session_id) | bind(s, 3, std::int64_t{u.pid}) | bind(s, 4, u.ptr);
    write(ins_unmatched, rc, "insert into unmatched_frees");
  }

  void apply(ObjectRow& o) {
    sqlite3_stmt* s = ins_object.s;
    write(ins_object, bind(s, 1, o.id) | bind(s, 2, o.path), "insert into objects");
  }

  void apply(ProcessRow& p) {
    sqlite3_stmt* s = ins_process.s;
    const ProcessRecord& r = p.rec;
    int rc = bind(s, 1, p.id) | bind(s, 2, w_session_id) | bind(s, 3, std::int64_t{r.pid}) |
             (r.ppid ? bind(s, 4, std::int64_t{*r.ppid}) : sqlite3_bind_null(s, 4)) | bind(s, 5, r.start_ns) |
             bind_nonempty(s, 6, r.comm) | bind_nonempty(s, 7, r.cmdline) | bind(s, 8, r.first_ts_ns) |
             bind(s, 9, r.how_found);
    write(ins_process, rc, "insert into processes");
  }

  void apply(ProcessExecRow& e) {
    sqlite3_stmt* s = upd_exec.s;
    write(upd_exec, bind_nonempty(s, 1, e.comm) | bind_nonempty(s, 2, e.cmdline) | bind(s, 3, e.id),
          "update processes (exec)");
  }

  void apply(ProcessExitRow& e) {
    sqlite3_stmt* s = upd_exit.s;
    write(upd_exit, bind(s, 1, e.ts_ns) | bind(s, 2, std::int64_t{e.exit_code}) | bind(s, 3, e.id),
          "update processes (exit)");
  }

  void apply(SchedEventRecord& e) {
    sqlite3_stmt* s = ins_sched.s;
    int rc = bind(s, 1, w_session_id) | bind(s, 2, e.ts_ns) | bind(s, 3, std::int64_t{e.prev_tid}) |
             bind(s, 4, std::int64_t{e.prev_pid}) | bind_nonempty(s, 5, e.prev_comm) |
             bind(s, 6, std::int64_t{e.prev_state}) | bind(s, 7, std::int64_t{e.next_tid}) |
             bind(s, 8, std::int64_t{e.next_pid}) | bind_nonempty(s, 9, e.next_comm) |
             bind(s, 10, std::int64_t{e.in_call ? 1 : 0});
    write(ins_sched, rc, "insert into sched_events");
  }

  void apply(GpuRecord& g) {
    sqlite3_stmt* s = ins_gpu.s;
    write(ins_gpu,
          bind(s, 1, w_session_id) | bind(s, 2, std::int64_t{g.index}) | bind_nonempty(s, 3, g.name) |
              bind_nonempty(s, 4, g.uuid) | bind_nonempty(s, 5, g.driver_version) |
              bind(s, 6, static_cast<std::int64_t>(g.total_bytes)),
          "insert into gpus");
  }

  void apply(GpuMemorySample& m) {
    sqlite3_stmt* s = ins_gpu_memory.s;
    write(ins_gpu_memory,
          bind(s, 1, w_session_id) | bind(s, 2, m.ts_ns) | bind(s, 3, std::int64_t{m.gpu_index}) |
              bind(s, 4, static_cast<std::int64_t>(m.used_bytes)) | bind(s, 5, static_cast<std::int64_t>(m.total_bytes)),
          "insert into gpu_memory_samples");
  }

  void apply(GpuProcessSample& p) {
    sqlite3_stmt* s = ins_gpu_process.s;
    write(ins_gpu_process,
          bind(s, 1, w_session_id) | bind(s, 2, p.ts_ns) | bind(s, 3, std::int64_t{p.gpu_index}) |
              bind(s, 4, std::int64_t{p.pid}) | bind(s, 5, static_cast<std::int64_t>(p.used_bytes)),
          "insert into gpu_process_samples");
  }

  void apply(Task& t) { t.fn(); }

  // Copies everything in the -wal file into the trace file and empties the -wal, so that
  // the file alone (copied, attached to a report) holds the session. SQLite does that
  // when its last connection closes, which a reader that is still open (an MCP server)
  // prevents. A reader in a long query makes it wait (busy timeout), then give up.
  void checkpoint() {
    int rc = sqlite3_wal_checkpoint_v2(db.db, nullptr, SQLITE_CHECKPOINT_TRUNCATE, nullptr, nullptr);
    if (rc != SQLITE_OK)
      spdlog::warn("trace file '{}': folding its -wal file into it failed ({}): until a later writer or the last "
                   "reader closes it, copy the trace together with '{}-wal'",
                   path, errmsg(db.db), path);
  }

  // ---- the writer thread ----
  void run() {
    std::vector<QueuedOp> batch;
    for (;;) {
      std::uint64_t batch_seq = 0;
      {
        std::unique_lock l(mu);
        wake_cv.wait_for(l, kCommitInterval, [&] {
          return stop || queue.size() >= kWakeOps || (flush_waiters > 0 && !queue.empty());
        });
        if (queue.empty()) {
          if (stop) break;
          continue;
        }
        batch.swap(queue);
        batch_seq = enq_seq;
        wake_sent = false;
        if (producers_waiting > 0) space_cv.notify_all();
      }
      for (auto& op : batch)
        if (!stopped) std::visit([this](auto& o) { apply(o); }, op);
      commit_txn();
      batch.clear();
      {
        std::lock_guard l(mu);
        done_seq = batch_seq;
      }
      done_cv.notify_all();
    }
    commit_txn();
  }

  // ---- producer side (call with mu held) ----
  void push(std::unique_lock<std::mutex>& l, QueuedOp&& op) {
    if (queue.size() >= kMaxQueuedOps) {
      ++producers_waiting;
      wake_cv.notify_one();
      space_cv.wait(l, [&] { return queue.size() < kMaxQueuedOps || stop; });
      --producers_waiting;
    }
    queue.push_back(std::move(op));
    ++enq_seq;
    if (!wake_sent && queue.size() >= kWakeOps) {
      wake_sent = true;
      wake_cv.notify_one();
    }
  }

  std::int64_t intern(std::unique_lock<std::mutex>& l, const std::optional<std::string>& caller) {
    if (!caller) return 0;
    if (last_caller_id != 0 && *caller == last_caller) return last_caller_id;
    auto [it, inserted] = objects.try_emplace(*caller, 0);
    if (inserted) {
      it->second = next_object_id++;
      push(l, ObjectRow{it->second, *caller});
    }
    last_caller = *caller;
    last_caller_id = it->second;
    return it->second;
  }

  // Queues one record that needs nothing but a session (scheduler and NVML records).
  template <class Record>
  void enqueue(const char* what, const Record& rec) {
    std::unique_lock l(mu);
    if (have_session(what)) push(l, rec);
  }

  bool have_session(const char* what) {
    if (session_id != 0) return true;
    if (!warned_no_session) {
      warned_no_session = true;
      spdlog::error("trace store: {} before begin_session; ignored", what);
    }
    return false;
  }

  void push_pairing(std::unique_lock<std::mutex>& l, PairingOps& p, std::int64_t caller_id) {
    if (!p.opened.empty()) next_allocation_id = p.opened.back().id + 1;
    for (auto& o : p.opened) {
      AllocOpenRow row;
      row.id = o.id;
      row.alloc_call_id = o.alloc_call_id;
      row.alloc_ts_ns = o.alloc_ts_ns;
      row.alloc_seq = o.alloc_seq;
      row.caller_id = caller_id;
      row.ptr = o.ptr;
      row.bytes = o.bytes;
      row.device = o.device;
      row.handle = o.handle;
      row.pid = o.pid;
      row.kind = o.kind;
      push(l, std::move(row));
    }
    for (auto& c : p.closed) push(l, std::move(c));
    for (auto& u : p.unmatched) push(l, u);
  }

  // Runs fn on the writer thread, after everything queued before it; returns when done.
  void run_sync(std::function<void()> fn) {
    std::unique_lock l(mu);
    push(l, Task{std::move(fn)});
    wait_done(l);
  }

  void wait_done(std::unique_lock<std::mutex>& l) {
    const std::uint64_t target = enq_seq;
    ++flush_waiters;
    wake_cv.notify_one();
    done_cv.wait(l, [&] { return done_seq >= target; });
    --flush_waiters;
  }

  // ---- open ----
  Status prepare(Stmt& st, const char* sql) {
    if (sqlite3_prepare_v3(db.db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st.s, nullptr) != SQLITE_OK)
      return Error{"trace file '" + path + "': preparing \"" + std::string(sql).substr(0, 120) + "\": " +
                   errmsg(db.db)};
    return {};
  }

  Status prepare_all() {
    const std::string call1 = kInsertCall + values_list(kCallColumns, 1);
    const std::string call_multi = kInsertCall + values_list(kCallColumns, kMultiRows);
    const std::string alloc1 = kInsertAlloc + values_list(kAllocColumns, 1);
    const std::string alloc_multi = kInsertAlloc + values_list(kAllocColumns, kMultiRows);
    const std::pair<Stmt*, const char*> stmts[] = {
        {&begin, "BEGIN"},
        {&commit, "COMMIT"},
        {&rollback, "ROLLBACK"},
        {&ins_call, call1.c_str()},
        {&ins_call_multi, call_multi.c_str()},
        {&ins_alloc, alloc1.c_str()},
        {&ins_alloc_multi, alloc_multi.c_str()},
        {&upd_alloc,
         "UPDATE allocations SET free_call_id = ?, free_ts_ns = ?, end_reason = ?, free_seq = ? WHERE id = ?"},
        {&ins_unmatched, "INSERT OR IGNORE INTO unmatched_frees (call_id, session_id, pid, ptr) VALUES (?,?,?,?)"},
        {&ins_object, "INSERT OR IGNORE INTO objects (id, path) VALUES (?,?)"},
        {&ins_process,
         "INSERT INTO processes (id, session_id, pid, ppid, start_ns, comm, cmdline, first_ts_ns, how_found) "
         "VALUES (?,?,?,?,?,?,?,?,?)"},
        {&upd_exec, "UPDATE processes SET comm = ?, cmdline = ? WHERE id = ?"},
        {&upd_exit, "UPDATE processes SET exit_ts_ns = ?, exit_code = ? WHERE id = ?"},
        {&ins_sched,
         "INSERT INTO sched_events (session_id, ts_ns, prev_tid, prev_pid, prev_comm, prev_state, next_tid, "
         "next_pid, next_comm, in_call) VALUES (?,?,?,?,?,?,?,?,?,?)"},
        {&ins_session,
         "INSERT INTO sessions (host, kernel, command, mode, options, vramscope_version, start_ts_ns, "
         "realtime_offset_ns, nvml, id) VALUES (?,?,?,?,?,?,?,?,?,?)"},
        {&ins_library,
         "INSERT INTO libraries (session_id, path, kind, dev, inode, pid, found_by, attach_mode, probes_attached, "
         "probes_missing, attached_ts_ns, error) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"},
        {&ins_gpu,
         "INSERT OR REPLACE INTO gpus (session_id, gpu_index, name, uuid, driver_version, total_bytes) "
         "VALUES (?,?,?,?,?,?)"},
        {&ins_gpu_memory,
         "INSERT INTO gpu_memory_samples (session_id, ts_ns, gpu_index, used_bytes, total_bytes) VALUES (?,?,?,?,?)"},
        {&ins_gpu_process,
         "INSERT INTO gpu_process_samples (session_id, ts_ns, gpu_index, pid, used_bytes) VALUES (?,?,?,?,?)"},
        {&ins_probe, "INSERT OR REPLACE INTO probes (library_id, api, offset, status, error) VALUES (?,?,?,?,?)"},
        {&upd_progress, "UPDATE sessions SET calls_recorded = ?, last_call_end_ns = ? WHERE id = ?"},
        {&upd_session,
         "UPDATE sessions SET end_ts_ns = ?, attach_ms = ?, detach_ms = ?, calls_recorded = ?, call_drops = ?, "
         "lifecycle_drops = ?, sched_drops = ?, unrecorded_calls = ?, status = ? WHERE id = ?"},
    };
    for (auto& [st, sql] : stmts)
      if (Status s = prepare(*st, sql); !s) return s;
    return {};
  }
};

// ---------------------------------------------------------------------------

TraceWriter::TraceWriter() = default;

TraceWriter::~TraceWriter() {
  if (!impl_) return;
  {
    std::lock_guard l(impl_->mu);
    impl_->stop = true;
  }
  impl_->wake_cv.notify_one();
  impl_->space_cv.notify_all();
  if (impl_->writer.joinable()) impl_->writer.join();
}

Result<std::unique_ptr<TraceWriter>> TraceWriter::open(const std::string& path) {
  const std::string ctx = "trace file '" + path + "'";
  Db db;
  int rc = sqlite3_open_v2(path.c_str(), &db.db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                           nullptr);
  if (rc != SQLITE_OK)
    return Error{"cannot open " + ctx + ": " + errmsg(db.db) +
                 "; check that the directory exists and is writable"};
  sqlite3_extended_result_codes(db.db, 1);
  sqlite3_busy_timeout(db.db, 5000);
  if (sqlite3_db_readonly(db.db, "main") == 1)
    return Error{"cannot write " + ctx + ": it is read-only; check its permissions or choose another path"};

  auto version = query_int(db.db, "PRAGMA user_version", "cannot read " + ctx);
  if (!version)
    return Error{version.error().message + "; is it a vramscope trace (an SQLite file)?"};
  if (*version > kSchemaVersion)
    return Error{ctx + " was written by a newer vramscope (schema " + std::to_string(*version) +
                 "); upgrade vramscope, or write to a new file"};
  if (*version == 0) {
    auto tables = query_int(db.db, "SELECT count(*) FROM sqlite_schema", "cannot read " + ctx);
    if (!tables) return tables.error();
    if (*tables > 0)
      return Error{ctx + " is an SQLite database but not a vramscope trace (no schema version); "
                         "choose another path"};
  }

  auto mode = query_text(db.db, "PRAGMA journal_mode=WAL", "cannot set WAL mode on " + ctx);
  if (!mode) return Error{mode.error().message + "; check that the directory is writable"};
  if (*mode != "wal")
    spdlog::warn("{}: journal_mode is '{}', not 'wal' (the filesystem may not support WAL)", ctx, *mode);
  // Checkpoint less often than SQLite's default 1000 pages: fewer stalls of the writer.
  if (Status s = exec(db.db, "PRAGMA wal_autocheckpoint=16000", "cannot set wal_autocheckpoint on " + ctx); !s)
    return Error{s.message()};
  if (Status s = exec(db.db, "PRAGMA synchronous=NORMAL", "cannot set synchronous=NORMAL on " + ctx); !s)
    return Error{s.message()};

  // Schema (idempotent), version and the API catalog, in one transaction.
  // While this writer lives it holds an exclusive flock() on the file: a reader that can
  // take a shared one knows that no recorder is alive, and reads a session still marked
  // 'recording' as 'interrupted' (TraceReader::open). flock, not fcntl: SQLite's own locks
  // are fcntl locks, which flock locks do not touch. The descriptor is closed only after
  // the connection is (closing any descriptor of the file drops the process's fcntl locks).
  RecorderLock lock;
  lock.fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (lock.fd < 0) return Error{"cannot open " + ctx + ": " + std::strerror(errno)};
  // Readers test the lock for a moment (a shared flock, taken and dropped at each query of a
  // finished trace): a lock held that briefly is waited for, a recorder's is not let go.
  int locked = -1;
  for (int tries = 0; (locked = flock(lock.fd, LOCK_EX | LOCK_NB)) != 0 && errno == EWOULDBLOCK && tries < 40; ++tries)
    usleep(5000);
  if (locked != 0)
    return Error{errno == EWOULDBLOCK
                     ? "another `vramscope trace` is recording into " + ctx + "; wait for it to end, or write to "
                       "another file"
                     : "cannot lock " + ctx + ": " + std::strerror(errno)};

  if (Status s = exec(db.db, "BEGIN IMMEDIATE", "cannot write " + ctx); !s)
    return Error{s.message() + "; check that the directory is writable and no other writer holds the file"};
  auto abort = [&](const std::string& m) {
    sqlite3_exec(db.db, "ROLLBACK", nullptr, nullptr, nullptr);
    return Error{m};
  };
  if (Status s = upgrade_schema(db.db); !s)
    return abort("cannot create or upgrade the schema of " + ctx + ": " + s.message() +
                 "; check that the directory is writable and the disk is not full");
  // A session still 'recording' had a recorder that died (killed, crashed): holding the
  // lock, this writer knows none is alive, and says so in the file.
  if (Status s = exec(db.db, "UPDATE sessions SET status = 'interrupted' WHERE status = 'recording'",
                      "marking the sessions of recorders that died as interrupted");
      !s)
    return abort("cannot write " + ctx + ": " + s.message() + "; check that the disk is not full");
  {
    Stmt ins;
    if (sqlite3_prepare_v2(db.db, "INSERT OR IGNORE INTO apis (id, name, layer, op) VALUES (?,?,?,?)", -1, &ins.s,
                           nullptr) != SQLITE_OK)
      return abort("cannot fill the apis table of " + ctx + ": " + errmsg(db.db));
    for (const ApiInfo& api : all_apis()) {
      const std::string_view layer = layer_name(api.layer), op = op_name(api.op);
      sqlite3_bind_int64(ins.s, 1, api.id);
      sqlite3_bind_text(ins.s, 2, api.name.data(), static_cast<int>(api.name.size()), SQLITE_STATIC);
      sqlite3_bind_text(ins.s, 3, layer.data(), static_cast<int>(layer.size()), SQLITE_STATIC);
      sqlite3_bind_text(ins.s, 4, op.data(), static_cast<int>(op.size()), SQLITE_STATIC);
      int src = sqlite3_step(ins.s);
      sqlite3_reset(ins.s);
      if (src != SQLITE_DONE) return abort("cannot fill the apis table of " + ctx + ": " + errmsg(db.db));
    }
    // A file written by a vramscope with a different catalog would map api ids to other names.
    Stmt sel;
    if (sqlite3_prepare_v2(db.db, "SELECT name FROM apis WHERE id = ?", -1, &sel.s, nullptr) != SQLITE_OK)
      return abort("cannot read the apis table of " + ctx + ": " + errmsg(db.db));
    for (const ApiInfo& api : all_apis()) {
      sqlite3_bind_int64(sel.s, 1, api.id);
      std::string name;
      if (sqlite3_step(sel.s) == SQLITE_ROW)
        if (const unsigned char* t = sqlite3_column_text(sel.s, 0)) name = reinterpret_cast<const char*>(t);
      sqlite3_reset(sel.s);
      if (name != api.name)
        return abort(ctx + " was written by a vramscope with a different API catalog (api id " +
                     std::to_string(api.id) + " is '" + name + "' there, '" + std::string(api.name) +
                     "' here); write to a new file");
    }
  }
  if (Status s = exec(db.db, "COMMIT", "cannot write " + ctx); !s)
    return abort(s.message() + "; check that the directory is writable and the disk is not full");

  // Where this session's ids start: after everything an earlier session wrote.
  auto next_id = [&](const char* sql) { return query_int(db.db, sql, "cannot read " + ctx); };
  auto call_id = next_id("SELECT COALESCE(MAX(id), 0) + 1 FROM call_rows");
  auto alloc_id = next_id("SELECT COALESCE(MAX(id), 0) + 1 FROM allocations");
  auto process_id = next_id("SELECT COALESCE(MAX(id), 0) + 1 FROM processes");
  auto object_id = next_id("SELECT COALESCE(MAX(id), 0) + 1 FROM objects");
  for (auto* r : {&call_id, &alloc_id, &process_id, &object_id})
    if (!*r) return r->error();

  std::unique_ptr<TraceWriter> w(new TraceWriter());
  w->impl_ = std::make_unique<Impl>(*alloc_id);
  Impl& im = *w->impl_;
  im.path = path;
  im.next_call_id_at_open = *call_id;
  im.next_process_id = *process_id;
  im.next_object_id = *object_id;
  {
    Stmt sel;
    if (sqlite3_prepare_v2(db.db, "SELECT id, path FROM objects", -1, &sel.s, nullptr) != SQLITE_OK)
      return Error{"cannot read the objects table of " + ctx + ": " + errmsg(db.db)};
    while ((rc = sqlite3_step(sel.s)) == SQLITE_ROW) {
      const unsigned char* t = sqlite3_column_text(sel.s, 1);
      if (t != nullptr) im.objects.emplace(reinterpret_cast<const char*>(t), sqlite3_column_int64(sel.s, 0));
    }
    if (rc != SQLITE_DONE) return Error{"cannot read the objects table of " + ctx + ": " + errmsg(db.db)};
  }
  std::swap(im.db.db, db.db);
  std::swap(im.lock.fd, lock.fd);
  if (Status s = im.prepare_all(); !s) return Error{s.message()};
  im.queue.reserve(kWakeOps * 2);
  im.pending_calls.reserve(kMultiRows);
  im.pending_allocs.reserve(kRowsPerTransaction);
  im.writer = std::thread([&im] { im.run(); });
  return w;
}

std::int64_t TraceWriter::begin_session(const SessionInfo& info) {
  Impl& im = *impl_;
  std::int64_t id = 0;
  im.run_sync([&] {
    im.commit_txn();  // calls_recorded counts per session
    sqlite3_stmt* s = im.ins_session.s;
    int rc = Impl::bind(s, 1, info.host) | Impl::bind(s, 2, info.kernel) | Impl::bind(s, 3, info.command) |
             Impl::bind(s, 4, info.mode) | Impl::bind(s, 5, info.options_json) | Impl::bind(s, 6, info.version) |
             Impl::bind(s, 7, info.start_ts_ns) | Impl::bind(s, 8, info.realtime_offset_ns) | Impl::bind(s, 9, info.nvml) |
             Impl::bind(s, 10, info.id);
    if (im.write(im.ins_session, rc, "insert into sessions")) {
      id = sqlite3_last_insert_rowid(im.db.db);
      im.w_session_id = id;
      im.session_calls_committed = 0;
      im.session_last_call_end.reset();
    }
    im.commit_txn();
  });
  std::lock_guard l(im.mu);
  if (id != 0) {
    im.session_id = id;
    im.processes_seen.clear();
    im.newest_process.clear();
    im.top_level_calls.clear();
    // Allocations do not carry over from an earlier session of this writer: what was
    // open stays outstanding (free NULL) in that session.
    im.pairing = Pairing(im.next_allocation_id);
  }
  return id;
}

std::int64_t TraceWriter::add_library(const LibraryRecord& lib, const std::vector<ProbeRecord>& probes) {
  Impl& im = *impl_;
  {
    std::lock_guard l(im.mu);
    if (!im.have_session("add_library")) return 0;
  }
  std::int64_t id = 0;
  im.run_sync([&] {
    sqlite3_stmt* s = im.ins_library.s;
    int rc = Impl::bind(s, 1, im.w_session_id) | Impl::bind(s, 2, lib.path) | Impl::bind(s, 3, lib.kind) |
             Impl::bind(s, 4, lib.dev) | Impl::bind(s, 5, lib.inode) | Impl::bind(s, 6, lib.pid) |
             Impl::bind(s, 7, lib.found_by) | Impl::bind(s, 8, lib.attach_mode) |
             Impl::bind(s, 9, std::int64_t{lib.probes_attached}) | Impl::bind(s, 10, std::int64_t{lib.probes_missing}) |
             Impl::bind(s, 11, lib.attached_ts_ns) | Impl::bind(s, 12, lib.error);
    if (!im.write(im.ins_library, rc, "insert into libraries")) return;
    id = sqlite3_last_insert_rowid(im.db.db);
    for (const ProbeRecord& p : probes) {
      sqlite3_stmt* ps = im.ins_probe.s;
      int prc = Impl::bind(ps, 1, id) | Impl::bind(ps, 2, p.api) | Impl::bind(ps, 3, p.offset) |
                Impl::bind(ps, 4, p.status) | Impl::bind(ps, 5, p.error);
      im.write(im.ins_probe, prc, "insert into probes");
    }
  });
  return id;
}

void TraceWriter::process_seen(const ProcessRecord& proc) {
  Impl& im = *impl_;
  std::unique_lock l(im.mu);
  if (!im.have_session("process_seen")) return;
  if (!im.processes_seen.emplace(proc.pid, proc.start_ns).second) return;
  const std::int64_t id = im.next_process_id++;
  im.newest_process[proc.pid] = id;
  im.push(l, ProcessRow{id, proc});
}

void TraceWriter::process_exec(std::uint32_t pid, const std::string& comm, const std::string& cmdline) {
  Impl& im = *impl_;
  std::unique_lock l(im.mu);
  if (!im.have_session("process_exec")) return;
  auto it = im.newest_process.find(pid);
  if (it == im.newest_process.end()) {
    spdlog::debug("trace store: exec of pid {} that was never seen; ignored", pid);
    return;
  }
  im.push(l, ProcessExecRow{it->second, comm, cmdline});
}

void TraceWriter::process_exited(std::uint32_t pid, std::int64_t ts_ns, int exit_code) {
  Impl& im = *impl_;
  std::unique_lock l(im.mu);
  if (!im.have_session("process_exited")) return;
  if (auto it = im.newest_process.find(pid); it != im.newest_process.end())
    im.push(l, ProcessExitRow{it->second, ts_ns, exit_code});
  PairingOps ops = im.pairing.on_process_exit(pid, ts_ns);
  im.push_pairing(l, ops, 0);
}

void TraceWriter::add_call(const CallRecord& call) {
  Impl& im = *impl_;
  std::unique_lock l(im.mu);
  if (!im.have_session("add_call")) return;
  const std::int64_t caller_id = im.intern(l, call.caller);

  CallRow row;
  row.id = call.id;
  row.ts_ns = call.ts_ns;
  row.dur_ns = call.dur_ns;
  row.present = 0;
  row.device = call.device.value_or(0);
  row.stream = call.stream.value_or(0);
  row.ptr = call.ptr.value_or(0);
  row.bytes = call.bytes.value_or(0);
  row.handle = call.handle.value_or(0);
  row.present |= call.device ? CallRow::kDevice : 0;
  row.present |= call.stream ? CallRow::kStream : 0;
  row.present |= call.ptr ? CallRow::kPtr : 0;
  row.present |= call.bytes ? CallRow::kBytes : 0;
  row.present |= call.handle ? CallRow::kHandle : 0;
  row.ret = call.ret;
  row.caller_id = caller_id;
  row.off_cpu_ns = call.off_cpu_ns;
  row.runq_ns = call.runq_ns;
  row.longest_off_ns = call.longest_off_ns.value_or(0);
  row.parent_id = call.parent_id.value_or(0);
  // The process's activity order: its top-level calls numbered as they arrive here.
  std::optional<std::int64_t> seq;
  if (!call.parent_id) seq = ++im.top_level_calls[call.pid];
  row.seq = seq.value_or(0);
  row.pid = call.pid;
  row.tid = call.tid;
  row.switches = call.switches;
  row.preempted_by = call.preempted_by.value_or(0);
  row.present |= call.preempted_by ? CallRow::kPreemptedBy : 0;
  row.present |= call.longest_off_ns ? CallRow::kLongestOff : 0;
  row.present |= call.parent_id ? CallRow::kParent : 0;
  row.present |= seq ? CallRow::kSeq : 0;
  if (call.preempted_by_comm) {
    row.present |= CallRow::kComm;
    row.comm = *call.preempted_by_comm;
  }
  row.api_id = call.api_id;
  row.incomplete = call.incomplete;
  im.push(l, std::move(row));
  im.calls_queued.fetch_add(1, std::memory_order_relaxed);
  if (call.id > im.max_call_id) im.max_call_id = call.id;

  im.ops.opened.clear();
  im.ops.closed.clear();
  im.ops.unmatched.clear();
  im.pairing.on_call(call, seq, im.ops);
  if (!im.ops.opened.empty() || !im.ops.closed.empty() || !im.ops.unmatched.empty())
    im.push_pairing(l, im.ops, caller_id);
}

void TraceWriter::add_sched_event(const SchedEventRecord& ev) { impl_->enqueue("add_sched_event", ev); }
void TraceWriter::add_gpu(const GpuRecord& gpu) { impl_->enqueue("add_gpu", gpu); }
void TraceWriter::add_gpu_memory_sample(const GpuMemorySample& sample) {
  impl_->enqueue("add_gpu_memory_sample", sample);
}
void TraceWriter::add_gpu_process_sample(const GpuProcessSample& sample) {
  impl_->enqueue("add_gpu_process_sample", sample);
}

Status TraceWriter::end_session(const SessionEnd& end) {
  Impl& im = *impl_;
  std::int64_t sid = 0;
  {
    std::lock_guard l(im.mu);
    sid = im.session_id;
  }
  if (sid == 0) return Error{"end_session without begin_session"};
  im.run_sync([&] {
    im.commit_txn();
    sqlite3_stmt* s = im.upd_session.s;
    int rc = Impl::bind(s, 1, end.end_ts_ns) | Impl::bind(s, 2, end.attach_ms) | Impl::bind(s, 3, end.detach_ms) |
             Impl::bind(s, 4, im.session_calls_committed) | Impl::bind(s, 5, end.call_drops) |
             Impl::bind(s, 6, end.lifecycle_drops) | Impl::bind(s, 7, end.sched_drops) |
             Impl::bind(s, 8, end.unrecorded_calls) | Impl::bind(s, 9, end.status) | Impl::bind(s, 10, im.w_session_id);
    im.write(im.upd_session, rc, "update sessions (end)");
    im.commit_txn();
    const auto t0 = std::chrono::steady_clock::now();
    if (sqlite3_exec(im.db.db, std::string(index_sql()).c_str(), nullptr, nullptr, nullptr) != SQLITE_OK)
      im.fail("building the indexes", sqlite3_extended_errcode(im.db.db));
    const auto t1 = std::chrono::steady_clock::now();
    if (Status st = build_summaries(im.db.db, im.w_session_id); !st) {
      spdlog::error("trace file '{}': {}", im.path, st.message());
      std::lock_guard l(im.mu);
      if (im.first_error.empty()) im.first_error = "trace file '" + im.path + "': " + st.message();
    }
    using Ms = std::chrono::duration<double, std::milli>;
    spdlog::debug("trace file '{}': session {} ended; indexes built in {:.0f} ms, summaries in {:.0f} ms", im.path,
                  im.w_session_id, Ms(t1 - t0).count(), Ms(std::chrono::steady_clock::now() - t1).count());
    im.checkpoint();
  });
  return flush();
}

Status TraceWriter::health() const {
  const Impl& im = *impl_;
  std::lock_guard l(im.mu);
  if (!im.first_error.empty()) return Error{im.first_error};
  return {};
}

Status TraceWriter::flush() {
  Impl& im = *impl_;
  std::unique_lock l(im.mu);
  im.wait_done(l);
  if (!im.first_error.empty()) return Error{im.first_error};
  return {};
}

WriterStats TraceWriter::stats() const {
  const Impl& im = *impl_;
  WriterStats st;
  st.calls_written = im.calls_written.load(std::memory_order_relaxed);
  st.calls_queued = im.calls_queued.load(std::memory_order_relaxed);
  st.transactions = im.transactions.load(std::memory_order_relaxed);
  std::lock_guard l(im.mu);
  st.outstanding = im.pairing.totals();
  st.outstanding_by_pid = im.pairing.totals_by_pid();
  return st;
}

std::int64_t TraceWriter::next_call_id() const {
  const Impl& im = *impl_;
  std::lock_guard l(im.mu);
  return std::max(im.next_call_id_at_open, im.max_call_id + 1);
}

}  // namespace vs::store
