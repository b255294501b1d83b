// compare_sessions: two sessions of one trace file side by side (before and
// after a fix, two configurations), every measure as a, b, delta and ratio,
// ranked by how much it changed.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <utility>
#include <vector>

#include "tools/api_stats.h"

namespace vs::tools {
namespace {

// One session's measures, by metric name; the name ends with its unit.
struct Profile {
  Session session;
  json coverage;
  json summary;
  std::map<std::string, double> metrics;
};

Result<Profile> profile(const store::TraceReader& db, std::int64_t session_id) {
  auto session = resolve_session(db, json{{"session_id", session_id}});
  if (!session) return session.error();
  auto cov = coverage(db, *session);
  if (!cov) return cov.error();
  Profile p{*session, *cov, json::object(), {}};
  auto& m = p.metrics;
  Status st;
  auto query = [&](const std::string& sql, const std::function<void(const store::Row&)>& fn) {
    if (st.ok()) st = db.query(sql, {session_id}, fn);
  };
  auto apis = load_apis(db);
  if (!apis) return apis.error();
  auto stats = per_api_stats(db, p.session, *apis);
  if (!stats) return stats.error();
  std::int64_t calls = 0;
  // Calls not nested in another traced call: their time is the program's, counted once.
  std::int64_t top_level_ns = 0, top_level_off_cpu_ns = 0, top_level_runq_ns = 0, top_level_failed = 0;
  for (const auto& [api_id, s] : *stats) {
    const std::string api = "api." + (*apis)[api_id].name;
    m[api + ".calls"] = static_cast<double>(s.calls);
    m[api + ".p50_ns"] = static_cast<double>(s.p50_ns);
    m[api + ".p99_ns"] = static_cast<double>(s.p99_ns);
    m[api + ".total_ns"] = static_cast<double>(s.total_ns);
    calls += s.calls;
    top_level_ns += s.top_level_ns;
    top_level_off_cpu_ns += s.top_level_off_cpu_ns;
    top_level_runq_ns += s.top_level_runq_ns;
    top_level_failed += s.top_level_failed;
  }
  const auto dur = static_cast<double>(top_level_ns);
  m["calls.off_cpu_pct"] = dur > 0 ? 100.0 * static_cast<double>(top_level_off_cpu_ns) / dur : 0;
  m["calls.runq_pct"] = dur > 0 ? 100.0 * static_cast<double>(top_level_runq_ns) / dur : 0;
  m["calls.errors"] = static_cast<double>(top_level_failed);
  // Per kind, one pass over the allocations: counts, bytes by how they ended, and the peak outstanding
  // bytes (a running sum over allocation and release events, releases first at equal times so that a
  // free-then-reuse is not a peak). In C++: SQL's window function took 0.7 s for 100 k allocations.
  struct KindTotals {
    std::int64_t allocations = 0, allocated = 0, freed = 0, outstanding = 0, released_at_exit = 0;
    std::vector<std::pair<std::int64_t, std::int64_t>> events;  // (ts_ns, +/- bytes)
  };
  std::map<std::string, KindTotals> kinds;
  query("SELECT kind, bytes, alloc_ts_ns, free_ts_ns, COALESCE(end_reason, '') FROM allocations WHERE session_id = ?",
        [&](const store::Row& r) {
          KindTotals& k = kinds[r.text(0)];
          const std::int64_t bytes = r.i64(1);
          const std::string end_reason = r.text(4);
          ++k.allocations;
          k.allocated += bytes;
          if (end_reason == "freed") k.freed += bytes;
          else if (end_reason.empty()) k.outstanding += bytes;
          else if (end_reason == "process_exit") k.released_at_exit += bytes;
          k.events.emplace_back(r.i64(2), bytes);
          if (!r.is_null(3)) k.events.emplace_back(r.i64(3), -bytes);
        });
  for (auto& [kind, k] : kinds) {
    std::sort(k.events.begin(), k.events.end());
    std::int64_t outstanding = 0, peak = std::numeric_limits<std::int64_t>::min();
    for (const auto& [ts, delta] : k.events) peak = std::max(peak, outstanding += delta);
    const std::string name = "memory." + kind;
    m[name + ".allocations"] = static_cast<double>(k.allocations);
    m[name + ".allocated_bytes"] = static_cast<double>(k.allocated);
    m[name + ".freed_bytes"] = static_cast<double>(k.freed);
    m[name + ".outstanding_at_end_bytes"] = static_cast<double>(k.outstanding);
    m[name + ".released_at_exit_bytes"] = static_cast<double>(k.released_at_exit);
    m[name + ".peak_outstanding_bytes"] = static_cast<double>(peak);
  }
  if (!st) return Error{st.message()};
  m["session.duration_ms"] = p.session.t_ms(p.session.end_ns);
  m["session.calls"] = static_cast<double>(calls);
  m["session.processes"] = static_cast<double>(p.coverage["processes"].get<std::int64_t>());
  m["session.lost_calls"] =
      static_cast<double>(p.coverage["call_drops"].get<std::int64_t>() + p.coverage["unrecorded_calls"].get<std::int64_t>());
  p.summary = {{"session_id", session_id},
               {"command", p.session.command.empty() ? json(nullptr) : json(clean_untrusted(p.session.command))},
               {"mode", p.session.mode},
               {"status", p.session.status},
               {"duration_ms", m["session.duration_ms"]},
               {"calls", calls}};
  return p;
}

// How much a metric changed, in [0, 1]: 1 when it appeared, vanished or changed sign.
double relative_change(std::optional<double> a, std::optional<double> b) {
  if (!a || !b) return 1;
  double scale = std::max(std::fabs(*a), std::fabs(*b));
  return scale == 0 ? 0 : std::fabs(*b - *a) / scale;
}

std::string fmt_value(const std::string& metric, double v) {
  if (metric.ends_with("_bytes")) return fmt_bytes(std::llround(v));
  if (metric.ends_with("_ns")) return fmt_ns(std::llround(v));
  char buf[32];
  if (metric.ends_with("_ms")) std::snprintf(buf, sizeof buf, "%.1f ms", v);
  else if (metric.ends_with("_pct")) std::snprintf(buf, sizeof buf, "%.2f%%", v);
  else std::snprintf(buf, sizeof buf, "%.0f", v);
  return buf;
}

std::string render(const json& out) {
  auto head = [](const json& s) {
    return "session " + std::to_string(s["session_id"].get<std::int64_t>()) +
           (s["command"].is_null() ? "" : " «" + s["command"].get<std::string>() + "»") + " (" +
           s["status"].get<std::string>() + ", " + fmt_value("_ms", s["duration_ms"].get<double>()) + ", " +
           std::to_string(s["calls"].get<std::int64_t>()) + " calls)";
  };
  std::string text = "compare_sessions: a = " + head(out["session_a"]) + "\n                  b = " +
                     head(out["session_b"]) + "\n" + std::to_string(out["changes_total"].get<std::int64_t>()) +
                     " measures changed, " + std::to_string(out["unchanged"].get<std::int64_t>()) +
                     " unchanged; ranked by relative change\n";
  char line[320];
  std::snprintf(line, sizeof line, "%-44s %12s %12s %13s %8s\n", "metric", "a", "b", "delta", "b/a");
  text += line;
  for (const auto& c : out["changes"]) {
    const std::string metric = c["metric"].get<std::string>();
    auto side = [&](const char* k) { return c[k].is_null() ? std::string("-") : fmt_value(metric, c[k].get<double>()); };
    std::string delta = c["delta"].is_null() ? "-" : (c["delta"].get<double>() >= 0 ? "+" : "-") +
                                                         fmt_value(metric, std::fabs(c["delta"].get<double>()));
    char ratio[24] = "-";
    if (!c["ratio"].is_null()) std::snprintf(ratio, sizeof ratio, "%.2fx", c["ratio"].get<double>());
    std::snprintf(line, sizeof line, "%-44s %12s %12s %13s %8s\n", metric.substr(0, 44).c_str(), side("a").c_str(),
                  side("b").c_str(), delta.c_str(), ratio);
    text += line;
  }
  if (out["left_out"].get<std::int64_t>() > 0)
    text += "(" + std::to_string(out["left_out"].get<std::int64_t>()) + " smaller changes left out; raise `limit`)\n";
  return bound_text(std::move(text), "a: " + coverage_line(out["coverage_a"]) + "\n" + coverage_line(out["coverage"]));
}

Result<ToolOutput> run(const ToolInput& in) {
  std::vector<std::int64_t> ids;
  Status st = in.db.query("SELECT id FROM sessions ORDER BY id", {}, [&](const store::Row& r) { ids.push_back(r.i64(0)); });
  if (!st) return Error{st.message()};
  if (ids.size() < 2)
    return Error{"this trace holds " + std::to_string(ids.size()) +
                 " session(s); compare_sessions compares two sessions of the same trace file: record the other run "
                 "into the same file (`vramscope trace --db <this file> -- ...` adds a session)"};
  auto b_id = arg_opt_int(in.args, "session_b");
  if (!b_id) b_id = ids.back();
  auto a_id = arg_opt_int(in.args, "session_a");
  if (!a_id) {
    auto it = std::lower_bound(ids.begin(), ids.end(), *b_id);
    if (it == ids.begin()) return Error{"session_b is the first session: give session_a too"};
    a_id = *std::prev(it);
  }
  if (*a_id == *b_id) return Error{"session_a and session_b are both " + std::to_string(*a_id) + ": pick two sessions"};
  auto a = profile(in.db, *a_id);
  if (!a) return Error{"session_a: " + a.error().message};
  if (in.progress.stop_requested()) return Error{"cancelled"};
  auto b = profile(in.db, *b_id);
  if (!b) return Error{"session_b: " + b.error().message};

  std::map<std::string, std::pair<std::optional<double>, std::optional<double>>> joined;
  for (const auto& [k, v] : a->metrics) joined[k].first = v;
  for (const auto& [k, v] : b->metrics) joined[k].second = v;
  struct Change {
    std::string metric;
    std::optional<double> a, b;
    double rel;
  };
  std::vector<Change> changes;
  std::int64_t unchanged = 0;
  for (const auto& [k, v] : joined) {
    if (v.first && v.second && *v.first == *v.second) {
      ++unchanged;
      continue;
    }
    changes.push_back({k, v.first, v.second, relative_change(v.first, v.second)});
  }
  std::stable_sort(changes.begin(), changes.end(), [](const Change& x, const Change& y) {
    auto abs_delta = [](const Change& c) { return c.a && c.b ? std::fabs(*c.b - *c.a) : 0.0; };
    return std::make_pair(x.rel, abs_delta(x)) > std::make_pair(y.rel, abs_delta(y));
  });
  const auto limit = static_cast<std::size_t>(arg_int(in.args, "limit", 30));
  json list = json::array();
  for (std::size_t i = 0; i < changes.size() && i < limit; ++i) {
    const Change& c = changes[i];
    auto opt = [](std::optional<double> v) { return v ? json(*v) : json(nullptr); };
    list.push_back({{"metric", c.metric},
                    {"a", opt(c.a)},
                    {"b", opt(c.b)},
                    {"delta", c.a && c.b ? json(*c.b - *c.a) : json(nullptr)},
                    {"ratio", c.a && c.b && *c.a != 0 ? json(*c.b / *c.a) : json(nullptr)},
                    {"relative_change", c.rel}});
  }
  json out = {{"session_a", a->summary},
              {"session_b", b->summary},
              {"changes", list},
              {"changes_total", changes.size()},
              {"left_out", changes.size() - list.size()},
              {"unchanged", unchanged},
              {"coverage_a", a->coverage},
              {"coverage", b->coverage}};
  std::string text = render(out);
  return ToolOutput{std::move(out), std::move(text), {}};
}

}  // namespace

extern const ToolSpec kCompareSessions;
const ToolSpec kCompareSessions{
    "compare_sessions", "Compare two sessions",
    "Use to compare two sessions of the same trace file side by side, e.g. before and after a fix or two "
    "configurations: duration, calls per API (count, p50, p99, total time), bytes allocated and freed, peak and "
    "end outstanding bytes per kind, released at exit, off-CPU share, errors and lost records, each as a, b, delta "
    "and ratio, ranked by relative change. Both sessions must be in one file (a trace file holds every session "
    "recorded into it); default: the newest session (b) against the one before it (a).",
    run};

}  // namespace vs::tools
