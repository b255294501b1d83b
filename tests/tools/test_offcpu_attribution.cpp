// offcpu_attribution on the shipped traces: the contention trace's cudaFree
// tail is scheduling (the README's 10 ms call, CPU held by `sh`); the quiet
// empty_cache trace has no descheduled cudaFree. Sums and p99s against SQL.
#include <cmath>

#include "tests/tools/tool_check.h"

using nlohmann::json;

namespace {

const json& api_row(const json& out, const std::string& api) {
  for (const auto& a : out["apis"])
    if (a["api"] == api) return a;
  FAIL("no row for " << api);
  static json none;
  return none;
}

// Nearest-rank p99 of an expression over one API's calls, sorted by SQLite.
std::int64_t sql_p99(const vs::test::TraceFile& t, const std::string& api, const std::string& expr,
                     const std::string& where = "1") {
  std::int64_t n = t.q("SELECT COUNT(*) FROM calls WHERE api = ? AND " + where, {api});
  auto rank = static_cast<std::int64_t>(std::ceil(static_cast<double>(n) * 0.99));
  return t.q("SELECT " + expr + " AS v FROM calls WHERE api = ? AND " + where + " ORDER BY v LIMIT 1 OFFSET ?",
             {api, rank - 1});
}

}  // namespace

TEST_CASE("offcpu_attribution: contention's cudaFree tail is explained by scheduling", "[tools][offcpu]") {
  auto t = vs::test::open_trace(vs::test::example_trace("contention"));
  auto out = vs::test::run_tool_checked(*t.reader, "offcpu_attribution", {{"limit", 100}});
  const json& free = api_row(out.structured, "cudaFree");
  CHECK(free["calls"] == 56);
  CHECK(free["descheduled_calls"] == t.q("SELECT COUNT(*) FROM calls WHERE api = 'cudaFree' AND switches > 0"));
  CHECK(free["descheduled_calls"] == 1);
  CHECK(free["verdict"] == "scheduling");
  // The README: 10.29 ms, 10.08 ms of it off-CPU, 10.07 ms runnable, the CPU held by `sh`.
  std::int64_t slowest = t.q("SELECT id FROM calls WHERE api = 'cudaFree' ORDER BY dur_ns DESC LIMIT 1");
  CHECK(free["slowest_descheduled_call_id"] == slowest);
  CHECK(free["p99_ns"] == t.q("SELECT dur_ns FROM calls WHERE id = ?", {slowest}));
  CHECK(free["p99_switched_ns"] == free["p99_ns"]);
  CHECK(free["p99_unswitched_ns"] == sql_p99(t, "cudaFree", "dur_ns", "switches = 0"));
  CHECK(free["p99_without_off_cpu_ns"] == sql_p99(t, "cudaFree", "dur_ns - off_cpu_ns"));
  CHECK(free["p99_without_runq_ns"] == sql_p99(t, "cudaFree", "dur_ns - runq_ns"));
  CHECK(free["p99_without_off_cpu_ns"].get<std::int64_t>() < free["p99_ns"].get<std::int64_t>() / 10);
  REQUIRE(free["preemptors"].size() == 1);
  CHECK(free["preemptors"][0]["comm"] == "sh");
  CHECK(free["preemptors"][0]["longest_off_total_ns"] ==
        t.q("SELECT longest_off_ns FROM calls WHERE id = ?", {slowest}));
  CHECK(free["runq_ns"] == t.q("SELECT SUM(runq_ns) FROM calls WHERE api = 'cudaFree'"));
  CHECK(out.text.find("cudaFree") != std::string::npos);
  CHECK(out.text.find("tail explained by scheduling") != std::string::npos);
  CHECK(out.text.find("«sh»") != std::string::npos);

  // Every API's sums and counts hold against SQL.
  CHECK(out.structured["descheduled_calls"] == t.q("SELECT COUNT(*) FROM call_rows WHERE switches > 0"));
  for (const auto& a : out.structured["apis"]) {
    std::string api = a["api"];
    INFO(api);
    CHECK(a["off_cpu_ns"] == t.q("SELECT SUM(off_cpu_ns) FROM calls WHERE api = ?", {api}));
    CHECK(a["descheduled_calls"] == t.q("SELECT COUNT(*) FROM calls WHERE api = ? AND switches > 0", {api}));
    CHECK(a["p99_ns"] == sql_p99(t, api, "dur_ns"));
  }
}

TEST_CASE("offcpu_attribution: the quiet trace's cudaFree tail is not the scheduler", "[tools][offcpu]") {
  auto t = vs::test::open_trace(vs::test::example_trace("empty_cache"));
  auto out = vs::test::run_tool_checked(*t.reader, "offcpu_attribution", {{"api", "cudaFree"}});
  REQUIRE(out.structured["apis"].size() == 1);
  const json& free = out.structured["apis"][0];
  CHECK(free["descheduled_calls"] == 0);
  CHECK(free["verdict"] == "in_call");
  CHECK(free["p99_switched_ns"].is_null());
  CHECK(free["p99_without_off_cpu_ns"] == free["p99_ns"]);
  CHECK(free["preemptors"].empty());
  CHECK(out.text.find("no call descheduled") != std::string::npos);
}

TEST_CASE("offcpu_attribution: a window with no descheduled call", "[tools][offcpu]") {
  auto t = vs::test::open_trace(vs::test::example_trace("contention"));
  std::int64_t start = t.q("SELECT start_ts_ns FROM sessions");
  std::int64_t switched_ts = t.q("SELECT MIN(ts_ns) FROM call_rows WHERE switches > 0");
  double before_ms = static_cast<double>(switched_ts - start) / 1e6 - 0.001;
  auto out = vs::test::run_tool_checked(*t.reader, "offcpu_attribution", {{"to_ms", before_ms}});
  CHECK(out.structured["descheduled_calls"] == 0);
  CHECK(out.structured["calls"] == t.q("SELECT COUNT(*) FROM call_rows WHERE ts_ns < ?", {switched_ts}));
}
