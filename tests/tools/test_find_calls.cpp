// find_calls: paging through a selection returns exactly the calls SQL
// selects, in entry-time order, once each; cursors fail loudly when misused.
#include "tests/tools/tool_check.h"

using nlohmann::json;

namespace {

// Every page of a query, following next_cursor; the ids in order.
std::vector<std::int64_t> all_pages(const vs::store::TraceReader& db, json args, int* pages = nullptr) {
  std::vector<std::int64_t> ids;
  for (int page = 0; page < 1000; ++page) {
    auto out = vs::test::run_tool_checked(db, "find_calls", args);
    for (const auto& c : out.structured["calls"]) ids.push_back(c["id"]);
    if (pages) *pages = page + 1;
    if (out.structured["next_cursor"].is_null()) break;
    args["cursor"] = out.structured["next_cursor"];
  }
  return ids;
}

std::vector<std::int64_t> sql_ids(const vs::test::TraceFile& t, const std::string& where,
                                  const std::vector<vs::store::SqlValue>& params = {}) {
  std::vector<std::int64_t> ids;
  auto st = t.reader->query("SELECT id FROM calls WHERE " + where + " ORDER BY ts_ns, id", params,
                            [&](const vs::store::Row& r) { ids.push_back(r.i64(0)); });
  REQUIRE(st.ok());
  return ids;
}

}  // namespace

TEST_CASE("find_calls: pages of one API are exactly SQL's selection", "[tools][find_calls]") {
  auto t = vs::test::open_trace(vs::test::example_trace("empty_cache"));
  int pages = 0;
  auto ids = all_pages(*t.reader, {{"api", "cudaMalloc"}, {"limit", 7}}, &pages);
  CHECK(ids.size() == 58);
  CHECK(pages == 9);  // 8 full pages of 7, then 2
  CHECK(ids == sql_ids(t, "api = 'cudaMalloc'"));
}

TEST_CASE("find_calls: a whole session without filters, merged across APIs", "[tools][find_calls]") {
  auto t = vs::test::open_trace(vs::test::example_trace("contention"));
  auto ids = all_pages(*t.reader, {{"limit", 100}});
  CHECK(ids.size() == 1070);
  CHECK(ids == sql_ids(t, "1"));
}

TEST_CASE("find_calls: a trace without indexes (still recording) pages the same calls", "[tools][find_calls]") {
  // A session's end builds the indexes (store/indexes.sql); before it, one scan serves every API.
  auto indexed = vs::test::open_trace(vs::test::example_trace("contention"));
  REQUIRE(*indexed.reader->has_index("call_rows_api_ts"));
  vs::test::TraceCopy copy(vs::test::example_trace("contention"));
  copy.exec("DROP INDEX IF EXISTS call_rows_api_ts; DROP INDEX IF EXISTS call_rows_pid_ts; DROP INDEX IF EXISTS call_rows_dur; "
            "DROP INDEX IF EXISTS allocations_pid_ts; DROP INDEX IF EXISTS allocations_alloc_call; "
            "DROP INDEX IF EXISTS allocations_free_call");
  auto bare = vs::test::open_trace(copy.file.string());
  REQUIRE_FALSE(*bare.reader->has_index("call_rows_api_ts"));
  const std::int64_t pid = bare.q("SELECT pid FROM call_rows GROUP BY pid ORDER BY COUNT(*) DESC LIMIT 1");
  auto t_ms_of_call = [&](int n) {  // the session time of the n-th call, in whole ms
    return bare.q("SELECT (c.ts_ns - s.start_ts_ns) / 1000000 FROM call_rows c, sessions s ORDER BY c.ts_ns LIMIT 1 "
                  "OFFSET ?", {std::int64_t{n}});
  };
  for (const json& args : {json{{"limit", 100}}, json{{"api", "cudaMalloc"}, {"limit", 7}},
                           json{{"op", "free"}, {"limit", 9}}, json{{"pid", pid}, {"limit", 50}},
                           json{{"from_ms", t_ms_of_call(300)}, {"to_ms", t_ms_of_call(700) + 1}, {"limit", 40}}}) {
    INFO(args.dump());
    const auto ids = all_pages(*bare.reader, args);
    CHECK_FALSE(ids.empty());
    CHECK(ids == all_pages(*indexed.reader, args));
  }
  CHECK(all_pages(*bare.reader, {{"limit", 100}}) == sql_ids(bare, "1"));
}

TEST_CASE("find_calls: filters", "[tools][find_calls]") {
  auto t = vs::test::open_trace(vs::test::example_trace("empty_cache"));
  std::int64_t pid = t.q("SELECT pid FROM call_rows LIMIT 1");
  CHECK(all_pages(*t.reader, {{"pid", pid}, {"min_dur_us", 1000}, {"limit", 100}}) ==
        sql_ids(t, "pid = ? AND dur_ns >= 1000000", {pid}));
  CHECK(all_pages(*t.reader, {{"caller", "cublas"}, {"op", "alloc"}, {"limit", 100}}) ==
        sql_ids(t, "caller LIKE '%cublas%' AND api IN (SELECT name FROM apis WHERE op = 'alloc')"));
  CHECK(all_pages(*t.reader, {{"op", {"alloc", "free"}}, {"layer", "runtime"}, {"max_dur_us", 50}, {"limit", 100}}) ==
        sql_ids(t, "layer = 'runtime' AND api IN (SELECT name FROM apis WHERE op IN ('alloc', 'free')) AND dur_ns <= 50000"));

  // A pointer: its cudaMalloc and its cudaFree (and the driver calls inside them).
  std::string ptr = t.qs("SELECT printf('0x%x', ptr) FROM calls WHERE api = 'cudaFree' LIMIT 1");
  auto by_ptr = vs::test::run_tool_checked(*t.reader, "find_calls", {{"ptr", ptr}, {"api", {"cudaMalloc", "cudaFree"}}});
  CHECK(by_ptr.structured["calls"].size() ==
        static_cast<std::size_t>(t.q("SELECT COUNT(*) FROM calls WHERE printf('0x%x', ptr) = ? AND api IN "
                                     "('cudaMalloc', 'cudaFree')", {ptr})));
  for (const auto& c : by_ptr.structured["calls"]) CHECK(c["ptr"] == ptr);
  CHECK(by_ptr.text.find(ptr) != std::string::npos);

  std::int64_t start = t.q("SELECT start_ts_ns FROM sessions");
  auto window = all_pages(*t.reader, {{"from_ms", 1000.0}, {"to_ms", 2000.0}, {"limit", 100}});
  CHECK(window == sql_ids(t, "ts_ns BETWEEN ? AND ?", {start + 1'000'000'000, start + 2'000'000'000}));
}

TEST_CASE("find_calls: failed calls and an unknown caller", "[tools][find_calls]") {
  auto t = vs::test::open_trace(vs::test::example_trace("expandable"));
  auto failed = vs::test::run_tool_checked(*t.reader, "find_calls", {{"errors_only", true}});
  CHECK(failed.structured["calls"].size() == static_cast<std::size_t>(t.q("SELECT COUNT(*) FROM calls WHERE ret != 0")));
  CHECK(failed.structured["next_cursor"].is_null());
  std::string err = vs::test::run_tool_error(*t.reader, "find_calls", {{"caller", "libtensorflow"}});
  CHECK(err.find("«libc10_cuda.so»") != std::string::npos);
}

TEST_CASE("find_calls: a bad or foreign cursor says to restart", "[tools][find_calls]") {
  auto t = vs::test::open_trace(vs::test::example_trace("empty_cache"));
  auto first = vs::test::run_tool_checked(*t.reader, "find_calls", {{"api", "cudaMalloc"}, {"limit", 5}});
  REQUIRE(first.structured["next_cursor"].is_string());
  json cursor = first.structured["next_cursor"];
  CHECK(first.text.find(cursor.get<std::string>()) != std::string::npos);
  std::string foreign = vs::test::run_tool_error(*t.reader, "find_calls", {{"api", "cudaFree"}, {"cursor", cursor}});
  CHECK(foreign.find("without `cursor`") != std::string::npos);
  std::string garbage = vs::test::run_tool_error(*t.reader, "find_calls", {{"api", "cudaMalloc"}, {"cursor", "abc"}});
  CHECK(garbage.find("without `cursor`") != std::string::npos);
  // The same filter continues; a different page size is still the same query.
  auto second = vs::test::run_tool_checked(*t.reader, "find_calls", {{"api", "cudaMalloc"}, {"limit", 10}, {"cursor", cursor}});
  CHECK(second.structured["calls"][0]["id"] == sql_ids(t, "api = 'cudaMalloc'")[5]);
}
