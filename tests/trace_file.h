// A trace file opened read-only, with one-value queries that fail the test
// on an SQL error: what the integration and example-trace tests assert with.
#pragma once

#include <catch2/catch.hpp>
#include <memory>
#include <string>
#include <vector>

#include "store/reader.h"

namespace vs::test {

struct TraceFile {
  std::unique_ptr<store::TraceReader> reader;

  std::int64_t q(const std::string& sql, const std::vector<store::SqlValue>& params = {}) const {
    std::int64_t v = -1;
    auto s = reader->query(sql, params, [&](const store::Row& r) { v = r.is_null(0) ? -1 : r.i64(0); });
    INFO(sql << ": " << s.message());
    REQUIRE(s.ok());
    return v;
  }
  std::string qs(const std::string& sql, const std::vector<store::SqlValue>& params = {}) const {
    std::string v;
    auto s = reader->query(sql, params, [&](const store::Row& r) { v = r.text(0); });
    INFO(sql << ": " << s.message());
    REQUIRE(s.ok());
    return v;
  }
};

inline TraceFile open_trace(const std::string& db) {
  auto r = store::TraceReader::open(db);
  INFO(db << ": " << (r.ok() ? "" : r.error().message));
  REQUIRE(r.ok());
  return TraceFile{std::move(r.value())};
}

}  // namespace vs::test
