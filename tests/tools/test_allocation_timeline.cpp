// allocation_timeline on the shipped H100 traces: values at instants and peaks
// equal torch.cuda.memory_stats() at the same instants; downsampling never
// hides the peak; the SVG is well-formed; the PNG decodes and draws the curve
// where the data says.
#include <cairo.h>

#include <cstdint>
#include <memory>
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

// The big-endian 32-bit number at `offset` (PNG's byte order).
std::uint32_t be32(const std::string& bytes, std::size_t offset) {
  std::uint32_t v = 0;
  for (std::size_t i = 0; i < 4; ++i) v = v << 8 | static_cast<unsigned char>(bytes.at(offset + i));
  return v;
}

using Surface = std::unique_ptr<cairo_surface_t, decltype(&cairo_surface_destroy)>;

// The PNG decoded by cairo (from memory).
Surface decode_png(const std::string& png) {
  struct Reader {
    const std::string& bytes;
    std::size_t at = 0;
  } reader{png};
  auto read = [](void* closure, unsigned char* data, unsigned int length) {
    auto& r = *static_cast<Reader*>(closure);
    if (r.at + length > r.bytes.size()) return CAIRO_STATUS_READ_ERROR;
    std::copy_n(r.bytes.data() + r.at, length, data);
    r.at += length;
    return CAIRO_STATUS_SUCCESS;
  };
  return Surface(cairo_image_surface_create_from_png_stream(read, &reader), &cairo_surface_destroy);
}

// The topmost row of column x in [from, to) with ink (a channel darker than
// 200: the curves, antialiased edges included, not the white background), or -1.
int top_ink_row(cairo_surface_t* image, int x, int from, int to) {
  const unsigned char* pixels = cairo_image_surface_get_data(image);
  int stride = cairo_image_surface_get_stride(image);
  for (int y = from; y < to; ++y) {
    std::uint32_t p = *reinterpret_cast<const std::uint32_t*>(pixels + y * stride + x * 4);  // 0x(AA)RRGGBB
    if (((p >> 16) & 0xff) < 200 || ((p >> 8) & 0xff) < 200 || (p & 0xff) < 200) return y;
  }
  return -1;
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

  // The legend names each series as the text does: the allocator's memory on
  // device 0 and cuBLAS's workspace, whose calls named no device, apart.
  auto both = t.run("allocation_timeline", {{"image", "svg"}});
  const std::string& svg = both.images.at(0).data;
  CHECK(svg.find(">pid 476 dev 0 device<") != std::string::npos);
  CHECK(svg.find(">pid 476 dev ? device<") != std::string::npos);
  CHECK(both.text.find("pid 476 dev ? device:") != std::string::npos);

  CHECK(t.error("allocation_timeline", {{"pid", 999999}}).find("476") != std::string::npos);
  CHECK(t.error("allocation_timeline", {{"from_ms", 100}, {"to_ms", 50}}).find("to_ms") != std::string::npos);
  CHECK(t.error("allocation_timeline", {{"caller", "libnothing"}}).find("libc10_cuda.so") != std::string::npos);
  CHECK(t.error("allocation_timeline", {{"points", 1}}).find("points") != std::string::npos);
  CHECK(t.error("allocation_timeline", {{"image", "gif"}}).find("\"png\"") != std::string::npos);
}

TEST_CASE("allocation_timeline: PNG chart decodes and draws the curve where the data says", "[tools][allocation_timeline]") {
  ExampleTrace t("leak");
  // The leak's growth: from 40% of the peak up to it, a plateau, then the exit's drop to 0.
  auto out = t.run("allocation_timeline", {{"image", "png"}, {"points", 20}, {"from_ms", 15000}, {"to_ms", 17000}});
  REQUIRE(out.images.size() == 1);
  CHECK(out.images[0].mime_type == "image/png");
  const std::string& png = out.images[0].data;
  INFO("PNG of " << png.size() << " bytes");
  CHECK(png.size() < (1 << 20));  // the tool's bound
  REQUIRE(png.size() > 33);
  // Signature, then IHDR first: the size of the SVG it was drawn from.
  CHECK(png.substr(0, 8) == std::string("\x89PNG\r\n\x1a\n", 8));
  CHECK(png.substr(12, 4) == "IHDR");
  CHECK(be32(png, 16) == 640);
  CHECK(be32(png, 20) == 260);
  Surface image = decode_png(png);
  REQUIRE(cairo_surface_status(image.get()) == CAIRO_STATUS_SUCCESS);
  REQUIRE(cairo_image_surface_get_width(image.get()) == 640);
  REQUIRE(cairo_image_surface_get_height(image.get()) == 260);
  cairo_surface_flush(image.get());

  // The chart's plot area (svg_chart): x 70..630 over the window, y 230 (0 B) up to 24 (the largest value drawn,
  // the total's peak since every series is part of the total).
  const json& t_ms = out.structured["t_ms"];
  const json& total = out.structured["gpu_total"]["max_bytes"];
  REQUIRE(total.size() == 20);
  const double t0 = t_ms.front().get<double>(), t1 = t_ms.back().get<double>();
  const auto peak = static_cast<double>(max_of(total));
  auto x = [&](std::size_t i) { return 70 + (t_ms[i].get<double>() - t0) / (t1 - t0) * 560; };
  auto y = [&](std::size_t i) { return 230 - total[i].get<double>() / peak * 206; };
  // Each sample off the y axis (x = 70, drawn grey from the top down): the highest ink in its column is the
  // curve's point, within the 2 px stroke and antialiasing, plus how far a segment to a higher neighbour
  // climbs within the column. Rows from 20: under the legend's text.
  std::vector<int> top(total.size(), -1);
  for (std::size_t i = 1; i < total.size(); ++i) {
    int column = static_cast<int>(std::ceil(x(i))) - 1;  // the pixel column (c, c+1] holding x: the line ends at 630
    top[i] = top_ink_row(image.get(), column, 20, 235);
    double climb = 0;
    for (std::size_t n : {i - 1, std::min(i + 1, total.size() - 1)})
      if (n != i) climb = std::max(climb, (y(i) - y(n)) / (x(n) > x(i) ? x(n) - x(i) : x(i) - x(n)));
    INFO("sample " << i << ": " << total[i].get<std::int64_t>() << " B at column " << column << ", top ink row "
                   << top[i] << ", expected " << y(i) << " (climb " << climb << " px per column)");
    CHECK(top[i] >= 0);
    CHECK(std::abs(top[i] - y(i)) <= 2.5 + 1.5 * climb);
  }
  // The lowest sample before the plateau (40% of the peak) is drawn well below the peak.
  const std::size_t peak_at = 5, low_at = 1;
  REQUIRE(total[peak_at].get<double>() == peak);
  REQUIRE(total[low_at].get<double>() < 0.45 * peak);
  CHECK(top[low_at] > top[peak_at] + 100);
}
