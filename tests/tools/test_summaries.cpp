// The per-API summaries (store/summaries.h) against the scans they replace:
// every tool that reads them answers exactly as it does from call_rows, on the
// shipped traces (schema 1, upgraded by build_summaries) and on sessions the
// writer summarized when they ended.
#include <stdlib.h>

#include <filesystem>

#include "store/store.h"
#include "store/summaries.h"
#include "tests/tools/tool_check.h"
#include "tests/unit/call_builder.h"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using vs::test::Call;


bool has_summaries(const fs::path& file, std::int64_t session_id) {
  auto t = vs::test::open_trace(file.string());
  auto s = vs::store::read_summaries(*t.reader, session_id, std::nullopt);
  REQUIRE(s.ok());
  return s->has_value();
}

// The tool calls the summaries can answer (whole session, all processes or one, by API or op).
std::vector<std::pair<std::string, json>> summary_cases(std::int64_t pid) {
  return {{"api_latency", {{"limit", 100}}},
          {"api_latency", {{"pid", pid}, {"sort_by", "p99"}}},
          {"api_latency", {{"api", "cudaFree"}}},
          {"offcpu_attribution", {{"limit", 100}}},
          {"offcpu_attribution", {{"pid", pid}, {"op", "free"}}},
          {"trace_overview", json::object()},
          // slowest_calls walks call_rows_dur when the summaries say the selection is a large share.
          {"slowest_calls", {{"pid", pid}}},
          {"slowest_calls", {{"api", "cudaFree"}, {"limit", 5}}}};
}

std::vector<vs::tools::ToolOutput> run_all(const fs::path& file, const std::vector<std::pair<std::string, json>>& cases) {
  auto t = vs::test::open_trace(file.string());
  std::vector<vs::tools::ToolOutput> outs;
  for (const auto& [tool, args] : cases) outs.push_back(vs::test::run_tool_checked(*t.reader, tool, args));
  return outs;
}

void check_same(const std::vector<std::pair<std::string, json>>& cases, const std::vector<vs::tools::ToolOutput>& scanned,
                const std::vector<vs::tools::ToolOutput>& summarized) {
  REQUIRE(scanned.size() == summarized.size());
  for (std::size_t i = 0; i < cases.size(); ++i) {
    INFO(cases[i].first << " " << cases[i].second.dump());
    CHECK(scanned[i].structured == summarized[i].structured);
    CHECK(scanned[i].text == summarized[i].text);
  }
}

}  // namespace

TEST_CASE("summaries: the tools answer the same from call_rows and from the summaries", "[summaries]") {
  for (const char* name : {"contention", "empty_cache"}) {
    INFO(name);
    vs::test::TraceCopy copy(vs::test::example_trace(name));
    std::int64_t pid = vs::test::open_trace(copy.file.string()).q("SELECT pid FROM call_rows LIMIT 1");
    const auto cases = summary_cases(pid);
    REQUIRE_FALSE(has_summaries(copy.file, 1));  // recorded before summaries existed: schema 1
    auto scanned = run_all(copy.file, cases);

    REQUIRE(vs::store::build_summaries(copy.file.string(), 1).ok());
    REQUIRE(has_summaries(copy.file, 1));
    copy.exec("CREATE INDEX call_rows_dur ON call_rows(dur_ns)");  // a schema-1 file lacks it
    auto t = vs::test::open_trace(copy.file.string());
    CHECK(t.q("PRAGMA user_version") == vs::store::kSchemaVersion);
    CHECK(t.q("SELECT calls FROM summaries WHERE session_id = 1") == t.q("SELECT COUNT(*) FROM call_rows"));
    CHECK(t.q("SELECT SUM(calls) FROM call_stats WHERE pid IS NULL") == t.q("SELECT COUNT(*) FROM call_rows"));
    check_same(cases, scanned, run_all(copy.file, cases));

    // Built again, the same rows (a rebuild replaces them).
    std::int64_t rows = t.q("SELECT COUNT(*) FROM call_stats");
    REQUIRE(vs::store::build_summaries(copy.file.string(), 1).ok());
    CHECK(t.q("SELECT COUNT(*) FROM call_stats") == rows);
  }
  // contention's cudaFree: the descheduled call and who took the CPU, stored.
  vs::test::TraceCopy copy(vs::test::example_trace("contention"));
  REQUIRE(vs::store::build_summaries(copy.file.string(), 1).ok());
  auto t = vs::test::open_trace(copy.file.string());
  CHECK(t.qs("SELECT preempted_by_comm FROM call_stats_preemptors p JOIN apis a ON a.id = p.api_id "
             "WHERE a.name = 'cudaFree' AND p.pid IS NULL") == "sh");
}

TEST_CASE("summaries: a writer adds a summarized session to a schema-1 file; compare_sessions agrees", "[summaries]") {
  vs::test::TraceCopy copy(vs::test::example_trace("contention"));
  {
    auto opened = vs::store::TraceWriter::open(copy.file.string());
    REQUIRE(opened.ok());
    auto& w = *opened.value();
    vs::SessionInfo s;
    s.host = "host";
    s.kernel = "6.1";
    s.mode = "launch";
    s.options_json = "{}";
    s.version = "test";
    s.start_ts_ns = 9'000'000'000'000;
    REQUIRE(w.begin_session(s) == 2);
    std::int64_t id = w.next_call_id(), ts = s.start_ts_ns + 1'000'000;
    for (int i = 0; i < 300; ++i, ts += 1'000'000) {
      std::uint64_t ptr = 0x7f0000000000 + static_cast<std::uint64_t>(i) * 4096;
      const std::int64_t malloc_id = id++;
      w.add_call(Call(malloc_id, "cudaMalloc", 100 + i % 3).ptr(ptr).bytes(4096).ts(ts, 20'000 + i * 37 % 1000));
      w.add_call(Call(id++, "cuMemAlloc_v2", 100 + i % 3).parent(malloc_id, "cudaMalloc").ptr(ptr).bytes(4096)
                     .ts(ts + 1'000, 10'000 + i % 7));
      w.add_call(Call(id++, "cudaFree", 100 + i % 3).ptr(ptr).ret(i % 50 == 0 ? 1 : 0).ts(ts + 500'000, 5'000 + i % 11));
    }
    vs::SessionEnd end;
    end.end_ts_ns = ts;
    REQUIRE(w.end_session(end).ok());
  }
  CHECK_FALSE(has_summaries(copy.file, 1));  // the schema-1 session is left as it was
  REQUIRE(has_summaries(copy.file, 2));
  auto t = vs::test::open_trace(copy.file.string());
  CHECK(t.q("PRAGMA user_version") == vs::store::kSchemaVersion);
  CHECK(t.q("SELECT calls FROM summaries WHERE session_id = 2") == 900);
  CHECK(t.q("SELECT COUNT(*) FROM call_stats WHERE session_id = 2 AND pid IS NULL") == 3);
  CHECK(t.q("SELECT COUNT(*) FROM call_stats WHERE session_id = 2 AND pid IS NOT NULL") == 9);
  CHECK(t.q("SELECT nested FROM call_stats c JOIN apis a ON a.id = c.api_id WHERE session_id = 2 AND pid IS NULL "
            "AND a.name = 'cuMemAlloc_v2'") == 300);

  // Session 2 from its summaries, session 1 scanned; then session 2 scanned too; then both summarized.
  std::vector<std::pair<std::string, json>> cases = summary_cases(101);
  cases.push_back({"compare_sessions", {{"limit", 200}}});
  cases.push_back({"compare_sessions", {{"session_a", 2}, {"session_b", 1}}});
  auto mixed = run_all(copy.file, cases);
  copy.exec("DELETE FROM summaries WHERE session_id = 2");
  REQUIRE_FALSE(has_summaries(copy.file, 2));
  auto scanned = run_all(copy.file, cases);
  check_same(cases, scanned, mixed);
  REQUIRE(vs::store::build_summaries(copy.file.string(), 1).ok());
  REQUIRE(vs::store::build_summaries(copy.file.string(), 2).ok());
  check_same(cases, scanned, run_all(copy.file, cases));
}

TEST_CASE("summaries: build_summaries says what is wrong", "[summaries]") {
  vs::test::TraceCopy copy(vs::test::example_trace("contention"));
  auto missing = vs::store::build_summaries(copy.file.string(), 7);
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.message().find("has no session 7") != std::string::npos);
  copy.exec("UPDATE sessions SET status = 'recording'");
  auto recording = vs::store::build_summaries(copy.file.string(), 1);
  REQUIRE_FALSE(recording.ok());
  CHECK(recording.message().find("still recording") != std::string::npos);
  auto absent = vs::store::build_summaries((copy.dir / "none.db").string(), 1);
  REQUIRE_FALSE(absent.ok());
  CHECK(absent.message().find("none.db") != std::string::npos);
}

TEST_CASE("summaries: a window is answered from the call buckets as from the calls", "[summaries]") {
  vs::test::TraceCopy copy(vs::test::example_trace("contention"));
  const std::int64_t start_ns = 9'000'000'000'000;
  {
    auto opened = vs::store::TraceWriter::open(copy.file.string());
    REQUIRE(opened.ok());
    auto& w = *opened.value();
    vs::SessionInfo s;
    s.host = "host";
    s.kernel = "6.1";
    s.mode = "all";
    s.options_json = "{}";
    s.version = "test";
    s.start_ts_ns = start_ns;
    REQUIRE(w.begin_session(s) == 2);
    // Several buckets of calls from three processes, ts not quite in id order (one long sync entered
    // early, written late), some descheduled with a preemptor, some failing.
    std::int64_t id = w.next_call_id(), ts = start_ns + 1'000;
    const char* apis[] = {"cudaLaunchKernel", "cudaStreamSynchronize", "cudaFree"};
    for (int i = 0; i < 30'000; ++i, ts += 10'000) {
      Call c(id++, apis[i % 3], 100 + i % 3);
      c.ts(i == 20'000 ? start_ns + 5'000 : ts, 1'000 + (i * 7919) % 50'000).ret(i % 997 == 0 ? 1 : 0);
      if (i % 13 == 0) {
        c.r.switches = 1 + i % 2;
        c.r.off_cpu_ns = c.r.dur_ns / 2;
        c.r.runq_ns = c.r.dur_ns / 4;
        c.r.preempted_by = 4000 + i % 2;
        c.r.preempted_by_comm = i % 2 ? "sh" : "kworker";
        c.r.longest_off_ns = c.r.dur_ns / 3;
      }
      w.add_call(c);
    }
    vs::SessionEnd end;
    end.end_ts_ns = ts;
    REQUIRE(w.end_session(end).ok());
  }
  auto t = vs::test::open_trace(copy.file.string());
  REQUIRE(t.q("SELECT COUNT(*) FROM call_buckets WHERE session_id = 2") >= 3);
  CHECK(t.q("SELECT SUM(calls) FROM call_buckets WHERE session_id = 2") == 30'000);
  CHECK(t.q("SELECT SUM(calls) FROM call_bucket_stats WHERE session_id = 2") == 30'000);

  // Windows with buckets wholly inside and edges through buckets; the last one ends before the first bucket
  // with the early-entered call ends (that bucket straddles every window).
  std::vector<std::pair<std::string, json>> cases;
  const double span_ms = 300.0;
  for (auto [from, to] : {std::pair{0.0, span_ms}, {37.5, 251.2}, {100.0, 100.3}, {1.0, 190.0}}) {
    INFO(from << " - " << to);
    const std::int64_t inside = t.q("SELECT COUNT(*) FROM call_buckets WHERE session_id = 2 AND first_ts_ns >= " +
                                    std::to_string(start_ns + static_cast<std::int64_t>(from * 1e6)) +
                                    " AND last_ts_ns <= " + std::to_string(start_ns + static_cast<std::int64_t>(to * 1e6)));
    if (to - from > 100) CHECK(inside >= 1);
    auto in_window = [&](json args) {
      args.update({{"session_id", 2}, {"from_ms", from}, {"to_ms", to}});
      return args;
    };
    cases.push_back({"api_latency", in_window({{"limit", 100}})});
    cases.push_back({"api_latency", in_window({{"pid", 101}, {"sort_by", "p99"}})});
    cases.push_back({"offcpu_attribution", in_window({{"limit", 100}})});
    cases.push_back({"offcpu_attribution", in_window({{"api", "cudaFree"}, {"pid", 102}})});
    cases.push_back({"slowest_calls", in_window({{"pid", 100}})});
  }
  auto bucketed = run_all(copy.file, cases);
  copy.exec("DELETE FROM call_buckets WHERE session_id = 2");  // as a session summarized before schema 3
  check_same(cases, run_all(copy.file, cases), bucketed);
  // The windows really hold calls, and every one of them is counted.
  CHECK(bucketed[0].structured["calls"] == 30'000);
  CHECK(bucketed[5].structured["calls"].get<std::int64_t>() ==
        t.q("SELECT COUNT(*) FROM call_rows WHERE session_id = 2 AND ts_ns BETWEEN " +
            std::to_string(start_ns + 37'500'000) + " AND " + std::to_string(start_ns + 251'200'000)));
}
