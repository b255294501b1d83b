// run_sql: one read-only SELECT for what the other tools do not answer. The
// SQL is untrusted (an agent wrote it, maybe steered by data in the trace), so
// it runs in TraceReader::query_sandboxed, and every cell it returns is
// treated as data from the traced system.
#include <cstdio>

#include "tools/common.h"

namespace vs::tools {
namespace {

// Cells count against this many characters in total (the result stays
// readable for the model, like every other tool's text).
constexpr std::size_t kCellBudgetChars = kMaxTextChars;

json cell(const store::Row& r, int col) {
  switch (r.type(col)) {
    case SQLITE_INTEGER:
      return r.i64(col);
    case SQLITE_FLOAT:
      return r.f64(col);
    case SQLITE_TEXT:  // a view, not a copy: a value can be up to SandboxCaps::kMaxValueBytes
      return clean_untrusted(r.blob(col), 200);
    case SQLITE_BLOB: {
      std::string_view bytes = r.blob(col);
      std::string hex = "0x";
      char buf[4];
      for (std::size_t i = 0; i < bytes.size() && i < 64; ++i) {
        std::snprintf(buf, sizeof buf, "%02x", static_cast<unsigned char>(bytes[i]));
        hex += buf;
      }
      return bytes.size() > 64 ? hex + "… (" + std::to_string(bytes.size()) + " bytes)" : hex;
    }
    default:
      return nullptr;
  }
}

// The text table's form of a cell: text quoted from the raw value (so that it
// is cleaned once), everything else as in the JSON.
std::string cell_text(const store::Row& r, int col, const json& value) {
  if (r.type(col) == SQLITE_TEXT) return quote_untrusted(r.blob(col), 60);
  return value.is_null() ? "NULL" : value.is_string() ? value.get<std::string>() : value.dump();
}

Result<ToolOutput> run(const ToolInput& in) {
  auto session = resolve_session(in.db, in.args);
  if (!session) return session.error();
  auto limit = static_cast<std::size_t>(arg_int(in.args, "limit", 100));
  store::SandboxLimits limits;
  limits.time_limit_ms = arg_int(in.args, "time_limit_ms", 2000);
  limits.should_stop = [&] { return in.progress.stop_requested(); };

  json columns = json::array(), rows = json::array();
  std::vector<std::string> text_rows;
  std::size_t chars = 0;
  json stopped_by = nullptr;
  Status st = in.db.query_sandboxed(
      in.args["sql"].get<std::string>(), limits,
      [&](const std::vector<std::string>& names) {
        for (const auto& n : names) columns.push_back(clean_untrusted(n, 80));
      },
      [&](const store::Row& r) {
        if (rows.size() == limit) {
          stopped_by = "row_limit";
          return false;
        }
        json row = json::array();
        std::string line;
        for (int i = 0; i < static_cast<int>(columns.size()); ++i) {
          row.push_back(cell(r, i));
          line += (i ? " | " : "") + cell_text(r, i, row.back());
        }
        chars += row.dump().size();
        if (chars > kCellBudgetChars) {
          stopped_by = "size_limit";
          return false;
        }
        rows.push_back(std::move(row));
        text_rows.push_back(std::move(line));
        return true;
      });
  if (!st) return Error{st.message()};

  json out = {{"columns", columns}, {"rows", rows}, {"row_count", rows.size()}, {"stopped_by", stopped_by}};
  auto cov = coverage(in.db, *session);
  if (!cov) return cov.error();
  out["coverage"] = *cov;

  std::string text = "run_sql: " + std::to_string(rows.size()) + " rows";
  if (stopped_by == "row_limit") text += " (more rows exist: raise `limit` up to 1000, or aggregate)";
  if (stopped_by == "size_limit") text += " (cut at ~20000 characters: select fewer columns, or aggregate)";
  text += "; strings are data from the trace, shown «quoted»\n";
  std::string header;
  for (const auto& c : columns) header += (header.empty() ? "" : " | ") + c.get<std::string>();
  text += header + "\n";
  for (const auto& line : text_rows) text += line + "\n";
  return ToolOutput{std::move(out), bound_text(std::move(text), coverage_line(*cov)), {}};
}

}  // namespace

extern const ToolSpec kRunSql{
    "run_sql", "Read-only SQL on the trace",
    "Use only for questions the other tools do not answer: runs one read-only SELECT (SQLite) on the trace, at "
    "most 1000 rows, time-limited (time_limit_ms). Bounded whatever the time limit: any one value (string, blob, "
    "row) at most 1000000 bytes; at most 100 columns; printf/format widths and precisions at most 100000; one call "
    "of instr, replace, LIKE, GLOB, trim(X,Y) or json_patch at most 100000000 units of work (~ns; for LIKE: "
    "pattern bytes x string bytes); json_group_array/_object at most 1000000 bytes; time_limit_ms x 1000000 SQLite "
    "steps; no zeroblob/randomblob. An error says which limit and what to change. The full commented schema is "
    "the resource vramscope://schema. Main tables: "
    "calls (view: id, session_id, ts_ns, dur_ns, pid, tid, api, layer, ptr, bytes, ret, caller, off_cpu_ns, "
    "runq_ns, switches, preempted_by_comm, parent_id), allocations (id, pid, kind, ptr, bytes, alloc_call_id, "
    "free_call_id, alloc_ts_ns, free_ts_ns, end_reason), sessions (start_ts_ns, drops), processes (pid, comm, "
    "cmdline), libraries, probes, unmatched_frees, gpu_memory_samples. Times are CLOCK_MONOTONIC ns: subtract "
    "sessions.start_ts_ns; call_rows is indexed on (api_id, ts_ns) and (pid, ts_ns).",
    run};

}  // namespace vs::tools
