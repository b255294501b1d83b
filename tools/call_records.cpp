#include "tools/call_records.h"

#include <cstdio>
#include <map>
#include <set>

namespace vs::tools {
namespace {

std::optional<std::int64_t> opt(const store::Row& r, int col) {
  return r.is_null(col) ? std::nullopt : std::optional<std::int64_t>(r.i64(col));
}

json or_null(const std::optional<std::int64_t>& v) { return v ? json(*v) : json(); }

std::string id_list(const std::set<std::int64_t>& ids) {
  std::string s;
  for (auto id : ids) s += (s.empty() ? "" : ",") + std::to_string(id);
  return s;
}

bool is_free(const std::string& op) {
  return op == "free" || op == "free_host" || op == "vmm_release" || op == "vmm_unmap" || op == "vmm_address_free";
}
bool is_alloc(const std::string& op) {
  return op == "alloc" || op == "vmm_create" || op == "vmm_reserve" || op == "vmm_map";
}

}  // namespace

CallRow read_call_row(const store::Row& r) {
  return CallRow{r.i64(0),  r.i64(1),  r.i64(2),      r.i64(3),      r.i64(4),  r.i64(5),      opt(r, 6),
                 opt(r, 7), opt(r, 8), r.i64(9),      opt(r, 10),    r.i64(11), r.i64(12),     r.i64(13),
                 opt(r, 14), r.text(15), opt(r, 16),  opt(r, 17),    r.i64(18) != 0};
}

Result<json> describe_calls(const store::TraceReader& db, const Session& session, const ApiTable& apis,
                            const std::vector<CallRow>& calls) {
  // Ids are integers read from the trace, so they are inlined into the IN lists.
  std::set<std::int64_t> callers, parents, ids;
  for (const auto& c : calls) {
    if (c.caller_id) callers.insert(*c.caller_id);
    if (c.parent_id) parents.insert(*c.parent_id);
    ids.insert(c.id);
  }
  std::map<std::int64_t, std::string> caller_path;
  std::map<std::int64_t, json> parent;
  // An allocation is tied to the outermost call (cudaFree, not its cuMemFree_v2),
  // so a nested call looks it up through its parent.
  std::map<std::int64_t, json> created_by, freed_by;  // by alloc_call_id, free_call_id
  Status st = db.query("SELECT id, path FROM objects WHERE id IN (" + id_list(callers) + ")", {},
                       [&](const store::Row& r) { caller_path[r.i64(0)] = r.text(1); });
  if (st)
    st = db.query("SELECT id, api_id, dur_ns FROM call_rows WHERE id IN (" + id_list(parents) + ")", {},
                  [&](const store::Row& r) {
                    auto api = apis.find(r.i64(1));
                    parent[r.i64(0)] = {{"id", r.i64(0)},
                                        {"api", api == apis.end() ? "?" : api->second.name},
                                        {"dur_ns", r.i64(2)}};
                  });
  std::set<std::int64_t> lookup = ids;
  lookup.insert(parents.begin(), parents.end());
  if (st)
    st = db.query(
        "SELECT id, kind, bytes, alloc_call_id, alloc_ts_ns, free_call_id, free_ts_ns, end_reason FROM allocations "
        "WHERE session_id = ? AND (alloc_call_id IN (" + id_list(lookup) + ") OR free_call_id IN (" + id_list(lookup) +
            "))",
        {session.id}, [&](const store::Row& r) {
          json a = {{"allocation_id", r.i64(0)},
                    {"kind", r.text(1)},
                    {"bytes", r.i64(2)},
                    {"alloc_call_id", r.i64(3)},
                    {"alloc_t_ms", session.t_ms(r.i64(4))},
                    {"free_call_id", opt(r, 5) ? json(r.i64(5)) : json()},
                    {"lifetime_ms", r.is_null(6) ? json() : json(static_cast<double>(r.i64(6) - r.i64(4)) / 1e6)},
                    {"end_reason", r.is_null(7) ? json() : json(r.text(7))}};
          if (!r.is_null(5)) freed_by[r.i64(5)] = a;
          created_by[r.i64(3)] = std::move(a);
        });
  if (!st) return Error{st.message()};

  json out = json::array();
  for (const auto& c : calls) {
    auto api = apis.find(c.api_id);
    std::string op = api == apis.end() ? "" : api->second.op;
    json j = {{"id", c.id},
              {"t_ms", session.t_ms(c.ts_ns)},
              {"api", api == apis.end() ? "?" : api->second.name},
              {"op", op},
              {"pid", c.pid},
              {"tid", c.tid},
              {"dur_ns", c.dur_ns},
              {"off_cpu_ns", c.off_cpu_ns},
              {"runq_ns", c.runq_ns},
              {"switches", c.switches},
              {"preempted_by", or_null(c.preempted_by)},
              {"preempted_by_comm", c.preempted_by ? json(clean_untrusted(c.preempted_by_comm, 32)) : json()},
              {"longest_off_ns", or_null(c.longest_off_ns)},
              {"device", or_null(c.device)},
              {"bytes", or_null(c.bytes)},
              {"ptr", c.ptr ? json(hex_ptr(*c.ptr)) : json()},
              {"ret", c.ret},
              {"incomplete", c.incomplete},
              {"caller", json()},
              {"caller_path", json()},
              {"parent", json()},
              {"allocation", json()}};
    if (c.caller_id && caller_path.count(*c.caller_id)) {
      j["caller"] = clean_untrusted(short_path(caller_path[*c.caller_id]), 80);
      j["caller_path"] = clean_untrusted(caller_path[*c.caller_id], 240);
    }
    if (c.parent_id && parent.count(*c.parent_id)) j["parent"] = parent[*c.parent_id];
    auto& by_call = is_free(op) ? freed_by : created_by;
    auto a = by_call.find(c.id);
    if (a == by_call.end() && c.parent_id) a = by_call.find(*c.parent_id);
    if (a != by_call.end() && (is_free(op) || is_alloc(op))) {
      json alloc = a->second;
      alloc["relation"] = is_free(op) ? "freed" : "created";
      if (is_free(op)) alloc["age_ms"] = session.t_ms(c.ts_ns) - alloc["alloc_t_ms"].get<double>();
      j["allocation"] = std::move(alloc);
    }
    out.push_back(std::move(j));
  }
  return out;
}

std::string call_line(const json& c) {
  char head[256];
  std::snprintf(head, sizeof head, "call %lld t=%.3f ms pid %lld %s %s", static_cast<long long>(c["id"].get<std::int64_t>()),
                c["t_ms"].get<double>(), static_cast<long long>(c["pid"].get<std::int64_t>()),
                c["api"].get<std::string>().c_str(), fmt_ns(c["dur_ns"]).c_str());
  std::string s = head;
  if (c["switches"].get<std::int64_t>() > 0) {
    s += " (off-CPU " + fmt_ns(c["off_cpu_ns"]) + ", runq " + fmt_ns(c["runq_ns"]) + ", " +
         std::to_string(c["switches"].get<std::int64_t>()) + " switches";
    if (!c["preempted_by"].is_null())
      s += ", CPU held by " + quote_untrusted(c["preempted_by_comm"].get<std::string>(), 32) + " pid " +
           std::to_string(c["preempted_by"].get<std::int64_t>());
    s += ")";
  }
  if (!c["bytes"].is_null()) s += " " + fmt_bytes(c["bytes"]);
  if (!c["ptr"].is_null()) s += " ptr " + c["ptr"].get<std::string>();
  if (c["ret"].get<std::int64_t>() != 0) s += " FAILED ret " + std::to_string(c["ret"].get<std::int64_t>());
  if (c["incomplete"].get<bool>()) s += " (thread exited inside the call)";
  if (!c["caller"].is_null()) s += " from " + quote_untrusted(c["caller"].get<std::string>(), 80);
  if (!c["parent"].is_null())
    s += " inside " + c["parent"]["api"].get<std::string>() + " call " +
         std::to_string(c["parent"]["id"].get<std::int64_t>());
  const json& a = c["allocation"];
  if (!a.is_null()) {
    s += "; " + a["relation"].get<std::string>() + " allocation " + std::to_string(a["allocation_id"].get<std::int64_t>()) +
         " (" + a["kind"].get<std::string>() + ", " + fmt_bytes(a["bytes"]);
    if (a["relation"] == "freed") {
      char age[64];
      std::snprintf(age, sizeof age, ", allocated by call %lld, %.1f ms earlier",
                    static_cast<long long>(a["alloc_call_id"].get<std::int64_t>()), a["age_ms"].get<double>());
      s += age;
    } else {
      s += a["end_reason"].is_null() ? ", still held" : ", then " + a["end_reason"].get<std::string>();
    }
    s += ")";
  }
  return s;
}

}  // namespace vs::tools
