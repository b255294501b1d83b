// api_latency on the shipped H100 traces: every number against an
// independent SQL oracle (COUNT/MAX/SUM, and nearest rank by ORDER BY ... OFFSET).
#include <cmath>

#include "tests/tools/tool_check.h"
#include "common/percentiles.h"

using nlohmann::json;

namespace {

// The nearest-rank percentile computed by SQLite's sort, not by the tool's nth_element.
std::int64_t sql_nearest_rank(const vs::test::TraceFile& t, const std::string& api, int per_mille,
                              const std::string& extra_where = "") {
  std::int64_t n = t.q("SELECT COUNT(*) FROM calls WHERE api = ?" + extra_where, {api});
  auto rank = static_cast<std::int64_t>(std::ceil(static_cast<double>(n) * per_mille / 1000.0));
  return t.q("SELECT dur_ns FROM calls WHERE api = ?" + extra_where + " ORDER BY dur_ns LIMIT 1 OFFSET ?",
             {api, std::max<std::int64_t>(rank, 1) - 1});
}

}  // namespace

TEST_CASE("nearest-rank percentiles", "[tools][api_latency]") {
  using vs::nearest_rank;
  CHECK(nearest_rank(1, vs::kP50) == 1);
  CHECK(nearest_rank(10, vs::kP50) == 5);
  CHECK(nearest_rank(10, vs::kP99) == 10);
  CHECK(nearest_rank(1000, vs::kP999) == 999);
  CHECK(nearest_rank(1001, vs::kP999) == 1000);
  std::vector<std::int64_t> v = {9, 1, 8, 2, 7, 3, 6, 4, 5, 10};
  static constexpr int kRanks[] = {vs::kP50, vs::kP90, vs::kMax};
  CHECK(vs::nearest_rank_percentiles(v, kRanks) == std::vector<std::int64_t>{5, 9, 10});
}

TEST_CASE("api_latency: every API of every shipped trace matches SQL", "[tools][api_latency]") {
  for (const char* name : {"empty_cache", "contention", "leak", "expandable", "exit_holding", "attach"}) {
    INFO(name);
    auto t = vs::test::open_trace(vs::test::example_trace(name));
    auto out = vs::test::run_tool_checked(*t.reader, "api_latency", {{"limit", 100}});
    const json& s = out.structured;
    CHECK(s["calls"] == t.q("SELECT COUNT(*) FROM call_rows"));
    CHECK(s["apis_total"] == t.q("SELECT COUNT(DISTINCT api_id) FROM call_rows"));
    REQUIRE(s["apis"].size() == s["apis_total"].get<std::size_t>());
    for (const auto& a : s["apis"]) {
      std::string api = a["api"];
      INFO(api);
      CHECK(a["count"] == t.q("SELECT COUNT(*) FROM calls WHERE api = ?", {api}));
      CHECK(a["errors"] == t.q("SELECT COUNT(*) FROM calls WHERE api = ? AND ret != 0", {api}));
      CHECK(a["max_ns"] == t.q("SELECT MAX(dur_ns) FROM calls WHERE api = ?", {api}));
      CHECK(a["total_ns"] == t.q("SELECT SUM(dur_ns) FROM calls WHERE api = ?", {api}));
      CHECK(a["p50_ns"] == sql_nearest_rank(t, api, vs::kP50));
      CHECK(a["p90_ns"] == sql_nearest_rank(t, api, vs::kP90));
      CHECK(a["p99_ns"] == sql_nearest_rank(t, api, vs::kP99));
      CHECK(a["p999_ns"] == sql_nearest_rank(t, api, vs::kP999));
      CHECK(t.q("SELECT dur_ns FROM calls WHERE id = ?", {a["slowest_call_id"].get<std::int64_t>()}) == a["max_ns"]);
    }
    // Ranked by total time, largest first.
    for (std::size_t i = 1; i < s["apis"].size(); ++i)
      CHECK(s["apis"][i - 1]["total_ns"].get<std::int64_t>() >= s["apis"][i]["total_ns"].get<std::int64_t>());
  }
}

TEST_CASE("api_latency: contention's cudaFree tail is its one 10 ms call", "[tools][api_latency]") {
  auto t = vs::test::open_trace(vs::test::example_trace("contention"));
  auto out = vs::test::run_tool_checked(*t.reader, "api_latency", {{"api", "cudaFree"}});
  REQUIRE(out.structured["apis"].size() == 1);
  const json& free = out.structured["apis"][0];
  CHECK(free["count"] == 56);
  // 56 calls: the nearest-rank p99 is rank 56, the max: the descheduled call.
  CHECK(free["p99_ns"] == free["max_ns"]);
  CHECK(free["max_ns"].get<std::int64_t>() > 10'000'000);
  CHECK(free["tail_ratio"].get<double>() > 100);
  CHECK(out.text.find("cudaFree") != std::string::npos);
}

TEST_CASE("api_latency: window, process, api list, layer and sort", "[tools][api_latency]") {
  auto t = vs::test::open_trace(vs::test::example_trace("empty_cache"));
  std::int64_t start = t.q("SELECT start_ts_ns FROM sessions");
  std::int64_t end = t.q("SELECT end_ts_ns FROM sessions");
  double half_ms = static_cast<double>(end - start) / 2e6;
  auto first_half = vs::test::run_tool_checked(*t.reader, "api_latency", {{"to_ms", half_ms}, {"limit", 100}});
  CHECK(first_half.structured["calls"] ==
        t.q("SELECT COUNT(*) FROM call_rows WHERE ts_ns <= ?", {start + static_cast<std::int64_t>(half_ms * 1e6)}));

  std::int64_t pid = t.q("SELECT pid FROM call_rows LIMIT 1");
  auto by_pid = vs::test::run_tool_checked(*t.reader, "api_latency", {{"pid", pid}, {"api", {"cudaMalloc", "cudaFree"}}});
  CHECK(by_pid.structured["apis"].size() == 2);
  CHECK(by_pid.structured["calls"] ==
        t.q("SELECT COUNT(*) FROM calls WHERE pid = ? AND api IN ('cudaMalloc', 'cudaFree')", {pid}));

  auto driver = vs::test::run_tool_checked(*t.reader, "api_latency", {{"layer", "driver"}, {"limit", 100}});
  CHECK(driver.structured["calls"] == t.q("SELECT COUNT(*) FROM calls WHERE layer = 'driver'"));
  for (const auto& a : driver.structured["apis"]) CHECK(a["layer"] == "driver");

  auto by_tail = vs::test::run_tool_checked(*t.reader, "api_latency", {{"sort_by", "tail"}, {"limit", 3}});
  REQUIRE(by_tail.structured["apis"].size() == 3);
  CHECK(by_tail.structured["apis"][0]["tail_ratio"].get<double>() >= by_tail.structured["apis"][2]["tail_ratio"].get<double>());
  CHECK(by_tail.text.find("more APIs") != std::string::npos);
}

TEST_CASE("api_latency: arguments the model can fix", "[tools][api_latency]") {
  auto t = vs::test::open_trace(vs::test::example_trace("empty_cache"));
  std::string unknown = vs::test::run_tool_error(*t.reader, "api_latency", {{"api", "cudaFre"}});
  CHECK(unknown.find("cudaFree") != std::string::npos);  // lists what exists
  std::string disjoint = vs::test::run_tool_error(*t.reader, "api_latency", {{"api", "cudaFree"}, {"layer", "driver"}});
  CHECK(disjoint.find("drop one") != std::string::npos);
  std::string window = vs::test::run_tool_error(*t.reader, "api_latency", {{"from_ms", 10}, {"to_ms", 5}});
  CHECK(window.find("to_ms") != std::string::npos);
  auto empty = vs::test::run_tool_checked(*t.reader, "api_latency", {{"pid", 1}});
  CHECK(empty.structured["apis"].empty());
  CHECK(empty.text.find("no calls") != std::string::npos);
}
