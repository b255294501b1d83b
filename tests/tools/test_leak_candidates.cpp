// leak_candidates on the shipped H100 traces: the leak's growth is found, per
// request as PyTorch counted it; empty_cache's and exit_holding's memory is
// not called growing.
#include "tests/tools/memory_tool_traces.h"

using nlohmann::json;
using vs::test::ExampleTrace;

namespace {

const json* series(const json& result, const std::string& library, const std::string& kind) {
  for (const auto& c : result["candidates"])
    if (c["library"] == library && c["kind"] == kind) return &c;
  return nullptr;
}

}  // namespace

TEST_CASE("leak_candidates: the leak trace grows, and is ranked first", "[tools][leak_candidates]") {
  ExampleTrace t("leak");
  auto out = t.run("leak_candidates");
  const json& first = out.structured["candidates"][0];
  CHECK(first["library"] == "libc10_cuda.so");
  CHECK(first["classification"] == "growing");
  // Growth = everything the allocator reserved: PyTorch's reserved bytes after the last request.
  CHECK(first["growth_bytes"] == t.checkpoint("request11")["reserved_bytes.all.current"]);
  CHECK(first["growth_bytes"] == 2348810240);
  CHECK(first["allocations"] == 470);
  CHECK(first["frees"] == 0);
  CHECK(first["slope_bytes_per_s"].get<double>() > 0);
  // The verdict's own numbers, in calls: many episodes, the last new high within the rhythm of the last ones.
  const json& activity = first["activity"];
  const json& th = out.structured["thresholds"];
  CHECK(activity["episodes"].get<std::int64_t>() >= th["min_episodes"].get<std::int64_t>());
  CHECK(activity["calls_since_last_high"].get<std::int64_t>() <=
        th["growing_factor"].get<std::int64_t>() * activity["longest_recent_wait_calls"].get<std::int64_t>());
  CHECK(activity["calls_to_decide"] == 0);
  CHECK(first["end_released_at_exit_bytes"] == 2348810240);
  // The sizes responsible, with allocation ids the other tools accept.
  std::int64_t listed = 0;
  for (const auto& p : first["never_freed_patterns"]) {
    listed += p["bytes"].get<std::int64_t>();
    CHECK(t.q("SELECT bytes FROM allocations WHERE id = ?", {p["example_allocation_ids"][0].get<std::int64_t>()}) ==
          p["size_bytes"].get<std::int64_t>());
  }
  CHECK(listed > 2348810240 / 2);
  CHECK(out.structured["counts"]["growing"] == 1);
  // cuBLAS's workspace grew once: a plateau, not a leak.
  const json* cublas = series(out.structured, "libcublas.so.13", "device");
  REQUIRE(cublas != nullptr);
  CHECK((*cublas)["classification"] == "plateau");
  CHECK(out.text.rfind("GROWING", 0) == std::string::npos);  // the headline comes first
  CHECK(out.text.find("GROWING pid 476 device") != std::string::npos);
}

TEST_CASE("leak_candidates: growth per request between synchronize markers", "[tools][leak_candidates]") {
  ExampleTrace t("leak");
  // Each request checkpoint begins with torch.cuda.synchronize(): a window from just
  // before request0's to just after request11's holds 12 markers, 11 intervals.
  const json& r0 = t.checkpoint("request0");
  const json& r11 = t.checkpoint("request11");
  auto out = t.run("leak_candidates", {{"marker_api", "cudaDeviceSynchronize"},
                                       {"from_ms", t.t_ms(r0) - 1},
                                       {"to_ms", t.t_ms(r11) + 1},
                                       {"caller", "libc10_cuda"}});
  const json& c = out.structured["candidates"][0];
  CHECK(c["classification"] == "growing");
  const json& it = c["iterations"];
  REQUIRE_FALSE(it.is_null());
  CHECK(it["iterations"] == 11);
  CHECK(it["grown_iterations"] == 11);
  CHECK(it["first_marker_bytes"] == r0["reserved_bytes.all.current"]);
  CHECK(it["last_marker_bytes"] == r11["reserved_bytes.all.current"]);
  const std::int64_t per_request = (r11["reserved_bytes.all.current"].get<std::int64_t>() -
                                    r0["reserved_bytes.all.current"].get<std::int64_t>()) / 11;
  CHECK(it["growth_per_iteration_bytes"] == per_request);  // ≈ 125 MB per request (README)
  CHECK(per_request == 125257169);
  CHECK(c["start_bytes"] == r0["reserved_bytes.all.current"]);
}

TEST_CASE("leak_candidates: empty_cache's allocator cache is not a leak", "[tools][leak_candidates]") {
  ExampleTrace t("empty_cache");
  for (const json& args : {json::object(), json{{"marker_api", "cudaDeviceSynchronize"}}}) {
    INFO(args.dump());
    auto out = t.run("leak_candidates", args);
    CHECK(out.structured["counts"]["growing"] == 0);
    const json* allocator = series(out.structured, "libc10_cuda.so", "device");
    REQUIRE(allocator != nullptr);
    // It grew with the model and the first generate, then each round returned to that high: a plateau. The
    // final empty_cache() is the teardown (the last calls, all releases) and does not make it "steady".
    CHECK((*allocator)["classification"] == "plateau");
    CHECK((*allocator)["activity"]["teardown_calls"].get<std::int64_t>() > 0);
    CHECK((*allocator)["peak_bytes"] == t.checkpoint("end")["reserved_bytes.all.peak"]);
    CHECK((*allocator)["end_bytes"] == t.checkpoint("end")["reserved_bytes.all.current"]);
  }
}

TEST_CASE("leak_candidates: exit_holding allocated once and exited: too short to tell, released at exit",
          "[tools][leak_candidates]") {
  ExampleTrace t("exit_holding");
  auto out = t.run("leak_candidates");
  const json& c = out.structured["candidates"][0];
  // Three allocations in one episode, one synchronize, the exit: no activity after the growth to judge by.
  CHECK(c["classification"] == "undecided");
  CHECK(c["activity"]["episodes"] == 1);
  CHECK(c["activity"]["calls_to_decide"].get<std::int64_t>() > 0);
  CHECK(out.text.find("to decide: ") != std::string::npos);
  CHECK(c["growth_bytes"] == 469762048);
  CHECK(c["end_released_at_exit_bytes"] == 469762048);
  CHECK(c["new_highs"] == 3);
}

TEST_CASE("leak_candidates: a marker that never occurs names the repeating APIs", "[tools][leak_candidates]") {
  ExampleTrace t("leak");
  std::string message = t.error("leak_candidates", {{"marker_api", "cudaLaunchKernel"}});
  CHECK(message.find("cudaMalloc (470)") != std::string::npos);
  CHECK(t.error("leak_candidates", {{"limit", 0}}).find("limit") != std::string::npos);
}
