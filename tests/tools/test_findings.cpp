// findings on the recorded H100 traces: each README's "what a good
// investigation finds" fires, nothing is invented where the trace does not
// show it, and every drill-down points at a tool that accepts its arguments.
#include <stdlib.h>

#include <filesystem>
#include <set>

#include "store/summaries.h"
#include "tests/tools/tool_check.h"

namespace {

using nlohmann::json;

struct Findings {
  json out;
  std::string text;

  explicit Findings(const std::string& trace, json args = json::object()) {
    auto t = vs::test::open_trace(vs::test::example_trace(trace));
    auto result = vs::test::run_tool_checked(*t.reader, "findings", args);
    out = result.structured;
    text = result.text;
    check_drilldowns(*t.reader);
  }
  std::vector<json> of(const std::string& kind) const {
    std::vector<json> found;
    for (const auto& f : out["findings"])
      if (f["kind"] == kind) found.push_back(f);
    return found;
  }
  std::int64_t number(const json& f, const std::string& name) const {
    INFO(f.dump());
    REQUIRE(f["evidence"]["numbers"].contains(name));
    return f["evidence"]["numbers"][name].get<std::int64_t>();
  }
  std::set<std::string> kinds() const {
    std::set<std::string> k;
    for (const auto& f : out["findings"]) k.insert(f["kind"].get<std::string>());
    return k;
  }
  // Every `next` names a tool of the catalog with arguments it accepts, and every id exists.
  void check_drilldowns(const vs::store::TraceReader& db) const {
    for (const auto& f : out["findings"]) {
      INFO(f["title"].get<std::string>());
      for (const auto& n : f["next"]) {
        const auto* tool = vs::tools::find_tool(n["tool"].get<std::string>());
        REQUIRE(tool != nullptr);
        vs::test::run_tool_checked(db, n["tool"].get<std::string>(), n["arguments"]);
      }
      for (const auto& id : f["evidence"]["call_ids"]) {
        std::int64_t found = 0;
        REQUIRE(db.query("SELECT COUNT(*) FROM calls WHERE id = ?", {id.get<std::int64_t>()},
                         [&](const vs::store::Row& r) { found = r.i64(0); }).ok());
        CHECK(found == 1);
      }
      for (const auto& id : f["evidence"]["allocation_ids"]) {
        std::int64_t found = 0;
        REQUIRE(db.query("SELECT COUNT(*) FROM allocations WHERE id = ?", {id.get<std::int64_t>()},
                         [&](const vs::store::Row& r) { found = r.i64(0); }).ok());
        CHECK(found == 1);
      }
    }
  }
};

constexpr std::int64_t kMiB = 1 << 20;

}  // namespace

TEST_CASE("findings leak: the growth, released only at exit", "[findings]") {
  Findings f("leak");
  INFO(f.text);
  auto leak = f.of("leak_growth");
  REQUIRE(leak.size() == 1);
  CHECK(f.out["findings"][0]["kind"] == "leak_growth");  // ranked first
  CHECK(leak[0]["pid"] == 476);
  // README: the allocator held 2,348,810,240 B after request 11; cuBLAS and cuDNN hold 67,266,308 B more from
  // before the requests. The growth is what the episodes after the first (the model load) added, all still held.
  CHECK(f.number(leak[0], "high_bytes") == 2348810240 + 67266308);
  CHECK(f.number(leak[0], "end_outstanding_bytes") == 2348810240 + 67266308);
  CHECK(f.number(leak[0], "growth_bytes") ==
        f.number(leak[0], "high_bytes") - f.number(leak[0], "first_episode_high_bytes"));
  CHECK(f.number(leak[0], "held_bytes") == f.number(leak[0], "growth_bytes"));
  CHECK(f.number(leak[0], "released_at_exit_bytes") == f.number(leak[0], "held_bytes"));
  CHECK(f.number(leak[0], "episodes") >= 8);
  CHECK(leak[0]["evidence"]["allocation_ids"].size() == 10);
  CHECK(f.of("released_at_exit").size() == 1);
  CHECK(f.number(f.of("released_at_exit")[0], "released_bytes") == 2416076548);
  CHECK(f.of("preemption_tail").empty());
  CHECK(f.of("out_of_memory").empty());
  CHECK(f.text.find("leak_growth") != std::string::npos);
}

TEST_CASE("findings contention: cudaFree's tail is the scheduler", "[findings]") {
  Findings f("contention");
  INFO(f.text);
  auto tails = f.of("preemption_tail");
  REQUIRE_FALSE(tails.empty());
  auto free = std::find_if(tails.begin(), tails.end(),
                           [](const json& t) { return t["title"].get<std::string>().starts_with("cudaFree's"); });
  REQUIRE(free != tails.end());
  CHECK(f.number(*free, "calls") == 56);
  CHECK(f.number(*free, "p99_ns") == 10293969);  // README: the slowest cudaFree took 10.29 ms
  CHECK(f.number(*free, "tail_runq_ns") == 10074495);
  CHECK((*free)["summary"].get<std::string>().find("«sh»") != std::string::npos);
  CHECK((*free)["evidence"]["call_ids"].size() == 1);
  CHECK(f.of("leak_growth").empty());
}

TEST_CASE("findings empty_cache: released after the last allocation, cuBLAS outside the allocator, NVML context",
          "[findings]") {
  Findings f("empty_cache");
  INFO(f.text);
  // The final empty_cache() came after the last allocation: no cache is held, and the 2 segments (128 MiB,
  // README) that stayed hold PyTorch's own cuBLAS workspaces, below held_after_empty_cache's threshold.
  CHECK(f.of("allocator_cache_held").empty());
  CHECK(f.of("held_after_empty_cache").empty());
  CHECK(f.text.find("128 MiB stayed after PyTorch's caching allocator released 392 MiB") != std::string::npos);
  auto libs = f.of("library_held");
  REQUIRE(libs.size() == 1);
  CHECK(f.number(libs[0], "held_bytes") == 67240960 + 25344 + 4);  // cuBLAS workspace + cuDNN's two
  CHECK(libs[0]["summary"].get<std::string>().find("«libcublas.so.13» 64.13 MiB (3 x cuMemAlloc_v2)") !=
        std::string::npos);
  auto nvml = f.of("nvml_context_overhead");
  REQUIRE(nvml.size() == 1);
  CHECK(f.number(nvml[0], "before_first_allocation_bytes") == 518 * kMiB);
  CHECK(f.number(nvml[0], "overhead_median_bytes") >= 600 * kMiB);  // README: a steady ~624 MiB
  CHECK(f.number(nvml[0], "overhead_median_bytes") <= 625 * kMiB);
  // Negative cases: no leak, no preemption (README: no call descheduled), no errors.
  CHECK(f.of("leak_growth").empty());
  CHECK(f.of("preemption_tail").empty());
  CHECK(f.of("call_errors").empty());
  CHECK(f.of("coverage_gap").empty());
}

TEST_CASE("findings exit_holding: released at exit, not a leak", "[findings]") {
  Findings f("exit_holding");
  INFO(f.text);
  // NVML's only sample after the allocations came after the exit (the driver still tearing down): no overhead claimed.
  // With no release after its last allocation, the allocator's memory is cache and live tensors together.
  CHECK(f.kinds() == std::set<std::string>{"allocator_cache_held", "released_at_exit"});
  CHECK(f.text.find("no NVML sample between its first allocation and its exit") != std::string::npos);
  auto exit = f.of("released_at_exit");
  REQUIRE(exit.size() == 1);
  CHECK(f.number(exit[0], "released_bytes") == 469762048);
  CHECK(f.number(exit[0], "released_allocations") == 3);
  CHECK(exit[0]["summary"].get<std::string>().find("not by itself a leak") != std::string::npos);
}

TEST_CASE("findings expandable and attach: what each trace shows, nothing more", "[findings]") {
  Findings expandable("expandable");
  INFO(expandable.text);
  CHECK(expandable.of("leak_growth").empty());
  auto errors = expandable.of("call_errors");
  REQUIRE(errors.size() == 1);  // README: one cuMemCreate failed with 800
  CHECK(errors[0]["summary"].get<std::string>().find("cuMemCreate x 1 returned 800 (CUDA_ERROR_NOT_PERMITTED)") !=
        std::string::npos);
  // The next cuMemCreate on the same thread succeeded: PyTorch's fallback, handled, ranked below the rest.
  CHECK(errors[0]["severity"] == "info");
  CHECK(errors[0]["title"].get<std::string>().find("that the caller handled") != std::string::npos);
  CHECK(expandable.out["findings"][0]["kind"] != "call_errors");
  CHECK(expandable.of("out_of_memory").empty());

  Findings attach("attach");
  INFO(attach.text);
  CHECK(attach.kinds() == std::set<std::string>{"coverage_gap", "nvml_context_overhead"});
  CHECK(attach.of("coverage_gap")[0]["title"].get<std::string>().find("already running") != std::string::npos);
}

TEST_CASE("findings: pid filter and errors the model can fix", "[findings]") {
  auto t = vs::test::open_trace(vs::test::example_trace("leak"));
  auto one = vs::test::run_tool_checked(*t.reader, "findings", {{"pid", 476}, {"limit", 1}});
  CHECK(one.structured["findings"].size() == 1);
  CHECK(one.structured["left_out"].get<int>() > 0);
  CHECK(vs::test::run_tool_error(*t.reader, "findings", {{"pid", 1}}).find("its processes: 476") != std::string::npos);
  CHECK(vs::test::run_tool_error(*t.reader, "findings", {{"session_id", 9}}).find("sessions: 1") != std::string::npos);
}

namespace {

std::vector<vs::tools::ToolOutput> run_findings(const vs::test::TraceCopy& copy, const std::vector<json>& cases) {
  auto t = vs::test::open_trace(copy.file.string());
  std::vector<vs::tools::ToolOutput> outs;
  for (const auto& args : cases) outs.push_back(vs::test::run_tool_checked(*t.reader, "findings", args));
  return outs;
}

}  // namespace

TEST_CASE("findings: the same from the calls, from the summaries, and from summaries without tails (scanned or "
          "through an (api_id, dur_ns) index)", "[findings]") {
  for (const char* name : {"attach", "contention", "empty_cache", "exit_holding", "expandable", "leak"}) {
    INFO(name);
    vs::test::TraceCopy copy(vs::test::example_trace(name));
    const std::int64_t pid = vs::test::open_trace(copy.file.string()).q("SELECT pid FROM call_rows LIMIT 1");
    const std::vector<json> cases = {json::object(), {{"limit", 50}}, {{"pid", pid}, {"limit", 50}}};
    const auto scanned = run_findings(copy, cases);  // the shipped traces predate the summaries
    REQUIRE(vs::store::build_summaries(copy.file.string(), 1).ok());
    const auto summarized = run_findings(copy, cases);
    copy.exec("DELETE FROM call_stats_tails; DELETE FROM call_stats_tail_preemptors");  // as summarized by schema 2
    const auto tails_scanned = run_findings(copy, cases);
    copy.exec("CREATE INDEX call_rows_api_dur ON call_rows(api_id, dur_ns)");
    const auto tails_indexed = run_findings(copy, cases);
    for (std::size_t i = 0; i < cases.size(); ++i) {
      INFO(cases[i].dump());
      for (const auto* other : {&summarized, &tails_scanned, &tails_indexed}) {
        CHECK(scanned[i].structured == (*other)[i].structured);
        CHECK(scanned[i].text == (*other)[i].text);
      }
    }
  }
}
