// A session not ended (still recording, or its recorder died): since schema 5 the writer keeps its
// calls' count and end in the session's row (sessions.calls_recorded, last_call_end_ns) at every
// commit, and the tools read those instead of scanning its calls. The numbers must be those of the
// scan: every tool's output is compared with the same trace read as schema 4, which scans.
#include <catch2/catch.hpp>

#include "store/store.h"
#include "tests/tools/tool_check.h"

using json = nlohmann::json;

namespace {

// Every shipped trace's sessions made unended (as a dead recorder leaves them), then the file opened
// by a writer: the upgrade to schema 5 computes the two columns of the sessions not ended.
void unend_and_upgrade(const vs::test::TraceCopy& copy) {
  copy.exec("UPDATE sessions SET end_ts_ns = NULL, calls_recorded = 0, status = 'recording'");
  auto writer = vs::store::TraceWriter::open(copy.file.string());
  INFO((writer.ok() ? std::string() : writer.error().message));
  REQUIRE(writer.ok());
}

}  // namespace

TEST_CASE("a session not ended reads the same from its kept count and end as from a scan of its calls",
          "[tools][unended]") {
  for (const auto& trace : vs::test::recorded_traces()) {
    if (trace.string().find("/corpus/") != std::string::npos) continue;  // the examples are enough (and fast)
    INFO(trace.string());
    vs::test::TraceCopy kept(trace.string());
    unend_and_upgrade(kept);
    vs::test::TraceCopy scanned(kept.file.string());
    scanned.exec("PRAGMA user_version = 4");
    auto a = vs::test::open_trace(kept.file.string());
    auto b = vs::test::open_trace(scanned.file.string());
    REQUIRE(a.reader->schema_version() == vs::store::kSchemaVersion);
    REQUIRE(b.reader->schema_version() == 4);
    // What the upgrade computed is what a scan gives.
    CHECK(a.q("SELECT COUNT(*) FROM sessions WHERE calls_recorded = (SELECT COUNT(*) FROM call_rows c WHERE "
              "c.session_id = sessions.id) AND last_call_end_ns IS (SELECT MAX(ts_ns + dur_ns) FROM call_rows c "
              "WHERE c.session_id = sessions.id)") == a.q("SELECT COUNT(*) FROM sessions"));
    for (const auto& spec : vs::tools::catalog()) {
      const std::string name(spec.name);
      if (name == "run_sql" || name == "compare_sessions") continue;  // no session of its own / needs two
      INFO(name);
      auto x = vs::test::run_tool_checked(*a.reader, name);
      auto y = vs::test::run_tool_checked(*b.reader, name);
      CHECK(x.structured == y.structured);
      CHECK(x.text == y.text);
      if (name == "trace_overview") {
        CHECK(x.structured["coverage"]["status"] == "interrupted");
        CHECK(x.structured["coverage"]["calls_recorded"].get<std::int64_t>() ==
              a.q("SELECT COUNT(*) FROM call_rows WHERE session_id = (SELECT MAX(id) FROM sessions)"));
      }
    }
  }
}
