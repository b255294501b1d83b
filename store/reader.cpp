#include "store/reader.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cctype>
#include <chrono>
#include <deque>
#include <map>
#include <optional>
#include <filesystem>
#include <array>
#include <cstdio>
#include <set>
#include <string_view>

#include "store/store.h"

namespace vs::store {

std::string Row::text(int col) const {
  const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, col));
  return p ? std::string(p, static_cast<std::size_t>(sqlite3_column_bytes(stmt_, col))) : std::string();
}

std::string_view Row::blob(int col) const {
  const auto* p = static_cast<const char*>(sqlite3_column_blob(stmt_, col));
  return p ? std::string_view(p, static_cast<std::size_t>(sqlite3_column_bytes(stmt_, col))) : std::string_view();
}

namespace {

constexpr const char* kRecorderAliveFn = "vramscope_recorder_alive";

// What identifies the file's content for a reader that opened it immutable: if
// any of these changes, the file was written since (a recorder appended a session):
// the inode, its size and mtime, and SQLite's file change counter (header bytes
// 24-27, which a writer without a -wal bumps at each commit), read through `fd`, the
// reader's own descriptor of the file (opening another and closing it would drop
// SQLite's fcntl locks in this process). The inode the reader opened, not whatever
// the path names now: a trace replaced or deleted under a reader is read as it was.
using FileIdentity = std::array<std::int64_t, 5>;

std::optional<FileIdentity> identity_of(int fd) {
  struct stat st;
  if (fd < 0 || ::fstat(fd, &st) != 0) return std::nullopt;
  unsigned char counter[4] = {};
  if (pread(fd, counter, sizeof counter, 24) != static_cast<ssize_t>(sizeof counter)) return std::nullopt;
  return FileIdentity{static_cast<std::int64_t>(st.st_dev), static_cast<std::int64_t>(st.st_ino),
                      static_cast<std::int64_t>(st.st_size),
                      static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec,
                      (std::int64_t{counter[0]} << 24) | (counter[1] << 16) | (counter[2] << 8) | counter[3]};
}

// True while a recorder holds the file's exclusive flock() (TraceWriter::open).
bool recorder_holds(int fd) {
  if (fd < 0) return false;
  const bool held = flock(fd, LOCK_SH | LOCK_NB) != 0 && errno == EWOULDBLOCK;
  if (!held) flock(fd, LOCK_UN);
  return held;
}

// A journal file beside the trace with something in it: pages committed (-wal) or a
// transaction to roll back (-journal) that the file itself does not show yet.
bool journal_pending(const std::string& path) {
  struct stat st;
  for (const char* suffix : {"-wal", "-journal"})
    if (::stat((path + suffix).c_str(), &st) == 0 && st.st_size > 0) return true;
  return false;
}

// A finished trace -- no recorder holds it and no journal holds pages that are not
// in the file (the session's end folded the -wal into it) -- is read as what it
// is, a file that does not change: `immutable=1`. SQLite then takes no locks and
// opens no -wal or -shm, so reading leaves nothing beside the trace and changes
// neither its bytes nor its times. A trace being recorded (or whose recorder died
// before folding its -wal) is read through the WAL as before.
bool finished_trace(const std::string& path, int lock_fd) { return !recorder_holds(lock_fd) && !journal_pending(path); }

// `path` as an SQLite URI filename (absolute, with %, ? and # escaped) that opens it immutable.
std::string immutable_uri(const std::string& path) {
  std::error_code ec;
  std::string abs = std::filesystem::absolute(path, ec).string();
  if (ec) abs = path;
  std::string uri = "file://";
  for (char c : abs) {
    if (c == '%' || c == '?' || c == '#') {
      char buf[4];
      std::snprintf(buf, sizeof buf, "%%%02X", static_cast<unsigned char>(c));
      uri += buf;
    } else {
      uri += c;
    }
  }
  return uri + "?immutable=1";
}

struct Connection {
  sqlite3* db = nullptr;
  int* lock_fd = nullptr;  // owned by the connection (vramscope_recorder_alive's user data)
  bool immutable = false;
  std::optional<FileIdentity> identity;
};

// Opens `path` read-only -- immutable when finished_trace() says it can be -- and
// registers vramscope_recorder_alive() on the connection. The descriptor it checks is the
// connection's until it closes (closing a descriptor of the file earlier would drop
// SQLite's fcntl locks in this process). On failure, c.db may be set: the caller closes it.
Status open_connection(const std::string& path, Connection& c) {
  auto* lock_fd = new int(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  c.identity = identity_of(*lock_fd);
  c.immutable = c.identity && finished_trace(path, *lock_fd);
  const std::string name = c.immutable ? immutable_uri(path) : path;
  int rc = sqlite3_open_v2(name.c_str(), &c.db,
                           SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX | (c.immutable ? SQLITE_OPEN_URI : 0), nullptr);
  auto close_fd = [](void* p) {
    auto* fd = static_cast<int*>(p);
    if (*fd >= 0) close(*fd);
    delete fd;
  };
  if (rc != SQLITE_OK) {
    close_fd(lock_fd);
    return Error{c.db ? sqlite3_errmsg(c.db) : sqlite3_errstr(rc)};
  }
  auto recorder_alive = [](sqlite3_context* ctx, int, sqlite3_value**) {
    sqlite3_result_int(ctx, recorder_holds(*static_cast<int*>(sqlite3_user_data(ctx))) ? 1 : 0);
  };
  // sqlite3_create_function_v2 calls close_fd itself if it fails.
  if (sqlite3_create_function_v2(c.db, kRecorderAliveFn, 0, SQLITE_UTF8 | SQLITE_INNOCUOUS, lock_fd, recorder_alive,
                                 nullptr, nullptr, close_fd) != SQLITE_OK)
    return Error{sqlite3_errmsg(c.db)};
  c.lock_fd = lock_fd;
  return Status::success();
}

// A session stays 'recording' in the file when its recorder dies (kill -9, a crash).
// A live recorder holds an exclusive flock() on the file (TraceWriter::open), so
// `sessions`, as every query of the connection sees it, becomes a TEMP view that says
// 'interrupted' for a session marked 'recording' whose recorder is gone; checked at
// every read, so a reader open during the recording sees the recorder die. A copy of
// the file has no recorder. Both the tools' connection and run_sql's have it, so all
// the tools say the same. The caller sets temp_store first (changing it drops TEMP views).
Status install_sessions_view(sqlite3* db) {
  std::string columns;
  sqlite3_stmt* stmt = nullptr;
  if (sqlite3_prepare_v2(db, "SELECT name FROM pragma_table_info('sessions')", -1, &stmt, nullptr) != SQLITE_OK)
    return Error{sqlite3_errmsg(db)};
  int rc;
  while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
    const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0));
    const std::string name = p ? p : "";
    columns += (columns.empty() ? "" : ", ") +
               (name == "status" ? std::string("CASE WHEN status = 'recording' AND NOT ") + kRecorderAliveFn +
                                       "() THEN 'interrupted' ELSE status END AS status"
                                 : "\"" + name + "\"");
  }
  sqlite3_finalize(stmt);
  if (rc != SQLITE_DONE) return Error{sqlite3_errmsg(db)};
  if (columns.empty()) return Status::success();
  // Added by schema 5: a file written before reads as having it, NULL (as schema.sql documents it).
  if (columns.find("\"last_call_end_ns\"") == std::string::npos) columns += ", NULL AS last_call_end_ns";
  const std::string view = "CREATE TEMP VIEW sessions AS SELECT " + columns + " FROM main.sessions";
  char* msg = nullptr;
  if (sqlite3_exec(db, view.c_str(), nullptr, nullptr, &msg) != SQLITE_OK) {
    std::string m = msg ? msg : sqlite3_errmsg(db);
    sqlite3_free(msg);
    return Error{m};
  }
  return Status::success();
}

}  // namespace

Result<std::unique_ptr<TraceReader>> TraceReader::open(const std::string& path) {
  std::unique_ptr<TraceReader> r(new TraceReader());
  r->path_ = path;
  if (Status s = r->connect(); !s) return Error{s.message()};
  return r;
}

Status TraceReader::connect() const {
  Connection c;
  Status opened = open_connection(path_, c);
  std::unique_ptr<sqlite3, decltype(&sqlite3_close_v2)> conn(c.db, sqlite3_close_v2);
  if (!opened)
    return Error{"cannot open trace " + path_ + " read-only: " + opened.message() +
                 " (is it a vramscope trace file, and readable?)"};
  std::int64_t version = -1;
  sqlite3_stmt* stmt = nullptr;
  if (sqlite3_prepare_v2(c.db, "PRAGMA user_version", -1, &stmt, nullptr) == SQLITE_OK &&
      sqlite3_step(stmt) == SQLITE_ROW)
    version = sqlite3_column_int64(stmt, 0);
  sqlite3_finalize(stmt);
  if (version < 0) return Error{"cannot read " + path_ + " as a vramscope trace: " + sqlite3_errmsg(c.db)};
  if (version == 0) return Error{path_ + " is not a vramscope trace (no schema version)"};
  if (version > kSchemaVersion)
    return Error{path_ + " was written by a newer vramscope (schema " + std::to_string(version) + "); upgrade vramscope"};
  if (sqlite3_exec(c.db, "PRAGMA temp_store = MEMORY", nullptr, nullptr, nullptr) != SQLITE_OK)
    return Error{"cannot read " + path_ + ": " + sqlite3_errmsg(c.db)};
  if (Status s = install_sessions_view(c.db); !s)
    return Error{"cannot read " + path_ + " as a vramscope trace: " + s.message()};
  // The new connection replaces the old (sqlite3_close_v2: a statement still running
  // on the old one, in a caller up the stack, finishes first).
  if (db_) sqlite3_close_v2(db_);
  db_ = conn.release();
  lock_fd_ = c.lock_fd;
  immutable_ = c.immutable;
  identity_ = c.identity;
  schema_version_ = static_cast<int>(version);
  if (should_stop_)
    sqlite3_progress_handler(
        db_, 10000, [](void* self) { return static_cast<const TraceReader*>(self)->should_stop_() ? 1 : 0; },
        const_cast<TraceReader*>(this));
  return Status::success();
}

Status TraceReader::ensure_current() const {
  if (!immutable_) return Status::success();
  // Opened immutable, this connection would neither see a session appended since nor
  // cope with pages rewritten under it: a recorder at work, or a file changed since,
  // and it opens afresh (through the WAL while a recorder writes).
  const int fd = lock_fd_ ? *lock_fd_ : -1;
  const auto now = identity_of(fd);
  if (now && identity_ && *now == *identity_ && finished_trace(path_, fd)) return Status::success();
  return connect();
}

TraceReader::~TraceReader() {
  if (db_) sqlite3_close_v2(db_);
}

bool TraceReader::immutable() const { return immutable_; }

Result<bool> TraceReader::has_index(const std::string& name) const {
  bool found = false;
  Status st = query("SELECT 1 FROM sqlite_schema WHERE type = 'index' AND name = ?", {name},
                    [&](const Row&) { found = true; });
  if (!st) return Error{st.message()};
  return found;
}

void TraceReader::set_interrupt(std::function<bool()> should_stop) {
  should_stop_ = std::move(should_stop);
  if (!should_stop_) {
    sqlite3_progress_handler(db_, 0, nullptr, nullptr);
    return;
  }
  sqlite3_progress_handler(
      db_, 10000, [](void* self) { return static_cast<TraceReader*>(self)->should_stop_() ? 1 : 0; }, this);
}

Status TraceReader::query(const std::string& sql, const std::vector<SqlValue>& params,
                          const std::function<void(const Row&)>& on_row) const {
  if (Status current = ensure_current(); !current) return current;
  sqlite3_stmt* stmt = nullptr;
  if (sqlite3_prepare_v2(db_, sql.c_str(), static_cast<int>(sql.size()), &stmt, nullptr) != SQLITE_OK)
    return Error{std::string("SQL error: ") + sqlite3_errmsg(db_)};
  std::unique_ptr<sqlite3_stmt, decltype(&sqlite3_finalize)> guard(stmt, sqlite3_finalize);
  for (std::size_t i = 0; i < params.size(); ++i) {
    int idx = static_cast<int>(i + 1);
    const auto& v = params[i];
    if (std::holds_alternative<std::int64_t>(v)) sqlite3_bind_int64(stmt, idx, std::get<std::int64_t>(v));
    else if (std::holds_alternative<double>(v)) sqlite3_bind_double(stmt, idx, std::get<double>(v));
    else if (std::holds_alternative<std::string>(v))
      sqlite3_bind_text(stmt, idx, std::get<std::string>(v).c_str(), -1, SQLITE_TRANSIENT);
    else sqlite3_bind_null(stmt, idx);
  }
  Row row(stmt);
  int rc;
  while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) on_row(row);
  if (rc == SQLITE_INTERRUPT) return Error{"interrupted"};
  if (rc != SQLITE_DONE) return Error{std::string("SQL error: ") + sqlite3_errmsg(db_)};
  return Status::success();
}

namespace {

// Functions an agent's SQL may call: SQLite's built-in scalar, aggregate,
// window, date, math and JSON functions that only compute. Anything else —
// load_extension, readfile/writefile/edit (CLI), fts3_tokenizer, and whatever
// a future build adds — is denied by default.
const std::set<std::string, std::less<>>& allowed_functions() {
  static const std::set<std::string, std::less<>> names = {
      "abs", "avg", "char", "coalesce", "count", "date", "datetime", "format", "glob", "group_concat", "hex",
      "ifnull", "iif", "instr", "julianday", "length", "like", "likelihood", "likely", "lower", "ltrim", "max",
      "min", "nullif", "printf", "quote", "random", "replace", "round", "rtrim", "sign", "strftime", "substr",
      "substring", "sum", "time", "total", "trim", "typeof", "unicode", "unixepoch", "unlikely", "upper",
      // window functions
      "row_number", "rank", "dense_rank", "percent_rank", "cume_dist", "ntile", "lag", "lead", "first_value",
      "last_value", "nth_value",
      // math
      "acos", "acosh", "asin", "asinh", "atan", "atan2", "atanh", "ceil", "ceiling", "cos", "cosh", "degrees", "exp",
      "floor", "ln", "log", "log10", "log2", "mod", "pi", "pow", "power", "radians", "sin", "sinh", "sqrt", "tan",
      "tanh", "trunc",
      // JSON
      "json", "json_array", "json_array_length", "json_extract", "json_insert", "json_object", "json_patch",
      "json_quote", "json_remove", "json_replace", "json_set", "json_type", "json_valid", "json_group_array",
      "json_group_object", "json_each", "json_tree"};
  return names;
}

// PRAGMAs that only describe the schema (their argument names a table or index).
const std::set<std::string, std::less<>>& allowed_pragmas() {
  static const std::set<std::string, std::less<>> names = {"table_info",  "table_xinfo",  "table_list",
                                                          "index_list",  "index_info",   "index_xinfo",
                                                          "foreign_key_list"};
  return names;
}

std::string lower(const char* s) {
  std::string out = s ? s : "";
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

std::string joined(const std::set<std::string, std::less<>>& names) {
  std::string s;
  for (const auto& n : names) s += (s.empty() ? "" : ", ") + n;
  return s;
}

constexpr const char* kOnlySelect =
    "only a SELECT (or WITH ... SELECT) is allowed: the trace is read-only and its schema cannot change";

using Caps = SandboxCaps;
using Clock = std::chrono::steady_clock;

constexpr int kProgressEvery = 100;  // SQLite steps between two checks of the clock, the budget and cancellation
constexpr unsigned kJsonSubtype = 74;  // 'J': how SQLite's JSON functions mark the JSON text they return
// A call of a capped function counts this many steps, plus its estimated work / kWorkPerStep.
constexpr std::int64_t kStepsPerCall = 64;
constexpr std::int64_t kWorkPerStep = 16;

enum class Stop { none, cancelled, time, steps, heap };

struct Sandbox;
// What each overriding function is registered with: its sandbox and the built-in it stands for.
struct Capped {
  Sandbox* sb;
  const char* name;
};

struct Sandbox {
  std::string refused;  // why the authorizer denied something (first reason)
  int first_action = -1;  // of the statement being prepared
  const SandboxLimits* limits = nullptr;
  Clock::time_point deadline;
  std::int64_t steps = 0, max_steps = 0;
  sqlite3_int64 heap_at_start = 0;
  Stop stop = Stop::none;
  std::string call_refused;  // a capped function's refusal (first)
  // The capped built-ins are evaluated, once checked, on a second connection
  // (in memory, same length limit) where they are not overridden.
  sqlite3* helper = nullptr;
  std::map<std::string, sqlite3_stmt*, std::less<>> helper_stmts;
  std::deque<Capped> registered;  // user data of the overriding functions (stable addresses)
  bool like_skips_blobs = false;
  int like_pattern_limit = 0;

  Sandbox() = default;
  Sandbox(const Sandbox&) = delete;
  Sandbox& operator=(const Sandbox&) = delete;
  ~Sandbox() {
    for (auto& [sql, stmt] : helper_stmts) sqlite3_finalize(stmt);
    if (helper) sqlite3_close_v2(helper);
  }

  int deny(std::string why) {
    if (refused.empty()) refused = std::move(why);
    return SQLITE_DENY;
  }
  Clock::time_point now() const { return limits->clock ? limits->clock() : Clock::now(); }
  // True once the query has to end (and why, in `stop`).
  bool must_stop() {
    if (stop != Stop::none) return true;
    if (limits->should_stop && limits->should_stop()) stop = Stop::cancelled;
    else if (steps > max_steps) stop = Stop::steps;
    else if (now() > deadline) stop = Stop::time;
    else if (sqlite3_memory_used() - heap_at_start > limits->max_heap_growth_bytes) stop = Stop::heap;
    return stop != Stop::none;
  }
};

int authorize(void* ctx, int action, const char* arg3, const char* arg4, const char*, const char*) {
  auto* sb = static_cast<Sandbox*>(ctx);
  if (sb->first_action < 0) sb->first_action = action;
  switch (action) {
    case SQLITE_SELECT:
    case SQLITE_READ:
    case SQLITE_RECURSIVE:
      return SQLITE_OK;
    case SQLITE_FUNCTION: {
      std::string name = lower(arg4);
      if (allowed_functions().count(name)) return SQLITE_OK;
      if (name == kRecorderAliveFn) return SQLITE_OK;  // the sessions view's (it only tests a lock)
      std::string why = name == "zeroblob" || name == "randomblob"
                            ? " (it builds a value of any size; run_sql's values are at most " +
                                  std::to_string(Caps::kMaxValueBytes) + " bytes)"
                            : "";
      return sb->deny("function " + std::string(arg4 ? arg4 : "?") + "() is not allowed here" + why +
                      "; allowed functions: " + joined(allowed_functions()));
    }
    case SQLITE_PRAGMA:
      if (allowed_pragmas().count(lower(arg3))) return SQLITE_OK;
      return sb->deny("PRAGMA " + std::string(arg3 ? arg3 : "?") +
                      " is not allowed; only these schema PRAGMAs are: " + joined(allowed_pragmas()));
    case SQLITE_ATTACH:
    case SQLITE_DETACH:
      return sb->deny("ATTACH/DETACH is not allowed: query only this trace");
    case SQLITE_UPDATE: {
      // A SELECT that reads an eponymous virtual table (pragma_table_info,
      // json_each) is checked as if it updated the schema table while SQLite
      // sets that table up; nothing is written. A real UPDATE starts with itself.
      std::string_view table = arg3 ? arg3 : "";
      if (sb->first_action == SQLITE_SELECT && (table == "sqlite_master" || table == "sqlite_temp_master"))
        return SQLITE_OK;
      return sb->deny(kOnlySelect);
    }
    case SQLITE_TRANSACTION:
    case SQLITE_SAVEPOINT:
      return sb->deny("transactions are not allowed: send one SELECT");
    default:
      return sb->deny(kOnlySelect);
  }
}

// ---- The capped functions ----------------------------------------------------------------------------------------
// SQLite's progress handler runs between steps of its virtual machine, never
// inside one function call, and some built-ins do work that grows faster than
// the value they return: printf's %c repeats its character once per unit of
// precision even after the result is too long, and instr, replace, LIKE/GLOB,
// trim with a character set and json_patch compare every part of one argument
// with every part of the other. On the sandbox connection these names are
// overridden by checks that refuse a call whose estimated work is over
// kMaxCallWork (or printf's widths over kMaxPrintfWidth), count the work into
// the step budget and look at the clock, then let SQLite's own function compute
// the value (LIKE and GLOB through sqlite3_strlike/strglob, the rest on a
// helper connection), so results are SQLite's. json_group_array/_object, which
// SQLite accumulates without a bound until the end, keep their elements here,
// at most kMaxValueBytes in all.

Sandbox* sandbox_of(sqlite3_context* ctx) { return static_cast<Capped*>(sqlite3_user_data(ctx))->sb; }
const char* name_of(sqlite3_context* ctx) { return static_cast<Capped*>(sqlite3_user_data(ctx))->name; }

// The size a function's cost depends on: bytes of text or blob; a number or NULL is small.
std::int64_t size_of(sqlite3_value* v) {
  int t = sqlite3_value_type(v);
  return t == SQLITE_TEXT || t == SQLITE_BLOB ? sqlite3_value_bytes(v) : 32;
}

// False (and the statement fails) when the query has to end now.
bool go_on(sqlite3_context* ctx) {
  if (!sandbox_of(ctx)->must_stop()) return true;
  sqlite3_result_error(ctx, "run_sql: the query was stopped", -1);
  return false;
}

void refuse_call(sqlite3_context* ctx, const std::string& why) {
  auto* sb = sandbox_of(ctx);
  if (sb->call_refused.empty()) sb->call_refused = why;
  sqlite3_result_error(ctx, why.c_str(), -1);
}

std::string with_commas(std::int64_t v) {
  std::string digits = std::to_string(v), out;
  for (std::size_t i = 0; i < digits.size(); ++i) {
    if (i && (digits.size() - i) % 3 == 0 && digits[i - 1] != '-') out += ',';
    out += digits[i];
  }
  return out;
}

// Admits a call estimated at `work` (~ns): counts it into the step budget and
// checks the budget and the clock. Refuses it (false) when it is over
// kMaxCallWork; what() says what made it so much, `fix` what to change.
template <typename What>
bool admit(sqlite3_context* ctx, const char* fn, std::int64_t work, const What& what, const char* fix) {
  if (work > Caps::kMaxCallWork) {
    refuse_call(ctx, std::string(fn) + "(): " + what() + " is more work than run_sql allows in one call (~" +
                         with_commas(work) + " units, at most " + with_commas(Caps::kMaxCallWork) +
                         "; SQLite cannot stop a call half way): " + fix);
    return false;
  }
  sandbox_of(ctx)->steps += kStepsPerCall + work / kWorkPerStep;
  return go_on(ctx);
}

sqlite3_stmt* helper_stmt(Sandbox* sb, const std::string& sql) {
  if (auto it = sb->helper_stmts.find(sql); it != sb->helper_stmts.end()) return it->second;
  if (!sb->helper) {
    if (sqlite3_open_v2(":memory:", &sb->helper, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                        nullptr) != SQLITE_OK) {
      sqlite3_close_v2(sb->helper);
      sb->helper = nullptr;
      return nullptr;
    }
    sqlite3_db_config(sb->helper, SQLITE_DBCONFIG_DEFENSIVE, 1, nullptr);
    sqlite3_limit(sb->helper, SQLITE_LIMIT_LENGTH, Caps::kMaxValueBytes);
    sqlite3_limit(sb->helper, SQLITE_LIMIT_LIKE_PATTERN_LENGTH, sb->like_pattern_limit);
  }
  sqlite3_stmt* stmt = nullptr;
  if (sqlite3_prepare_v2(sb->helper, sql.c_str(), static_cast<int>(sql.size()), &stmt, nullptr) != SQLITE_OK)
    return nullptr;
  sb->helper_stmts.emplace(sql, stmt);
  return stmt;
}

// Evaluates `sql` (one value from ?1..?argc) on the helper with these
// arguments and hands the value to on_value; else sets the call's error
// (SQLite's own) and returns false.
bool evaluate(sqlite3_context* ctx, const std::string& sql, int argc, sqlite3_value** argv,
              const std::function<void(sqlite3_value*)>& on_value) {
  auto* sb = sandbox_of(ctx);
  sqlite3_stmt* stmt = helper_stmt(sb, sql);
  if (!stmt) {
    std::string why = "run_sql cannot evaluate " + sql;
    if (sb->helper) why += std::string(": ") + sqlite3_errmsg(sb->helper);
    sqlite3_result_error(ctx, why.c_str(), -1);
    return false;
  }
  for (int i = 0; i < argc; ++i) sqlite3_bind_value(stmt, i + 1, argv[i]);
  int rc = sqlite3_step(stmt);
  bool ok = rc == SQLITE_ROW;
  if (ok) on_value(sqlite3_column_value(stmt, 0));
  else if (rc == SQLITE_TOOBIG) sqlite3_result_error_toobig(ctx);
  else if (rc == SQLITE_NOMEM) sqlite3_result_error_nomem(ctx);
  else sqlite3_result_error(ctx, sqlite3_errmsg(sb->helper), -1);
  sqlite3_reset(stmt);
  sqlite3_clear_bindings(stmt);
  return ok;
}

std::string call_sql(const char* fn, int argc) {
  std::string sql = std::string("SELECT ") + fn + "(";
  for (int i = 1; i <= argc; ++i) sql += (i > 1 ? ",?" : "?") + std::to_string(i);
  return sql + ")";
}

// The call's value is what SQLite's own `fn` gives for these arguments.
void delegate(sqlite3_context* ctx, const char* fn, int argc, sqlite3_value** argv, bool json_result = false) {
  evaluate(ctx, call_sql(fn, argc), argc, argv, [&](sqlite3_value* v) {
    sqlite3_result_value(ctx, v);
    if (json_result && sqlite3_value_type(v) == SQLITE_TEXT) sqlite3_result_subtype(ctx, kJsonSubtype);
  });
}

// printf()/format(): reads the format the way SQLite does --
// %[flags][width][.precision][l|ll]type, a width or precision being digits or
// '*' (the next argument, as a 32-bit int, sign dropped) -- and finds the
// largest width or precision and their sum. A conversion outside that form
// (SQLite would stop at it) is named in `unusual`.
struct FormatScan {
  std::int64_t largest = 0, total = 0;
  std::string unusual;
};

FormatScan scan_format(std::string_view fmt, int argc, sqlite3_value** argv) {
  FormatScan out;
  int next = 1;  // argv[0] is the format
  auto magnitude = [](std::int64_t v) { return v == INT64_MIN ? INT64_MAX : v < 0 ? -v : v; };
  auto star = [&] {
    if (next >= argc) return std::int64_t{0};
    std::int64_t v = sqlite3_value_int64(argv[next++]);
    auto as_int = static_cast<std::int32_t>(static_cast<std::uint32_t>(static_cast<std::uint64_t>(v)));
    return std::max(magnitude(v), magnitude(as_int));
  };
  auto digits = [&](std::size_t& i) {
    std::int64_t v = 0;
    for (; i < fmt.size() && fmt[i] >= '0' && fmt[i] <= '9'; ++i)
      v = std::min<std::int64_t>(v * 10 + (fmt[i] - '0'), INT64_C(1) << 40);
    return v;
  };
  auto note = [&](std::int64_t v) {
    out.largest = std::max(out.largest, v);
    out.total = std::min(out.total + v, INT64_C(1) << 50);
  };
  for (std::size_t i = 0; i < fmt.size(); ++i) {
    if (fmt[i] != '%') continue;
    std::size_t start = i++;
    while (i < fmt.size() && std::string_view("-+ #!0,").find(fmt[i]) != std::string_view::npos) ++i;
    if (i < fmt.size() && fmt[i] == '*') note(star()), ++i;
    else note(digits(i));
    if (i < fmt.size() && fmt[i] == '.') {
      ++i;
      if (i < fmt.size() && fmt[i] == '*') note(star()), ++i;
      else note(digits(i));
    }
    if (i < fmt.size() && fmt[i] == 'l') ++i;
    if (i < fmt.size() && fmt[i] == 'l') ++i;
    if (i >= fmt.size()) break;  // a '%' cut off by the end is printed as it is
    char type = fmt[i];
    if (std::string_view("diuxXocszqQwfeEgGpr").find(type) != std::string_view::npos) ++next;
    else if (type != '%' && type != 'n') {
      out.unusual = std::string(fmt.substr(start, i - start + 1));
      break;
    }
  }
  return out;
}

void printf_fn(sqlite3_context* ctx, int argc, sqlite3_value** argv) {
  const char* fn = name_of(ctx);
  const char* fmt = argc >= 1 ? reinterpret_cast<const char*>(sqlite3_value_text(argv[0])) : nullptr;
  if (fmt) {
    FormatScan scan = scan_format(fmt, argc, argv);
    if (!scan.unusual.empty()) {
      refuse_call(ctx, std::string(fn) + "(): the conversion \"" + scan.unusual +
                           "\" is not one run_sql accepts: write %[flags][width][.precision]type, type one of d i u x "
                           "X o c s z q Q w f e E g G p r % (%% for a percent sign)");
      return;
    }
    if (scan.largest > Caps::kMaxPrintfWidth) {
      refuse_call(ctx, std::string(fn) + "(): a width or precision of " + with_commas(scan.largest) +
                           " is over run_sql's limit of " + with_commas(Caps::kMaxPrintfWidth) +
                           " (any one value is at most " + with_commas(Caps::kMaxValueBytes) +
                           " bytes): use a smaller width or precision");
      return;
    }
    if (!admit(
            ctx, fn, 4 * scan.total, [&] { return "widths and precisions adding up to " + with_commas(scan.total); },
            "use smaller widths and precisions"))
      return;
  } else if (!go_on(ctx)) {
    return;
  }
  delegate(ctx, fn, argc, argv);
}

// instr(X, Y) and replace(X, Y, Z) compare Y at every position of X (memcmp: ~1/64 ns a byte pair).
void instr_fn(sqlite3_context* ctx, int argc, sqlite3_value** argv) {
  std::int64_t n = size_of(argv[0]), m = size_of(argv[1]);
  if (!admit(ctx, "instr", n + n * m / 64,
             [&] { return "looking for " + with_commas(m) + " bytes in " + with_commas(n) + " bytes"; },
             "search for a shorter string, or in a shorter one (substr())"))
    return;
  delegate(ctx, "instr", argc, argv);
}

void replace_fn(sqlite3_context* ctx, int argc, sqlite3_value** argv) {
  std::int64_t n = size_of(argv[0]), m = size_of(argv[1]);
  if (!admit(ctx, "replace", n + n * m / 64,
             [&] { return "replacing a " + with_commas(m) + "-byte string in " + with_commas(n) + " bytes"; },
             "replace a shorter string, or in a shorter one (substr())"))
    return;
  delegate(ctx, "replace", argc, argv);
}

// trim(X, Y), ltrim, rtrim: every character of X against every one of Y (~2 ns each).
void trim_fn(sqlite3_context* ctx, int argc, sqlite3_value** argv) {
  const char* fn = name_of(ctx);
  std::int64_t n = size_of(argv[0]), m = size_of(argv[1]);
  if (!admit(ctx, fn, n + 2 * n * m,
             [&] {
               return "trimming a set of " + with_commas(m) + " bytes of characters from " + with_commas(n) + " bytes";
             },
             "trim fewer distinct characters, or a shorter string (substr())"))
    return;
  delegate(ctx, fn, argc, argv);
}

// LIKE and GLOB: like(P, X[, E]) is X LIKE P; the match can compare every
// byte of the pattern with every byte of X (~1 ns each).
void like_fn(sqlite3_context* ctx, int argc, sqlite3_value** argv) {
  auto* sb = sandbox_of(ctx);
  const char* fn = name_of(ctx);
  bool glob = std::string_view(fn) == "glob";
  std::int64_t n = size_of(argv[1]), m = size_of(argv[0]);
  if (!admit(ctx, glob ? "GLOB" : "LIKE", n + n * m,
             [&] { return "matching a " + with_commas(m) + "-byte pattern against " + with_commas(n) + " bytes"; },
             "use a shorter pattern (fewer wildcards), or match a shorter string (substr())"))
    return;
  // The rest is SQLite's likeFunc: blobs never match (where built so), the
  // pattern length limit, then the match itself.
  if (argc == 3 || !sb->like_skips_blobs) return delegate(ctx, fn, argc, argv);
  if (sqlite3_value_type(argv[0]) == SQLITE_BLOB || sqlite3_value_type(argv[1]) == SQLITE_BLOB)
    return sqlite3_result_int(ctx, 0);
  const auto* pattern = reinterpret_cast<const char*>(sqlite3_value_text(argv[0]));
  const auto* text = reinterpret_cast<const char*>(sqlite3_value_text(argv[1]));
  if (sqlite3_value_bytes(argv[0]) > sb->like_pattern_limit)
    return sqlite3_result_error(ctx, "LIKE or GLOB pattern too complex", -1);
  if (!pattern || !text) return;  // NULL
  sqlite3_result_int(ctx, (glob ? sqlite3_strglob(pattern, text) : sqlite3_strlike(pattern, text, 0)) == 0);
}

// json_patch(T, P): every member of P is looked up among T's (~1/8 ns a byte pair).
void json_patch_fn(sqlite3_context* ctx, int argc, sqlite3_value** argv) {
  std::int64_t n = size_of(argv[0]), m = size_of(argv[1]);
  if (!admit(ctx, "json_patch", n + m + n * m / 8,
             [&] { return "patching " + with_commas(n) + " bytes of JSON with " + with_commas(m) + " bytes"; },
             "patch smaller objects"))
    return;
  delegate(ctx, "json_patch", argc, argv, true);
}

// json_group_array(X) / json_group_object(N, X): the elements, at most
// kMaxValueBytes in all (SQLite's own would grow until the query ends and
// only then find the result too long).
struct JsonGroup {
  std::deque<std::string> items;
  std::int64_t bytes = 0;
};

JsonGroup** group_slot(sqlite3_context* ctx, bool create) {
  return static_cast<JsonGroup**>(sqlite3_aggregate_context(ctx, create ? sizeof(JsonGroup*) : 0));
}

// X as SQLite's JSON functions write it: JSON text from another JSON function
// as it is, anything else through json_quote().
bool json_item(sqlite3_context* ctx, sqlite3_value* v, const char* sql, std::string& out) {
  if (sqlite3_value_type(v) == SQLITE_TEXT && sqlite3_value_subtype(v) == kJsonSubtype) {
    out.append(reinterpret_cast<const char*>(sqlite3_value_text(v)), static_cast<std::size_t>(sqlite3_value_bytes(v)));
    return true;
  }
  return evaluate(ctx, sql, 1, &v, [&](sqlite3_value* q) {
    if (const auto* t = sqlite3_value_text(q))
      out.append(reinterpret_cast<const char*>(t), static_cast<std::size_t>(sqlite3_value_bytes(q)));
  });
}

void json_group_step(sqlite3_context* ctx, int argc, sqlite3_value** argv) {
  if (!go_on(ctx)) return;
  std::string item;
  if (argc == 2) {  // an object's member: the name as text, quoted (SQLite writes nothing for a NULL name)
    if (sqlite3_value_type(argv[0]) != SQLITE_NULL &&
        !evaluate(ctx, "SELECT json_quote(CAST(?1 AS TEXT))", 1, argv, [&](sqlite3_value* q) {
          if (const auto* t = sqlite3_value_text(q))
            item.append(reinterpret_cast<const char*>(t), static_cast<std::size_t>(sqlite3_value_bytes(q)));
        }))
      return;
    item += ':';
  }
  if (!json_item(ctx, argv[argc - 1], "SELECT json_quote(?1)", item)) return;
  JsonGroup** slot = group_slot(ctx, true);
  if (!slot) return sqlite3_result_error_nomem(ctx);
  if (!*slot) *slot = new JsonGroup;
  JsonGroup& g = **slot;
  // The result: brackets, the items and a comma between two.
  if (2 + g.bytes + static_cast<std::int64_t>(g.items.size() + item.size()) > Caps::kMaxValueBytes)
    return sqlite3_result_error_toobig(ctx);
  g.bytes += static_cast<std::int64_t>(item.size());
  g.items.push_back(std::move(item));
}

void json_group_inverse(sqlite3_context* ctx, int, sqlite3_value**) {
  JsonGroup** slot = group_slot(ctx, false);
  if (!slot || !*slot || (*slot)->items.empty()) return;
  (*slot)->bytes -= static_cast<std::int64_t>((*slot)->items.front().size());
  (*slot)->items.pop_front();
}

void json_group_result(sqlite3_context* ctx, bool final) {
  bool object = std::string_view(name_of(ctx)) == "json_group_object";
  JsonGroup** slot = group_slot(ctx, false);
  JsonGroup* g = slot ? *slot : nullptr;
  std::string out(1, object ? '{' : '[');
  if (g) {
    out.reserve(static_cast<std::size_t>(g->bytes) + g->items.size() + 2);
    for (std::size_t i = 0; i < g->items.size(); ++i) (out += i ? "," : "") += g->items[i];
  }
  out += object ? '}' : ']';
  sqlite3_result_text64(ctx, out.data(), out.size(), SQLITE_TRANSIENT, SQLITE_UTF8);
  sqlite3_result_subtype(ctx, kJsonSubtype);
  if (final && g) {
    delete g;
    *slot = nullptr;
  }
}

void json_group_value(sqlite3_context* ctx) { json_group_result(ctx, false); }
void json_group_final(sqlite3_context* ctx) { json_group_result(ctx, true); }

#ifndef SQLITE_SUBTYPE
#define SQLITE_SUBTYPE 0
#endif
#ifndef SQLITE_RESULT_SUBTYPE
#define SQLITE_RESULT_SUBTYPE 0
#endif

// Puts the capped functions in place of SQLite's on the sandbox connection.
bool register_capped(sqlite3* db, Sandbox& sb) {
  using Fn = void (*)(sqlite3_context*, int, sqlite3_value**);
  constexpr int kFlags = SQLITE_UTF8 | SQLITE_DETERMINISTIC | SQLITE_INNOCUOUS;
  struct Scalar {
    const char* name;
    int args;
    Fn fn;
    int extra_flags;
  };
  const Scalar scalars[] = {
      {"printf", -1, printf_fn, 0},  {"format", -1, printf_fn, 0}, {"instr", 2, instr_fn, 0},
      {"replace", 3, replace_fn, 0}, {"trim", 2, trim_fn, 0},      {"ltrim", 2, trim_fn, 0},
      {"rtrim", 2, trim_fn, 0},      {"like", 2, like_fn, 0},      {"like", 3, like_fn, 0},
      {"glob", 2, like_fn, 0},       {"json_patch", 2, json_patch_fn, SQLITE_RESULT_SUBTYPE},
  };
  for (const auto& f : scalars) {
    void* data = &sb.registered.emplace_back(Capped{&sb, f.name});
    if (sqlite3_create_function_v2(db, f.name, f.args, kFlags | f.extra_flags, data, f.fn, nullptr, nullptr,
                                   nullptr) != SQLITE_OK)
      return false;
  }
  for (const char* name : {"json_group_array", "json_group_object"}) {
    void* data = &sb.registered.emplace_back(Capped{&sb, name});
    int args = std::string_view(name) == "json_group_array" ? 1 : 2;
    if (sqlite3_create_window_function(db, name, args, kFlags | SQLITE_SUBTYPE | SQLITE_RESULT_SUBTYPE, data,
                                       json_group_step, json_group_final, json_group_value, json_group_inverse,
                                       nullptr) != SQLITE_OK)
      return false;
  }
  return true;
}

std::string stop_message(const Sandbox& sb, const SandboxLimits& limits) {
  const std::string narrow =
      "narrow the query (filter on session_id, api_id and ts_ns or pid and ts_ns, which are indexed; aggregate; "
      "add LIMIT)";
  switch (sb.stop) {
    case Stop::cancelled:
      return "cancelled";
    case Stop::time:
      return "time limit of " + std::to_string(limits.time_limit_ms) + " ms reached: " + narrow +
             " or raise time_limit_ms";
    case Stop::steps:
      return "step budget reached: the query ran " + with_commas(sb.steps) + " SQLite steps, more than run_sql's " +
             with_commas(sb.max_steps) + " for time_limit_ms " + std::to_string(limits.time_limit_ms) + " (" +
             with_commas(Caps::kStepsPerMs) + " a millisecond, counted even if the clock does not advance): " +
             narrow + " or raise time_limit_ms";
    case Stop::heap:
      return "memory bound reached: SQLite's heap grew by more than " + with_commas(limits.max_heap_growth_bytes) +
             " bytes while the query ran (run_sql's bound; the count is the whole server's): select fewer and shorter "
             "values, or aggregate (COUNT, SUM, MAX) instead of keeping them";
    case Stop::none:
      break;
  }
  return {};
}

}  // namespace

Status TraceReader::query_sandboxed(const std::string& sql, const SandboxLimits& limits,
                                    const std::function<void(const std::vector<std::string>&)>& on_columns,
                                    const std::function<bool(const Row&)>& on_row) const {
  Sandbox sb;  // outlives the connection: the capped functions point at it
  sb.limits = &limits;
  // Its own connection, opened as the tools' is (immutable when the trace is finished),
  // with the same sessions view: run_sql says 'interrupted' where the other tools do.
  Connection c;
  Status opened = open_connection(path_, c);
  sqlite3* db = c.db;
  std::unique_ptr<sqlite3, decltype(&sqlite3_close_v2)> conn(db, sqlite3_close_v2);
  if (!opened) return Error{"cannot open the trace for the query: " + opened.message()};
  int rc = SQLITE_OK;
  sqlite3_db_config(db, SQLITE_DBCONFIG_DEFENSIVE, 1, nullptr);
  sqlite3_db_config(db, SQLITE_DBCONFIG_ENABLE_LOAD_EXTENSION, 0, nullptr);
  sqlite3_db_config(db, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, nullptr);
  sqlite3_limit(db, SQLITE_LIMIT_ATTACHED, 0);
  sqlite3_limit(db, SQLITE_LIMIT_WORKER_THREADS, 0);  // sorts stay on this thread, under the progress handler
  sqlite3_limit(db, SQLITE_LIMIT_LENGTH, Caps::kMaxValueBytes);
  sqlite3_limit(db, SQLITE_LIMIT_COLUMN, Caps::kMaxColumns);
  sqlite3_limit(db, SQLITE_LIMIT_VDBE_OP, Caps::kMaxProgramOps);
  sb.like_pattern_limit = sqlite3_limit(db, SQLITE_LIMIT_LIKE_PATTERN_LENGTH, -1);
  sb.like_skips_blobs = sqlite3_compileoption_used("LIKE_DOESNT_MATCH_BLOBS") != 0;
  // The page cache, and the memory each sort keeps before it spills to a
  // temporary file, are cache_size; temporary tables and sorts go to files.
  const std::string setup = "PRAGMA temp_store = FILE; PRAGMA cache_size = -" +
                            std::to_string(Caps::kCacheKiB);
  if (sqlite3_exec(db, setup.c_str(), nullptr, nullptr, nullptr) != SQLITE_OK)
    return Error{std::string("cannot make the query connection read-only: ") + sqlite3_errmsg(db)};
  if (Status v = install_sessions_view(db); !v) return Error{"cannot read the trace's sessions: " + v.message()};
  if (sqlite3_exec(db, "PRAGMA query_only = 1", nullptr, nullptr, nullptr) != SQLITE_OK)
    return Error{std::string("cannot make the query connection read-only: ") + sqlite3_errmsg(db)};
  if (!register_capped(db, sb))
    return Error{std::string("cannot set up the query's function limits: ") + sqlite3_errmsg(db)};

  sb.deadline = sb.now() + std::chrono::milliseconds(limits.time_limit_ms);
  sb.max_steps = std::max<std::int64_t>(limits.time_limit_ms, 1) * Caps::kStepsPerMs;
  sb.heap_at_start = sqlite3_memory_used();
  sqlite3_set_authorizer(db, authorize, &sb);
  sqlite3_progress_handler(
      db, kProgressEvery,
      [](void* ctx) {
        auto* s = static_cast<Sandbox*>(ctx);
        s->steps += kProgressEvery;
        return s->must_stop() ? 1 : 0;
      },
      &sb);

  sqlite3_stmt* stmt = nullptr;
  const char* tail = nullptr;
  rc = sqlite3_prepare_v2(db, sql.c_str(), static_cast<int>(sql.size()), &stmt, &tail);
  std::unique_ptr<sqlite3_stmt, decltype(&sqlite3_finalize)> guard(stmt, sqlite3_finalize);
  if (rc == SQLITE_NOMEM && sb.refused.empty())
    return Error{"refused: the statement compiles to more than " + with_commas(Caps::kMaxProgramOps) +
                 " SQLite instructions, run_sql's limit: split it into smaller queries"};
  if (rc != SQLITE_OK) {
    if (!sb.refused.empty()) return Error{"refused: " + sb.refused};
    std::string msg = std::string("SQL error: ") + sqlite3_errmsg(db);
    if (msg.find("too many columns") != std::string::npos)
      msg += " (run_sql allows " + std::to_string(Caps::kMaxColumns) + ")";
    return Error{msg};
  }
  if (!stmt) return Error{"no SQL statement given: send one SELECT"};
  // What follows the first statement may only be blanks and comments.
  sqlite3_stmt* second = nullptr;
  sb.first_action = -1;
  std::string_view rest(tail, static_cast<std::size_t>(sql.c_str() + sql.size() - tail));
  rc = sqlite3_prepare_v2(db, rest.data(), static_cast<int>(rest.size()), &second, nullptr);
  sqlite3_finalize(second);
  if (rc != SQLITE_OK || second)
    return Error{"refused: only one statement per call; send the statements one at a time"};
  if (!sqlite3_stmt_readonly(stmt)) return Error{std::string("refused: ") + kOnlySelect};

  std::vector<std::string> columns;
  for (int i = 0; i < sqlite3_column_count(stmt); ++i) columns.emplace_back(sqlite3_column_name(stmt, i));
  on_columns(columns);
  Row row(stmt);
  while ((rc = sqlite3_step(stmt)) == SQLITE_ROW)
    if (!on_row(row)) return Status::success();
  if (rc == SQLITE_DONE) return Status::success();
  if (sb.stop != Stop::none) return Error{stop_message(sb, limits)};
  if (!sb.call_refused.empty()) return Error{"refused: " + sb.call_refused};
  if (rc == SQLITE_TOOBIG)
    return Error{"refused: a value would be longer than " + with_commas(Caps::kMaxValueBytes) +
                 " bytes, run_sql's limit for any one string, blob or row: build shorter strings (substr(), fewer "
                 "or narrower columns), or count and aggregate instead of concatenating"};
  return Error{std::string("SQL error: ") + sqlite3_errmsg(db)};
}

}  // namespace vs::store
