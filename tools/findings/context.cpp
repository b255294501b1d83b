// The shared context of one findings run, and the helpers several rules use.
#include <algorithm>

#include "common/json_schema.h"
#include "tools/findings/rule.h"
#include "tools/timeline_model.h"

namespace vs::tools::findings {

std::string_view severity_name(Severity s) {
  switch (s) {
    case Severity::High: return "high";
    case Severity::Medium: return "medium";
    case Severity::Low: return "low";
    case Severity::Info: return "info";
  }
  return "info";
}

void Ctx::load() {
  query("SELECT pid, first_ts_ns, exit_ts_ns, how_found, COALESCE(comm, '') FROM processes WHERE " + scope() +
            " ORDER BY first_ts_ns",
        params(), [&](const store::Row& r) {
          Process p{r.i64(0), r.i64(1), r.is_null(2) ? session.end_ns : r.i64(2), !r.is_null(2), r.text(3),
                    r.text(4)};
          processes[p.pid] = p;
        });
  query("SELECT id, path FROM objects", {}, [&](const store::Row& r) {
    callers[r.i64(0)] = short_path(r.text(1));
    if (const FrameworkAllocator* fw = framework_of(r.text(1))) framework_callers[r.i64(0)] = fw;
  });
  if (!status.ok()) return;
  auto loaded = load_apis(db);
  if (loaded) apis = std::move(*loaded);
  else status = Status(loaded.error());
}

void Ctx::query(const std::string& sql, const std::vector<store::SqlValue>& params,
                const std::function<void(const store::Row&)>& on_row) {
  if (status.ok()) status = db.query(sql, params, on_row);
}

std::int64_t Ctx::value(const std::string& sql, const std::vector<store::SqlValue>& params) {
  std::int64_t v = 0;
  query(sql, params, [&](const store::Row& r) { v = r.is_null(0) ? 0 : r.i64(0); });
  return v;
}

std::string Ctx::scope(const std::string& alias) const {
  std::string a = alias.empty() ? "" : alias + ".";
  return a + "session_id = ?" + (pid ? " AND " + a + "pid = ?" : "");
}

std::string Ctx::scope_of_apis() const { return "session_id = ?" + std::string(pid ? " AND +pid = ?" : ""); }

std::vector<store::SqlValue> Ctx::params(std::vector<store::SqlValue> extra) const {
  std::vector<store::SqlValue> p{session.id};
  if (pid) p.push_back(*pid);
  p.insert(p.end(), extra.begin(), extra.end());
  return p;
}

std::string Ctx::who(std::int64_t p) const {
  auto it = processes.find(p);
  std::string s = "pid " + std::to_string(p);
  return it == processes.end() || it->second.comm.empty() ? s : s + " " + quote_untrusted(it->second.comm, 32);
}

std::vector<std::int64_t> Ctx::ids(const std::string& sql, const std::vector<store::SqlValue>& params) {
  std::vector<std::int64_t> out;
  query(sql, params, [&](const store::Row& r) { out.push_back(r.i64(0)); });
  return out;
}

const std::map<std::int64_t, store::CallStats>& Ctx::call_stats() {
  if (!call_stats_ && status.ok()) {
    const Window whole{session.start_ns, session.end_ns, true};
    auto filter = build_call_filter(db, apis, session, whole, pid ? json{{"pid", *pid}} : json::object());
    auto stats = filter ? per_api_stats(db, session, whole, *filter)
                        : Result<std::map<std::int64_t, store::CallStats>>(filter.error());
    if (stats) call_stats_ = std::move(*stats);
    else status = Status(stats.error());
  }
  static const std::map<std::int64_t, store::CallStats> none;
  return call_stats_ ? *call_stats_ : none;
}

const ActivityIndex& Ctx::activity_index() {
  if (!activity_index_) {
    auto loaded = ActivityIndex::load(db, session, pid);
    if (loaded) activity_index_ = std::move(*loaded);
    else {
      if (status.ok()) status = Status(loaded.error());
      activity_index_.emplace();
    }
  }
  return *activity_index_;
}

const std::vector<Ctx::Allocation>& Ctx::allocations() {
  if (!allocations_) {
    allocations_.emplace();
    const ActivityIndex& index = activity_index();
    // alloc_seq and free_seq are stored since schema 4; older traces are numbered by the index.
    const std::string seqs = index.stored() ? "COALESCE(alloc_seq, 0), COALESCE(free_seq, 0)" : "0, 0";
    query(std::string("SELECT ") + kGpuKindsSql + ", id, pid, COALESCE(caller_id, 0), alloc_ts_ns, bytes, "
              "alloc_call_id, free_ts_ns, COALESCE(end_reason, ''), kind, COALESCE(free_call_id, 0), " + seqs +
              " FROM allocations WHERE " + scope(),
          params(), [&](const store::Row& r) {
            allocations_->push_back({r.i64(0) != 0, r.i64(1), r.i64(2), r.i64(3), r.i64(4), r.i64(5), r.i64(6),
                                     r.is_null(7) ? std::nullopt : std::optional(r.i64(7)), r.text(8), r.text(9),
                                     r.i64(10), r.i64(11), r.i64(12)});
          });
    if (!index.stored())
      for (Allocation& a : *allocations_) {
        a.alloc_seq = index.seq_of_call(a.alloc_call_id);
        a.free_seq = a.free_call_id ? index.seq_of_call(a.free_call_id) : 0;
      }
  }
  return *allocations_;
}

std::vector<std::int64_t> Ctx::largest_allocations(const std::function<bool(const Allocation&)>& keep) {
  std::vector<std::pair<std::int64_t, std::int64_t>> kept;  // (-bytes, id)
  for (const Allocation& a : allocations())
    if (keep(a)) kept.push_back({-a.bytes, a.id});
  const auto n = std::min(kept.size(), kMaxIds);
  std::partial_sort(kept.begin(), kept.begin() + static_cast<std::ptrdiff_t>(n), kept.end());
  std::vector<std::int64_t> ids;
  for (std::size_t i = 0; i < n; ++i) ids.push_back(kept[i].second);
  return ids;
}

void Ctx::drill(Finding& f, const char* tool, json args, const char* why) const {
  args["session_id"] = session.id;
  if (!find_tool(tool) || json_schema::validate(input_schema(tool), args)) return;
  f.next.push_back({{"tool", tool}, {"arguments", std::move(args)}, {"why", why}});
}

const std::vector<Ctx::OutOfMemory>& Ctx::out_of_memory_failures() {
  if (out_of_memory_failures_) return *out_of_memory_failures_;
  out_of_memory_failures_.emplace();
  std::string failing;  // the allocating APIs whose top-level calls failed
  for (const auto& [api_id, s] : call_stats()) {
    const std::string& op = apis[api_id].op;
    if (s.top_level_failed > 0 && (op == "alloc" || op == "vmm_create"))
      failing += (failing.empty() ? "" : ",") + std::to_string(api_id);
  }
  if (!failing.empty())
    query("SELECT pid, COALESCE(caller_id, 0), ts_ns FROM call_rows WHERE " + scope_of_apis() + " AND api_id IN (" +
              failing + ") AND ret = " + std::to_string(kOutOfMemoryRet) + " AND parent_id IS NULL ORDER BY ts_ns, id",
          params(), [&](const store::Row& r) { out_of_memory_failures_->push_back({r.i64(0), r.i64(1), r.i64(2)}); });
  return *out_of_memory_failures_;
}

json held_at_end(const Ctx& c, std::int64_t pid) {
  json args = {{"pid", pid}};
  auto it = c.processes.find(pid);
  if (it != c.processes.end() && it->second.exited)
    args["at_ms"] = std::max(0.0, round_ms(c.session.t_ms(it->second.end_ns) - 0.001));
  return args;
}

}  // namespace vs::tools::findings
