// Per-API statistics of a call selection (store/call_stats.h), for the tools
// that report per API: api_latency, offcpu_attribution, trace_overview and
// compare_sessions. From the session's summaries when they cover the selection
// (the whole session, every process or one pid, any api/op/layer choice) and
// were built; otherwise by scanning the selected calls with the same builder
// that made the summaries. Both paths give the same numbers.
#pragma once

#include <cstdint>
#include <map>
#include <optional>

#include "store/call_stats.h"
#include "tools/call_filter.h"

namespace vs::tools {

// Keyed by apis.id; APIs without a call in the selection are absent.
using PerApiStats = std::map<std::int64_t, store::CallStats>;

// From the summaries only: nullopt when they do not cover the selection or were not built.
Result<std::optional<PerApiStats>> summarized_per_api_stats(const store::TraceReader& db, const Session& session,
                                                            const Window& window, const CallFilter& filter);

// From the summaries, or else by scanning the selected calls.
Result<PerApiStats> per_api_stats(const store::TraceReader& db, const Session& session,
                                   const Window& window, const CallFilter& filter);

// The whole session, no filter: what trace_overview and compare_sessions summarize.
Result<PerApiStats> per_api_stats(const store::TraceReader& db, const Session& session,
                                   const ApiTable& apis);

}  // namespace vs::tools
