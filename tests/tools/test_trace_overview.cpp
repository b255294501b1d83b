// trace_overview on the shipped H100 traces: the numbers their READMEs state.
#include "tests/tools/memory_tool_traces.h"

using nlohmann::json;
using vs::test::ExampleTrace;

namespace {

const json* api(const json& result, const std::string& name) {
  for (const auto& a : result["apis"])
    if (a["api"] == name) return &a;
  return nullptr;
}

const json* kind(const json& result, const std::string& name) {
  for (const auto& k : result["outstanding_at_end"])
    if (k["kind"] == name) return &k;
  return nullptr;
}

}  // namespace

TEST_CASE("trace_overview: empty_cache's session, calls and what was held at the end", "[tools][trace_overview]") {
  ExampleTrace t("empty_cache");
  auto out = t.run("trace_overview");
  const json& s = out.structured;
  CHECK(s["session"]["mode"] == "launch");
  CHECK(s["session"]["command"].get<std::string>().find("workloads.py empty_cache") != std::string::npos);
  CHECK(s["gpus"][0]["name"].get<std::string>().rfind("NVIDIA H100", 0) == 0);
  CHECK(s["gpus"][0]["driver_version"] == "580.159.04");
  REQUIRE(s["processes"].size() == 1);
  CHECK(s["processes"][0]["exit_code"] == 0);
  CHECK(s["processes"][0]["how_found"] == "launched");
  const json* malloc = api(s, "cudaMalloc");
  REQUIRE(malloc != nullptr);
  CHECK((*malloc)["calls"] == 58);
  CHECK((*malloc)["bytes"] == t.checkpoint("end")["reserved_bytes.all.allocated"]);
  CHECK((*malloc)["bytes"] == 924844032);
  CHECK((*api(s, "cudaFree"))["calls"] == 56);
  CHECK((*api(s, "cudaFree"))["bytes"].is_null());  // a free's bytes do not add up
  CHECK((*api(s, "cuMemAlloc_v2"))["nested"] == 58);  // inside cudaMalloc: counted once there
  // Held at the end: nothing live; the allocator's 134,217,728 B + cuBLAS's 67,240,960 B + cuDNN's
  // 25,348 B were released when the process exited.
  const json* device = kind(s, "device");
  REQUIRE(device != nullptr);
  CHECK((*device)["live_bytes"] == 0);
  CHECK((*device)["released_at_exit_bytes"] == 134217728 + 67240960 + 25348);
  CHECK(s["libraries"].size() == 3);
  for (const auto& l : s["libraries"]) CHECK(l["probes_attached"].get<int>() > 0);
  REQUIRE_FALSE(s["nvml"].is_null());
  CHECK(s["nvml"]["processes"][0]["max_used_bytes"].get<std::int64_t>() > 912261120);
  CHECK(s["drops"]["call_drops"] == 0);
  CHECK(s["sessions"].size() == 1);
  CHECK(s["coverage"]["complete"] == true);
  // The command and cmdline are quoted as data in the text.
  CHECK(out.text.find("command: «python3 ") != std::string::npos);
}

TEST_CASE("trace_overview: exit_holding, attach and expandable", "[tools][trace_overview]") {
  {
    ExampleTrace t("exit_holding");
    auto out = t.run("trace_overview");
    const json* device = kind(out.structured, "device");
    REQUIRE(device != nullptr);
    CHECK((*device)["released_at_exit_bytes"] == 469762048);
    CHECK((*device)["live_bytes"] == 0);
  }
  {
    ExampleTrace t("attach");
    auto out = t.run("trace_overview", {{"limit", 3}});
    CHECK(out.structured["session"]["mode"] == "pid");
    CHECK(out.structured["processes"][0]["how_found"] == "pid");
    CHECK(out.structured["apis"].size() == 3);
    CHECK(out.structured["apis_more"].get<std::int64_t>() ==
          t.q("SELECT COUNT(DISTINCT api_id) FROM call_rows") - 3);
  }
  {
    ExampleTrace t("expandable");
    auto out = t.run("trace_overview");
    const json* physical = kind(out.structured, "vmm_physical");
    const json* reserved = kind(out.structured, "vmm_reserved");
    REQUIRE(physical != nullptr);
    REQUIRE(reserved != nullptr);
    CHECK((*physical)["released_at_exit_bytes"] == 67108864);  // what the allocator still held at the end
    CHECK((*reserved)["occupies_gpu_memory"] == false);
    CHECK((*api(out.structured, "cuMemCreate"))["failed"] == 1);
    CHECK((*api(out.structured, "cuMemCreate"))["bytes"] == 895483904);
  }
}

TEST_CASE("trace_overview: an unknown session names the sessions there are", "[tools][trace_overview]") {
  ExampleTrace t("leak");
  CHECK(t.error("trace_overview", {{"session_id", 7}}).find("sessions: 1") != std::string::npos);
}
