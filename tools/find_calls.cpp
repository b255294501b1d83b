// find_calls: the calls matching a filter, in entry-time order, a page at a
// time. The cursor holds the last call's (ts_ns, id) and a hash of the
// filter, so a page continues exactly where the previous one stopped and a
// cursor cannot be replayed against a different filter.
#include <algorithm>
#include <cinttypes>
#include <cstdio>

#include "tools/call_records.h"

namespace vs::tools {
namespace {

struct Cursor {
  std::int64_t ts_ns = 0;
  std::int64_t id = 0;
  std::uint64_t filter_hash = 0;
};

std::uint64_t fnv1a(std::string_view s) {
  std::uint64_t h = 14695981039346656037ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

std::string encode(const Cursor& c) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "c1%016" PRIx64 "%016" PRIx64 "%016" PRIx64, static_cast<std::uint64_t>(c.ts_ns),
                static_cast<std::uint64_t>(c.id), c.filter_hash);
  return buf;
}

std::optional<Cursor> decode(const std::string& s) {
  if (s.size() != 50 || !s.starts_with("c1") ||
      s.find_first_not_of("0123456789abcdef", 2) != std::string::npos)
    return std::nullopt;
  auto field = [&](int i) { return std::stoull(s.substr(2 + 16 * static_cast<std::size_t>(i), 16), nullptr, 16); };
  return Cursor{static_cast<std::int64_t>(field(0)), static_cast<std::int64_t>(field(1)), field(2)};
}

Result<ToolOutput> run(const ToolInput& in) {
  auto selection = resolve_selection(in.db, in.args);
  if (!selection) return selection.error();
  const auto& [session, window, apis, filter] = *selection;
  std::uint64_t filter_hash = fnv1a(std::to_string(session.id) + filter.applied.dump());

  std::string where = filter.where;
  auto params = filter.params;
  if (in.args.contains("cursor")) {
    auto cursor = decode(in.args["cursor"].get<std::string>());
    if (!cursor || cursor->filter_hash != filter_hash)
      return Error{"cursor: not a cursor of this query (a cursor continues only the find_calls call that returned "
                   "it, with the same filters); call find_calls again without `cursor` to restart"};
    where += " AND (ts_ns, id) > (?, ?)";
    params.push_back(cursor->ts_ns);
    params.push_back(cursor->id);
  }

  // Entry-time order is what the (api_id, ts_ns) and (pid, ts_ns) indexes
  // hold; there is none on ts_ns alone. So without a pid, each API is read
  // through its own index range and the pages merged here: ~70 short index
  // scans instead of sorting every call of the session for each page. A trace
  // still recording has no index yet: there each of those would scan every
  // call (8 s for 70 APIs over 1 M calls), so one scan serves them all.
  std::int64_t limit = arg_int(in.args, "limit", 25);
  auto indexed = in.db.has_index("call_rows_api_ts");
  if (!indexed) return indexed.error();
  std::vector<std::optional<std::int64_t>> per_api;
  if (filter.api_ids && *indexed) per_api.assign(filter.api_ids->begin(), filter.api_ids->end());
  else if (in.args.contains("pid") || !*indexed) per_api.push_back(std::nullopt);
  else
    for (const auto& [id, api] : apis) per_api.push_back(id);
  std::vector<CallRow> rows;
  for (const auto& api_id : per_api) {
    if (in.progress.stop_requested()) return Error{"cancelled"};
    auto p = params;
    if (api_id) p.push_back(*api_id);
    p.push_back(limit + 1);
    Status st = in.db.query(std::string("SELECT ") + kCallColumns + " FROM call_rows WHERE " + where +
                                (api_id ? " AND api_id = ?" : "") + " ORDER BY ts_ns, id LIMIT ?",
                            p, [&](const store::Row& r) { rows.push_back(read_call_row(r)); });
    if (!st) return Error{st.message()};
  }
  std::sort(rows.begin(), rows.end(),
            [](const CallRow& a, const CallRow& b) { return std::tie(a.ts_ns, a.id) < std::tie(b.ts_ns, b.id); });
  bool more = static_cast<std::int64_t>(rows.size()) > limit;
  if (more) rows.resize(static_cast<std::size_t>(limit));

  auto calls = describe_calls(in.db, session, apis, rows);
  if (!calls) return calls.error();
  json out = {{"session_id", session.id},
              {"window", {{"from_ms", session.t_ms(window.from_ns)}, {"to_ms", session.t_ms(window.to_ns)}}},
              {"filter", filter.applied},
              {"order", "entry time (t_ms), then id"},
              {"calls", std::move(*calls)},
              {"next_cursor", more ? json(encode({rows.back().ts_ns, rows.back().id, filter_hash})) : json()}};
  auto cov = coverage(in.db, session);
  if (!cov) return cov.error();
  out["coverage"] = *cov;

  std::string text = "find_calls: session " + std::to_string(session.id) + ", " + std::to_string(rows.size()) +
                     " calls" + (filter.applied.empty() ? "" : " with " + filter.applied.dump()) +
                     (in.args.contains("cursor") ? " (continued)" : "") + ", in entry-time order\n";
  text += more ? "more calls match: pass cursor \"" + out["next_cursor"].get<std::string>() + "\" for the next page\n"
               : "this is the last page\n";
  for (const auto& c : out["calls"]) text += call_line(c) + "\n";
  if (rows.empty()) text += "no calls match\n";
  return ToolOutput{std::move(out), bound_text(std::move(text), coverage_line(*cov)), {}};
}

}  // namespace

extern const ToolSpec kFindCalls{
    "find_calls", "Find calls",
    "Use to list the individual calls that match a filter (API, op, process, thread, duration range, pointer, "
    "calling library, failed calls only, time window), in time order with context, a page at a time: pass "
    "next_cursor back to continue.",
    run};

}  // namespace vs::tools
