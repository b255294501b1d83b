// allocation_timeline: outstanding bytes over time per process, device and
// kind, exact (step functions of the allocation lifetimes, tools/timeline_model.h),
// downsampled to N instants with the maximum between instants so that no peak
// hides between two points; the GPU-memory peak and the calls that made it;
// NVML's device view on the same instants; optionally a chart, as SVG or as
// PNG (the same SVG rasterized by librsvg: one drawing path).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <memory>
#include <mutex>
#include <tuple>

#include "tools/common.h"
#include "tools/svg_raster.h"
#include "tools/timeline_model.h"

namespace vs::tools {
namespace {

constexpr std::int64_t kDefaultPoints = 60;
constexpr std::int64_t kDefaultSeries = 8;
constexpr std::size_t kCallsAroundPeak = 5;
constexpr std::size_t kTextRows = 30;
// PNG bounds: the chart is 640x260 (about 15 KiB); these stop a future
// change to the SVG from sending clients a huge image.
constexpr double kMaxPngSide = 2048;
constexpr std::size_t kMaxPngBytes = 1 << 20;

struct SeriesKey {
  std::int64_t pid;
  std::optional<std::int64_t> device;
  std::string kind;
  auto operator<=>(const SeriesKey&) const = default;
};

// Sampled values of a step function at the grid's instants, and the maximum
// at any instant between consecutive ones.
struct Sampled {
  std::vector<std::int64_t> value, max;
};

Sampled sample(const StepFunction& f, const std::vector<std::int64_t>& grid_ns) {
  Sampled s;
  for (std::size_t i = 0; i < grid_ns.size(); ++i) {
    s.value.push_back(f.at(grid_ns[i]));
    s.max.push_back(i == 0 ? s.value.back() : f.max_over(grid_ns[i - 1], grid_ns[i]).first);
  }
  return s;
}

json sampled_json(const Sampled& s) { return {{"value_bytes", s.value}, {"max_bytes", s.max}}; }

// NVML samples as a step function (each sample holds until the next one);
// null before the first sample of the series.
json nvml_sampled(const std::vector<std::pair<std::int64_t, std::int64_t>>& samples,
                  const std::vector<std::int64_t>& grid_ns) {
  StepFunction f;
  f.steps = samples;
  json value = json::array(), max = json::array();
  std::int64_t first = samples.empty() ? kNever : samples.front().first;
  for (std::size_t i = 0; i < grid_ns.size(); ++i) {
    value.push_back(grid_ns[i] < first ? json(nullptr) : json(f.at(grid_ns[i])));
    if (i > 0 && grid_ns[i] >= first) max.push_back(f.max_over(std::max(grid_ns[i - 1], first - 1), grid_ns[i]).first);
    else max.push_back(value.back());
  }
  return {{"value_bytes", value}, {"max_bytes", max}, {"samples", samples.size()}};
}

struct PeakEvent {
  std::int64_t ts_ns;
  std::size_t lifetime;
  bool is_free;
};

// The allocation events (begin or end) nearest the peak, on both sides.
std::pair<std::vector<PeakEvent>, std::vector<PeakEvent>> events_around(const std::vector<Lifetime>& lifetimes,
                                                                        const std::vector<int>& counted,
                                                                        std::int64_t peak_ns, const Window& w) {
  std::vector<PeakEvent> before, after;
  for (std::size_t i = 0; i < lifetimes.size(); ++i) {
    if (counted[i] < 0) continue;
    for (bool is_free : {false, true}) {
      std::int64_t ts = is_free ? lifetimes[i].free_ns : lifetimes[i].alloc_ns;
      if (ts < w.from_ns || ts > w.to_ns) continue;
      (ts <= peak_ns ? before : after).push_back({ts, i, is_free});
    }
  }
  auto keep = [](std::vector<PeakEvent>& v, bool latest) {
    std::size_t n = std::min(v.size(), kCallsAroundPeak);
    std::partial_sort(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(n), v.end(), [&](const auto& a, const auto& b) {
      return latest ? a.ts_ns > b.ts_ns : a.ts_ns < b.ts_ns;
    });
    v.resize(n);
    if (latest) std::reverse(v.begin(), v.end());
  };
  keep(before, true);
  keep(after, false);
  return {before, after};
}

Result<json> describe_events(const store::TraceReader& db, const Session& session,
                             const std::vector<Lifetime>& lifetimes, const std::vector<PeakEvent>& events,
                             const std::map<std::int64_t, std::string>& callers) {
  std::map<std::int64_t, std::string> api_of;
  std::string ids;
  for (const auto& e : events) {
    const Lifetime& l = lifetimes[e.lifetime];
    auto call = e.is_free ? l.free_call_id : std::optional<std::int64_t>(l.alloc_call_id);
    if (call) ids += (ids.empty() ? "" : ",") + std::to_string(*call);
  }
  if (!ids.empty()) {
    // Call ids come from our own integers: building the IN list is safe. Primary-key lookups.
    Status st = db.query("SELECT c.id, a.name FROM call_rows c JOIN apis a ON a.id = c.api_id WHERE c.id IN (" + ids +
                             ")",
                         {}, [&](const store::Row& r) { api_of[r.i64(0)] = r.text(1); });
    if (!st) return Error{st.message()};
  }
  json out = json::array();
  for (const auto& e : events) {
    const Lifetime& l = lifetimes[e.lifetime];
    auto call = e.is_free ? l.free_call_id : std::optional<std::int64_t>(l.alloc_call_id);
    json j = {{"t_ms", round_ms(session.t_ms(e.ts_ns))},
              {"change_bytes", e.is_free ? -l.bytes : l.bytes},
              {"allocation_id", l.id},
              {"pid", l.pid},
              {"kind", l.kind}};
    j["call_id"] = call ? json(*call) : json(nullptr);
    j["api"] = call && api_of.count(*call) ? api_of[*call] : (l.released_at_exit ? "process exit" : "superseded");
    auto name = l.caller_id ? callers.find(*l.caller_id) : callers.end();
    j["library"] = name != callers.end() ? name->second : "";
    out.push_back(std::move(j));
  }
  return out;
}

std::string event_line(const json& e) {
  std::string call = e["call_id"].is_null() ? "" : "#" + std::to_string(e["call_id"].get<std::int64_t>()) + " ";
  std::int64_t change = e["change_bytes"].get<std::int64_t>();
  char t[32];
  std::snprintf(t, sizeof t, "t=%.1f ms", e["t_ms"].get<double>());
  return "    " + std::string(t) + " " + call + e["api"].get<std::string>() + " " + (change >= 0 ? "+" : "-") +
         fmt_bytes(std::llabs(change)) + " " + e["kind"].get<std::string>() + " pid " +
         std::to_string(e["pid"].get<std::int64_t>()) + " " + quote_untrusted(e["library"].get<std::string>(), 60) +
         " (allocation " + std::to_string(e["allocation_id"].get<std::int64_t>()) + ")\n";
}

// "pid 476 dev 0 device": a series as the text and the chart's legend name it
// (dev ? where no call of the series said which device).
std::string series_name(const json& s) {
  return "pid " + std::to_string(s["pid"].get<std::int64_t>()) + " dev " +
         (s["device"].is_null() ? std::string("?") : std::to_string(s["device"].get<std::int64_t>())) + " " +
         s["kind"].get<std::string>();
}

// A compact line chart of the GPU-memory total (bold) and up to 4 GPU-memory series,
// drawn through each bucket's maximum so that the peak shows.
std::string svg_chart(const json& result) {
  const double W = 640, H = 260, L = 70, R = 10, T = 24, B = 30;
  const auto& t = result["t_ms"];
  std::vector<std::pair<std::string, const json*>> lines;
  lines.emplace_back("all GPU memory", &result["gpu_total"]["max_bytes"]);
  for (const auto& s : result["series"])
    if (lines.size() < 5 && s["occupies_gpu_memory"].get<bool>())
      lines.emplace_back(series_name(s), &s["max_bytes"]);
  std::int64_t top = 1;
  for (const auto& line : lines)
    for (const auto& v : *line.second) top = std::max(top, v.get<std::int64_t>());
  double t0 = t.front().get<double>(), t1 = std::max(t.back().get<double>(), t0 + 1e-9);
  auto x = [&](double ms) { return L + (ms - t0) / (t1 - t0) * (W - L - R); };
  auto y = [&](double bytes) { return H - B - std::min(bytes / static_cast<double>(top), 1.05) * (H - T - B); };
  const char* colors[] = {"#000000", "#1f77b4", "#d62728", "#2ca02c", "#9467bd"};
  char buf[256];
  std::snprintf(buf, sizeof buf,
                "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" font-family=\"sans-serif\" "
                "font-size=\"11\">\n<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
                W, H);
  std::string svg = buf;
  std::snprintf(buf, sizeof buf,
                "<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"#888\"/>\n"
                "<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"#888\"/>\n",
                L, H - B, W - R, H - B, L, T, L, H - B);
  svg += buf;
  std::snprintf(buf, sizeof buf, "<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"end\">%s</text>\n", L - 4, T + 4,
                fmt_bytes(top).c_str());
  svg += buf;
  std::snprintf(buf, sizeof buf, "<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"end\">0 B</text>\n", L - 4, H - B);
  svg += buf;
  std::snprintf(buf, sizeof buf,
                "<text x=\"%.0f\" y=\"%.0f\">%.1f ms</text>\n<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"end\">%.1f "
                "ms</text>\n",
                L, H - 10, t0, W - R, H - 10, t1);
  svg += buf;
  double legend_x = L + 6;
  for (std::size_t k = 0; k < lines.size(); ++k) {
    svg += "<polyline fill=\"none\" stroke=\"" + std::string(colors[k]) + "\" stroke-width=\"" +
           (k == 0 ? "2" : "1") + "\" points=\"";
    const json& values = *lines[k].second;
    for (std::size_t i = 0; i < values.size(); ++i) {
      std::snprintf(buf, sizeof buf, "%.1f,%.1f ", x(t[i].get<double>()),
                    y(static_cast<double>(values[i].get<std::int64_t>())));
      svg += buf;
    }
    svg += "\"/>\n";
    std::snprintf(buf, sizeof buf, "<text x=\"%.0f\" y=\"%.0f\" fill=\"%s\">%s</text>\n", legend_x, 14.0,
                  colors[k], lines[k].first.c_str());
    svg += buf;
    legend_x += 6.5 * static_cast<double>(lines[k].first.size()) + 12;  // ~6.2 px a character at 11 px sans-serif
  }
  return svg + "</svg>\n";
}


Result<ToolOutput> run(const ToolInput& in) {
  auto session = resolve_session(in.db, in.args);
  if (!session) return session.error();
  auto window = resolve_window(*session, in.args);
  if (!window) return window.error();
  const Window& w = *window;
  if (w.to_ns <= w.from_ns)
    return Error{"the window is empty: to_ms must be after from_ms (the session lasts " +
                 std::to_string(static_cast<long long>(session->t_ms(session->end_ns))) + " ms)"};
  LifetimeFilter filter{w.from_ns, w.to_ns, arg_opt_int(in.args, "pid"), std::nullopt};
  if (filter.pid)
    if (Status st = require_pid(in.db, *session, *filter.pid); !st) return Error{st.message()};
  std::string caller = arg_string(in.args, "caller");
  if (!caller.empty()) {
    auto ids = callers_matching(in.db, *session, caller);
    if (!ids) return ids.error();
    filter.caller_ids = std::move(*ids);
  }
  auto lifetimes = load_lifetimes(in.db, *session, filter, in.progress);
  if (!lifetimes) return lifetimes.error();
  if (in.progress.stop_requested()) return Error{"cancelled"};
  auto callers = caller_names(in.db);
  if (!callers) return callers.error();

  // The series, and the GPU-memory total over every selected process.
  std::map<SeriesKey, int> index;
  std::vector<int> series_of, counted_in_total;
  for (const auto& l : *lifetimes) {
    auto [it, fresh] = index.try_emplace(SeriesKey{l.pid, l.device, l.kind}, static_cast<int>(index.size()));
    series_of.push_back(it->second);
    counted_in_total.push_back(occupies_gpu_memory(l.kind) ? 0 : -1);
  }
  auto steps = step_functions(*lifetimes, series_of, static_cast<int>(index.size()), w.from_ns, w.to_ns);
  StepFunction total = step_functions(*lifetimes, counted_in_total, 1, w.from_ns, w.to_ns)[0];

  const std::int64_t points = arg_int(in.args, "points", kDefaultPoints);
  std::vector<std::int64_t> grid;
  json t_ms = json::array();
  for (std::int64_t i = 0; i < points; ++i) {
    grid.push_back(w.from_ns + static_cast<std::int64_t>(static_cast<long double>(w.to_ns - w.from_ns) * i /
                                                         (points - 1)));
    t_ms.push_back(round_ms(session->t_ms(grid.back())));
  }

  json result;
  result["session_id"] = session->id;
  result["from_ms"] = round_ms(session->t_ms(w.from_ns));
  result["to_ms"] = round_ms(session->t_ms(w.to_ns));
  result["points"] = points;
  result["sampling"] =
      "value_bytes[i]: outstanding bytes at the instant t_ms[i]; max_bytes[i]: the highest value at any instant "
      "after t_ms[i-1] up to t_ms[i] (exact, from every allocation and free)";
  result["t_ms"] = t_ms;
  Sampled total_sampled = sample(total, grid);
  result["gpu_total"] = sampled_json(total_sampled);

  auto [peak_bytes, peak_ns] = total.max_over(w.from_ns - 1, w.to_ns);
  json peak = {{"bytes", peak_bytes}, {"t_ms", round_ms(session->t_ms(peak_ns))}};
  auto [before, after] = events_around(*lifetimes, counted_in_total, peak_ns, w);
  auto before_json = describe_events(in.db, *session, *lifetimes, before, *callers);
  if (!before_json) return before_json.error();
  auto after_json = describe_events(in.db, *session, *lifetimes, after, *callers);
  if (!after_json) return after_json.error();
  peak["calls_before"] = *before_json;
  peak["calls_after"] = *after_json;
  result["peak"] = peak;

  // Series ranked: GPU memory kinds, then host, then address space; larger peaks first.
  struct Ranked {
    const SeriesKey* key;
    int index;
    std::int64_t peak, peak_ns;
  };
  std::vector<Ranked> ranked;
  for (const auto& [key, i] : index) {
    auto [p, p_ns] = steps[i].max_over(w.from_ns - 1, w.to_ns);
    ranked.push_back({&key, i, p, p_ns});
  }
  std::sort(ranked.begin(), ranked.end(), [](const Ranked& a, const Ranked& b) {
    return std::tuple(kind_group(a.key->kind), -a.peak, a.key->pid) <
           std::tuple(kind_group(b.key->kind), -b.peak, b.key->pid);
  });
  const std::size_t limit = static_cast<std::size_t>(arg_int(in.args, "limit", kDefaultSeries));
  result["series"] = json::array();
  for (std::size_t k = 0; k < ranked.size() && k < limit; ++k) {
    const Ranked& r = ranked[k];
    const StepFunction& f = steps[r.index];
    json s = sampled_json(sample(f, grid));
    s["pid"] = r.key->pid;
    s["device"] = r.key->device ? json(*r.key->device) : json(nullptr);
    s["kind"] = r.key->kind;
    s["occupies_gpu_memory"] = occupies_gpu_memory(r.key->kind);
    s["start_bytes"] = f.at(w.from_ns);
    s["end_bytes"] = f.at(w.to_ns);
    s["peak_bytes"] = r.peak;
    s["peak_t_ms"] = round_ms(session->t_ms(r.peak_ns));
    result["series"].push_back(std::move(s));
  }
  result["series_more"] = ranked.size() > limit ? ranked.size() - limit : 0;

  // NVML's device view on the same instants (O(samples in the window)).
  std::map<std::int64_t, std::vector<std::pair<std::int64_t, std::int64_t>>> gpu_samples;
  std::map<std::pair<std::int64_t, std::int64_t>, std::vector<std::pair<std::int64_t, std::int64_t>>> proc_samples;
  // From the last sample at or before the window's start: it holds there.
  const std::string since = "COALESCE((SELECT MAX(ts_ns) FROM gpu_memory_samples WHERE session_id = ?1 AND ts_ns <= ?2), ?2)";
  Status st = in.db.query(
      "SELECT gpu_index, ts_ns, used_bytes FROM gpu_memory_samples WHERE session_id = ?1 AND ts_ns BETWEEN " + since +
          " AND ?3 ORDER BY gpu_index, ts_ns",
      {session->id, w.from_ns, w.to_ns},
      [&](const store::Row& r) { gpu_samples[r.i64(0)].emplace_back(r.i64(1), r.i64(2)); });
  if (!st) return Error{st.message()};
  std::string pid_sql = filter.pid ? " AND pid = " + std::to_string(*filter.pid) : "";
  st = in.db.query(
      "SELECT gpu_index, pid, ts_ns, used_bytes FROM gpu_process_samples WHERE session_id = ?1 AND ts_ns BETWEEN " +
          since + " AND ?3" + pid_sql + " ORDER BY gpu_index, pid, ts_ns",
      {session->id, w.from_ns, w.to_ns},
      [&](const store::Row& r) { proc_samples[{r.i64(0), r.i64(1)}].emplace_back(r.i64(2), r.i64(3)); });
  if (!st) return Error{st.message()};
  if (!gpu_samples.empty() || !proc_samples.empty()) {
    json nvml = {{"gpus", json::array()}, {"processes", json::array()}};
    for (const auto& [gpu, samples] : gpu_samples) {
      json g = nvml_sampled(samples, grid);
      g["gpu_index"] = gpu;
      nvml["gpus"].push_back(std::move(g));
    }
    for (const auto& [key, samples] : proc_samples) {
      json p = nvml_sampled(samples, grid);
      p["gpu_index"] = key.first;
      p["pid"] = key.second;
      nvml["processes"].push_back(std::move(p));
    }
    nvml["note"] =
        "NVML's used memory (what nvidia-smi shows), sampled: each sample holds until the next; null before the "
        "first. It includes CUDA context and driver memory that no allocation call shows; gpu_index is NVML's "
        "numbering, which can differ from CUDA's device ordinal.";
    result["nvml"] = std::move(nvml);
  } else {
    result["nvml"] = nullptr;
  }
  auto cov = coverage(in.db, *session);
  if (!cov) return cov.error();
  result["coverage"] = *cov;

  // Text: peak and its calls first, then the series, then the curve.
  std::string text = "allocation_timeline: session " + std::to_string(session->id) + ", t=" +
                     std::to_string(static_cast<long long>(result["from_ms"].get<double>())) + ".." +
                     std::to_string(static_cast<long long>(result["to_ms"].get<double>())) + " ms" +
                     (filter.pid ? ", pid " + std::to_string(*filter.pid) : "") +
                     (caller.empty() ? "" : ", caller " + quote_untrusted(caller, 60)) + "\n";
  char buf[256];
  std::snprintf(buf, sizeof buf,
                "peak GPU memory (device+async+managed+vmm_physical, selected processes): %s at t=%.1f ms\n",
                fmt_bytes(peak_bytes).c_str(), peak["t_ms"].get<double>());
  text += buf;
  if (!peak["calls_before"].empty()) text += "  allocation events up to the peak:\n";
  for (const auto& e : peak["calls_before"]) text += event_line(e);
  if (!peak["calls_after"].empty()) text += "  after it:\n";
  for (const auto& e : peak["calls_after"]) text += event_line(e);
  text += "series (pid, device, kind: start -> end, peak):\n";
  for (const auto& s : result["series"]) {
    std::snprintf(buf, sizeof buf, "  %s%s: %s -> %s, peak %s at t=%.1f ms\n", series_name(s).c_str(),
                  s["occupies_gpu_memory"].get<bool>() ? "" : " (not GPU memory)",
                  fmt_bytes(s["start_bytes"].get<std::int64_t>()).c_str(),
                  fmt_bytes(s["end_bytes"].get<std::int64_t>()).c_str(),
                  fmt_bytes(s["peak_bytes"].get<std::int64_t>()).c_str(), s["peak_t_ms"].get<double>());
    text += buf;
  }
  if (result["series_more"].get<std::size_t>() > 0)
    text += "  ... " + std::to_string(result["series_more"].get<std::size_t>()) + " series more (raise limit)\n";
  if (!result["nvml"].is_null())
    for (const auto& g : result["nvml"]["gpus"]) {
      std::int64_t hi = 0;
      for (const auto& v : g["max_bytes"])
        if (!v.is_null()) hi = std::max(hi, v.get<std::int64_t>());
      text += "NVML gpu " + std::to_string(g["gpu_index"].get<std::int64_t>()) + ": used up to " + fmt_bytes(hi) +
              " (includes CUDA context and driver memory)\n";
    }
  // The curve, merged to at most kTextRows rows (max over the merged points).
  std::size_t per_row = (grid.size() + kTextRows - 1) / kTextRows;
  text += "GPU memory curve (t_ms: value at the instant / max since the previous row):\n";
  for (std::size_t i = 0; i < grid.size(); i += per_row) {
    std::size_t last = std::min(i + per_row, grid.size()) - 1;
    std::int64_t hi = *std::max_element(total_sampled.max.begin() + static_cast<std::ptrdiff_t>(i),
                                        total_sampled.max.begin() + static_cast<std::ptrdiff_t>(last) + 1);
    std::snprintf(buf, sizeof buf, "  %10.1f  %s / %s\n", t_ms[last].get<double>(),
                  fmt_bytes(total_sampled.value[last]).c_str(), fmt_bytes(hi).c_str());
    text += buf;
  }

  ToolOutput out;
  if (std::string image = arg_string(in.args, "image", "none"); image == "svg") {
    out.images.push_back({"image/svg+xml", svg_chart(result)});
  } else if (image == "png") {
    auto png = png_from_svg(svg_chart(result), kMaxPngSide, kMaxPngBytes);
    if (!png) return png.error();
    out.images.push_back({"image/png", std::move(*png)});
  }
  out.text = bound_text(std::move(text), coverage_line(result["coverage"]));
  out.structured = std::move(result);
  return out;
}

}  // namespace

extern const ToolSpec kAllocationTimeline;
const ToolSpec kAllocationTimeline{
    "allocation_timeline", "Outstanding memory over time",
    "Use to see how much memory was held over time (per process, device and kind), when the peak was and which "
    "calls made it, next to NVML's device view. Narrow from_ms/to_ms to zoom in; image=png (or svg) adds a chart.",
    run};

}  // namespace vs::tools
