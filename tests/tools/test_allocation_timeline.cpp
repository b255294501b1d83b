// allocation_timeline on the shipped H100 traces: values at instants and peaks
// equal torch.cuda.memory_stats() at the same instants; downsampling never
// hides the peak; the SVG is well-formed.
#include <regex>
#include <vector>

#include "tests/tools/memory_tool_traces.h"

using nlohmann::json;
using vs::test::ExampleTrace;

namespace {

// The largest value of a curve (NVML's are null before the first sample).
std::int64_t max_of(const json& values) {
  std::int64_t m = 0;
  for (const auto& v : values)
    if (!v.is_null()) m = std::max(m, v.get<std::int64_t>());
  return m;
}

// Every tag is closed in order (enough to catch a broken hand-written SVG).
bool tags_balanced(const std::string& xml) {
  std::vector<std::string> open;
  std::regex tag("<(/?)([a-zA-Z]+)[^>]*?(/?)>");
  for (auto it = std::sregex_iterator(xml.begin(), xml.end(), tag); it != std::sregex_iterator(); ++it) {
    const auto& m = *it;
    if (m[3] == "/") continue;
    if (m[1] == "/") {
      if (open.empty() || open.back() != m[2]) return false;
      open.pop_back();
    } else {
      open.push_back(m[2]);
    }
  }
  return open.empty();
}

}  // namespace

TEST_CASE("allocation_timeline: the caching allocator's curve equals PyTorch's reserved bytes", "[tools][allocation_timeline]") {
  ExampleTrace t("empty_cache");
  // Each checkpoint sampled exactly: a two-point window starting at its instant.
  for (const auto& cp : t.stats["checkpoints"]) {
    INFO(cp["label"].get<std::string>());
    auto out = t.run("allocation_timeline", {{"caller", "libc10_cuda"}, {"from_ms", t.t_ms(cp)}, {"to_ms", t.t_ms(cp) + 0.001}, {"points", 2}});
    CHECK(out.structured["gpu_total"]["value_bytes"][0] == cp["reserved_bytes.all.current"]);
  }
  // The peak over the whole session is PyTorch's reserved peak, whatever the number of points.
  const auto peak = t.checkpoint("end")["reserved_bytes.all.peak"].get<std::int64_t>();
  REQUIRE(peak == 912261120);
  for (int points : {2, 7, 60, 500}) {
    auto out = t.run("allocation_timeline", {{"caller", "libc10_cuda"}, {"points", points}});
    INFO(points);
    CHECK(out.structured["peak"]["bytes"] == peak);
    CHECK(max_of(out.structured["gpu_total"]["max_bytes"]) == peak);
    CHECK(out.structured["t_ms"].size() == static_cast<std::size_t>(points));
    CHECK(out.structured["series"][0]["peak_bytes"] == peak);
  }
}

TEST_CASE("allocation_timeline: the peak's calls, other libraries, NVML alongside", "[tools][allocation_timeline]") {
  ExampleTrace t("empty_cache");
  auto out = t.run("allocation_timeline");
  const json& s = out.structured;
  // All libraries: the allocator's peak plus cuBLAS's workspace (67,240,960 B) and cuDNN's 25,348 B.
  CHECK(s["peak"]["bytes"].get<std::int64_t>() ==
        t.q("SELECT MAX(v) FROM (SELECT SUM(bytes) AS v FROM allocations a, (SELECT alloc_ts_ns AS t FROM allocations) p "
            "WHERE a.kind = 'device' AND a.alloc_ts_ns <= p.t AND (a.free_ts_ns IS NULL OR a.free_ts_ns > p.t) GROUP BY p.t)"));
  const json& before = s["peak"]["calls_before"];
  REQUIRE_FALSE(before.empty());
  // The last event before the peak is the allocation that reached it, and its ids are real.
  const json& last = before.back();
  CHECK(last["change_bytes"].get<std::int64_t>() > 0);
  CHECK(t.q("SELECT alloc_call_id FROM allocations WHERE id = ?", {last["allocation_id"].get<std::int64_t>()}) ==
        last["call_id"].get<std::int64_t>());
  CHECK(last["t_ms"] == s["peak"]["t_ms"]);
  REQUIRE_FALSE(s["nvml"].is_null());
  CHECK(s["nvml"]["gpus"][0]["samples"].get<std::int64_t>() == t.q("SELECT COUNT(*) FROM gpu_memory_samples"));
  CHECK(s["nvml"]["processes"][0]["pid"] == t.q("SELECT pid FROM processes"));
  // NVML sees more than the allocation calls (CUDA context): at the peak's sample at least the peak.
  CHECK(max_of(s["nvml"]["gpus"][0]["max_bytes"]) > s["peak"]["bytes"].get<std::int64_t>());
  CHECK(out.text.find("peak GPU memory") < out.text.find("series"));
}

TEST_CASE("allocation_timeline: expandable segments count physical memory, not address space", "[tools][allocation_timeline]") {
  ExampleTrace t("expandable");
  auto out = t.run("allocation_timeline", {{"caller", "libc10_cuda"}});
  const auto peak = t.checkpoint("end")["reserved_bytes.all.peak"].get<std::int64_t>();
  CHECK(peak == 887095296);
  CHECK(out.structured["peak"]["bytes"] == peak);
  bool saw_reserved = false;
  for (const auto& s : out.structured["series"]) {
    if (s["kind"] == "vmm_physical") CHECK(s["peak_bytes"] == peak);
    if (s["kind"] == "vmm_reserved") {
      saw_reserved = true;
      CHECK_FALSE(s["occupies_gpu_memory"].get<bool>());
      CHECK(s["peak_bytes"] == 191295913984);
    }
  }
  CHECK(saw_reserved);
  // Address space is listed after GPU memory.
  CHECK(out.structured["series"][0]["occupies_gpu_memory"] == true);
}

TEST_CASE("allocation_timeline: SVG chart, limits and errors", "[tools][allocation_timeline]") {
  ExampleTrace t("leak");
  auto out = t.run("allocation_timeline", {{"image", "svg"}, {"limit", 1}, {"points", 500}});
  REQUIRE(out.images.size() == 1);
  CHECK(out.images[0].mime_type == "image/svg+xml");
  CHECK(out.images[0].data.rfind("<svg", 0) == 0);
  CHECK(tags_balanced(out.images[0].data));
  CHECK(out.structured["series"].size() == 1);
  CHECK(out.structured["series_more"].get<int>() >= 1);
  CHECK(out.structured["peak"]["bytes"] == 2348810240 + 67240960 + 25344 + 4);  // allocator + cuBLAS + cuDNN device
  CHECK(t.run("allocation_timeline").images.empty());

  CHECK(t.error("allocation_timeline", {{"pid", 999999}}).find("476") != std::string::npos);
  CHECK(t.error("allocation_timeline", {{"from_ms", 100}, {"to_ms", 50}}).find("to_ms") != std::string::npos);
  CHECK(t.error("allocation_timeline", {{"caller", "libnothing"}}).find("libc10_cuda.so") != std::string::npos);
  CHECK(t.error("allocation_timeline", {{"points", 1}}).find("points") != std::string::npos);
}
