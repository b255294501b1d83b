// trace_overview: the first call of an investigation. What the trace file
// holds (sessions), and for one session: where it ran, what was traced
// (processes, libraries, probes), what happened (calls and bytes per API),
// what was still held at the end, NVML's view and what was lost.
#include <algorithm>
#include <cstdio>
#include <map>
#include <tuple>

#include "tools/api_stats.h"
#include "tools/timeline_model.h"

namespace vs::tools {
namespace {

constexpr std::int64_t kDefaultLimit = 20;
constexpr std::int64_t kMaxSessionsListed = 20;

json nullable(const store::Row& r, int col) { return r.is_null(col) ? json(nullptr) : json(r.i64(col)); }
json nullable_ms(const Session& s, const store::Row& r, int col) {
  return r.is_null(col) ? json(nullptr) : json(round_ms(s.t_ms(r.i64(col))));
}

// Ops whose `bytes` column is a size worth adding up (cudaMemGetInfo's is free memory, a level).
bool bytes_add_up(const std::string& op) {
  return op == "alloc" || op == "vmm_create" || op == "vmm_reserve" || op == "vmm_map" || op == "memcpy" ||
         op == "host_register";
}

Result<json> sessions_list(const store::TraceReader& db) {
  json list = json::array();
  std::int64_t total = 0;
  Status st = db.query(
      "SELECT id, status, mode, start_ts_ns, end_ts_ns, calls_recorded, host, COUNT(*) OVER () FROM sessions "
      "ORDER BY id DESC LIMIT ?",
      {kMaxSessionsListed}, [&](const store::Row& r) {
        total = r.i64(7);
        list.push_back({{"session_id", r.i64(0)},
                        {"status", r.text(1)},
                        {"mode", r.text(2)},
                        {"duration_ms", r.is_null(4) ? json(nullptr)
                                                     : json(round_ms(static_cast<double>(r.i64(4) - r.i64(3)) / 1e6))},
                        {"calls_recorded", r.i64(5)},
                        {"host", clean_untrusted(r.text(6), 80)}});
      });
  if (!st) return Error{st.message()};
  return json{{"list", list}, {"more", total - static_cast<std::int64_t>(list.size())}};
}

Result<ToolOutput> run(const ToolInput& in) {
  auto session = resolve_session(in.db, in.args);
  if (!session) return session.error();
  const Session& s = *session;
  const std::size_t limit = static_cast<std::size_t>(arg_int(in.args, "limit", kDefaultLimit));
  json result;
  Status st;

  auto sessions = sessions_list(in.db);
  if (!sessions) return sessions.error();
  result["sessions"] = (*sessions)["list"];
  result["sessions_more"] = (*sessions)["more"];

  st = in.db.query(
      "SELECT host, kernel, command, mode, vramscope_version, attach_ms, detach_ms, nvml, options FROM sessions "
      "WHERE id = ?",
      {s.id}, [&](const store::Row& r) {
        result["session"] = {{"session_id", s.id},
                             {"status", s.status},
                             {"host", clean_untrusted(r.text(0), 80)},
                             {"kernel", clean_untrusted(r.text(1), 80)},
                             {"command", r.is_null(2) ? json(nullptr) : json(clean_untrusted(r.text(2), 400))},
                             {"mode", r.text(3)},
                             {"vramscope_version", clean_untrusted(r.text(4), 40)},
                             {"started_unix_ms", (s.start_ns + s.realtime_offset_ns) / 1000000},
                             {"duration_ms", round_ms(s.t_ms(s.end_ns))},
                             {"attach_ms", r.is_null(5) ? json(nullptr) : json(r.f64(5))},
                             {"detach_ms", r.is_null(6) ? json(nullptr) : json(r.f64(6))},
                             {"nvml", r.is_null(7) ? json(nullptr) : json(clean_untrusted(r.text(7), 200))},
                             {"options", clean_untrusted(r.text(8), 400)}};
      });
  if (!st) return Error{st.message()};

  result["gpus"] = json::array();
  st = in.db.query("SELECT gpu_index, name, uuid, driver_version, total_bytes FROM gpus WHERE session_id = ? "
                   "ORDER BY gpu_index",
                   {s.id}, [&](const store::Row& r) {
                     result["gpus"].push_back({{"gpu_index", r.i64(0)},
                                               {"name", clean_untrusted(r.text(1), 80)},
                                               {"uuid", clean_untrusted(r.text(2), 80)},
                                               {"driver_version", clean_untrusted(r.text(3), 40)},
                                               {"total_bytes", nullable(r, 4)}});
                   });
  if (!st) return Error{st.message()};

  result["processes"] = json::array();
  std::int64_t processes = 0;
  st = in.db.query(
      "SELECT pid, ppid, comm, cmdline, how_found, first_ts_ns, exit_ts_ns, exit_code, COUNT(*) OVER () "
      "FROM processes WHERE session_id = ? ORDER BY first_ts_ns, pid LIMIT ?",
      {s.id, static_cast<std::int64_t>(limit)}, [&](const store::Row& r) {
        processes = r.i64(8);
        result["processes"].push_back({{"pid", r.i64(0)},
                                       {"ppid", nullable(r, 1)},
                                       {"comm", clean_untrusted(r.text(2), 32)},
                                       {"cmdline", clean_untrusted(r.text(3), 200)},
                                       {"how_found", r.text(4)},
                                       {"first_t_ms", round_ms(s.t_ms(r.i64(5)))},
                                       {"exit_t_ms", nullable_ms(s, r, 6)},
                                       {"exit_code", nullable(r, 7)}});
      });
  if (!st) return Error{st.message()};
  result["processes_more"] = std::max<std::int64_t>(0, processes - static_cast<std::int64_t>(result["processes"].size()));

  result["libraries"] = json::array();
  st = in.db.query(
      "SELECT l.path, l.kind, l.found_by, l.attach_mode, l.probes_attached, l.probes_missing, l.attached_ts_ns, "
      "l.error, l.pid, (SELECT COUNT(*) FROM probes p WHERE p.library_id = l.id AND p.status = 'failed') "
      "FROM libraries l WHERE l.session_id = ? ORDER BY l.probes_attached = 0, l.id",
      {s.id}, [&](const store::Row& r) {
        result["libraries"].push_back({{"library", clean_untrusted(short_path(r.text(0)), 80)},
                                       {"path", clean_untrusted(r.text(0), 200)},
                                       {"kind", r.text(1)},
                                       {"found_by", r.text(2)},
                                       {"attach_mode", r.is_null(3) ? json(nullptr) : json(r.text(3))},
                                       {"probes_attached", r.i64(4)},
                                       {"probes_missing", r.i64(5)},
                                       {"probes_failed", r.i64(9)},
                                       {"attached_t_ms", nullable_ms(s, r, 6)},
                                       {"error", r.is_null(7) ? json(nullptr) : json(clean_untrusted(r.text(7), 200))},
                                       {"found_in_pid", nullable(r, 8)}});
      });
  if (!st) return Error{st.message()};

  // Calls per API: from the session's summaries (built when it ended), or one
  // pass over its calls when it has none (api_stats.h).
  in.progress(0, 2, "counting calls per API");
  auto api_table = load_apis(in.db);
  if (!api_table) return api_table.error();
  auto stats = per_api_stats(in.db, s, *api_table);
  if (!stats) return stats.error();
  struct ApiRow {
    std::string api, layer, op;
    std::int64_t calls = 0, failed = 0, nested = 0, bytes = 0;
  };
  std::vector<ApiRow> apis;
  for (const auto& [api_id, api_stats] : *stats) {
    const ApiInfo& info = (*api_table)[api_id];
    apis.push_back({info.name, info.layer, info.op, api_stats.calls, api_stats.failed, api_stats.nested,
                    api_stats.ok_bytes});
  }
  std::sort(apis.begin(), apis.end(),
            [](const ApiRow& a, const ApiRow& b) { return std::tie(b.calls, a.api) < std::tie(a.calls, b.api); });
  if (in.progress.stop_requested()) return Error{"cancelled"};
  in.progress(1, 2, "outstanding bytes at the end");
  result["apis"] = json::array();
  for (std::size_t i = 0; i < apis.size() && i < limit; ++i) {
    const ApiRow& a = apis[i];
    result["apis"].push_back({{"api", a.api},
                              {"layer", a.layer},
                              {"op", a.op},
                              {"calls", a.calls},
                              {"failed", a.failed},
                              {"nested", a.nested},
                              {"bytes", bytes_add_up(a.op) ? json(a.bytes) : json(nullptr)}});
  }
  result["apis_more"] = apis.size() > limit ? apis.size() - limit : 0;

  // What was held at the end: live processes vs released when their process exited (O(allocations)).
  std::map<std::string, json> by_kind;
  st = in.db.query(
      "SELECT kind, SUM(end_reason IS NULL), COALESCE(SUM(CASE WHEN end_reason IS NULL THEN bytes END), 0), "
      "SUM(end_reason = 'process_exit'), COALESCE(SUM(CASE WHEN end_reason = 'process_exit' THEN bytes END), 0), "
      "SUM(end_reason = 'superseded') FROM allocations WHERE session_id = ? GROUP BY kind",
      {s.id}, [&](const store::Row& r) {
        by_kind[r.text(0)] = {{"kind", r.text(0)},
                              {"occupies_gpu_memory", occupies_gpu_memory(r.text(0))},
                              {"live_count", r.i64(1)},
                              {"live_bytes", r.i64(2)},
                              {"released_at_exit_count", r.i64(3)},
                              {"released_at_exit_bytes", r.i64(4)},
                              {"superseded_count", r.i64(5)}};
      });
  if (!st) return Error{st.message()};
  result["outstanding_at_end"] = json::array();
  for (auto kind : kAllocKinds)
    if (auto it = by_kind.find(std::string(kind)); it != by_kind.end()) result["outstanding_at_end"].push_back(it->second);

  // NVML's device view (O(samples)).
  json nvml_gpus = json::array(), nvml_processes = json::array();
  st = in.db.query("SELECT gpu_index, COUNT(*), MIN(used_bytes), MAX(used_bytes), MAX(total_bytes) "
                   "FROM gpu_memory_samples WHERE session_id = ? GROUP BY gpu_index",
                   {s.id}, [&](const store::Row& r) {
                     nvml_gpus.push_back({{"gpu_index", r.i64(0)},
                                          {"samples", r.i64(1)},
                                          {"min_used_bytes", r.i64(2)},
                                          {"max_used_bytes", r.i64(3)},
                                          {"total_bytes", r.i64(4)}});
                   });
  if (!st) return Error{st.message()};
  st = in.db.query("SELECT gpu_index, pid, COUNT(*), MAX(used_bytes) FROM gpu_process_samples WHERE session_id = ? "
                   "GROUP BY gpu_index, pid ORDER BY MAX(used_bytes) DESC LIMIT ?",
                   {s.id, static_cast<std::int64_t>(limit)}, [&](const store::Row& r) {
                     nvml_processes.push_back(
                         {{"gpu_index", r.i64(0)}, {"pid", r.i64(1)}, {"samples", r.i64(2)}, {"max_used_bytes", r.i64(3)}});
                   });
  if (!st) return Error{st.message()};
  result["nvml"] = nvml_gpus.empty() && nvml_processes.empty()
                       ? json(nullptr)
                       : json{{"gpus", nvml_gpus}, {"processes", nvml_processes}};

  std::int64_t unmatched = 0;
  st = in.db.query("SELECT COUNT(*) FROM unmatched_frees WHERE session_id = ?", {s.id},
                   [&](const store::Row& r) { unmatched = r.i64(0); });
  if (!st) return Error{st.message()};
  auto cov = coverage(in.db, s);
  if (!cov) return cov.error();
  result["drops"] = {{"call_drops", (*cov)["call_drops"]},
                     {"unrecorded_calls", (*cov)["unrecorded_calls"]},
                     {"lifecycle_drops", (*cov)["lifecycle_drops"]},
                     {"sched_drops", (*cov)["sched_drops"]},
                     {"unmatched_frees", unmatched}};
  result["coverage"] = *cov;
  in.progress(2, 2, "done");

  // Text: the session and what it held first, then calls, then the inventory.
  const json& ses = result["session"];
  char buf[512];
  std::snprintf(buf, sizeof buf, "session %lld (%s, %s mode), %.1f s on host %s, kernel %s, vramscope %s\n",
                static_cast<long long>(s.id), s.status.c_str(), ses["mode"].get<std::string>().c_str(),
                ses["duration_ms"].get<double>() / 1000, quote_untrusted(ses["host"].get<std::string>(), 60).c_str(),
                quote_untrusted(ses["kernel"].get<std::string>(), 60).c_str(),
                ses["vramscope_version"].get<std::string>().c_str());
  std::string text = buf;
  if (!ses["command"].is_null()) text += "command: " + quote_untrusted(ses["command"].get<std::string>(), 300) + "\n";
  for (const auto& g : result["gpus"])
    text += "GPU " + std::to_string(g["gpu_index"].get<std::int64_t>()) + ": " +
            quote_untrusted(g["name"].get<std::string>(), 60) + ", " +
            (g["total_bytes"].is_null() ? "?" : fmt_bytes(g["total_bytes"].get<std::int64_t>())) + ", driver " +
            quote_untrusted(g["driver_version"].get<std::string>(), 30) + "\n";
  text += "held at the end (live / released when the process exited):";
  if (result["outstanding_at_end"].empty()) text += " nothing";
  for (const auto& k : result["outstanding_at_end"])
    text += " " + k["kind"].get<std::string>() + (k["occupies_gpu_memory"].get<bool>() ? "" : "*") + " " +
            fmt_bytes(k["live_bytes"].get<std::int64_t>()) + " / " +
            fmt_bytes(k["released_at_exit_bytes"].get<std::int64_t>()) + ";";
  text += "\n  (* not GPU memory: host is pinned RAM, vmm_reserved is address space, vmm_mapped maps vmm_physical,\n"
          "     ipc_mapped maps another process's allocation, host_registered is pinned program memory,\n"
          "     vmm_imported is another process's VMM memory imported here)\n";
  text += "processes:\n";
  for (const auto& p : result["processes"]) {
    std::snprintf(buf, sizeof buf, "  pid %lld %s (%s) t=%.1f..", static_cast<long long>(p["pid"].get<std::int64_t>()),
                  quote_untrusted(p["comm"].get<std::string>(), 32).c_str(), p["how_found"].get<std::string>().c_str(),
                  p["first_t_ms"].get<double>());
    text += buf;
    if (p["exit_t_ms"].is_null()) text += "end (running)";
    else {
      std::snprintf(buf, sizeof buf, "%.1f ms", p["exit_t_ms"].get<double>());
      text += buf;
    }
    if (!p["exit_code"].is_null()) text += " exit " + std::to_string(p["exit_code"].get<std::int64_t>());
    text += " " + quote_untrusted(p["cmdline"].get<std::string>(), 120) + "\n";
  }
  if (result["processes_more"].get<std::int64_t>() > 0)
    text += "  ... " + std::to_string(result["processes_more"].get<std::int64_t>()) + " processes more (raise limit)\n";
  text += "calls per API (count, failed, bytes; nested = made inside another traced call, bytes counted there too):\n";
  for (const auto& a : result["apis"]) {
    std::snprintf(buf, sizeof buf, "  %-28s %-7s %-12s %8lld", a["api"].get<std::string>().c_str(),
                  a["layer"].get<std::string>().c_str(), a["op"].get<std::string>().c_str(),
                  static_cast<long long>(a["calls"].get<std::int64_t>()));
    text += buf;
    if (a["failed"].get<std::int64_t>() > 0) text += ", " + std::to_string(a["failed"].get<std::int64_t>()) + " failed";
    if (a["nested"].get<std::int64_t>() > 0) text += ", " + std::to_string(a["nested"].get<std::int64_t>()) + " nested";
    if (!a["bytes"].is_null()) text += ", " + fmt_bytes(a["bytes"].get<std::int64_t>());
    text += "\n";
  }
  if (result["apis_more"].get<std::size_t>() > 0)
    text += "  ... " + std::to_string(result["apis_more"].get<std::size_t>()) + " APIs more (raise limit)\n";
  text += "libraries (probes attached/missing/failed):\n";
  for (const auto& l : result["libraries"]) {
    text += "  " + l["kind"].get<std::string>() + " " + quote_untrusted(l["library"].get<std::string>(), 80) + " " +
            std::to_string(l["probes_attached"].get<std::int64_t>()) + "/" +
            std::to_string(l["probes_missing"].get<std::int64_t>()) + "/" +
            std::to_string(l["probes_failed"].get<std::int64_t>()) + " via " +
            (l["attach_mode"].is_null() ? "NOT ATTACHED" : l["attach_mode"].get<std::string>()) + ", found by " +
            l["found_by"].get<std::string>();
    if (!l["error"].is_null()) text += ", error " + quote_untrusted(l["error"].get<std::string>(), 120);
    text += "\n";
  }
  if (!result["nvml"].is_null()) {
    text += "NVML (" + (ses["nvml"].is_null() ? std::string("sampled") : ses["nvml"].get<std::string>()) + "):";
    for (const auto& g : result["nvml"]["gpus"])
      text += " gpu " + std::to_string(g["gpu_index"].get<std::int64_t>()) + " used " +
              fmt_bytes(g["min_used_bytes"].get<std::int64_t>()) + ".." + fmt_bytes(g["max_used_bytes"].get<std::int64_t>()) + ";";
    for (const auto& p : result["nvml"]["processes"])
      text += " pid " + std::to_string(p["pid"].get<std::int64_t>()) + " up to " +
              fmt_bytes(p["max_used_bytes"].get<std::int64_t>()) + ";";
    text += "\n";
  } else if (!ses["nvml"].is_null()) {
    text += "NVML: " + quote_untrusted(ses["nvml"].get<std::string>(), 160) + "\n";
  }
  if (unmatched > 0)
    text += std::to_string(unmatched) + " frees matched no recorded allocation (memory allocated before tracing began)\n";
  if (result["sessions"].size() > 1 || result["sessions_more"].get<std::int64_t>() > 0) {
    text += "sessions in this file:";
    for (const auto& o : result["sessions"])
      text += " " + std::to_string(o["session_id"].get<std::int64_t>()) + " (" + o["status"].get<std::string>() + ", " +
              std::to_string(o["calls_recorded"].get<std::int64_t>()) + " calls)";
    text += "\n";
  }

  ToolOutput out;
  out.text = bound_text(std::move(text), coverage_line(result["coverage"]));
  out.structured = std::move(result);
  return out;
}

}  // namespace

extern const ToolSpec kTraceOverview;
const ToolSpec kTraceOverview{
    "trace_overview", "Trace overview",
    "Call first: what the trace holds (sessions, host, GPUs, processes, libraries and probes, calls and bytes per "
    "API, memory held at the end, NVML, drops), so you know what was observed before drilling down.",
    run};

}  // namespace vs::tools
