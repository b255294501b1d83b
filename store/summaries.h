// Per-(session, pid, API) summaries of the calls: the tables summaries,
// call_stats and call_stats_preemptors (store/schema.sql). The writer builds
// them when a session ends, so that tools answer questions about a whole
// session (or one process of it) without reading every call; build_summaries()
// on a file also adds them to a trace written before they existed.
#pragma once

#include <sqlite3.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>

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

}  // namespace vs::store
