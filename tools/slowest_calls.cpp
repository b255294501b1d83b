// slowest_calls: the N longest calls of a selection, each with the context
// that explains it (off-CPU time and who took the CPU, caller, enclosing call,
// the allocation it freed and how old it was).
#include "tools/call_records.h"

namespace vs::tools {
namespace {

Result<ToolOutput> run(const ToolInput& in) {
  auto session = resolve_session(in.db, in.args);
  if (!session) return session.error();
  auto window = resolve_window(*session, in.args);
  if (!window) return window.error();
  auto apis = load_apis(in.db);
  if (!apis) return apis.error();
  auto filter = build_call_filter(in.db, *apis, *session, *window, in.args);
  if (!filter) return filter.error();

  std::int64_t limit = arg_int(in.args, "limit", 10);
  std::vector<CallRow> rows;
  auto params = filter->params;
  params.push_back(limit);
  Status st = in.db.query(std::string("SELECT ") + kCallColumns + " FROM call_rows WHERE " + filter->where +
                              " ORDER BY dur_ns DESC, id LIMIT ?",
                          params, [&](const store::Row& r) { rows.push_back(read_call_row(r)); });
  if (!st) return Error{st.message()};
  auto calls = describe_calls(in.db, *session, *apis, rows);
  if (!calls) return calls.error();

  json out = {{"session_id", session->id},
              {"window", {{"from_ms", session->t_ms(window->from_ns)}, {"to_ms", session->t_ms(window->to_ns)}}},
              {"filter", filter->applied},
              {"calls", std::move(*calls)}};
  auto cov = coverage(in.db, *session);
  if (!cov) return cov.error();
  out["coverage"] = *cov;

  std::string text = "slowest_calls: session " + std::to_string(session->id) + ", the " +
                     std::to_string(out["calls"].size()) + " longest calls";
  if (!filter->applied.empty()) text += " with " + filter->applied.dump();
  text += ", longest first\n";
  for (const auto& c : out["calls"]) text += call_line(c) + "\n";
  if (out["calls"].empty()) text += "no calls in this selection\n";
  text += coverage_line(*cov);
  return ToolOutput{std::move(out), bound_text(std::move(text)), {}};
}

}  // namespace

extern const ToolSpec kSlowestCalls{
    "slowest_calls", "Slowest calls with context",
    "Use to look at the individual calls behind a latency tail: the N longest calls (optionally of one API, "
    "process or window), each with off-CPU time and the task that took the CPU, bytes, pointer, caller library, "
    "enclosing call, and for a free the allocation it released and its age.",
    run};

}  // namespace vs::tools
