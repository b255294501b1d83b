#include "tools/api_stats.h"

#include <algorithm>
#include <set>
#include <string>
#include <vector>

#include "store/summaries.h"

namespace vs::tools {
namespace {

// Filters that select whole (pid, API) summary rows (any window): any other (tid, duration, ptr, caller,
// errors_only) needs the calls themselves.
bool selects_whole_rows(const CallFilter& filter) {
  for (const auto& [key, value] : filter.applied.items())
    if (key != "pid" && key != "api" && key != "op" && key != "layer" && key != "from_ms" && key != "to_ms")
      return false;
  return true;
}

std::optional<std::int64_t> selected_pid(const CallFilter& filter) {
  if (!filter.applied.contains("pid")) return std::nullopt;
  return filter.applied["pid"].get<std::int64_t>();
}

bool selects_api(const CallFilter& filter, std::int64_t api_id) {
  return !filter.api_ids || std::binary_search(filter.api_ids->begin(), filter.api_ids->end(), api_id);
}

// Adds the calls of "FROM call_rows <clauses>" to by_api.
Status scan_calls(const store::TraceReader& db, const std::string& clauses, std::vector<store::SqlValue> params,
                  std::map<std::int64_t, store::CallStatsBuilder>& by_api) {
  return db.query(std::string("SELECT api_id, ") + store::kCallSampleColumns + " FROM call_rows " + clauses, params,
                  [&](const store::Row& r) { by_api[r.i64(0)].add(store::read_call_sample(r, 1)); });
}

PerApiStats finish(const std::map<std::int64_t, store::CallStatsBuilder>& by_api) {
  PerApiStats out;
  for (const auto& [api_id, builder] : by_api) out.emplace(api_id, builder.finish());
  return out;
}

// A window from the call buckets (nullopt: not built, or the filter needs the calls): the buckets whose
// calls all lie in the window from their stored states, the ones straddling an edge by scanning their ids
// with the filter (which holds the window). Exact: the same calls reach the same builder as in a scan.
Result<std::optional<PerApiStats>> bucketed_per_api_stats(const store::TraceReader& db, const Session& session,
                                                          const Window& window, const CallFilter& filter) {
  if (window.whole_session || !selects_whole_rows(filter)) return std::optional<PerApiStats>{};
  auto buckets = store::read_call_buckets(db, session.id);
  if (!buckets) return buckets.error();
  if (buckets->empty()) return std::optional<PerApiStats>{};
  std::set<std::int64_t> inside;  // first_call_id of the buckets wholly in the window
  std::vector<const store::CallBucket*> straddling;
  for (const store::CallBucket& b : *buckets) {
    if (b.last_ts_ns < window.from_ns || b.first_ts_ns > window.to_ns) continue;
    if (b.first_ts_ns >= window.from_ns && b.last_ts_ns <= window.to_ns) inside.insert(b.first_call_id);
    else straddling.push_back(&b);
  }
  std::map<std::int64_t, store::CallStatsBuilder> by_api;
  if (!inside.empty()) {
    Status st = store::merge_bucket_states(
        db, session.id, *inside.begin(), *inside.rbegin(), selected_pid(filter),
        [&](std::int64_t bucket, std::int64_t api_id) -> store::CallStatsBuilder* {
          return inside.count(bucket) && selects_api(filter, api_id) ? &by_api[api_id] : nullptr;
        });
    if (!st) return Error{st.message()};
  }
  for (const store::CallBucket* b : straddling) {
    std::vector<store::SqlValue> params{b->first_call_id, b->last_call_id};
    params.insert(params.end(), filter.params.begin(), filter.params.end());
    // NOT INDEXED: the id range (rowid) is the narrow part, not the filter's API or process index.
    Status st = scan_calls(db, "NOT INDEXED WHERE id BETWEEN ? AND ? AND " + filter.where, std::move(params), by_api);
    if (!st) return Error{st.message()};
  }
  return std::optional<PerApiStats>{finish(by_api)};
}

}  // namespace

Result<std::optional<PerApiStats>> summarized_per_api_stats(const store::TraceReader& db, const Session& session,
                                                            const Window& window, const CallFilter& filter) {
  if (!window.whole_session) return bucketed_per_api_stats(db, session, window, filter);
  if (!selects_whole_rows(filter)) return std::optional<PerApiStats>{};
  auto summaries = store::read_summaries(db, session.id, selected_pid(filter));
  if (!summaries) return summaries.error();
  if (!*summaries) return std::optional<PerApiStats>{};
  PerApiStats out;
  for (auto& [api_id, stats] : **summaries)
    if (selects_api(filter, api_id)) out.emplace(api_id, std::move(stats));
  return std::optional<PerApiStats>{std::move(out)};
}

Result<PerApiStats> per_api_stats(const store::TraceReader& db, const Session& session,
                                   const Window& window, const CallFilter& filter) {
  auto summarized = summarized_per_api_stats(db, session, window, filter);
  if (!summarized) return summarized.error();
  if (*summarized) return std::move(**summarized);
  std::map<std::int64_t, store::CallStatsBuilder> by_api;
  if (Status st = scan_calls(db, "WHERE " + filter.where, filter.params, by_api); !st) return Error{st.message()};
  return finish(by_api);
}

Result<PerApiStats> per_api_stats(const store::TraceReader& db, const Session& session,
                                   const ApiTable& apis) {
  const Window whole{session.start_ns, session.end_ns, true};
  auto filter = build_call_filter(db, apis, session, whole, json::object());
  if (!filter) return filter.error();
  return per_api_stats(db, session, whole, *filter);
}

Result<json> ranked_api_rows(const ToolInput& in, const CallSelection& selection, const PerApiStats& stats,
                             const ApiRowOf& row_of, const std::string& sort_key) {
  const auto& [session, window, apis, filter] = selection;
  json rows = json::array();
  std::int64_t calls = 0;
  for (const auto& [api_id, api_stats] : stats) {
    if (in.progress.stop_requested()) return Error{"cancelled"};
    calls += api_stats.calls;
    rows.push_back(row_of(apis.at(api_id), api_stats));
  }
  std::sort(rows.begin(), rows.end(), [&](const json& a, const json& b) {
    const double x = a[sort_key].get<double>(), y = b[sort_key].get<double>();
    return x != y ? x > y : a["api"] < b["api"];
  });
  const std::size_t apis_total = rows.size();
  const auto limit = static_cast<std::size_t>(arg_int(in.args, "limit", 20));
  if (rows.size() > limit) rows.erase(rows.begin() + static_cast<std::ptrdiff_t>(limit), rows.end());
  return json{{"session_id", session.id},
              {"window", {{"from_ms", session.t_ms(window.from_ns)}, {"to_ms", session.t_ms(window.to_ns)}}},
              {"filter", filter.applied},
              {"calls", calls},
              {"apis_total", apis_total},
              {"apis", std::move(rows)}};
}

}  // namespace vs::tools
