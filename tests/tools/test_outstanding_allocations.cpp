// outstanding_allocations on the shipped H100 traces: what was held at an
// instant equals PyTorch's reserved bytes; memory held at exit is apart.
#include "tests/tools/memory_tool_traces.h"

using nlohmann::json;
using vs::test::ExampleTrace;

namespace {

std::int64_t kind_bytes(const json& section, const std::string& kind) {
  for (const auto& k : section["by_kind"])
    if (k["kind"] == kind) return k["bytes"].get<std::int64_t>();
  return 0;
}

}  // namespace

TEST_CASE("outstanding_allocations: exit_holding's memory was released at exit, not held live", "[tools][outstanding_allocations]") {
  ExampleTrace t("exit_holding");
  auto out = t.run("outstanding_allocations");
  const json& s = out.structured;
  CHECK(s["held"]["by_kind"].empty());
  CHECK(kind_bytes(s["released_at_exit"], "device") == 469762048);
  REQUIRE(s["released_at_exit"]["groups"].size() == 3);
  CHECK(s["released_at_exit"]["groups"][0]["size_bytes"] == 268435456);  // largest first
  for (const auto& g : s["released_at_exit"]["groups"]) {
    CHECK(g["library"] == "libc10_cuda.so");
    CHECK(g["fate"]["held_until_process_exit"] == 1);
    CHECK(t.q("SELECT bytes FROM allocations WHERE id = ?", {g["example_allocation_ids"][0].get<std::int64_t>()}) ==
          g["size_bytes"].get<std::int64_t>());
  }
  CHECK(out.text.find("released at process exit") != std::string::npos);
  // Just before the exit the same memory is held by the live process.
  double exit_ms = static_cast<double>(t.q("SELECT exit_ts_ns FROM processes") - t.start_ns) / 1e6;
  auto before = t.run("outstanding_allocations", {{"at_ms", exit_ms - 0.01}});
  CHECK(kind_bytes(before.structured["held"], "device") == 469762048);
  CHECK(before.structured["released_at_exit"]["by_kind"].empty());
}

TEST_CASE("outstanding_allocations: the caching allocator's holdings at each checkpoint", "[tools][outstanding_allocations]") {
  ExampleTrace t("empty_cache");
  for (const auto& cp : t.stats["checkpoints"]) {
    INFO(cp["label"].get<std::string>());
    auto out = t.run("outstanding_allocations", {{"at_ms", t.t_ms(cp)}, {"caller", "libc10_cuda"}});
    CHECK(kind_bytes(out.structured["held"], "device") == cp["reserved_bytes.all.current"].get<std::int64_t>());
  }
  // At the end: the allocator's 2 segments (134,217,728 B) were held until the exit.
  auto end = t.run("outstanding_allocations", {{"caller", "libc10_cuda"}});
  CHECK(kind_bytes(end.structured["released_at_exit"], "device") == 134217728);
  std::int64_t segments = 0;
  for (const auto& g : end.structured["released_at_exit"]["groups"]) segments += g["count"].get<std::int64_t>();
  CHECK(segments == 2);
  // Ages are measured back from at_ms.
  auto cp = t.checkpoint("round0_empty_cache");
  auto mid = t.run("outstanding_allocations", {{"at_ms", t.t_ms(cp)}, {"limit", 1}});
  const json& g = mid.structured["held"]["groups"][0];
  CHECK(g["oldest_age_ms"].get<double>() >= g["newest_age_ms"].get<double>());
  CHECK(g["newest_age_ms"].get<double>() >= 0);
  CHECK(mid.structured["held"]["groups"].size() == 1);
  CHECK(mid.structured["held"]["groups_more"].get<int>() > 0);
}

TEST_CASE("outstanding_allocations: errors say what to change", "[tools][outstanding_allocations]") {
  ExampleTrace t("leak");
  CHECK(t.error("outstanding_allocations", {{"at_ms", 1e9}}).find("at most") != std::string::npos);
  CHECK(t.error("outstanding_allocations", {{"pid", 1}}).find("476") != std::string::npos);
  CHECK(t.error("outstanding_allocations", {{"limit", 1000}}).find("limit") != std::string::npos);
}
