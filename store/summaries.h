// Per-(session, pid, API) summaries of the calls: the tables summaries,
// call_stats and call_stats_preemptors (store/schema.sql). The writer builds
// them when a session ends, so that tools answer questions about a whole
// session (or one process of it) without reading every call; build_summaries()
// on a file also adds them to a trace written before they existed.
#pragma once

#include <sqlite3.h>

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"
#include "store/call_stats.h"
#include "store/reader.h"

namespace vs::store {

// (Re)builds the summaries of one session on a read-write connection whose
// schema is current, in one transaction: one scan of the session's calls in
// rowid order, CallStatsBuilder per (pid, API) (see its memory note: ~25 bytes
// per call of the session, 250 MB at 10 M calls, while it runs).
Status build_summaries(sqlite3* db, std::int64_t session_id);

// The same on a trace file, which it upgrades to the current schema when it
// is older (the tables are added; nothing else changes). Refuses a session
// still being recorded: calls added later would be missing from them.
Status build_summaries(const std::string& path, std::int64_t session_id);

// The per-API stats (by apis.id) of a session from its summaries, for one
// process or (pid nullopt) all of them; nullopt when the session's summaries
// were not built (a file from before them, a tracer that died, a session still
// recording). A pid without calls gives an empty map.
Result<std::optional<std::map<std::int64_t, CallStats>>> read_summaries(const TraceReader& db, std::int64_t session_id,
                                                                          std::optional<std::int64_t> pid);

// A call_buckets row: the session's calls with first_call_id <= id <= last_call_id, whose entries
// (ts_ns) span [first_ts_ns, last_ts_ns].
struct CallBucket {
  std::int64_t first_call_id = 0, last_call_id = 0, first_ts_ns = 0, last_ts_ns = 0, calls = 0;
};
// The session's buckets by first_call_id; empty when they were not built (a file or session from before
// schema 3, a session still recording).
Result<std::vector<CallBucket>> read_call_buckets(const TraceReader& db, std::int64_t session_id);

// Merges each call_bucket_stats row of the buckets whose first_call_id is in [from_call_id, to_call_id],
// of one process or (pid nullopt) all of them, into the builder builder_for(first_call_id, api_id) gives
// (nullptr: skip the row).
Status merge_bucket_states(const TraceReader& db, std::int64_t session_id, std::int64_t from_call_id,
                           std::int64_t to_call_id, std::optional<std::int64_t> pid,
                           const std::function<CallStatsBuilder*(std::int64_t, std::int64_t)>& builder_for);

}  // namespace vs::store
