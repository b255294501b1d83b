#include "store/reader.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cctype>
#include <chrono>
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

Result<std::unique_ptr<TraceReader>> TraceReader::open(const std::string& path) {
  std::unique_ptr<TraceReader> r(new TraceReader());
  r->path_ = path;
  int rc = sqlite3_open_v2(path.c_str(), &r->db_, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK)
    return Error{"cannot open trace " + path + " read-only: " + (r->db_ ? sqlite3_errmsg(r->db_) : sqlite3_errstr(rc)) +
                 " (is it a vramscope trace file, and readable?)"};
  std::int64_t version = -1;
  Status s = r->query("PRAGMA user_version", {}, [&](const Row& row) { version = row.i64(0); });
  if (!s) return Error{"cannot read " + path + " as a vramscope trace: " + s.message()};
  if (version == 0) return Error{path + " is not a vramscope trace (no schema version)"};
  if (version > kSchemaVersion)
    return Error{path + " was written by a newer vramscope (schema " + std::to_string(version) + "); upgrade vramscope"};

  // A session stays 'recording' in the file when its recorder dies (kill -9, a crash).
  // A live recorder holds an exclusive flock() on the file (TraceWriter::open), so
  // `sessions`, as every query of this connection sees it, is a view that says
  // 'interrupted' for a session marked 'recording' whose recorder is gone; checked at
  // every read, so a reader open during the recording sees the recorder die. A copy of
  // the file has no recorder. The descriptor is this connection's until it closes (closing
  // a descriptor of the file earlier would drop SQLite's fcntl locks in this process).
  auto* lock_fd = new int(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  auto recorder_alive = [](sqlite3_context* ctx, int, sqlite3_value**) {
    const int fd = *static_cast<int*>(sqlite3_user_data(ctx));
    const bool alive = fd >= 0 && flock(fd, LOCK_SH | LOCK_NB) != 0 && errno == EWOULDBLOCK;
    if (fd >= 0 && !alive) flock(fd, LOCK_UN);
    sqlite3_result_int(ctx, alive ? 1 : 0);
  };
  auto close_fd = [](void* p) {
    auto* fd = static_cast<int*>(p);
    if (*fd >= 0) close(*fd);
    delete fd;
  };
  if (sqlite3_create_function_v2(r->db_, "vramscope_recorder_alive", 0, SQLITE_UTF8 | SQLITE_INNOCUOUS, lock_fd,
                                 recorder_alive, nullptr, nullptr, close_fd) != SQLITE_OK)
    return Error{"cannot read " + path + ": " + sqlite3_errmsg(r->db_)};
  std::string columns;
  s = r->query("SELECT name FROM pragma_table_info('sessions')", {}, [&](const Row& row) {
    const std::string name = row.text(0);
    columns += (columns.empty() ? "" : ", ") +
               (name == "status" ? "CASE WHEN status = 'recording' AND NOT vramscope_recorder_alive() THEN "
                                   "'interrupted' ELSE status END AS status"
                                 : "\"" + name + "\"");
  });
  if (!s) return Error{"cannot read " + path + " as a vramscope trace: " + s.message()};
  const std::string view =
      "PRAGMA temp_store = MEMORY; CREATE TEMP VIEW sessions AS SELECT " + columns + " FROM main.sessions";
  char* msg = nullptr;
  if (!columns.empty() && sqlite3_exec(r->db_, view.c_str(), nullptr, nullptr, &msg) != SQLITE_OK) {
    std::string m = msg ? msg : sqlite3_errmsg(r->db_);
    sqlite3_free(msg);
    return Error{"cannot read " + path + " as a vramscope trace: " + m};
  }
  return r;
}

TraceReader::~TraceReader() {
  if (db_) sqlite3_close_v2(db_);
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

struct Sandbox {
  std::string refused;  // why the authorizer denied something (first reason)
  int first_action = -1;  // of the statement being prepared
  std::chrono::steady_clock::time_point deadline;
  const SandboxLimits* limits = nullptr;
  bool timed_out = false;
  bool cancelled = false;

  int deny(std::string why) {
    if (refused.empty()) refused = std::move(why);
    return SQLITE_DENY;
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
    case SQLITE_FUNCTION:
      if (allowed_functions().count(lower(arg4))) return SQLITE_OK;
      return sb->deny("function " + std::string(arg4 ? arg4 : "?") +
                      "() is not allowed here; allowed functions: " + joined(allowed_functions()));
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

}  // namespace

Status TraceReader::query_sandboxed(const std::string& sql, const SandboxLimits& limits,
                                    const std::function<void(const std::vector<std::string>&)>& on_columns,
                                    const std::function<bool(const Row&)>& on_row) const {
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(path_.c_str(), &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, nullptr);
  std::unique_ptr<sqlite3, decltype(&sqlite3_close_v2)> conn(db, sqlite3_close_v2);
  if (rc != SQLITE_OK) return Error{"cannot open the trace for the query: " + std::string(sqlite3_errstr(rc))};
  sqlite3_db_config(db, SQLITE_DBCONFIG_DEFENSIVE, 1, nullptr);
  sqlite3_db_config(db, SQLITE_DBCONFIG_ENABLE_LOAD_EXTENSION, 0, nullptr);
  sqlite3_db_config(db, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, nullptr);
  sqlite3_limit(db, SQLITE_LIMIT_ATTACHED, 0);
  sqlite3_limit(db, SQLITE_LIMIT_LENGTH, 1000000);  // no giant strings or blobs built in memory
  if (sqlite3_exec(db, "PRAGMA query_only = 1", nullptr, nullptr, nullptr) != SQLITE_OK)
    return Error{std::string("cannot make the query connection read-only: ") + sqlite3_errmsg(db)};

  Sandbox sb;
  sb.limits = &limits;
  sb.deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(limits.time_limit_ms);
  sqlite3_set_authorizer(db, authorize, &sb);
  sqlite3_progress_handler(
      db, 1000,
      [](void* ctx) {
        auto* s = static_cast<Sandbox*>(ctx);
        s->cancelled = s->limits->should_stop && s->limits->should_stop();
        s->timed_out = std::chrono::steady_clock::now() > s->deadline;
        return s->cancelled || s->timed_out ? 1 : 0;
      },
      &sb);

  sqlite3_stmt* stmt = nullptr;
  const char* tail = nullptr;
  rc = sqlite3_prepare_v2(db, sql.c_str(), static_cast<int>(sql.size()), &stmt, &tail);
  std::unique_ptr<sqlite3_stmt, decltype(&sqlite3_finalize)> guard(stmt, sqlite3_finalize);
  if (rc != SQLITE_OK)
    return Error{sb.refused.empty() ? std::string("SQL error: ") + sqlite3_errmsg(db) : "refused: " + sb.refused};
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
  if (rc == SQLITE_INTERRUPT) {
    if (sb.cancelled) return Error{"cancelled"};
    return Error{"time limit of " + std::to_string(limits.time_limit_ms) +
                 " ms reached: narrow the query (filter on session_id, api_id and ts_ns or pid and ts_ns, which "
                 "are indexed; aggregate; add LIMIT) or raise time_limit_ms"};
  }
  if (rc != SQLITE_DONE) return Error{std::string("SQL error: ") + sqlite3_errmsg(db)};
  return Status::success();
}

}  // namespace vs::store
