// Per-API statistics of a call selection (store/call_stats.h), for the tools
// that report per API: api_latency, offcpu_attribution, trace_overview and
// compare_sessions. From the session's summaries when they cover the selection
// (every process or one pid, any api/op/layer choice) and were built: the
// whole session from call_stats, a window from the call buckets inside it plus
// a scan of the few straddling its edges; otherwise by scanning the selected
// calls with the same builder that made the summaries. The paths give the same numbers.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>

#include "store/call_stats.h"
#include "tools/call_filter.h"

namespace vs::tools {

// Keyed by apis.id; APIs without a call in the selection are absent.
using PerApiStats = std::map<std::int64_t, store::CallStats>;

// From the summaries (and, for a window, the calls at its edges): nullopt when they do not cover the
// selection or were not built.
Result<std::optional<PerApiStats>> summarized_per_api_stats(const store::TraceReader& db, const Session& session,
                                                            const Window& window, const CallFilter& filter);

// From the summaries, or else by scanning the selected calls.
Result<PerApiStats> per_api_stats(const store::TraceReader& db, const Session& session,
                                   const Window& window, const CallFilter& filter);

// The whole session, no filter: what trace_overview and compare_sessions summarize.
Result<PerApiStats> per_api_stats(const store::TraceReader& db, const Session& session,
                                   const ApiTable& apis);

// The result shape api_latency and offcpu_attribution share: {session_id,
// window {from_ms, to_ms}, filter, calls, apis_total, apis}, where apis holds
// row_of(api, stats) for each API of the selection, ranked by the number
// row[sort_key] (largest first, ties by api name) and cut to args.limit
// (default 20). An Error only when the client cancelled.
using ApiRowOf = std::function<json(const ApiInfo& api, const store::CallStats& stats)>;
Result<json> ranked_api_rows(const ToolInput& in, const CallSelection& selection, const PerApiStats& stats,
                             const ApiRowOf& row_of, const std::string& sort_key);

}  // namespace vs::tools
