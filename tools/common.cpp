#include "tools/common.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "store/store.h"

namespace vs::tools {

Result<Session> resolve_session(const store::TraceReader& db, const json& args) {
  auto requested = arg_opt_int(args, "session_id");
  Session s;
  bool found = false, ended = false;
  std::string ids;
  Status st = db.query(
      "SELECT id, start_ts_ns, end_ts_ns, realtime_offset_ns, status, mode, COALESCE(command, ''), last_call_end_ns "
      "FROM sessions ORDER BY id",
      {}, [&](const store::Row& r) {
        ids += (ids.empty() ? "" : ", ") + std::to_string(r.i64(0));
        if (requested ? r.i64(0) != *requested : false) return;
        s.id = r.i64(0);
        s.start_ns = r.i64(1);
        ended = !r.is_null(2);
        s.end_ns = ended ? r.i64(2) : r.is_null(7) ? s.start_ns : r.i64(7);
        s.realtime_offset_ns = r.i64(3);
        s.status = r.text(4);
        s.mode = r.text(5);
        s.command = r.text(6);
        found = true;
      });
  if (!st) return Error{st.message()};
  if (!found) {
    if (ids.empty()) return Error{"this trace has no sessions yet (is `vramscope trace` still starting?)"};
    return Error{"no session " + std::to_string(*requested) + " in this trace; sessions: " + ids};
  }
  if (!ended && db.schema_version() < store::kSchemaKeepsSessionProgress) {
    // Still recording (or the tracer died): the session runs to its last call's end, which the writer
    // keeps in the session's row since schema 5 (last_call_end_ns); before, a scan of its calls.
    st = db.query("SELECT MAX(ts_ns + dur_ns) FROM call_rows WHERE session_id = ?", {s.id},
                  [&](const store::Row& r) { s.end_ns = r.is_null(0) ? s.start_ns : r.i64(0); });
    if (!st) return Error{st.message()};
  }
  return s;
}

Result<Window> resolve_window(const Session& session, const json& args) {
  Window w{session.start_ns, session.end_ns, true};
  if (args.contains("from_ms")) {
    w.from_ns = session.ts_ns(args["from_ms"].get<double>());
    w.whole_session = false;
  }
  if (args.contains("to_ms")) {
    w.to_ns = session.ts_ns(args["to_ms"].get<double>());
    w.whole_session = false;
  }
  if (w.to_ns < w.from_ns)
    return Error{"to_ms must not be before from_ms (the session lasts " +
                 std::to_string(static_cast<long long>(session.t_ms(session.end_ns))) + " ms)"};
  return w;
}

Result<json> coverage(const store::TraceReader& db, const Session& session) {
  json c;
  Status st = db.query(
      "SELECT status, calls_recorded, call_drops, lifecycle_drops, unrecorded_calls, sched_drops, "
      "end_ts_ns IS NULL FROM sessions WHERE id = ?",
      {session.id}, [&](const store::Row& r) {
        c["session_id"] = session.id;
        c["status"] = r.text(0);
        c["calls_recorded"] = r.i64(1);
        c["call_drops"] = r.i64(2);
        c["lifecycle_drops"] = r.i64(3);
        c["unrecorded_calls"] = r.i64(4);
        c["sched_drops"] = r.i64(5);
        c["ended"] = r.i64(6) == 0;
      });
  if (!st) return Error{st.message()};
  const bool ended = c["ended"].get<bool>();
  c.erase("ended");
  if (!ended && db.schema_version() < store::kSchemaKeepsSessionProgress) {
    // Before schema 5 calls_recorded was written at the session's end only (never, if the recorder
    // died): count what is there.
    st = db.query("SELECT COUNT(*) FROM call_rows WHERE session_id = ?", {session.id},
                  [&](const store::Row& r) { c["calls_recorded"] = r.i64(0); });
    if (!st) return Error{st.message()};
  }
  st = db.query("SELECT COUNT(*) FROM processes WHERE session_id = ?", {session.id},
                [&](const store::Row& r) { c["processes"] = r.i64(0); });
  if (!st) return Error{st.message()};
  st = db.query(
      "SELECT COALESCE(SUM(probes_attached > 0), 0), COALESCE(SUM(error IS NOT NULL OR probes_attached = 0), 0) "
      "FROM libraries WHERE session_id = ?",
      {session.id}, [&](const store::Row& r) {
        c["libraries_probed"] = r.i64(0);
        c["libraries_failed"] = r.i64(1);
      });
  if (!st) return Error{st.message()};
  c["complete"] = c["status"] == "complete" && c["call_drops"] == 0 && c["lifecycle_drops"] == 0 &&
                  c["unrecorded_calls"] == 0 && c["libraries_failed"] == 0;
  return c;
}

std::string coverage_line(const json& c) {
  std::int64_t lost = c["call_drops"].get<std::int64_t>() + c["unrecorded_calls"].get<std::int64_t>();
  std::string line = "coverage: session " + std::to_string(c["session_id"].get<std::int64_t>()) + " (" +
                     c["status"].get<std::string>() + "), " + std::to_string(c["processes"].get<std::int64_t>()) +
                     " processes, " + std::to_string(c["libraries_probed"].get<std::int64_t>()) +
                     " libraries probed, " + std::to_string(c["calls_recorded"].get<std::int64_t>()) +
                     " calls recorded, " + std::to_string(lost) + " lost";
  if (c["lifecycle_drops"].get<std::int64_t>() > 0)
    line += ", " + std::to_string(c["lifecycle_drops"].get<std::int64_t>()) + " process events lost";
  if (c["libraries_failed"].get<std::int64_t>() > 0)
    line += ", " + std::to_string(c["libraries_failed"].get<std::int64_t>()) +
            " libraries NOT probed (their calls are not observed)";
  if (c["status"] == "recording") line += "; still recording: numbers cover what is stored so far";
  if (c["status"] == "interrupted")
    line += "; interrupted: the recording stopped before its end (Ctrl-C, or the recorder was killed or could not "
            "write): numbers cover what was stored up to then";
  return line;
}

std::string clean_untrusted(std::string_view s, std::size_t max_chars) {
  return vs::escape_untrusted(s, max_chars);
}

std::string quote_untrusted(std::string_view s, std::size_t max_chars) {
  return vs::quote_untrusted(s, max_chars);
}

std::string fmt_bytes(std::int64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (std::fabs(v) >= 1024.0 && u < 4) {
    v /= 1024.0;
    ++u;
  }
  char buf[32];
  if (u == 0) std::snprintf(buf, sizeof buf, "%lld B", static_cast<long long>(bytes));
  else std::snprintf(buf, sizeof buf, std::fabs(v) >= 100 ? "%.0f %s" : "%.2f %s", v, units[u]);
  return buf;
}

std::string fmt_ns(std::int64_t ns) {
  char buf[32];
  double v = static_cast<double>(ns);
  if (std::llabs(ns) >= 1000000000) std::snprintf(buf, sizeof buf, "%.2f s", v / 1e9);
  else if (std::llabs(ns) >= 1000000) std::snprintf(buf, sizeof buf, "%.2f ms", v / 1e6);
  else if (std::llabs(ns) >= 1000) std::snprintf(buf, sizeof buf, "%.1f us", v / 1e3);
  else std::snprintf(buf, sizeof buf, "%lld ns", static_cast<long long>(ns));
  return buf;
}

std::string bound_text(std::string body, const std::string& footer) {
  if (body.size() + footer.size() <= kMaxTextChars) return body + footer;
  const std::string notice =
      "… (cut at " + std::to_string(kMaxTextChars) + " characters; narrow the query or lower `limit`)\n";
  std::size_t room = kMaxTextChars - std::min(kMaxTextChars, footer.size() + notice.size());
  std::size_t cut = body.rfind('\n', room);
  body.resize(cut == std::string::npos ? room : cut + 1);
  return body + notice + footer;
}

std::int64_t arg_int(const json& args, const char* name, std::int64_t fallback) {
  auto v = arg_opt_int(args, name);
  return v ? *v : fallback;
}

std::optional<std::int64_t> arg_opt_int(const json& args, const char* name) {
  auto it = args.find(name);
  if (it == args.end() || it->is_null()) return std::nullopt;
  if (it->is_number_float()) return static_cast<std::int64_t>(it->get<double>());
  return it->get<std::int64_t>();
}

std::string arg_string(const json& args, const char* name, const std::string& fallback) {
  auto it = args.find(name);
  return it != args.end() && it->is_string() ? it->get<std::string>() : fallback;
}

std::string short_path(std::string_view path) {
  auto slash = path.rfind('/');
  return std::string(slash == std::string_view::npos ? path : path.substr(slash + 1));
}

}  // namespace vs::tools
