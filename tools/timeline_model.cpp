#include "tools/timeline_model.h"

#include <algorithm>
#include <cmath>
#include <iterator>
#include <set>

namespace vs::tools {

bool occupies_gpu_memory(std::string_view kind) { return vs::occupies_gpu_memory(alloc_kind_named(kind)); }

int kind_group(std::string_view kind) {
  if (occupies_gpu_memory(kind)) return 0;
  // Pinned host memory (allocated or registered) next; then address space, mappings and other processes' memory
  // (ipc_mapped, vmm_imported).
  return kind == "host" || kind == "host_registered" ? 1 : 2;
}

double round_ms(double ms) { return std::round(ms * 1000.0) / 1000.0; }

Result<std::vector<Lifetime>> load_lifetimes(const store::TraceReader& db, const Session& session,
                                             const LifetimeFilter& filter, const Progress& progress) {
  // alloc_seq and free_seq since schema 4.
  bool has_seq = false;
  Status cols = db.query("SELECT 1 FROM pragma_table_info('allocations') WHERE name = 'alloc_seq'", {},
                         [&](const store::Row&) { has_seq = true; });
  if (!cols) return Error{cols.message()};
  std::string sql =
      "SELECT id, pid, device, kind, bytes, alloc_call_id, free_call_id, alloc_ts_ns, free_ts_ns, "
      "end_reason = 'process_exit', caller_id, " +
      std::string(has_seq ? "alloc_seq, free_seq" : "NULL, NULL") +
      " FROM allocations "
      "WHERE session_id = ? AND alloc_ts_ns <= ? AND (free_ts_ns IS NULL OR free_ts_ns > ?)";
  std::vector<store::SqlValue> params = {session.id, filter.to_ns, filter.from_ns};
  if (filter.pid) {
    sql += " AND pid = ?";
    params.emplace_back(*filter.pid);
  }
  if (filter.caller_ids) {
    sql += " AND caller_id IN (";
    for (std::size_t i = 0; i < filter.caller_ids->size(); ++i) {
      sql += i ? ", ?" : "?";
      params.emplace_back((*filter.caller_ids)[i]);
    }
    sql += ")";
  }
  std::vector<Lifetime> out;
  progress(0, 1, "reading allocations");
  Status st = db.query(sql, params, [&](const store::Row& r) {
    Lifetime l;
    l.id = r.i64(0);
    l.pid = r.i64(1);
    if (!r.is_null(2)) l.device = r.i64(2);
    l.kind = r.text(3);
    l.bytes = r.i64(4);
    l.alloc_call_id = r.i64(5);
    if (!r.is_null(6)) l.free_call_id = r.i64(6);
    l.alloc_ns = r.i64(7);
    l.free_ns = r.is_null(8) ? kNever : r.i64(8);
    l.released_at_exit = r.i64(9) == 1;
    if (!r.is_null(10)) l.caller_id = r.i64(10);
    if (!r.is_null(11)) l.alloc_seq = r.i64(11);
    if (!r.is_null(12)) l.free_seq = r.i64(12);
    out.push_back(std::move(l));
  });
  if (!st) return Error{st.message()};
  progress(1, 1, "read " + std::to_string(out.size()) + " allocations");
  return out;
}

std::int64_t StepFunction::at(std::int64_t ts_ns) const {
  auto it = std::upper_bound(steps.begin(), steps.end(), ts_ns,
                             [](std::int64_t t, const auto& step) { return t < step.first; });
  return it == steps.begin() ? initial : std::prev(it)->second;
}

std::pair<std::int64_t, std::int64_t> StepFunction::max_over(std::int64_t after_ns, std::int64_t until_ns) const {
  // The value just after `after_ns` is the one at after_ns unless a step lands inside.
  auto it = std::upper_bound(steps.begin(), steps.end(), after_ns,
                             [](std::int64_t t, const auto& step) { return t < step.first; });
  std::int64_t best = it == steps.begin() ? initial : std::prev(it)->second;
  std::int64_t best_ts = after_ns;
  for (; it != steps.end() && it->first <= until_ns; ++it)
    if (it->second > best) {
      best = it->second;
      best_ts = it->first;
    }
  return {best, best_ts};
}

std::optional<std::int64_t> StepFunction::first_change_ns() const {
  if (steps.empty()) return std::nullopt;
  return steps.front().first;
}

std::vector<StepFunction> step_functions(const std::vector<Lifetime>& lifetimes, const std::vector<int>& series_of,
                                         int series_count, std::int64_t from_ns, std::int64_t to_ns) {
  std::vector<StepFunction> out(static_cast<std::size_t>(series_count));
  std::vector<std::vector<std::pair<std::int64_t, std::int64_t>>> deltas(out.size());
  for (std::size_t i = 0; i < lifetimes.size(); ++i) {
    int s = series_of[i];
    if (s < 0) continue;
    const Lifetime& l = lifetimes[i];
    if (l.free_ns <= from_ns || l.alloc_ns > to_ns) continue;  // not held in the window
    if (l.alloc_ns <= from_ns) out[s].initial += l.bytes;
    else deltas[s].emplace_back(l.alloc_ns, l.bytes);
    if (l.free_ns <= to_ns) deltas[s].emplace_back(l.free_ns, -l.bytes);
  }
  for (std::size_t s = 0; s < out.size(); ++s) {
    StepFunction& f = out[s];
    f.from_ns = from_ns;
    f.to_ns = to_ns;
    auto& d = deltas[s];
    std::sort(d.begin(), d.end());
    std::int64_t value = f.initial;
    for (std::size_t i = 0; i < d.size();) {
      std::int64_t ts = d[i].first;
      for (; i < d.size() && d[i].first == ts; ++i) value += d[i].second;
      if (f.steps.empty() ? value != f.initial : value != f.steps.back().second) f.steps.emplace_back(ts, value);
    }
  }
  return out;
}

LinearFit fit_line(const StepFunction& f, std::int64_t t0_ns, std::int64_t t1_ns) {
  if (t1_ns <= t0_ns) return {};
  // Moments of t (seconds since t0) and y over [t0, t1), piece by piece.
  double n = 0, st = 0, stt = 0, sy = 0, sty = 0, syy = 0;
  auto piece = [&](std::int64_t a_ns, std::int64_t b_ns, double y) {
    if (b_ns <= a_ns) return;
    double a = static_cast<double>(a_ns - t0_ns) / 1e9, b = static_cast<double>(b_ns - t0_ns) / 1e9;
    n += b - a;
    st += (b * b - a * a) / 2;
    stt += (b * b * b - a * a * a) / 3;
    sy += y * (b - a);
    sty += y * (b * b - a * a) / 2;
    syy += y * y * (b - a);
  };
  auto it = std::upper_bound(f.steps.begin(), f.steps.end(), t0_ns,
                             [](std::int64_t t, const auto& step) { return t < step.first; });
  std::int64_t cursor = t0_ns;
  double y = static_cast<double>(it == f.steps.begin() ? f.initial : std::prev(it)->second);
  for (; it != f.steps.end() && it->first < t1_ns; ++it) {
    piece(cursor, it->first, y);
    cursor = it->first;
    y = static_cast<double>(it->second);
  }
  piece(cursor, t1_ns, y);
  double mt = st / n, my = sy / n;
  double var_t = stt / n - mt * mt, var_y = syy / n - my * my, cov = sty / n - mt * my;
  LinearFit fit;
  if (var_t <= 0) return fit;
  fit.slope_bytes_per_s = cov / var_t;
  // var_y is a difference of large squares: treat relative noise as constant.
  fit.r2 = var_y > 1e-9 * (syy / n) && var_y > 0 ? std::clamp(cov * cov / (var_t * var_y), 0.0, 1.0) : 0.0;
  return fit;
}

Result<std::map<std::int64_t, std::string>> caller_names(const store::TraceReader& db) {
  std::map<std::int64_t, std::string> names;
  Status st = db.query("SELECT id, path FROM objects", {},
                       [&](const store::Row& r) { names[r.i64(0)] = clean_untrusted(short_path(r.text(1)), 80); });
  if (!st) return Error{st.message()};
  return names;
}

Result<std::vector<std::int64_t>> callers_matching(const store::TraceReader& db, const Session& session,
                                                   const std::string& pattern) {
  std::vector<std::int64_t> ids;
  Status st = db.query("SELECT id FROM objects WHERE instr(path, ?) > 0", {pattern},
                       [&](const store::Row& r) { ids.push_back(r.i64(0)); });
  if (!st) return Error{st.message()};
  if (!ids.empty()) return ids;
  std::set<std::string> allocating;
  st = db.query(
      "SELECT o.path FROM objects o WHERE o.id IN (SELECT DISTINCT caller_id FROM allocations WHERE session_id = ?)",
      {session.id}, [&](const store::Row& r) { allocating.insert(clean_untrusted(short_path(r.text(0)), 80)); });
  if (!st) return Error{st.message()};
  std::string list;
  for (const auto& name : allocating) list += (list.empty() ? "" : ", ") + name;
  return Error{"no calling library matches caller \"" + clean_untrusted(pattern, 80) +
               "\"; libraries that allocated in this session: " + (list.empty() ? "none" : list)};
}

Status require_pid(const store::TraceReader& db, const Session& session, std::int64_t pid) {
  bool found = false;
  std::string pids;
  Status st = db.query("SELECT DISTINCT pid FROM processes WHERE session_id = ? ORDER BY pid LIMIT 50", {session.id},
                       [&](const store::Row& r) {
                         found = found || r.i64(0) == pid;
                         pids += (pids.empty() ? "" : ", ") + std::to_string(r.i64(0));
                       });
  if (!st) return st;
  if (!found) {
    // Not among the first 50: look it up directly before saying it is unknown.
    st = db.query("SELECT 1 FROM processes WHERE session_id = ? AND pid = ? LIMIT 1", {session.id, pid},
                  [&](const store::Row&) { found = true; });
    if (!st) return st;
  }
  if (found) return Status::success();
  return Error{"pid " + std::to_string(pid) + " is not a process of session " + std::to_string(session.id) +
               "; its pids: " + (pids.empty() ? "none" : pids) + " (or leave pid out for all processes)"};
}

Result<std::map<std::int64_t, ProcessSpan>> process_spans(const store::TraceReader& db, const Session& session) {
  // A pid reused within a session gets one span: from its first start to its last exit
  // (or none when any process with that pid was still running at the end).
  std::map<std::int64_t, ProcessSpan> spans;
  std::set<std::int64_t> still_running;
  Status st = db.query("SELECT pid, first_ts_ns, exit_ts_ns FROM processes WHERE session_id = ?", {session.id},
                       [&](const store::Row& r) {
                         auto [it, fresh] = spans.try_emplace(r.i64(0), ProcessSpan{r.i64(1), std::nullopt});
                         if (!fresh) it->second.first_ns = std::min(it->second.first_ns, r.i64(1));
                         if (r.is_null(2)) still_running.insert(r.i64(0));
                         else it->second.exit_ns = std::max(it->second.exit_ns.value_or(r.i64(2)), r.i64(2));
                       });
  if (!st) return Error{st.message()};
  for (auto pid : still_running) spans[pid].exit_ns.reset();
  return spans;
}

}  // namespace vs::tools
