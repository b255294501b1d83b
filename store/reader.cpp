#include "store/reader.h"

#include "store/store.h"

namespace vs::store {

std::string Row::text(int col) const {
  const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, col));
  return p ? std::string(p, static_cast<std::size_t>(sqlite3_column_bytes(stmt_, col))) : std::string();
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
  if (!s) return Error{s.message()};
  if (version == 0) return Error{path + " is not a vramscope trace (no schema version)"};
  if (version > kSchemaVersion)
    return Error{path + " was written by a newer vramscope (schema " + std::to_string(version) + "); upgrade vramscope"};
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

}  // namespace vs::store
