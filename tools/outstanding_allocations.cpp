// outstanding_allocations: what was held at one instant, grouped by (kind,
// size, calling library), with ages and example allocation ids; memory that
// processes still held when they exited (released by the driver at exit) is
// listed apart from holdings of live processes.
#include <algorithm>
#include <cstdio>
#include <map>
#include <tuple>

#include "tools/common.h"
#include "tools/timeline_model.h"

namespace vs::tools {
namespace {

constexpr std::int64_t kDefaultGroups = 20;

struct Group {
  std::string kind;
  std::int64_t size_bytes = 0;
  std::optional<std::int64_t> caller_id;
  std::int64_t count = 0, bytes = 0;
  std::int64_t oldest_alloc_ns = 0, newest_alloc_ns = 0;
  std::int64_t first_id = 0, last_id = 0;
  std::int64_t freed_later = 0, held_to_exit = 0, held_at_end = 0, superseded = 0;
};

// GPU memory kinds, then pinned host memory, then address space; more bytes first.
bool ranks_before(const Group& a, const Group& b) {
  return std::tuple(kind_group(a.kind), -a.bytes, a.kind, a.size_bytes) <
         std::tuple(kind_group(b.kind), -b.bytes, b.kind, b.size_bytes);
}

json group_json(const Group& g, std::int64_t at_ns, const std::map<std::int64_t, std::string>& callers) {
  auto name = g.caller_id ? callers.find(*g.caller_id) : callers.end();
  json ids = {g.first_id};
  if (g.last_id != g.first_id) ids.push_back(g.last_id);
  json j = {{"kind", g.kind},
            {"size_bytes", g.size_bytes},
            {"library", name != callers.end() ? name->second : ""},
            {"count", g.count},
            {"bytes", g.bytes},
            {"oldest_age_ms", round_ms(static_cast<double>(at_ns - g.oldest_alloc_ns) / 1e6)},
            {"newest_age_ms", round_ms(static_cast<double>(at_ns - g.newest_alloc_ns) / 1e6)},
            {"example_allocation_ids", ids},
            {"fate",
             {{"freed_later", g.freed_later},
              {"held_until_process_exit", g.held_to_exit},
              {"held_at_trace_end", g.held_at_end},
              {"superseded", g.superseded}}}};
  return j;
}

std::string group_line(const json& g) {
  char buf[320];
  std::snprintf(buf, sizeof buf, "  %s %s x %lld = %s %s, age %.1f..%.1f ms, e.g. allocation %lld",
                g["kind"].get<std::string>().c_str(), fmt_bytes(g["size_bytes"].get<std::int64_t>()).c_str(),
                static_cast<long long>(g["count"].get<std::int64_t>()),
                fmt_bytes(g["bytes"].get<std::int64_t>()).c_str(),
                quote_untrusted(g["library"].get<std::string>(), 60).c_str(), g["newest_age_ms"].get<double>(),
                g["oldest_age_ms"].get<double>(),
                static_cast<long long>(g["example_allocation_ids"][0].get<std::int64_t>()));
  std::string line = buf;
  if (g["fate"]["superseded"].get<std::int64_t>() > 0)
    line += "; " + std::to_string(g["fate"]["superseded"].get<std::int64_t>()) +
            " SUPERSEDED (their free was missed: real lifetime unknown)";
  return line + "\n";
}

Result<ToolOutput> run(const ToolInput& in) {
  auto session = resolve_session(in.db, in.args);
  if (!session) return session.error();
  std::int64_t at_ns = session->end_ns;
  if (in.args.contains("at_ms")) {
    at_ns = session->ts_ns(in.args["at_ms"].get<double>());
    if (at_ns > session->end_ns)
      return Error{"at_ms is after the session's end; use at most " +
                   std::to_string(static_cast<long long>(session->t_ms(session->end_ns))) + " (or leave it out)"};
  }
  auto pid = arg_opt_int(in.args, "pid");
  if (pid)
    if (Status st = require_pid(in.db, *session, *pid); !st) return Error{st.message()};
  std::string caller = arg_string(in.args, "caller");
  std::optional<std::vector<std::int64_t>> caller_ids;
  if (!caller.empty()) {
    auto ids = callers_matching(in.db, *session, caller);
    if (!ids) return ids.error();
    caller_ids = std::move(*ids);
  }

  // One aggregate over the allocations made by `at` (O(allocations), or of
  // one pid through allocations(pid, alloc_ts_ns)). `released` rows are those
  // whose process exited holding them at or before `at`.
  std::string sql =
      "SELECT free_ts_ns IS NOT NULL AND free_ts_ns <= ?2 AS released, kind, bytes, caller_id, COUNT(*), SUM(bytes), "
      "MIN(alloc_ts_ns), MAX(alloc_ts_ns), MIN(id), MAX(id), SUM(end_reason = 'freed'), "
      "SUM(end_reason = 'process_exit'), SUM(end_reason IS NULL), SUM(end_reason = 'superseded') "
      "FROM allocations WHERE session_id = ?1 AND alloc_ts_ns <= ?2 "
      "AND (free_ts_ns IS NULL OR free_ts_ns > ?2 OR end_reason = 'process_exit')";
  std::vector<store::SqlValue> params = {session->id, at_ns};
  if (pid) {
    sql += " AND pid = ?3";
    params.emplace_back(*pid);
  }
  if (caller_ids) {
    sql += " AND caller_id IN (";
    for (std::size_t i = 0; i < caller_ids->size(); ++i) sql += (i ? "," : "") + std::to_string((*caller_ids)[i]);
    sql += ")";
  }
  sql += " GROUP BY released, kind, bytes, caller_id";
  std::vector<Group> held, released;
  in.progress(0, 1, "grouping allocations");
  Status st = in.db.query(sql, params, [&](const store::Row& r) {
    Group g;
    g.kind = r.text(1);
    g.size_bytes = r.i64(2);
    if (!r.is_null(3)) g.caller_id = r.i64(3);
    g.count = r.i64(4);
    g.bytes = r.i64(5);
    g.oldest_alloc_ns = r.i64(6);
    g.newest_alloc_ns = r.i64(7);
    g.first_id = r.i64(8);
    g.last_id = r.i64(9);
    g.freed_later = r.i64(10);
    g.held_to_exit = r.i64(11);
    g.held_at_end = r.i64(12);
    g.superseded = r.i64(13);
    (r.i64(0) ? released : held).push_back(std::move(g));
  });
  if (!st) return Error{st.message()};
  in.progress(1, 1, "grouped");
  auto callers = caller_names(in.db);
  if (!callers) return callers.error();

  const std::size_t limit = static_cast<std::size_t>(arg_int(in.args, "limit", kDefaultGroups));
  // Totals per kind over every group (the listing below is cut by limit).
  auto section = [&](std::vector<Group>& groups) {
    std::sort(groups.begin(), groups.end(), ranks_before);
    std::map<std::string, std::pair<std::int64_t, std::int64_t>> per_kind;
    std::int64_t superseded = 0;
    for (const auto& g : groups) {
      per_kind[g.kind].first += g.count;
      per_kind[g.kind].second += g.bytes;
      superseded += g.superseded;
    }
    json totals = json::array();
    for (const auto& kind : kAllocKinds)
      if (auto it = per_kind.find(std::string(kind)); it != per_kind.end())
        totals.push_back({{"kind", kind},
                          {"count", it->second.first},
                          {"bytes", it->second.second},
                          {"occupies_gpu_memory", occupies_gpu_memory(kind)}});
    json list = json::array();
    for (std::size_t i = 0; i < groups.size() && i < limit; ++i) list.push_back(group_json(groups[i], at_ns, *callers));
    return json{{"by_kind", totals},
                {"groups", list},
                {"groups_more", groups.size() > limit ? groups.size() - limit : 0},
                {"superseded_count", superseded}};
  };

  json result;
  result["session_id"] = session->id;
  result["at_ms"] = round_ms(session->t_ms(at_ns));
  result["pid"] = pid ? json(*pid) : json(nullptr);
  result["held"] = section(held);
  result["released_at_exit"] = section(released);
  result["note"] =
      "held: allocations alive at at_ms (their fate says what happened to them later). released_at_exit: memory "
      "never freed by a call that the driver released when its process exited at or before at_ms; not a leak of a "
      "live process. vmm_reserved is address space and vmm_mapped maps vmm_physical bytes: neither adds GPU memory. "
      "ipc_mapped is another process's allocation opened by cudaIpcOpenMemHandle (bytes 0: the exporter holds and "
      "counts it; closed by cudaIpcCloseMemHandle); host_registered is host memory pinned by cudaHostRegister; "
      "vmm_imported is another process's VMM memory imported by cuMemImportFromShareableHandle (bytes 0: the "
      "exporter created and counts it; its mappings here are vmm_mapped; ended by cuMemRelease).";
  auto cov = coverage(in.db, *session);
  if (!cov) return cov.error();
  result["coverage"] = *cov;

  char buf[256];
  std::snprintf(buf, sizeof buf, "outstanding_allocations: session %lld at t=%.1f ms%s\n",
                static_cast<long long>(session->id), result["at_ms"].get<double>(),
                pid ? (", pid " + std::to_string(*pid)).c_str() : "");
  std::string text = buf;
  auto render = [&](const json& s, const std::string& title) {
    text += title;
    if (s["by_kind"].empty()) {
      text += " none\n";
      return;
    }
    for (const auto& k : s["by_kind"])
      text += " " + k["kind"].get<std::string>() + " " + fmt_bytes(k["bytes"].get<std::int64_t>()) + " (" +
              std::to_string(k["count"].get<std::int64_t>()) + ")" + (k["occupies_gpu_memory"].get<bool>() ? "" : "*");
    text += "\n";
    for (const auto& g : s["groups"]) text += group_line(g);
    if (s["groups_more"].get<std::size_t>() > 0)
      text += "  ... " + std::to_string(s["groups_more"].get<std::size_t>()) + " groups more (raise limit)\n";
  };
  render(result["held"], "held by live processes:");
  render(result["released_at_exit"], "released at process exit (never freed by a call):");
  text += "(* not GPU memory: host is pinned RAM, vmm_reserved address space, vmm_mapped maps vmm_physical, ipc_mapped maps "
          "another process's allocation (0 B: the size is the exporter's), host_registered is pinned program memory, "
          "vmm_imported is another process's VMM memory (0 B: the exporter's))\n";

  ToolOutput out;
  out.text = bound_text(std::move(text), coverage_line(result["coverage"]));
  out.structured = std::move(result);
  return out;
}

}  // namespace

extern const ToolSpec kOutstandingAllocations;
const ToolSpec kOutstandingAllocations{
    "outstanding_allocations", "Memory held at an instant",
    "Use to see what memory was held at a given time (default: the session end), grouped by kind, size and calling "
    "library with ages and example allocation ids, and what processes still held when they exited.",
    run};

}  // namespace vs::tools
