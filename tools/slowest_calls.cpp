// slowest_calls: the N longest calls of a selection, each with the context
// that explains it (off-CPU time and who took the CPU, caller, enclosing call,
// the allocation it freed and how old it was).
#include "store/summaries.h"
#include "tools/api_stats.h"
#include "tools/call_records.h"

namespace vs::tools {
namespace {

// The planner reads a process's or an API's calls through its own index and
// sorts them all (3 M calls of one process: 1 s). When the selection is a large
// share of the session, walking call_rows_dur downwards until `limit` calls match
// passes about limit x session calls / selected calls rows instead; for a small
// share that walk would pass most of the session. The summaries give both counts.
constexpr std::int64_t kMaxDurationIndexWalk = 100000;

Result<bool> walk_duration_index(const store::TraceReader& db, const Session& session, const Window& window,
                                 const CallFilter& filter, std::int64_t limit) {
  if (filter.applied.empty()) return false;  // the planner walks it already
  auto selected = summarized_per_api_stats(db, session, window, filter);
  if (!selected) return selected.error();
  if (!*selected) return false;
  auto all = store::read_summaries(db, session.id, std::nullopt);
  if (!all) return all.error();
  std::int64_t selected_calls = 0, session_calls = 0;
  for (const auto& [api, s] : **selected) selected_calls += s.calls;
  for (const auto& [api, s] : **all) session_calls += s.calls;
  if (selected_calls == 0 || limit * session_calls / selected_calls > kMaxDurationIndexWalk) return false;
  return db.has_index("call_rows_dur");  // files upgraded by build_summaries may lack it
}

Result<ToolOutput> run(const ToolInput& in) {
  auto selection = resolve_selection(in.db, in.args);
  if (!selection) return selection.error();
  const auto& [session, window, apis, filter] = *selection;

  std::int64_t limit = arg_int(in.args, "limit", 10);
  std::vector<CallRow> rows;
  auto params = filter.params;
  params.push_back(limit);
  auto by_duration = walk_duration_index(in.db, session, window, filter, limit);
  if (!by_duration) return by_duration.error();
  Status st = in.db.query(std::string("SELECT ") + kCallColumns + " FROM call_rows " +
                              (*by_duration ? "INDEXED BY call_rows_dur " : "") + "WHERE " + filter.where +
                              " ORDER BY dur_ns DESC, id LIMIT ?",
                          params, [&](const store::Row& r) { rows.push_back(read_call_row(r)); });
  if (!st) return Error{st.message()};
  auto calls = describe_calls(in.db, session, apis, rows);
  if (!calls) return calls.error();

  json out = {{"session_id", session.id},
              {"window", {{"from_ms", session.t_ms(window.from_ns)}, {"to_ms", session.t_ms(window.to_ns)}}},
              {"filter", filter.applied},
              {"calls", std::move(*calls)}};
  auto cov = coverage(in.db, session);
  if (!cov) return cov.error();
  out["coverage"] = *cov;

  std::string text = "slowest_calls: session " + std::to_string(session.id) + ", the " +
                     std::to_string(out["calls"].size()) + " longest calls";
  if (!filter.applied.empty()) text += " with " + filter.applied.dump();
  text += ", longest first\n";
  for (const auto& c : out["calls"]) text += call_line(c) + "\n";
  if (out["calls"].empty()) text += "no calls in this selection\n";
  return ToolOutput{std::move(out), bound_text(std::move(text), coverage_line(*cov)), {}};
}

}  // namespace

extern const ToolSpec kSlowestCalls{
    "slowest_calls", "Slowest calls with context",
    "Use to look at the individual calls behind a latency tail: the N longest calls (optionally of one API, "
    "process or window), each with off-CPU time and the task that took the CPU, bytes, pointer, caller library, "
    "enclosing call, and for a free the allocation it released and its age.",
    run};

}  // namespace vs::tools
