// Read-only access to a trace file: one connection, opened read-only so a
// trace being recorded can be read at the same time (WAL) and is never
// modified. Tools query through this, never through the tracer.
#pragma once

#include <sqlite3.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
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
  std::string text(int col) const;

 private:
  sqlite3_stmt* stmt_;
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

 private:
  TraceReader() = default;
  sqlite3* db_ = nullptr;
  std::string path_;
  std::function<bool()> should_stop_;
};

}  // namespace vs::store
