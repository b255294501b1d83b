#include "tools/resources.h"

#include <charconv>

#include "store/store.h"
#include "tools/common.h"

namespace vs::tools {
namespace {

constexpr std::string_view kSchemaUri = "vramscope://schema";
constexpr std::string_view kSessionsUri = "vramscope://sessions";
constexpr std::string_view kSessionPrefix = "vramscope://session/";
constexpr std::size_t kMaxSessionsListed = 1000;

// Every session, newest first: what an agent needs to pick one.
Result<json> session_list(const store::TraceReader& db, std::size_t limit) {
  json list = json::array();
  std::size_t total = 0;
  Status st = db.query(
      "SELECT s.id, s.host, s.command, s.mode, s.status, s.start_ts_ns, s.end_ts_ns, s.realtime_offset_ns, "
      "s.calls_recorded, s.call_drops, (SELECT COUNT(*) FROM processes p WHERE p.session_id = s.id) "
      "FROM sessions s ORDER BY s.id DESC",
      {}, [&](const store::Row& r) {
        if (++total > limit) return;
        list.push_back({{"session_id", r.i64(0)},
                        {"host", clean_untrusted(r.text(1))},
                        {"command", r.is_null(2) ? json(nullptr) : json(clean_untrusted(r.text(2)))},
                        {"mode", r.text(3)},
                        {"status", r.text(4)},
                        {"start_unix_ms", (r.i64(5) + r.i64(7)) / 1000000},
                        {"duration_ms", r.is_null(6) ? json(nullptr) : json(static_cast<double>(r.i64(6) - r.i64(5)) / 1e6)},
                        {"calls_recorded", r.i64(8)},
                        {"call_drops", r.i64(9)},
                        {"processes", r.i64(10)}});
      });
  if (!st) return Error{st.message()};
  return json{{"sessions", list}, {"sessions_total", total}, {"left_out", total - list.size()}};
}

}  // namespace

const std::vector<ResourceSpec>& resources() {
  static const std::vector<ResourceSpec> all = {
      {std::string(kSchemaUri), "schema", "Trace schema",
       "The SQLite schema of a vramscope trace, with the meaning of every table and column (for run_sql).",
       "application/sql"},
      {std::string(kSessionsUri), "sessions", "Sessions in this trace",
       "Every recorded session, newest first: id, command, mode, status, start time, duration, calls, drops, "
       "processes.",
       "application/json"},
  };
  return all;
}

const std::vector<ResourceTemplateSpec>& resource_templates() {
  static const std::vector<ResourceTemplateSpec> all = {
      {std::string(kSessionPrefix) + "{id}", "session", "One session's overview",
       "trace_overview of session {id}: host and GPU, processes, libraries and probes, time span, calls and bytes "
       "per API, outstanding bytes, drops.",
       "application/json"},
  };
  return all;
}

Result<std::vector<ResourceSpec>> session_resources(const store::TraceReader& db) {
  auto list = session_list(db, kMaxSessionResources);
  if (!list) return list.error();
  std::vector<ResourceSpec> out;
  for (const auto& s : (*list)["sessions"]) {
    std::string id = std::to_string(s["session_id"].get<std::int64_t>());
    std::string what = s["command"].is_null() ? s["mode"].get<std::string>() + " mode"
                                              : "«" + s["command"].get<std::string>() + "»";
    out.push_back({std::string(kSessionPrefix) + id, "session " + id, "Session " + id,
                   "Overview of session " + id + " (" + what + ", " + s["status"].get<std::string>() + ")",
                   "application/json"});
  }
  return out;
}

Result<ResourceContent> read_resource(const store::TraceReader& db, std::string_view uri) {
  if (uri == kSchemaUri) return ResourceContent{std::string(uri), "application/sql", std::string(store::schema_sql())};
  if (uri == kSessionsUri) {
    auto list = session_list(db, kMaxSessionsListed);
    if (!list) return list.error();
    return ResourceContent{std::string(uri), "application/json", list->dump()};
  }
  if (uri.starts_with(kSessionPrefix)) {
    std::string_view id_text = uri.substr(kSessionPrefix.size());
    std::int64_t id = 0;
    auto [end, ec] = std::from_chars(id_text.data(), id_text.data() + id_text.size(), id);
    if (ec != std::errc() || end != id_text.data() + id_text.size())
      return Error{"no resource " + clean_untrusted(uri) + ": the session id must be an integer (see vramscope://sessions)"};
    Progress none;
    auto overview = run_tool(db, "trace_overview", json{{"session_id", id}}, none);
    if (!overview) return overview.error();
    return ResourceContent{std::string(uri), "application/json", overview->structured.dump()};
  }
  return Error{"no resource " + clean_untrusted(uri) +
               "; resources: vramscope://schema, vramscope://sessions, vramscope://session/{id}"};
}

}  // namespace vs::tools
