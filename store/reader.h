// Read-only access to a trace file: one connection, opened read-only so a
// trace being recorded can be read at the same time (WAL) and is never
// modified. A finished trace (no recorder holds it, nothing waits in its -wal)
// is opened with SQLite's immutable=1: no locks, no -wal or -shm files beside
// it, its bytes and times unchanged; should a recorder start on it later, the
// next query sees that and reopens through the WAL. Tools query through this,
// never through the tracer.
#pragma once

#include <sqlite3.h>

#include <chrono>
#include <cstdint>
#include <array>
#include <functional>
#include <optional>
#include <memory>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "common/result.h"

namespace vs::store {

using SqlValue = std::variant<std::monostate, std::int64_t, double, std::string>;

class Row {
 public:
  explicit Row(sqlite3_stmt* stmt) : stmt_(stmt) {}
  bool is_null(int col) const { return sqlite3_column_type(stmt_, col) == SQLITE_NULL; }
  std::int64_t i64(int col) const { return sqlite3_column_int64(stmt_, col); }
  double f64(int col) const { return sqlite3_column_double(stmt_, col); }
  std::string text(int col) const;  // also a blob's bytes
  std::string_view blob(int col) const;  // without a copy: valid until the query moves to the next row
  int type(int col) const { return sqlite3_column_type(stmt_, col); }  // SQLITE_INTEGER, _FLOAT, _TEXT, _BLOB, _NULL

 private:
  sqlite3_stmt* stmt_;
};

// The limits every query_sandboxed statement runs under, whatever its
// time_limit_ms; run_sql's description and its errors cite these numbers.
// SQLite checks its time and step budget only between virtual-machine steps,
// so no single step may run long: any one value is bounded, and so is the
// work of each built-in function whose cost does not grow linearly with it.
struct SandboxCaps {
  // SQLITE_LIMIT_LENGTH: any one string, blob, row or sort record; a value that
  // would grow past it fails at once ("string or blob too big").
  static constexpr int kMaxValueBytes = 1000000;
  static constexpr int kMaxColumns = 100;             // SQLITE_LIMIT_COLUMN: result, GROUP BY, ORDER BY
  static constexpr int kMaxProgramOps = 100000;       // SQLITE_LIMIT_VDBE_OP: the compiled statement's size
  static constexpr int kCacheKiB = 2048;              // PRAGMA cache_size: page cache and each sort's memory
  static constexpr int kMaxPrintfWidth = 100000;      // printf()/format(): every width and precision
  // Work one call of a function that can be quadratic may do (instr, replace,
  // LIKE, GLOB, trim, json_patch): its estimated cost, ~1 unit per ns.
  static constexpr std::int64_t kMaxCallWork = 100000000;
  // The step budget, for a clock that does not advance: time_limit_ms times
  // this many SQLite steps (far more than SQLite runs in a millisecond, so the
  // clock ends a query first), the work of those functions counting too.
  static constexpr std::int64_t kStepsPerMs = 1000000;
  // Growth of SQLite's heap (the whole process's) while the query runs; the
  // bounds above keep a query far below it, this catches what they miss.
  static constexpr std::int64_t kMaxHeapGrowthBytes = std::int64_t{256} << 20;
};

// Bounds on SQL that someone else wrote (run_sql).
struct SandboxLimits {
  std::int64_t time_limit_ms = 2000;
  std::function<bool()> should_stop;  // cancellation; may be empty
  // The clock the time limit is read from (tests: one that stands still, to
  // show that the step budget ends the query anyway); empty: steady_clock.
  std::function<std::chrono::steady_clock::time_point()> clock;
  std::int64_t max_heap_growth_bytes = SandboxCaps::kMaxHeapGrowthBytes;  // tests: lower, to see it stop a query
};

class TraceReader {
 public:
  static Result<std::unique_ptr<TraceReader>> open(const std::string& path);
  ~TraceReader();
  // Runs `sql` with positional parameters; calls on_row for each result row.
  Status query(const std::string& sql, const std::vector<SqlValue>& params,
               const std::function<void(const Row&)>& on_row) const;
  // A running query checks `should_stop` every few thousand SQLite steps and
  // fails with "interrupted" once it returns true (a cancelled tool call).
  void set_interrupt(std::function<bool()> should_stop);
  // True while the connection reads the file as finished (immutable=1, see above).
  bool immutable() const;
  // The file's PRAGMA user_version (store/store.h kSchemaVersion says what each adds).
  int schema_version() const { return schema_version_; }
  // Whether the file has index `name` (store/indexes.sql): a session's end builds them, so a trace still
  // recording, or one whose recorder died, has none, and a query that counts on one must scan once instead.
  Result<bool> has_index(const std::string& name) const;

  // Runs one statement written by an agent, on its own connection to the same
  // file that can neither change nor load anything: opened read-only, with
  // query_only, SQLITE_DBCONFIG_DEFENSIVE, no ATTACH, untrusted schema, and an
  // authorizer that admits only reads, SELECT, a list of pure functions and
  // schema-describing PRAGMAs (everything else, and any unknown function, is
  // denied). on_columns gets the column names once; on_row returns false to
  // stop. Fails with a message that says what was refused and what to change:
  // a second statement, a write, a denied function or PRAGMA, the time limit,
  // or one of the SandboxCaps (a value too big, a function call over its work
  // cap, the step budget, the heap growth).
  Status query_sandboxed(const std::string& sql, const SandboxLimits& limits,
                         const std::function<void(const std::vector<std::string>&)>& on_columns,
                         const std::function<bool(const Row&)>& on_row) const;

 private:
  TraceReader() = default;
  Status connect() const;         // (re)opens db_
  Status ensure_current() const;  // reopens an immutable connection whose file has changed
  // Mutable: a const query may reopen the connection (the file changed under an immutable one).
  mutable sqlite3* db_ = nullptr;
  mutable int* lock_fd_ = nullptr;  // the connection's descriptor for the recorder's flock (owned by db_)
  mutable bool immutable_ = false;
  mutable int schema_version_ = 0;
  // dev, inode, size, mtime (ns) and SQLite's change counter when opened
  mutable std::optional<std::array<std::int64_t, 5>> identity_;
  std::string path_;
  std::function<bool()> should_stop_;
};

}  // namespace vs::store
