// slowest_calls on the shipped traces: the order and every context field
// against SQL (the freed allocation through allocations.free_call_id).
#include "tests/tools/tool_check.h"

using nlohmann::json;

TEST_CASE("slowest_calls: contention's slowest cudaFree, with who took the CPU and what it freed", "[tools][slowest]") {
  auto t = vs::test::open_trace(vs::test::example_trace("contention"));
  auto out = vs::test::run_tool_checked(*t.reader, "slowest_calls", {{"api", "cudaFree"}, {"limit", 3}});
  const json& calls = out.structured["calls"];
  REQUIRE(calls.size() == 3);
  std::int64_t slowest = t.q("SELECT id FROM calls WHERE api = 'cudaFree' ORDER BY dur_ns DESC LIMIT 1");
  const json& c = calls[0];
  CHECK(c["id"] == slowest);
  CHECK(c["dur_ns"] == t.q("SELECT dur_ns FROM calls WHERE id = ?", {slowest}));
  CHECK(c["off_cpu_ns"] == t.q("SELECT off_cpu_ns FROM calls WHERE id = ?", {slowest}));
  CHECK(c["runq_ns"] == t.q("SELECT runq_ns FROM calls WHERE id = ?", {slowest}));
  CHECK(c["preempted_by_comm"] == "sh");
  CHECK(c["preempted_by"] == t.q("SELECT preempted_by FROM calls WHERE id = ?", {slowest}));
  CHECK(c["ptr"] == t.qs("SELECT printf('0x%x', ptr) FROM calls WHERE id = ?", {slowest}));
  CHECK(c["caller"] == "libc10_cuda.so");
  REQUIRE(c["allocation"].is_object());
  CHECK(c["allocation"]["relation"] == "freed");
  CHECK(c["allocation"]["allocation_id"] == t.q("SELECT id FROM allocations WHERE free_call_id = ?", {slowest}));
  std::int64_t age_ns = t.q("SELECT free_ts_ns - alloc_ts_ns FROM allocations WHERE free_call_id = ?", {slowest});
  CHECK(c["allocation"]["age_ms"].get<double>() ==
        Approx(static_cast<double>(t.q("SELECT ts_ns FROM calls WHERE id = ?", {slowest}) -
                                   t.q("SELECT alloc_ts_ns FROM allocations WHERE free_call_id = ?", {slowest})) / 1e6));
  CHECK(c["allocation"]["lifetime_ms"].get<double>() == Approx(static_cast<double>(age_ns) / 1e6));
  for (std::size_t i = 1; i < calls.size(); ++i)
    CHECK(calls[i - 1]["dur_ns"].get<std::int64_t>() >= calls[i]["dur_ns"].get<std::int64_t>());
  CHECK(out.text.find("call " + std::to_string(slowest)) != std::string::npos);
  CHECK(out.text.find("CPU held by «sh»") != std::string::npos);
}

TEST_CASE("slowest_calls: a whole session, nested driver calls and allocations created", "[tools][slowest]") {
  auto t = vs::test::open_trace(vs::test::example_trace("empty_cache"));
  auto out = vs::test::run_tool_checked(*t.reader, "slowest_calls", {{"limit", 50}});
  const json& calls = out.structured["calls"];
  REQUIRE(calls.size() == 50);
  CHECK(calls[0]["dur_ns"] == t.q("SELECT MAX(dur_ns) FROM call_rows"));
  // The 50th longest: as many calls are strictly longer than it as come before it at most.
  CHECK(t.q("SELECT COUNT(*) FROM call_rows WHERE dur_ns > ?", {calls[49]["dur_ns"].get<std::int64_t>()}) <= 49);

  // A driver free inside cudaFree names its parent and finds the allocation through it.
  std::int64_t nested = t.q("SELECT id FROM calls WHERE api = 'cuMemFree_v2' AND parent_id IS NOT NULL "
                            "ORDER BY dur_ns DESC LIMIT 1");
  auto driver = vs::test::run_tool_checked(*t.reader, "slowest_calls", {{"api", "cuMemFree_v2"}, {"limit", 50}});
  bool seen = false;
  for (const auto& c : driver.structured["calls"]) {
    if (c["id"] != nested) continue;
    seen = true;
    std::int64_t parent = t.q("SELECT parent_id FROM calls WHERE id = ?", {nested});
    CHECK(c["parent"]["id"] == parent);
    CHECK(c["parent"]["api"] == "cudaFree");
    CHECK(c["allocation"]["allocation_id"] == t.q("SELECT id FROM allocations WHERE free_call_id = ?", {parent}));
  }
  CHECK(seen);

  auto mallocs = vs::test::run_tool_checked(*t.reader, "slowest_calls", {{"api", "cudaMalloc"}, {"limit", 1}});
  const json& m = mallocs.structured["calls"][0];
  CHECK(m["allocation"]["relation"] == "created");
  CHECK(m["allocation"]["bytes"] == m["bytes"]);
  CHECK(m["allocation"]["allocation_id"] == t.q("SELECT id FROM allocations WHERE alloc_call_id = ?", {m["id"].get<std::int64_t>()}));
}

TEST_CASE("slowest_calls: failed calls only", "[tools][slowest]") {
  auto t = vs::test::open_trace(vs::test::example_trace("expandable"));
  auto out = vs::test::run_tool_checked(*t.reader, "slowest_calls", {{"errors_only", true}});
  CHECK(out.structured["calls"].size() == static_cast<std::size_t>(t.q("SELECT COUNT(*) FROM call_rows WHERE ret != 0")));
  for (const auto& c : out.structured["calls"]) CHECK(c["ret"] != 0);
  CHECK(out.text.find("FAILED ret 800") != std::string::npos);
}
