// leak_candidates: does outstanding memory grow, per process, kind and calling
// library? A verdict judged on the process's calls, not on time
// (tools/growth_model.h, the same as findings' leak_growth), with its
// thresholds stated; for reading, a least-squares line through the exact step
// function (tools/timeline_model.h), growth per iteration between occurrences
// of a marker API, and the allocation sizes that were made and never freed.
#include <algorithm>
#include <cstdio>
#include <map>
#include <tuple>

#include "tools/common.h"
#include "tools/growth_model.h"
#include "tools/timeline_model.h"

namespace vs::tools {
namespace {

constexpr std::int64_t kDefaultMinGrowthBytes = 1 << 20;
constexpr double kMinGrowthPctOfPeak = 10;  // net growth below this share of the peak is noise
constexpr std::int64_t kDefaultLimit = 10;
constexpr std::size_t kPatternsPerSeries = 5;

struct SeriesKey {
  std::int64_t pid;
  std::string kind;
  std::optional<std::int64_t> caller_id;
  auto operator<=>(const SeriesKey&) const = default;
};

struct Pattern {
  std::int64_t size_bytes = 0, count = 0;
  std::int64_t first_id = 0, last_id = 0, first_ns = kNever, last_ns = 0;
};

struct Analysis {
  const SeriesKey* key = nullptr;
  GrowthVerdict verdict;
  std::int64_t start_bytes = 0, end_bytes = 0, peak_bytes = 0, peak_ns = 0;
  std::int64_t end_released_at_exit_bytes = 0;
  std::int64_t fit_from_ns = 0, fit_to_ns = 0;
  LinearFit fit;
  std::int64_t allocations = 0, frees = 0;
  json iterations = nullptr;
  std::map<std::int64_t, Pattern> unfreed;  // by size

  std::int64_t growth() const { return end_bytes - start_bytes; }
};

int class_rank(const std::string& c) { return c == "growing" ? 0 : c == "undecided" ? 1 : c == "plateau" ? 2 : 3; }

std::string pct(double v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%.0f%%", v);
  return buf;
}

// Growth between consecutive marker occurrences of the series' process.
json iterations_json(const StepFunction& f, const std::vector<std::int64_t>& markers, const std::string& api) {
  std::vector<std::int64_t> deltas;
  std::int64_t first = 0, last = 0;
  for (std::size_t i = 0; i < markers.size(); ++i) {
    std::int64_t v = f.at(markers[i]);
    if (i == 0) first = v;
    else deltas.push_back(v - last);
    last = v;
  }
  if (deltas.empty()) return nullptr;
  std::int64_t grown = std::count_if(deltas.begin(), deltas.end(), [](std::int64_t d) { return d > 0; });
  auto mid = deltas.begin() + static_cast<std::ptrdiff_t>(deltas.size() / 2);
  std::nth_element(deltas.begin(), mid, deltas.end());
  return {{"marker_api", api},
          {"markers", markers.size()},
          {"iterations", deltas.size()},
          {"grown_iterations", grown},
          {"growth_per_iteration_bytes", (last - first) / static_cast<std::int64_t>(deltas.size())},
          {"median_growth_per_iteration_bytes", *mid},
          {"first_marker_bytes", first},
          {"last_marker_bytes", last}};
}

json analysis_json(const Analysis& a, const Session& session, const std::map<std::int64_t, std::string>& callers) {
  auto name = a.key->caller_id ? callers.find(*a.key->caller_id) : callers.end();
  std::vector<const Pattern*> patterns;
  for (const auto& [size, p] : a.unfreed) patterns.push_back(&p);
  std::sort(patterns.begin(), patterns.end(), [](const Pattern* x, const Pattern* y) {
    return x->size_bytes * x->count > y->size_bytes * y->count;
  });
  json unfreed = json::array();
  for (std::size_t i = 0; i < patterns.size() && i < kPatternsPerSeries; ++i) {
    const Pattern& p = *patterns[i];
    json ids = {p.first_id};
    if (p.last_id != p.first_id) ids.push_back(p.last_id);
    unfreed.push_back({{"size_bytes", p.size_bytes},
                       {"count", p.count},
                       {"bytes", p.size_bytes * p.count},
                       {"first_t_ms", round_ms(session.t_ms(p.first_ns))},
                       {"last_t_ms", round_ms(session.t_ms(p.last_ns))},
                       {"example_allocation_ids", ids}});
  }
  const double span_s = static_cast<double>(a.fit_to_ns - a.fit_from_ns) / 1e9;
  return {{"pid", a.key->pid},
          {"kind", a.key->kind},
          {"library", name != callers.end() ? name->second : ""},
          {"occupies_gpu_memory", occupies_gpu_memory(a.key->kind)},
          {"classification", a.verdict.verdict},
          {"reason", a.verdict.reason},
          {"start_bytes", a.start_bytes},
          {"end_bytes", a.end_bytes},
          {"growth_bytes", a.growth()},
          {"peak_bytes", a.peak_bytes},
          {"peak_t_ms", round_ms(session.t_ms(a.peak_ns))},
          {"end_released_at_exit_bytes", a.end_released_at_exit_bytes},
          {"fit_from_ms", round_ms(session.t_ms(a.fit_from_ns))},
          {"fit_to_ms", round_ms(session.t_ms(a.fit_to_ns))},
          {"slope_bytes_per_s", std::round(a.fit.slope_bytes_per_s)},
          {"r2", std::round(a.fit.r2 * 1000) / 1000},
          {"fitted_growth_bytes", std::llround(a.fit.slope_bytes_per_s * span_s)},
          {"allocations", a.allocations},
          {"frees", a.frees},
          {"new_highs", a.verdict.new_highs},
          {"activity",
           {{"calls", a.verdict.calls},
            {"teardown_calls", a.verdict.teardown_calls},
            {"episodes", a.verdict.episodes},
            {"calls_since_last_high", a.verdict.calls_since_last_high},
            {"longest_recent_wait_calls", a.verdict.longest_recent_wait_calls},
            {"calls_to_decide", a.verdict.calls_to_decide}}},
          {"iterations", a.iterations},
          {"never_freed_patterns", unfreed},
          {"never_freed_patterns_more", patterns.size() > kPatternsPerSeries ? patterns.size() - kPatternsPerSeries : 0}};
}

std::string analysis_text(const json& c) {
  char buf[400];
  std::string cls = c["classification"].get<std::string>();
  std::transform(cls.begin(), cls.end(), cls.begin(), [](char ch) { return static_cast<char>(std::toupper(ch)); });
  std::snprintf(buf, sizeof buf,
                "%s pid %lld %s %s: %s%s (%s -> %s, peak %s), %s/s over t=%.1f..%.1f ms; %lld allocs, %lld frees; "
                "%s\n",
                cls.c_str(), static_cast<long long>(c["pid"].get<std::int64_t>()), c["kind"].get<std::string>().c_str(),
                quote_untrusted(c["library"].get<std::string>(), 60).c_str(),
                c["growth_bytes"].get<std::int64_t>() >= 0 ? "+" : "-",
                fmt_bytes(std::llabs(c["growth_bytes"].get<std::int64_t>())).c_str(),
                fmt_bytes(c["start_bytes"].get<std::int64_t>()).c_str(),
                fmt_bytes(c["end_bytes"].get<std::int64_t>()).c_str(),
                fmt_bytes(c["peak_bytes"].get<std::int64_t>()).c_str(),
                fmt_bytes(static_cast<std::int64_t>(c["slope_bytes_per_s"].get<double>())).c_str(),
                c["fit_from_ms"].get<double>(), c["fit_to_ms"].get<double>(),
                static_cast<long long>(c["allocations"].get<std::int64_t>()),
                static_cast<long long>(c["frees"].get<std::int64_t>()), c["reason"].get<std::string>().c_str());
  std::string text = buf;
  if (c["classification"] == "steady") return text;
  if (c["classification"] == "undecided")
    text += "  to decide: " + std::to_string(c["activity"]["calls_to_decide"].get<std::int64_t>()) +
            " more calls of the process without a new high would make it a plateau, growth at its rhythm would "
            "make it growing: trace longer\n";
  if (const auto& it = c["iterations"]; !it.is_null()) {
    std::snprintf(buf, sizeof buf, "  per %s interval: %s mean, %s median, grew in %lld of %lld\n",
                  it["marker_api"].get<std::string>().c_str(),
                  fmt_bytes(it["growth_per_iteration_bytes"].get<std::int64_t>()).c_str(),
                  fmt_bytes(it["median_growth_per_iteration_bytes"].get<std::int64_t>()).c_str(),
                  static_cast<long long>(it["grown_iterations"].get<std::int64_t>()),
                  static_cast<long long>(it["iterations"].get<std::int64_t>()));
    text += buf;
  }
  if (c["end_released_at_exit_bytes"].get<std::int64_t>() > 0)
    text += "  " + fmt_bytes(c["end_released_at_exit_bytes"].get<std::int64_t>()) +
            " of the end value was held until the process exited (released by the driver, never freed by a call)\n";
  for (const auto& p : c["never_freed_patterns"]) {
    std::snprintf(buf, sizeof buf, "  never freed: %s x %lld = %s, t=%.1f..%.1f ms, e.g. allocation %lld\n",
                  fmt_bytes(p["size_bytes"].get<std::int64_t>()).c_str(),
                  static_cast<long long>(p["count"].get<std::int64_t>()), fmt_bytes(p["bytes"].get<std::int64_t>()).c_str(),
                  p["first_t_ms"].get<double>(), p["last_t_ms"].get<double>(),
                  static_cast<long long>(p["example_allocation_ids"][0].get<std::int64_t>()));
    text += buf;
  }
  return text;
}

// Marker instants per pid: every call of the marker API in the window
// (O(marker calls) through call_rows(api_id, ts_ns)).
Result<std::map<std::int64_t, std::vector<std::int64_t>>> marker_instants(const store::TraceReader& db,
                                                                          const Session& session, const Window& w,
                                                                          const std::string& api) {
  std::optional<std::int64_t> api_id;
  Status st = db.query("SELECT id FROM apis WHERE name = ?", {api}, [&](const store::Row& r) { api_id = r.i64(0); });
  if (!st) return Error{st.message()};
  std::map<std::int64_t, std::vector<std::int64_t>> markers;
  if (api_id) {
    st = db.query("SELECT pid, ts_ns FROM call_rows WHERE api_id = ? AND ts_ns BETWEEN ? AND ? AND session_id = ? "
                  "ORDER BY ts_ns",
                  {*api_id, w.from_ns, w.to_ns, session.id},
                  [&](const store::Row& r) { markers[r.i64(0)].push_back(r.i64(1)); });
    if (!st) return Error{st.message()};
  }
  if (!markers.empty()) return markers;
  // Name the APIs that repeat in the session (O(calls): only on this error path).
  std::string repeating;
  st = db.query("SELECT a.name, COUNT(*) AS n FROM call_rows c JOIN apis a ON a.id = c.api_id "
                "WHERE c.session_id = ? GROUP BY a.name HAVING n >= 3 ORDER BY n DESC LIMIT 12",
                {session.id}, [&](const store::Row& r) {
                  repeating += (repeating.empty() ? "" : ", ") + r.text(0) + " (" + std::to_string(r.i64(1)) + ")";
                });
  if (!st) return Error{st.message()};
  return Error{"marker_api " + clean_untrusted(api, 80) + " has no calls in this window; APIs that repeat here: " +
               (repeating.empty() ? "none" : repeating) + " (or leave marker_api out)"};
}

Result<ToolOutput> run(const ToolInput& in) {
  auto session = resolve_session(in.db, in.args);
  if (!session) return session.error();
  auto window = resolve_window(*session, in.args);
  if (!window) return window.error();
  const Window& w = *window;
  LifetimeFilter filter{w.from_ns, w.to_ns, arg_opt_int(in.args, "pid"), std::nullopt};
  if (filter.pid)
    if (Status st = require_pid(in.db, *session, *filter.pid); !st) return Error{st.message()};
  std::string caller = arg_string(in.args, "caller");
  if (!caller.empty()) {
    auto ids = callers_matching(in.db, *session, caller);
    if (!ids) return ids.error();
    filter.caller_ids = std::move(*ids);
  }
  std::string marker_api = arg_string(in.args, "marker_api");
  std::map<std::int64_t, std::vector<std::int64_t>> markers;
  if (!marker_api.empty()) {
    auto m = marker_instants(in.db, *session, w, marker_api);
    if (!m) return m.error();
    markers = std::move(*m);
  }
  const std::int64_t min_growth_bytes = arg_int(in.args, "min_growth_bytes", kDefaultMinGrowthBytes);
  auto lifetimes = load_lifetimes(in.db, *session, filter, in.progress);
  if (!lifetimes) return lifetimes.error();
  auto spans = process_spans(in.db, *session);
  if (!spans) return spans.error();
  auto callers = caller_names(in.db);
  if (!callers) return callers.error();
  auto activity_index = ActivityIndex::load(in.db, *session, filter.pid);
  if (!activity_index) return activity_index.error();
  activity_index->number(*lifetimes);

  std::map<SeriesKey, int> index;
  std::vector<int> series_of;
  for (const auto& l : *lifetimes)
    series_of.push_back(index.try_emplace(SeriesKey{l.pid, l.kind, l.caller_id}, static_cast<int>(index.size()))
                            .first->second);
  auto steps = step_functions(*lifetimes, series_of, static_cast<int>(index.size()), w.from_ns, w.to_ns);

  // Each series is fitted from its first change in the window (or the window's
  // start when it already held memory there) to the window's end or its
  // process's exit, whichever is first.
  std::vector<Analysis> analyses(index.size());
  for (const auto& [key, i] : index) {
    Analysis& a = analyses[i];
    const StepFunction& f = steps[i];
    a.key = &key;
    auto span = spans->find(key.pid);
    std::optional<std::int64_t> exit_ns = span != spans->end() ? span->second.exit_ns : std::nullopt;
    bool exits_in_window = exit_ns && *exit_ns <= w.to_ns;
    a.fit_to_ns = exits_in_window ? *exit_ns : w.to_ns;
    a.fit_from_ns = f.initial != 0 || !f.first_change_ns() ? w.from_ns : *f.first_change_ns();
    a.fit_from_ns = std::min(a.fit_from_ns, a.fit_to_ns);
    a.start_bytes = f.initial;
    // At an exit the driver releases everything at that instant: the end value is the one just before.
    a.end_bytes = f.at(exits_in_window ? a.fit_to_ns - 1 : a.fit_to_ns);
    std::tie(a.peak_bytes, a.peak_ns) = f.max_over(w.from_ns - 1, a.fit_to_ns - (exits_in_window ? 1 : 0));
    a.fit = fit_line(f, a.fit_from_ns, a.fit_to_ns);
    if (auto m = markers.find(key.pid); m != markers.end()) {
      std::vector<std::int64_t> inside;
      for (auto ts : m->second)
        if (ts < a.fit_to_ns) inside.push_back(ts);
      a.iterations = iterations_json(f, inside, marker_api);
    }
  }
  for (std::size_t k = 0; k < lifetimes->size(); ++k) {
    if (k % 65536 == 0 && in.progress.stop_requested()) return Error{"cancelled"};
    const Lifetime& l = (*lifetimes)[k];
    Analysis& a = analyses[series_of[k]];
    bool allocated_here = l.alloc_ns > w.from_ns && l.alloc_ns <= a.fit_to_ns;
    bool freed_by_call_here = !l.released_at_exit && l.free_ns <= a.fit_to_ns;
    a.allocations += allocated_here;
    a.frees += freed_by_call_here && l.free_call_id.has_value();
    if (l.released_at_exit && l.alloc_ns < a.fit_to_ns && l.free_ns >= a.fit_to_ns)
      a.end_released_at_exit_bytes += l.bytes;
    if (allocated_here && !freed_by_call_here) {
      Pattern& p = a.unfreed[l.bytes];
      p.size_bytes = l.bytes;
      if (p.count++ == 0) p.first_id = l.id;
      p.last_id = l.id;
      p.first_ns = std::min(p.first_ns, l.alloc_ns);
      p.last_ns = std::max(p.last_ns, l.alloc_ns);
    }
  }
  // The verdict: each series along its process's calls in the window (up to the exit), the activity read once
  // per process.
  std::map<std::int64_t, Activity> activities;
  std::vector<std::vector<const Lifetime*>> members(index.size());
  for (std::size_t k = 0; k < lifetimes->size(); ++k) members[series_of[k]].push_back(&(*lifetimes)[k]);
  for (const auto& [key, i] : index) {
    Analysis& a = analyses[i];
    auto act = activities.find(key.pid);
    if (act == activities.end()) {
      auto loaded = activity_index->activity(key.pid, w.from_ns, a.fit_to_ns);
      if (!loaded) return loaded.error();
      act = activities.emplace(key.pid, *loaded).first;
    }
    const auto threshold = std::max(
        min_growth_bytes, static_cast<std::int64_t>(static_cast<double>(a.peak_bytes) * kMinGrowthPctOfPeak / 100));
    a.verdict = judge_growth(call_level(members[i], act->second.first_seq), act->second, threshold);
  }
  std::sort(analyses.begin(), analyses.end(), [](const Analysis& x, const Analysis& y) {
    return std::tuple(class_rank(x.verdict.verdict), kind_group(x.key->kind), -x.growth(), *x.key) <
           std::tuple(class_rank(y.verdict.verdict), kind_group(y.key->kind), -y.growth(), *y.key);
  });

  const std::size_t limit = static_cast<std::size_t>(arg_int(in.args, "limit", kDefaultLimit));
  json result;
  result["session_id"] = session->id;
  result["from_ms"] = round_ms(session->t_ms(w.from_ns));
  result["to_ms"] = round_ms(session->t_ms(w.to_ns));
  result["pid"] = filter.pid ? json(*filter.pid) : json(nullptr);
  using G = GrowthRules;
  result["thresholds"] = {{"min_growth_bytes", min_growth_bytes},
                          {"min_growth_pct_of_peak", kMinGrowthPctOfPeak},
                          {"min_end_pct_of_high", G::kMinEndPctOfHigh},
                          {"min_episodes", G::kMinEpisodes},
                          {"growing_factor", G::kGrowingFactor},
                          {"plateau_factor", G::kPlateauFactor},
                          {"recent_waits", G::kRecentWaits},
                          {"min_flat_calls", G::kMinFlatCalls}};
  result["rule"] = "the threshold is max(min_growth_bytes, min_growth_pct_of_peak of the series' peak); " +
                   growth_rule_text() + ". The slope, R² and marker iterations are for reading, not for the verdict.";
  std::map<std::string, std::int64_t> counts;
  result["candidates"] = json::array();
  for (std::size_t i = 0; i < analyses.size(); ++i) {
    ++counts[analyses[i].verdict.verdict];
    if (i < limit) result["candidates"].push_back(analysis_json(analyses[i], *session, *callers));
  }
  result["candidates_more"] = analyses.size() > limit ? analyses.size() - limit : 0;
  result["counts"] = {{"growing", counts["growing"]},
                      {"undecided", counts["undecided"]},
                      {"plateau", counts["plateau"]},
                      {"steady", counts["steady"]}};
  auto cov = coverage(in.db, *session);
  if (!cov) return cov.error();
  result["coverage"] = *cov;

  std::string text = "leak_candidates: session " + std::to_string(session->id) + ", t=" +
                     std::to_string(static_cast<long long>(result["from_ms"].get<double>())) + ".." +
                     std::to_string(static_cast<long long>(result["to_ms"].get<double>())) + " ms" +
                     (marker_api.empty() ? "" : ", iterations between " + marker_api + " calls") + ": " +
                     std::to_string(counts["growing"]) + " growing, " + std::to_string(counts["undecided"]) +
                     " undecided, " + std::to_string(counts["plateau"]) + " plateau, " +
                     std::to_string(counts["steady"]) + " steady (pid, kind, calling library)\n";
  for (const auto& c : result["candidates"]) text += analysis_text(c);
  if (result["candidates_more"].get<std::size_t>() > 0)
    text += "... " + std::to_string(result["candidates_more"].get<std::size_t>()) + " series more (raise limit)\n";
  text += "rule: threshold max(" + fmt_bytes(min_growth_bytes) + ", " + pct(kMinGrowthPctOfPeak) + " of peak); " +
          growth_rule_text() + "\n";

  ToolOutput out;
  out.text = bound_text(std::move(text), coverage_line(result["coverage"]));
  out.structured = std::move(result);
  return out;
}

}  // namespace

extern const ToolSpec kLeakCandidates;
const ToolSpec kLeakCandidates{
    "leak_candidates", "Growing memory (leak candidates)",
    "Use when memory may be leaking: per process, kind and calling library it fits the growth of outstanding bytes, "
    "says growing vs plateau vs steady (or undecided, with how many more calls would decide) from the process's "
    "calls, not from time, with the thresholds used, and lists the allocation sizes never freed. Pass "
    "marker_api (a call made once per request or iteration) for growth per iteration.",
    run};

}  // namespace vs::tools
