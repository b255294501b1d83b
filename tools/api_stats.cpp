#include "tools/api_stats.h"

#include <algorithm>
#include <string>

#include "store/summaries.h"

namespace vs::tools {
namespace {

// Filters that select whole (pid, API) summary rows; any other (tid, duration,
// ptr, caller, errors_only) or a window needs the calls themselves.
bool summaries_cover(const Window& window, const CallFilter& filter) {
  if (!window.whole_session) return false;
  for (const auto& [key, value] : filter.applied.items())
    if (key != "pid" && key != "api" && key != "op" && key != "layer") return false;
  return true;
}

}  // namespace

Result<std::optional<PerApiStats>> summarized_per_api_stats(const store::TraceReader& db, const Session& session,
                                                            const Window& window, const CallFilter& filter) {
  if (!summaries_cover(window, filter)) return std::optional<PerApiStats>{};
  std::optional<std::int64_t> pid;
  if (filter.applied.contains("pid")) pid = filter.applied["pid"].get<std::int64_t>();
  auto summaries = store::read_summaries(db, session.id, pid);
  if (!summaries) return summaries.error();
  if (!*summaries) return std::optional<PerApiStats>{};
  PerApiStats out;
  for (auto& [api_id, stats] : **summaries)
    if (!filter.api_ids || std::binary_search(filter.api_ids->begin(), filter.api_ids->end(), api_id))
      out.emplace(api_id, std::move(stats));
  return std::optional<PerApiStats>{std::move(out)};
}

Result<PerApiStats> per_api_stats(const store::TraceReader& db, const Session& session,
                                   const Window& window, const CallFilter& filter) {
  auto summarized = summarized_per_api_stats(db, session, window, filter);
  if (!summarized) return summarized.error();
  if (*summarized) return std::move(**summarized);
  PerApiStats out;
  std::map<std::int64_t, store::CallStatsBuilder> by_api;
  Status st = db.query(std::string("SELECT api_id, ") + store::kCallSampleColumns + " FROM call_rows WHERE " +
                           filter.where,
                       filter.params,
                       [&](const store::Row& r) { by_api[r.i64(0)].add(store::read_call_sample(r, 1)); });
  if (!st) return Error{st.message()};
  for (auto& [api_id, builder] : by_api) out.emplace(api_id, builder.finish());
  return out;
}

Result<PerApiStats> per_api_stats(const store::TraceReader& db, const Session& session,
                                   const ApiTable& apis) {
  const Window whole{session.start_ns, session.end_ns, true};
  auto filter = build_call_filter(db, apis, session, whole, json::object());
  if (!filter) return filter.error();
  return per_api_stats(db, session, whole, *filter);
}

}  // namespace vs::tools
