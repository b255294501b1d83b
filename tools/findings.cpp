// findings: ranked automatic findings. Each one states the rule that fired,
// the measured numbers, the call and allocation ids the other tools accept,
// and which tool to call next; the rules that did not fire say what they saw,
// so that "nothing found" is an observation, not a silence.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <set>
#include <tuple>

#include "common/json_schema.h"
#include "tools/api_stats.h"
#include "tools/common.h"
#include "tools/timeline_model.h"

namespace vs::tools {
namespace {

// GPU memory: vmm_reserved is address space, vmm_mapped maps vmm_physical
// bytes (adding both would count them twice), host is pinned host memory.
constexpr const char* kGpuKinds = "kind IN ('device', 'async', 'managed', 'vmm_physical')";
constexpr std::int64_t kMiB = 1 << 20;

// Framework allocators, recognized by the library that makes their CUDA calls.
struct Framework {
  const char* library;  // a substring of the caller's file name
  const char* name;
};
constexpr Framework kFrameworks[] = {{"libc10_cuda", "PyTorch's caching allocator"}};

// Thresholds, named where the rules state them.
constexpr int kLeakSlices = 20;
constexpr int kLeakMinGrowingSlices = 5;
constexpr std::int64_t kLeakMinGrowthBytes = 64 * kMiB;
constexpr std::int64_t kTailMinCalls = 20;
constexpr double kTailMinRunqShare = 0.5;
constexpr std::int64_t kTailMinRatio = 4;
constexpr std::int64_t kHeldMinBytes = 64 * kMiB;
constexpr std::int64_t kHeldMinIdleNs = 500'000'000;
constexpr std::int64_t kLibraryMinBytes = kMiB;
constexpr std::int64_t kExitMinBytes = kMiB;
constexpr std::int64_t kNvmlMinOverheadBytes = 32 * kMiB;
constexpr std::size_t kNvmlMaxSamples = 64;
constexpr std::size_t kMaxIds = 10;

// The finding kinds, in the order findings of equal severity are ranked.
constexpr const char* kKinds[] = {"leak_growth",   "out_of_memory",        "coverage_gap",   "preemption_tail",
                                  "missed_frees",  "call_errors",          "allocator_cache_held",
                                  "library_held",  "unmatched_frees",      "nvml_context_overhead",
                                  "released_at_exit"};
constexpr const char* kSeverities[] = {"high", "medium", "low", "info"};

int rank_of(const char* const* list, std::size_t n, const std::string& v) {
  return static_cast<int>(std::find(list, list + n, v) - list);
}

struct Finding {
  std::string kind, severity, title, summary, rule;
  std::optional<std::int64_t> pid;
  json numbers = json::object();
  std::vector<std::int64_t> call_ids, allocation_ids;
  json next = json::array();
  double size = 0;  // ranks findings of one kind: bytes or nanoseconds
};

struct Process {
  std::int64_t pid = 0;
  std::int64_t first_ns = 0;
  std::int64_t end_ns = 0;  // exit, or the session's end
  bool exited = false;
  std::string how_found;
  std::string comm;
};

// One findings run: the session, the pid filter, and the first SQL error.
class Ctx {
 public:
  Ctx(const store::TraceReader& db, const Session& s, std::optional<std::int64_t> pid)
      : db(db), session(s), pid(pid) {}

  const store::TraceReader& db;
  const Session& session;
  const std::optional<std::int64_t> pid;
  std::map<std::int64_t, Process> processes;
  std::map<std::int64_t, std::string> callers;  // objects.id -> file name
  std::set<std::int64_t> framework_callers;
  ApiTable apis;
  Status status;

  // Runs a query unless an earlier one failed (the first error is kept).
  void query(const std::string& sql, const std::vector<store::SqlValue>& params,
             const std::function<void(const store::Row&)>& on_row) {
    if (status.ok()) status = db.query(sql, params, on_row);
  }
  std::int64_t value(const std::string& sql, const std::vector<store::SqlValue>& params) {
    std::int64_t v = 0;
    query(sql, params, [&](const store::Row& r) { v = r.is_null(0) ? 0 : r.i64(0); });
    return v;
  }
  // "session_id = ? [AND pid = ?]" (columns of `alias`, when given) and its parameters, followed by `extra`.
  std::string scope(const std::string& alias = "") const {
    std::string a = alias.empty() ? "" : alias + ".";
    return a + "session_id = ?" + (pid ? " AND " + a + "pid = ?" : "");
  }
  // scope() for call_rows restricted to a few APIs: `+pid` keeps the planner on (api_id, ts_ns), which visits
  // the APIs' calls, instead of (pid, ts_ns), which visits every call of the process (3 M calls: 0.6 s).
  std::string scope_of_apis() const { return "session_id = ?" + std::string(pid ? " AND +pid = ?" : ""); }
  std::vector<store::SqlValue> params(std::vector<store::SqlValue> extra = {}) const {
    std::vector<store::SqlValue> p{session.id};
    if (pid) p.push_back(*pid);
    p.insert(p.end(), extra.begin(), extra.end());
    return p;
  }
  std::string t(std::int64_t ts_ns) const { return "t=" + fmt_ns(ts_ns - session.start_ns); }
  std::string who(std::int64_t p) const {
    auto it = processes.find(p);
    std::string s = "pid " + std::to_string(p);
    return it == processes.end() || it->second.comm.empty() ? s : s + " " + quote_untrusted(it->second.comm, 32);
  }
  // The ids of a query's first column.
  std::vector<std::int64_t> ids(const std::string& sql, const std::vector<store::SqlValue>& params) {
    std::vector<std::int64_t> out;
    query(sql, params, [&](const store::Row& r) { out.push_back(r.i64(0)); });
    return out;
  }
  // Per-API stats of the selection (the session, or its one process), by apis.id, computed once: from the
  // summaries when they were built, else from one scan of the calls (tools/api_stats.h: the same numbers).
  const std::map<std::int64_t, store::CallStats>& call_stats() {
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
  // The allocations of the scope, read once for the rules that sweep them all.
  struct Allocation {
    bool gpu;  // kGpuKinds: GPU memory, not pinned host memory or VMM address ranges
    std::int64_t id, pid, caller_id, alloc_ts, bytes, alloc_call_id;  // caller_id 0: not recorded
    std::optional<std::int64_t> free_ts;
    std::string end_reason;  // '' while held
  };
  const std::vector<Allocation>& allocations() {
    if (!allocations_) {
      allocations_.emplace();
      query(std::string("SELECT ") + kGpuKinds + ", id, pid, COALESCE(caller_id, 0), alloc_ts_ns, bytes, "
                "alloc_call_id, free_ts_ns, COALESCE(end_reason, '') FROM allocations WHERE " + scope(),
            params(), [&](const store::Row& r) {
              allocations_->push_back({r.i64(0) != 0, r.i64(1), r.i64(2), r.i64(3), r.i64(4), r.i64(5), r.i64(6),
                                       r.is_null(7) ? std::nullopt : std::optional(r.i64(7)), r.text(8)});
            });
    }
    return *allocations_;
  }
  // The ids of the kMaxIds largest allocations that `keep` selects, largest first, then the lowest id.
  std::vector<std::int64_t> largest_allocations(const std::function<bool(const Allocation&)>& keep) {
    std::vector<std::pair<std::int64_t, std::int64_t>> kept;  // (-bytes, id)
    for (const Allocation& a : allocations())
      if (keep(a)) kept.push_back({-a.bytes, a.id});
    const auto n = std::min(kept.size(), kMaxIds);
    std::partial_sort(kept.begin(), kept.begin() + static_cast<std::ptrdiff_t>(n), kept.end());
    std::vector<std::int64_t> ids;
    for (std::size_t i = 0; i < n; ++i) ids.push_back(kept[i].second);
    return ids;
  }
  // Where to drill down: only tools of this build, with arguments their schemas accept.
  void drill(Finding& f, const char* tool, json args, const char* why) const {
    args["session_id"] = session.id;
    if (!find_tool(tool) || json_schema::validate(input_schema(tool), args)) return;
    f.next.push_back({{"tool", tool}, {"arguments", std::move(args)}, {"why", why}});
  }

 private:
  std::optional<std::map<std::int64_t, store::CallStats>> call_stats_;
  std::optional<std::vector<Allocation>> allocations_;
};

void load_context(Ctx& c) {
  c.query("SELECT pid, first_ts_ns, exit_ts_ns, how_found, COALESCE(comm, '') FROM processes WHERE " + c.scope() +
              " ORDER BY first_ts_ns",
          c.params(), [&](const store::Row& r) {
            Process p{r.i64(0), r.i64(1), r.is_null(2) ? c.session.end_ns : r.i64(2), !r.is_null(2), r.text(3),
                      r.text(4)};
            c.processes[p.pid] = p;
          });
  c.query("SELECT id, path FROM objects", {}, [&](const store::Row& r) {
    std::string name = short_path(r.text(1));
    c.callers[r.i64(0)] = name;
    for (const auto& fw : kFrameworks)
      if (name.find(fw.library) != std::string::npos) c.framework_callers.insert(r.i64(0));
  });
  if (!c.status.ok()) return;
  auto apis = load_apis(c.db);
  if (apis) c.apis = std::move(*apis);
  else c.status = Status(apis.error());
}

// outstanding_allocations arguments for what a process held at its end: a
// microsecond before its exit (at the exit itself, the driver has released it),
// to the microsecond (still before the exit) so that the argument reads cleanly.
json held_at_end(const Ctx& c, std::int64_t pid) {
  json args = {{"pid", pid}};
  auto it = c.processes.find(pid);
  if (it != c.processes.end() && it->second.exited)
    args["at_ms"] = std::max(0.0, round_ms(c.session.t_ms(it->second.end_ns) - 0.001));
  return args;
}

std::string framework_name(const std::string& caller) {
  for (const auto& fw : kFrameworks)
    if (caller.find(fw.library) != std::string::npos) return fw.name;
  return "the framework's allocator";
}

std::string id_list(const std::set<std::int64_t>& ids) {
  std::string s;
  for (auto id : ids) s += (s.empty() ? "" : ",") + std::to_string(id);
  return s;
}

std::string pct(double share) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%.0f%%", share * 100);
  return buf;
}

// Per process: when outstanding GPU memory last grew, was it still growing
// at the end of the process's activity, and was it given back?
void leak_growth(Ctx& c, std::vector<Finding>& out, std::vector<std::string>& notes) {
  std::map<std::int64_t, std::vector<const Ctx::Allocation*>> by_pid;
  for (const Ctx::Allocation& a : c.allocations())
    if (a.gpu) by_pid[a.pid].push_back(&a);
  for (const auto& [pid, allocations] : by_pid) {
    std::int64_t first = allocations.front()->alloc_ts;
    for (const Ctx::Allocation* a : allocations) first = std::min(first, a->alloc_ts);
    std::int64_t last = c.value(
        "SELECT ts_ns FROM call_rows WHERE pid = ? AND ts_ns <= ? AND session_id = ? ORDER BY ts_ns DESC LIMIT 1",
        {pid, c.session.end_ns, c.session.id});
    std::int64_t span = last - first + 1;
    if (span <= 1) continue;
    std::vector<std::int64_t> level(kLeakSlices, 0);
    auto slice = [&](std::int64_t ts) {
      return static_cast<std::size_t>(std::min<std::int64_t>(kLeakSlices - 1, (ts - first) * kLeakSlices / span));
    };
    for (const Ctx::Allocation* a : allocations) {
      if (a->alloc_ts <= last) level[slice(a->alloc_ts)] += a->bytes;
      const bool released = a->end_reason == "freed" || a->end_reason == "superseded";
      if (released && a->free_ts && *a->free_ts <= last) level[slice(*a->free_ts)] -= a->bytes;
    }
    std::int64_t high = 0;
    int growing = 0, growing_late = 0, last_growing = -1;
    for (int i = 0; i < kLeakSlices; ++i) {
      if (i > 0) level[i] += level[i - 1];
      if (level[i] > high + kMiB) {
        ++growing;
        if (i >= kLeakSlices * 3 / 4) ++growing_late;
        last_growing = i;
      }
      high = std::max(high, level[i]);
    }
    const std::int64_t mid = level[kLeakSlices / 2 - 1], end = level[kLeakSlices - 1];
    const bool fired = growing >= kLeakMinGrowingSlices && growing_late >= 1 && end - mid >= kLeakMinGrowthBytes &&
                       end * 10 >= high * 9;
    if (!fired) {
      notes.push_back(c.who(pid) + ": new high in " + std::to_string(growing) + " of " + std::to_string(kLeakSlices) +
                      " slices (" + std::to_string(growing_late) + " in the last quarter), " +
                      fmt_bytes(end - mid) + " over the second half, " + fmt_bytes(end) + " of a " +
                      fmt_bytes(high) + " high at the end");
      continue;
    }
    const std::int64_t mid_ns = first + span / 2;
    const std::string held = " FROM allocations WHERE session_id = ? AND pid = ? AND " + std::string(kGpuKinds) +
                             " AND alloc_ts_ns >= ? AND (free_ts_ns IS NULL OR free_ts_ns > ?)";
    const std::vector<store::SqlValue> held_params{c.session.id, pid, mid_ns, last};
    std::int64_t held_count = 0, held_bytes = 0, released_at_exit = 0;
    c.query("SELECT COUNT(*), COALESCE(SUM(bytes), 0), COALESCE(SUM(end_reason = 'process_exit'), 0)" + held,
            held_params, [&](const store::Row& r) {
              held_count = r.i64(0);
              held_bytes = r.i64(1);
              released_at_exit = r.i64(2);
            });
    std::string sizes;
    c.query("SELECT bytes, COUNT(*)" + held + " GROUP BY bytes ORDER BY COUNT(*) DESC, bytes DESC LIMIT 3", held_params,
            [&](const store::Row& r) {
              sizes += (sizes.empty() ? "" : ", ") + fmt_bytes(r.i64(0)) + " x " + std::to_string(r.i64(1));
            });
    Finding f;
    f.kind = "leak_growth";
    f.severity = "high";
    f.pid = pid;
    f.size = static_cast<double>(end - mid);
    const double seconds = static_cast<double>(last - mid_ns) / 1e9;
    const Process& p = c.processes[pid];
    f.title = c.who(pid) + ": outstanding GPU memory grew by " + fmt_bytes(end - mid) +
              " in the second half of its activity and was not given back";
    f.summary = "Outstanding GPU memory of " + c.who(pid) + " went from " + fmt_bytes(mid) + " at " + c.t(mid_ns) +
                " to " + fmt_bytes(end) + " at " + c.t(last) + " (+" + fmt_bytes(end - mid) + ", " +
                fmt_bytes(static_cast<std::int64_t>(static_cast<double>(end - mid) / std::max(seconds, 1e-9))) +
                "/s); it reached a new high in " + std::to_string(growing) + " of " + std::to_string(kLeakSlices) +
                " equal slices of the process's activity (" + c.t(first) + " to " + c.t(last) +
                "), the last in slice " + std::to_string(last_growing + 1) + ". " + std::to_string(held_count) +
                " allocations made in the second half (" + fmt_bytes(held_bytes) + "; most common sizes: " + sizes +
                ") were still held at its last call" +
                (released_at_exit > 0 ? "; they were released only when the process exited at " + c.t(p.end_ns) + "."
                                      : p.exited ? "." : "; the process was still running when the trace ended.");
    f.rule = "outstanding GPU memory (device, async, managed, VMM physical) of one process reached a new high (by > 1 "
             "MiB) in >= " + std::to_string(kLeakMinGrowingSlices) + " of " + std::to_string(kLeakSlices) +
             " equal slices of its activity (first allocation to last call), at least once in the last quarter, "
             "rose >= " + fmt_bytes(kLeakMinGrowthBytes) + " over the second half, and ended >= 90% of its high";
    f.numbers = {{"growth_bytes", end - mid},       {"start_outstanding_bytes", mid},
                 {"end_outstanding_bytes", end},    {"high_bytes", high},
                 {"growing_slices", growing},        {"slices", kLeakSlices},
                 {"growth_start_t_ms", c.session.t_ms(mid_ns)}, {"last_call_t_ms", c.session.t_ms(last)},
                 {"growth_rate_bytes_per_s", std::llround(static_cast<double>(end - mid) / std::max(seconds, 1e-9))},
                 {"held_allocations", held_count},   {"held_bytes", held_bytes}};
    f.allocation_ids = c.ids("SELECT id" + held + " ORDER BY bytes DESC, id LIMIT " + std::to_string(kMaxIds), held_params);
    c.drill(f, "leak_candidates", {{"pid", pid}}, "growth slope and fit, and the allocation patterns responsible");
    c.drill(f, "allocation_timeline", {{"pid", pid}}, "the outstanding-bytes curve over time, with NVML's view");
    c.drill(f, "outstanding_allocations", held_at_end(c, pid), "what was held at the end, by size and calling library");
    out.push_back(std::move(f));
  }
}

// The calls at or above one API's p99, summed for the preemption_tail rule.
struct Tail {
  std::int64_t p99_ns = 0;
  std::int64_t calls = 0, nested = 0, dur = 0, off = 0, runq = 0, descheduled = 0;
  std::map<std::string, std::int64_t> preemptors;  // comm -> off-CPU ns
  std::vector<std::int64_t> slowest;  // up to store::kSlowestTailCalls ids: the slowest first, then the lowest id
};

// Whether call_rows has an index on (api_id, dur_ns): then each API's tail is one index range.
bool has_api_dur_index(Ctx& c) {
  return c.value("SELECT COUNT(*) FROM pragma_index_list('call_rows') l WHERE (SELECT group_concat(name, ',') FROM "
                 "(SELECT name FROM pragma_index_info(l.name) ORDER BY seqno LIMIT 2)) = 'api_id,dur_ns'",
                 {}) > 0;
}

// Reads the calls at or above each API's p99 into `tails` (keyed by api_id), for summaries built before they
// held the tails (schema 2): one index range per API when (api_id, dur_ns) is indexed; otherwise one scan of the
// selection's calls, as the (api_id, ts_ns) index would visit every call of each API anyway.
void read_tails(Ctx& c, std::map<std::int64_t, Tail>& tails) {
  const std::string columns =
      "SELECT api_id, id, dur_ns, off_cpu_ns, runq_ns, switches, "
      "CASE WHEN preempted_by IS NULL THEN '' ELSE COALESCE(preempted_by_comm, '') END, parent_id IS NOT NULL "
      "FROM call_rows WHERE " + c.scope();
  std::map<std::int64_t, std::vector<std::pair<std::int64_t, std::int64_t>>> slowest;  // api -> (-dur_ns, id)
  auto add = [&](const store::Row& r) {
    auto it = tails.find(r.i64(0));
    if (it == tails.end() || r.i64(2) < it->second.p99_ns) return;
    Tail& t = it->second;
    ++t.calls;
    slowest[r.i64(0)].push_back({-r.i64(2), r.i64(1)});
    t.dur += r.i64(2);
    t.off += r.i64(3);
    t.runq += r.i64(4);
    t.descheduled += r.i64(5) > 0;
    if (!r.text(6).empty()) t.preemptors[r.text(6)] += r.i64(3);
    t.nested += r.i64(7);
  };
  if (has_api_dur_index(c)) {
    for (const auto& [api_id, t] : tails) c.query(columns + " AND api_id = ? AND dur_ns >= ?", c.params({api_id, t.p99_ns}), add);
  } else if (!tails.empty()) {
    const auto lowest = std::min_element(tails.begin(), tails.end(), [](const auto& a, const auto& b) {
      return a.second.p99_ns < b.second.p99_ns;
    });
    c.query(columns + " AND dur_ns >= ?", c.params({lowest->second.p99_ns}), add);
  }
  for (auto& [api_id, calls] : slowest) {
    const auto kept = std::min(calls.size(), store::kSlowestTailCalls);
    std::partial_sort(calls.begin(), calls.begin() + static_cast<std::ptrdiff_t>(kept), calls.end());
    for (std::size_t i = 0; i < kept; ++i) tails[api_id].slowest.push_back(calls[i].second);
  }
}

// The tails from the per-API stats when they hold them (built by this vramscope, or scanned), else read_tails.
void fill_tails(Ctx& c, std::map<std::int64_t, Tail>& tails) {
  const auto& stats = c.call_stats();
  for (const auto& [api_id, t] : tails)
    if (!stats.at(api_id).tail) return read_tails(c, tails);
  for (auto& [api_id, t] : tails) {
    const store::CallStats& s = stats.at(api_id);
    t.calls = s.tail_calls;
    t.descheduled = s.tail_descheduled;
    t.nested = s.tail->nested;
    t.dur = s.tail->ns;
    t.off = s.tail->off_cpu_ns;
    t.runq = s.tail->runq_ns;
    t.preemptors = s.tail->off_cpu_ns_by_preemptor;
    t.slowest = s.tail->slowest_call_ids;
  }
}

// Per API: is the slowest 1% slow because the thread was waiting for a CPU?
void preemption_tail(Ctx& c, std::vector<Finding>& out, std::vector<std::string>& notes) {
  const auto& stats = c.call_stats();
  std::map<std::int64_t, Tail> tails;
  for (const auto& [api_id, s] : stats)
    if (s.calls >= kTailMinCalls) tails[api_id].p99_ns = s.p99_ns;
  fill_tails(c, tails);
  for (const auto& [api_id, t] : tails) {
    const store::CallStats& s = stats.at(api_id);
    const std::int64_t n = s.calls, p50 = s.p50_ns, p99 = s.p99_ns;
    const std::string& api = c.apis[api_id].name;
    const std::int64_t tail_n = t.calls, nested = t.nested, dur = t.dur, off = t.off, runq = t.runq,
                       descheduled = t.descheduled;
    const auto& preemptors = t.preemptors;
    const double runq_share = dur > 0 ? static_cast<double>(runq) / static_cast<double>(dur) : 0;
    if (runq_share < kTailMinRunqShare || p99 < kTailMinRatio * p50 || nested == tail_n) {
      if (nested < tail_n)
        notes.push_back(api + ": p99 " + fmt_ns(p99) + " (p50 " + fmt_ns(p50) + "), " + pct(runq_share) +
                        " of the tail waiting for a CPU");
      continue;
    }
    auto top = std::max_element(preemptors.begin(), preemptors.end(),
                                [](const auto& a, const auto& b) { return a.second < b.second; });
    Finding f;
    f.kind = "preemption_tail";
    f.severity = "medium";
    f.size = static_cast<double>(p99);
    f.title = api + "'s tail is CPU preemption: p99 " + fmt_ns(p99) + " vs p50 " + fmt_ns(p50) + ", " +
              pct(runq_share) + " of the tail spent waiting for a CPU";
    f.summary = "Of " + std::to_string(n) + " " + api + " calls, the slowest " + std::to_string(tail_n) +
                " (>= p99 = " + fmt_ns(p99) + "; p50 = " + fmt_ns(p50) + ") took " + fmt_ns(dur) + " in all, " +
                fmt_ns(off) + " of it off-CPU and " + fmt_ns(runq) + " runnable but waiting for a CPU (" +
                pct(runq_share) + "); switched out: " + std::to_string(descheduled) + " of " + std::to_string(tail_n) +
                (top != preemptors.end() ? ", the CPU held mostly by " + quote_untrusted(top->first, 32) : "") +
                ". The time went to the scheduler, not to the CUDA call.";
    f.rule = "an API with >= " + std::to_string(kTailMinCalls) + " calls whose calls at or above p99 spent >= " +
             pct(kTailMinRunqShare) + " of their duration runnable but off-CPU (runq_ns), with p99 >= " +
             std::to_string(kTailMinRatio) + " x p50";
    f.numbers = {{"calls", n},           {"p50_ns", p50},       {"p99_ns", p99},
                 {"tail_calls", tail_n}, {"tail_dur_ns", dur},   {"tail_off_cpu_ns", off},
                 {"tail_runq_ns", runq}, {"tail_runq_pct", std::round(runq_share * 1000) / 10},
                 {"tail_descheduled_calls", descheduled}};
    f.call_ids = t.slowest;
    c.drill(f, "offcpu_attribution", {{"api", api}}, "off-CPU share, p99 with vs without switches, who took the CPU");
    c.drill(f, "slowest_calls", {{"api", api}}, "the slowest calls with their scheduling details");
    out.push_back(std::move(f));
  }
  if (tails.empty()) notes.push_back("no API has >= " + std::to_string(kTailMinCalls) + " calls");
}

const char* error_name(const std::string& layer, std::int64_t ret) {
  static const std::map<std::int64_t, const char*> runtime = {
      {1, "cudaErrorInvalidValue"}, {2, "cudaErrorMemoryAllocation"}, {3, "cudaErrorInitializationError"},
      {4, "cudaErrorCudartUnloading"}, {35, "cudaErrorInsufficientDriver"}, {100, "cudaErrorNoDevice"},
      {101, "cudaErrorInvalidDevice"}, {400, "cudaErrorInvalidResourceHandle"}, {700, "cudaErrorIllegalAddress"},
      {800, "cudaErrorNotPermitted"}, {801, "cudaErrorNotSupported"}};
  static const std::map<std::int64_t, const char*> driver = {
      {1, "CUDA_ERROR_INVALID_VALUE"}, {2, "CUDA_ERROR_OUT_OF_MEMORY"}, {3, "CUDA_ERROR_NOT_INITIALIZED"},
      {4, "CUDA_ERROR_DEINITIALIZED"}, {100, "CUDA_ERROR_NO_DEVICE"}, {101, "CUDA_ERROR_INVALID_DEVICE"},
      {201, "CUDA_ERROR_INVALID_CONTEXT"}, {400, "CUDA_ERROR_INVALID_HANDLE"}, {700, "CUDA_ERROR_ILLEGAL_ADDRESS"},
      {800, "CUDA_ERROR_NOT_PERMITTED"}, {801, "CUDA_ERROR_NOT_SUPPORTED"}};
  const auto& names = layer == "runtime" ? runtime : driver;
  auto it = names.find(ret);
  return it == names.end() ? "" : it->second;
}

// Failed calls: out of memory (an allocation returning 2, in either layer) apart from the rest.
void call_errors(Ctx& c, std::vector<Finding>& out, std::vector<std::string>& notes) {
  struct Group {
    std::int64_t api_id, ret, count, max_bytes, first_id, first_ts, pid;
  };
  // Only the APIs whose stats count failed top-level calls: their calls are read through the (api_id, ts_ns) index.
  std::string failing;
  for (const auto& [api_id, s] : c.call_stats())
    if (s.top_level_failed > 0) failing += (failing.empty() ? "" : ",") + std::to_string(api_id);
  std::vector<Group> groups;
  if (!failing.empty())
    c.query("SELECT api_id, ret, COUNT(*), COALESCE(MAX(bytes), 0), MIN(id), MIN(ts_ns), MIN(pid) FROM call_rows "
            "WHERE " + c.scope_of_apis() + " AND api_id IN (" + failing + ") AND ret != 0 AND parent_id IS NULL "
            "GROUP BY api_id, ret ORDER BY COUNT(*) DESC, api_id, ret",
            c.params(), [&](const store::Row& r) {
              groups.push_back({r.i64(0), r.i64(1), r.i64(2), r.i64(3), r.i64(4), r.i64(5), r.i64(6)});
            });
  if (groups.empty()) notes.push_back("no call returned an error");
  for (bool oom : {true, false}) {
    std::vector<const Group*> sel;
    for (const auto& g : groups) {
      const std::string& op = c.apis[g.api_id].op;
      if ((g.ret == 2 && (op == "alloc" || op == "vmm_create")) == oom) sel.push_back(&g);
    }
    if (sel.empty()) continue;
    Finding f;
    f.kind = oom ? "out_of_memory" : "call_errors";
    f.severity = oom ? "high" : "low";
    std::int64_t total = 0, max_bytes = 0;
    std::string list;
    const Group* first = sel.front();
    std::vector<std::int64_t> api_ids;
    for (const Group* g : sel) {
      total += g->count;
      max_bytes = std::max(max_bytes, g->max_bytes);
      if (g->first_ts < first->first_ts) first = g;
      const char* name = error_name(c.apis[g->api_id].layer, g->ret);
      list += (list.empty() ? "" : "; ") + c.apis[g->api_id].name + " x " + std::to_string(g->count) + " returned " +
              std::to_string(g->ret) + (*name ? std::string(" (") + name + ")" : "");
      api_ids.push_back(g->api_id);
    }
    f.size = static_cast<double>(total);
    std::string in_ids;
    for (auto id : api_ids) in_ids += (in_ids.empty() ? "" : ",") + std::to_string(id);
    f.call_ids = c.ids("SELECT id FROM call_rows WHERE " + c.scope_of_apis() + " AND ret != 0 AND parent_id IS NULL AND api_id IN (" +
                           in_ids + ") ORDER BY ts_ns LIMIT " + std::to_string(kMaxIds),
                       c.params());
    f.numbers = {{"failed_calls", total}, {"first_failure_t_ms", c.session.t_ms(first->first_ts)}};
    if (oom) {
      std::int64_t held = c.value("SELECT COALESCE(SUM(bytes), 0) FROM allocations WHERE session_id = ? AND pid = ? AND " +
                                      std::string(kGpuKinds) +
                                      " AND alloc_ts_ns <= ? AND (free_ts_ns IS NULL OR free_ts_ns > ?)",
                                  {c.session.id, first->pid, first->first_ts, first->first_ts});
      f.pid = first->pid;
      f.numbers["largest_request_bytes"] = max_bytes;
      f.numbers["outstanding_at_first_failure_bytes"] = held;
      f.title = std::to_string(total) + " allocation calls failed out of memory";
      f.summary = list + ". The largest request was " + fmt_bytes(max_bytes) + "; the first failure, at " +
                  c.t(first->first_ts) + " in " + c.who(first->pid) + ", came while it held " + fmt_bytes(held) +
                  " of traced GPU memory (NVML's device view, when recorded, shows what else used the GPU).";
      f.rule = "an allocation call (cudaMalloc*, cuMemAlloc*, cuMemCreate, ...) returned 2 (cudaErrorMemoryAllocation / "
               "CUDA_ERROR_OUT_OF_MEMORY)";
      c.drill(f, "allocation_timeline", {{"pid", first->pid}}, "outstanding bytes leading up to the failure");
    } else {
      f.title = std::to_string(total) + " CUDA calls returned an error";
      f.summary = list + ". A failed call allocated or freed nothing: the bytes it asked for are not counted.";
      f.rule = "a traced call returned non-zero (not an out-of-memory allocation)";
    }
    c.drill(f, "find_calls", {{"errors_only", true}}, "the failed calls with their arguments");
    out.push_back(std::move(f));
  }
}

// Frees the trace could not pair: superseded allocations (their free was
// missed) and frees of memory the trace never saw allocated.
void missed_frees(Ctx& c, std::vector<Finding>& out, std::vector<std::string>& notes) {
  std::int64_t superseded = 0, superseded_bytes = 0;
  for (const Ctx::Allocation& a : c.allocations())
    if (a.end_reason == "superseded") {
      ++superseded;
      superseded_bytes += a.bytes;
    }
  if (superseded > 0) {
    Finding f;
    f.kind = "missed_frees";
    f.severity = "medium";
    f.size = static_cast<double>(superseded_bytes);
    f.title = std::to_string(superseded) + " allocations were superseded: their frees were not recorded";
    f.summary = std::to_string(superseded) + " allocations (" + fmt_bytes(superseded_bytes) +
                ") ended when a new allocation got the same address, so their free was missed (a dropped record, or "
                "a free through an API that is not probed); outstanding bytes were overstated until then.";
    f.rule = "allocations.end_reason = 'superseded'";
    f.numbers = {{"superseded_allocations", superseded}, {"superseded_bytes", superseded_bytes}};
    f.allocation_ids = c.largest_allocations([](const auto& a) { return a.end_reason == "superseded"; });
    c.drill(f, "outstanding_allocations", json::object(), "what was held, with the superseded ones apart");
    out.push_back(std::move(f));
  } else {
    notes.push_back("no allocation was superseded");
  }
  std::int64_t unmatched = c.value("SELECT COUNT(*) FROM unmatched_frees WHERE " + c.scope() + " AND ptr != 0", c.params());
  if (unmatched == 0) {
    notes.push_back("every free matched a recorded allocation");
    return;
  }
  std::string attached;
  for (const auto& [pid, p] : c.processes)
    if (p.how_found == "pid" || p.how_found == "running" || p.how_found == "first_call")
      attached += (attached.empty() ? "" : ", ") + c.who(pid) + " (observed from " + c.t(p.first_ns) + ")";
  Finding f;
  f.kind = "unmatched_frees";
  f.severity = "low";
  f.size = static_cast<double>(unmatched);
  f.title = std::to_string(unmatched) + " frees matched no recorded allocation";
  f.summary = std::to_string(unmatched) + " free or unmap calls released memory whose allocation is not in the trace" +
              (attached.empty() ? ": allocated before its library was probed, or its record was lost."
                                : ": most likely allocated before tracing began, as processes were attached while "
                                  "running: " + attached + ".");
  f.rule = "unmatched_frees rows with a non-null pointer";
  f.numbers = {{"unmatched_frees", unmatched}};
  f.call_ids = c.ids("SELECT call_id FROM unmatched_frees WHERE " + c.scope() + " AND ptr != 0 ORDER BY call_id LIMIT " +
                         std::to_string(kMaxIds),
                     c.params());
  c.drill(f, "find_calls", {{"op", {"free", "free_host", "vmm_unmap", "vmm_release", "vmm_address_free"}}},
          "the frees and unmaps, with pointers and callers");
  out.push_back(std::move(f));
}

// Losses and partial observation, which bound what every other finding means.
void coverage_gaps(Ctx& c, const json& cov, std::vector<Finding>& out, std::vector<std::string>& notes) {
  auto gap = [&](const char* severity, std::string title, std::string summary, std::string rule, json numbers) {
    Finding f;
    f.kind = "coverage_gap";
    f.severity = severity;
    f.title = std::move(title);
    f.summary = std::move(summary);
    f.rule = std::move(rule);
    f.numbers = std::move(numbers);
    c.drill(f, "trace_overview", json::object(), "libraries, probes and processes observed");
    out.push_back(std::move(f));
  };
  const std::int64_t lost = cov["call_drops"].get<std::int64_t>() + cov["unrecorded_calls"].get<std::int64_t>();
  if (lost > 0 || cov["lifecycle_drops"].get<std::int64_t>() > 0)
    gap("high", std::to_string(lost) + " calls and " + std::to_string(cov["lifecycle_drops"].get<std::int64_t>()) +
                    " process events were lost",
        "The tracer could not record every event (ring buffer full or nesting too deep): counts, bytes and pairing "
        "undercount by up to that many calls; a lost free shows up as a superseded or outstanding allocation.",
        "sessions.call_drops + unrecorded_calls + lifecycle_drops > 0",
        {{"call_drops", cov["call_drops"]}, {"unrecorded_calls", cov["unrecorded_calls"]},
         {"lifecycle_drops", cov["lifecycle_drops"]}});
  if (cov["libraries_failed"].get<std::int64_t>() > 0) {
    std::string libs;
    c.query("SELECT path, COALESCE(error, 'no probe attached') FROM libraries WHERE session_id = ? AND (error IS NOT "
            "NULL OR probes_attached = 0) LIMIT 5",
            {c.session.id}, [&](const store::Row& r) {
              libs += (libs.empty() ? "" : "; ") + quote_untrusted(short_path(r.text(0)), 80) + ": " +
                      quote_untrusted(r.text(1), 120);
            });
    gap("high", std::to_string(cov["libraries_failed"].get<std::int64_t>()) + " CUDA libraries were found but not probed",
        "Calls into them are not in the trace: " + libs + ".", "libraries with an error or no probe attached",
        {{"libraries_failed", cov["libraries_failed"]}});
  }
  if (c.session.status != "complete")
    gap("medium", "the session is " + c.session.status,
        c.session.status == "recording"
            ? "The trace is still being written: numbers cover what is stored so far, and indexes are not built yet."
            : "The tracer stopped without finishing the session: the end is the last recorded call.",
        "sessions.status != 'complete'", {{"calls_recorded", cov["calls_recorded"]}});
  for (const auto& [pid, p] : c.processes) {
    if (p.how_found != "pid" && p.how_found != "running") continue;
    gap("info", c.who(pid) + " was already running when tracing began",
        "Only what happened after " + c.t(p.first_ns) + " is observed: memory it allocated before is not in the "
        "trace, and a free of it appears in unmatched_frees. Not observed is not absent.",
        "processes.how_found in ('pid', 'running')", {{"observed_from_t_ms", c.session.t_ms(p.first_ns)}});
  }
  if (out.empty() || std::none_of(out.begin(), out.end(), [](const Finding& f) { return f.kind == "coverage_gap"; }))
    notes.push_back("nothing lost, every library found was probed, every process traced from its start");
}

// Per process: memory of the framework's allocator still held long after its last allocation or free.
void allocator_cache_held(Ctx& c, std::vector<Finding>& out, std::vector<std::string>& notes) {
  if (c.framework_callers.empty()) {
    notes.push_back("no framework allocator (e.g. PyTorch's libc10_cuda) made calls");
    return;
  }
  struct Row {
    std::int64_t pid, caller, last_alloc, frees, freed_bytes, last_free, held, held_count;
  };
  std::map<std::int64_t, Row> by_pid;
  for (const Ctx::Allocation& a : c.allocations()) {
    if (!a.gpu || !c.framework_callers.count(a.caller_id)) continue;
    auto [it, inserted] = by_pid.try_emplace(a.pid, Row{a.pid, a.caller_id, a.alloc_ts, 0, 0, 0, 0, 0});
    Row& r = it->second;
    r.caller = std::min(r.caller, a.caller_id);
    r.last_alloc = std::max(r.last_alloc, a.alloc_ts);
    if (a.end_reason == "freed") {
      ++r.frees;
      r.freed_bytes += a.bytes;
      r.last_free = std::max(r.last_free, a.free_ts.value_or(0));
    } else if (a.end_reason.empty() || a.end_reason == "process_exit") {
      r.held += a.bytes;
      ++r.held_count;
    }
  }
  std::vector<Row> rows;
  for (const auto& [pid, r] : by_pid) rows.push_back(r);
  for (const Row& r : rows) {
    const Process& p = c.processes[r.pid];
    const std::int64_t end = p.end_ns > 0 ? p.end_ns : c.session.end_ns;
    const std::int64_t last_call = std::max(r.last_alloc, r.last_free);
    const std::int64_t idle = end - last_call;
    const std::string name = framework_name(c.callers[r.caller]);
    if (r.held < kHeldMinBytes || idle < kHeldMinIdleNs) {
      notes.push_back(c.who(r.pid) + ": " + name + " held " + fmt_bytes(r.held) + " for " + fmt_ns(idle) +
                      " after its last call");
      continue;
    }
    Finding f;
    f.kind = "allocator_cache_held";
    f.severity = "low";
    f.pid = r.pid;
    f.size = static_cast<double>(r.held);
    const std::string until = p.exited ? "until the process exited at " + c.t(end) + " (released at exit)"
                                       : "until the end of the trace, still held";
    f.title = c.who(r.pid) + ": " + name + " kept " + fmt_bytes(r.held) + " for " + fmt_ns(idle) + " after its last " +
              (r.last_free > r.last_alloc ? "free" : "allocation");
    f.summary = name + " held " + fmt_bytes(r.held) + " in " + std::to_string(r.held_count) + " segments from its last " +
                (r.last_free > r.last_alloc ? "free" : "allocation") + " at " + c.t(last_call) + " " + until + ". " +
                (r.frees > 0 ? "Earlier it did return memory: " + std::to_string(r.frees) + " frees of " +
                                   fmt_bytes(r.freed_bytes) + " (empty_cache() or an out-of-memory retry frees cached "
                                   "segments). "
                             : "It never returned memory with a free call. ") +
                "Whether these segments still held live tensors or only cache is not observable in the trace "
                "(torch.cuda.memory_allocated() tells); nvidia-smi counts them either way.";
    f.rule = ">= " + fmt_bytes(kHeldMinBytes) + " of the framework allocator's GPU memory held >= " +
             fmt_ns(kHeldMinIdleNs) + " after its last allocation or free, to the process's exit or the trace's end";
    f.numbers = {{"held_bytes", r.held},          {"held_segments", r.held_count},
                 {"idle_ns", idle},               {"last_call_t_ms", c.session.t_ms(last_call)},
                 {"frees", r.frees},              {"freed_bytes", r.freed_bytes}};
    f.allocation_ids = c.largest_allocations([&](const auto& a) {
      return a.gpu && a.pid == r.pid && c.framework_callers.count(a.caller_id) &&
             (a.end_reason.empty() || a.end_reason == "process_exit");
    });
    c.drill(f, "outstanding_allocations", held_at_end(c, r.pid), "the held segments, by size and age");
    c.drill(f, "allocation_timeline", {{"pid", r.pid}}, "when the allocator grew and gave memory back");
    out.push_back(std::move(f));
  }
}

// Per process that uses a framework allocator: GPU memory other libraries allocated themselves and still held.
void library_held(Ctx& c, std::vector<Finding>& out, std::vector<std::string>& notes) {
  if (c.framework_callers.empty()) return;  // allocator_cache_held notes it
  struct Lib {
    std::int64_t caller, api_id, count, bytes;
  };
  std::set<std::int64_t> framework_pids;  // whatever the kind of memory they allocated through it
  for (const Ctx::Allocation& a : c.allocations())
    if (c.framework_callers.count(a.caller_id)) framework_pids.insert(a.pid);
  // The held GPU allocations of other callers in those processes, grouped by (pid, caller, allocating API).
  std::vector<const Ctx::Allocation*> held;
  for (const Ctx::Allocation& a : c.allocations())
    if (a.gpu && framework_pids.count(a.pid) && a.caller_id != 0 && !c.framework_callers.count(a.caller_id) &&
        (a.end_reason.empty() || a.end_reason == "process_exit"))
      held.push_back(&a);
  std::map<std::int64_t, std::int64_t> api_of_call;
  constexpr std::size_t kIdsPerQuery = 500;
  for (std::size_t at = 0; at < held.size(); at += kIdsPerQuery) {
    std::set<std::int64_t> ids;
    for (std::size_t i = at; i < std::min(held.size(), at + kIdsPerQuery); ++i) ids.insert(held[i]->alloc_call_id);
    c.query("SELECT id, api_id FROM call_rows WHERE id IN (" + id_list(ids) + ")", {},
            [&](const store::Row& r) { api_of_call[r.i64(0)] = r.i64(1); });
  }
  std::map<std::tuple<std::int64_t, std::int64_t, std::int64_t>, Lib> groups;  // (pid, caller, api)
  for (const Ctx::Allocation* a : held) {
    auto api = api_of_call.find(a->alloc_call_id);
    if (api == api_of_call.end()) continue;  // as the join: an allocation whose call is not stored
    Lib& l = groups.try_emplace({a->pid, a->caller_id, api->second}, Lib{a->caller_id, api->second, 0, 0}).first->second;
    ++l.count;
    l.bytes += a->bytes;
  }
  std::map<std::int64_t, std::vector<Lib>> by_pid;
  for (const auto& [key, l] : groups) by_pid[std::get<0>(key)].push_back(l);
  // Most bytes first, then (caller, api).
  for (auto& [pid, libs] : by_pid)
    std::stable_sort(libs.begin(), libs.end(), [](const Lib& a, const Lib& b) { return a.bytes > b.bytes; });
  for (const auto& [pid, libs] : by_pid) {
    std::int64_t total = 0, count = 0;
    std::string list;
    std::set<std::int64_t> callers;
    for (const Lib& l : libs) {
      total += l.bytes;
      count += l.count;
      callers.insert(l.caller);
      list += (list.empty() ? "" : "; ") + quote_untrusted(c.callers[l.caller], 60) + " " + fmt_bytes(l.bytes) + " (" +
              std::to_string(l.count) + " x " + c.apis[l.api_id].name + ")";
    }
    if (total < kLibraryMinBytes) {
      notes.push_back(c.who(pid) + ": other libraries held " + fmt_bytes(total));
      continue;
    }
    Finding f;
    f.kind = "library_held";
    f.severity = "low";
    f.pid = pid;
    f.size = static_cast<double>(total);
    const std::string name = framework_name(c.callers[*c.framework_callers.begin()]);
    f.title = c.who(pid) + ": " + fmt_bytes(total) + " of GPU memory held by libraries outside " + name;
    f.summary = "Allocated by the libraries themselves, not through " + name + ", and still held at the end of the "
                "process: " + list + ". This memory is not in the framework's own statistics (e.g. "
                "torch.cuda.memory_reserved()) but is in nvidia-smi's; cuBLAS, for one, allocates its workspace itself.";
    f.rule = ">= " + fmt_bytes(kLibraryMinBytes) + " of GPU memory allocated by callers other than the framework "
             "allocator's library, in a process that uses it, and never freed by a call";
    f.numbers = {{"held_bytes", total}, {"held_allocations", count}, {"libraries", callers.size()}};
    f.allocation_ids = c.largest_allocations([&](const auto& a) {
      return a.gpu && a.pid == pid && a.caller_id != 0 && !c.framework_callers.count(a.caller_id) &&
             (a.end_reason.empty() || a.end_reason == "process_exit");
    });
    c.drill(f, "outstanding_allocations", held_at_end(c, pid), "held memory grouped by calling library");
    out.push_back(std::move(f));
  }
}

// Per process with NVML samples: used bytes (NVML) minus traced outstanding GPU memory at the same instants.
void nvml_context_overhead(Ctx& c, std::vector<Finding>& out, std::vector<std::string>& notes) {
  std::map<std::int64_t, std::vector<std::pair<std::int64_t, std::int64_t>>> samples;  // pid -> (ts, used)
  c.query("SELECT pid, ts_ns, SUM(used_bytes) FROM gpu_process_samples WHERE " + c.scope() +
              " GROUP BY pid, ts_ns ORDER BY pid, ts_ns",
          c.params(), [&](const store::Row& r) { samples[r.i64(0)].push_back({r.i64(1), r.i64(2)}); });
  if (samples.empty()) {
    std::string nvml;
    c.query("SELECT COALESCE(nvml, 'not recorded') FROM sessions WHERE id = ?", {c.session.id},
            [&](const store::Row& r) { nvml = r.text(0); });
    notes.push_back("no NVML per-process samples (NVML: " + quote_untrusted(nvml, 120) + ")");
    return;
  }
  // Per sampled process, its traced GPU memory as changes in time order: +bytes at each allocation, -bytes at
  // each free; outstanding bytes at an instant are the sum of the changes up to it.
  std::map<std::int64_t, std::vector<std::pair<std::int64_t, std::int64_t>>> changes;  // pid -> (ts, bytes)
  std::map<std::int64_t, std::int64_t> first_allocs;
  for (const Ctx::Allocation& a : c.allocations()) {
    if (!a.gpu || !samples.count(a.pid)) continue;
    auto& list = changes[a.pid];
    list.push_back({a.alloc_ts, a.bytes});
    if (a.free_ts) list.push_back({*a.free_ts, -a.bytes});
    auto [first, inserted] = first_allocs.emplace(a.pid, a.alloc_ts);
    if (!inserted) first->second = std::min(first->second, a.alloc_ts);
  }
  for (auto& [pid, list] : changes) std::sort(list.begin(), list.end());
  for (auto& [pid, all] : samples) {
    const std::int64_t first_alloc = first_allocs.count(pid) ? first_allocs[pid] : 0;
    // The samples from the first allocation on (before it, NVML sees the context being created), at most
    // kNvmlMaxSamples of them evenly spread.
    std::optional<std::int64_t> before_first;
    std::vector<std::pair<std::int64_t, std::int64_t>> after;
    // After the exit, NVML still shows memory the driver is tearing down while the trace counts it released.
    const auto proc = c.processes.find(pid);
    const std::int64_t exit_ns = proc != c.processes.end() && proc->second.exited ? proc->second.end_ns : INT64_MAX;
    for (auto [ts, used] : all) {
      if (first_alloc > 0 && ts < first_alloc) before_first = used;
      else if (ts < exit_ns) after.push_back({ts, used});
    }
    if (after.empty()) {
      notes.push_back(c.who(pid) + ": no NVML sample between its first allocation and its exit");
      continue;
    }
    std::vector<std::pair<std::int64_t, std::int64_t>> picked;
    const std::size_t n = std::min(after.size(), kNvmlMaxSamples);
    for (std::size_t i = 0; i < n; ++i) picked.push_back(after[i * after.size() / n]);
    std::vector<std::int64_t> overhead;
    std::int64_t nvml_max = 0, traced_at_max = 0, traced = 0;
    const auto& pid_changes = changes[pid];
    auto next_change = pid_changes.begin();
    for (auto [ts, used] : picked) {  // in time order, as the samples are
      for (; next_change != pid_changes.end() && next_change->first <= ts; ++next_change) traced += next_change->second;
      overhead.push_back(used - traced);
      if (used > nvml_max) {
        nvml_max = used;
        traced_at_max = traced;
      }
    }
    std::vector<std::int64_t> sorted = overhead;
    std::sort(sorted.begin(), sorted.end());
    const std::int64_t median = sorted[(sorted.size() - 1) / 2];
    if (median < kNvmlMinOverheadBytes) {
      notes.push_back(c.who(pid) + ": NVML exceeds traced memory by " + fmt_bytes(median) + " (median)");
      continue;
    }
    const bool attached = proc != c.processes.end() && (proc->second.how_found == "pid" || proc->second.how_found == "running");
    Finding f;
    f.kind = "nvml_context_overhead";
    f.severity = "info";
    f.pid = pid;
    f.size = static_cast<double>(median);
    f.title = c.who(pid) + ": NVML sees " + fmt_bytes(median) + " more GPU memory than its traced allocations";
    f.summary = "Across " + std::to_string(picked.size()) + " of " + std::to_string(all.size()) +
                " NVML samples (from its first allocation to its exit), the process's used GPU memory exceeded its traced outstanding allocations by " +
                fmt_bytes(median) + " (median; " + fmt_bytes(sorted.front()) + " to " + fmt_bytes(sorted.back()) + ")" +
                (before_first ? "; the last sample before its first allocation showed " + fmt_bytes(*before_first) : "") +
                ". At NVML's peak (" + fmt_bytes(nvml_max) + ") the trace accounted for " + fmt_bytes(traced_at_max) +
                ". The difference is the CUDA context, module images and driver overhead, which no allocation call "
                "shows" + (attached ? ", plus memory allocated before tracing began (the process was attached)" : "") +
                ".";
    f.rule = "median over NVML per-process samples from the first allocation to the exit of (used_bytes - traced outstanding GPU memory at the same instant) "
             ">= " + fmt_bytes(kNvmlMinOverheadBytes);
    f.numbers = {{"overhead_median_bytes", median}, {"overhead_min_bytes", sorted.front()},
                 {"overhead_max_bytes", sorted.back()}, {"samples_compared", picked.size()},
                 {"samples", all.size()}, {"nvml_max_used_bytes", nvml_max}};
    if (before_first) f.numbers["before_first_allocation_bytes"] = *before_first;
    c.drill(f, "allocation_timeline", {{"pid", pid}}, "traced outstanding bytes with NVML's view alongside");
    out.push_back(std::move(f));
  }
}

// Per process that exited: what it still held, which the driver released at exit.
void released_at_exit(Ctx& c, std::vector<Finding>& out, std::vector<std::string>& notes,
                      const std::set<std::int64_t>& leaking) {
  std::map<std::int64_t, std::map<std::int64_t, std::int64_t>> bytes_by_caller;  // pid -> caller -> bytes
  std::map<std::int64_t, std::int64_t> counts;
  for (const Ctx::Allocation& a : c.allocations())
    if (a.gpu && a.end_reason == "process_exit") {
      bytes_by_caller[a.pid][a.caller_id] += a.bytes;
      ++counts[a.pid];
    }
  std::map<std::int64_t, std::vector<std::pair<std::int64_t, std::int64_t>>> by_pid;  // pid -> (caller, bytes)
  for (const auto& [pid, callers] : bytes_by_caller) {
    auto& list = by_pid[pid];
    list.assign(callers.begin(), callers.end());
    // Most bytes first, then the lowest caller id (0: not recorded).
    std::stable_sort(list.begin(), list.end(), [](const auto& a, const auto& b) { return a.second > b.second; });
  }
  if (by_pid.empty()) notes.push_back("no GPU memory was released by a process exit");
  for (const auto& [pid, callers] : by_pid) {
    std::int64_t total = 0;
    std::string list;
    for (auto [caller, bytes] : callers) {
      total += bytes;
      list += (list.empty() ? "" : ", ") + quote_untrusted(caller ? c.callers[caller] : "unknown caller", 60) + " " +
              fmt_bytes(bytes);
    }
    if (total < kExitMinBytes) continue;
    const Process& p = c.processes[pid];
    Finding f;
    f.kind = "released_at_exit";
    f.severity = "info";
    f.pid = pid;
    f.size = static_cast<double>(total);
    f.title = c.who(pid) + " still held " + fmt_bytes(total) + " of GPU memory when it exited";
    f.summary = "When " + c.who(pid) + " exited at " + c.t(p.end_ns) + ", " + std::to_string(counts[pid]) +
                " allocations (" + fmt_bytes(total) + ": " + list + ") had never been freed by a call; the driver "
                "released them at exit. " +
                (leaking.count(pid) ? "Its growth while running is the leak finding above."
                                    : "Memory held until exit is not by itself a leak of a live process.");
    f.rule = "allocations.end_reason = 'process_exit' totalling >= " + fmt_bytes(kExitMinBytes) + " of GPU memory";
    f.numbers = {{"released_bytes", total}, {"released_allocations", counts[pid]},
                 {"exit_t_ms", c.session.t_ms(p.end_ns)}};
    f.allocation_ids = c.largest_allocations(
        [&](const auto& a) { return a.gpu && a.pid == pid && a.end_reason == "process_exit"; });
    c.drill(f, "outstanding_allocations", held_at_end(c, pid), "what was held at exit, by size and calling library");
    out.push_back(std::move(f));
  }
}

json finding_json(const Finding& f, int rank) {
  return {{"rank", rank},
          {"kind", f.kind},
          {"severity", f.severity},
          {"title", f.title},
          {"summary", f.summary},
          {"rule", f.rule},
          {"pid", f.pid ? json(*f.pid) : json(nullptr)},
          {"evidence", {{"numbers", f.numbers}, {"call_ids", f.call_ids}, {"allocation_ids", f.allocation_ids}}},
          {"next", f.next}};
}

std::string render(const json& out, const Session& s) {
  std::string text = "findings: session " + std::to_string(s.id) +
                     (s.command.empty() ? "" : " " + quote_untrusted(s.command, 100)) + ", " +
                     fmt_ns(s.end_ns - s.start_ns) + ": " + std::to_string(out["findings_total"].get<std::int64_t>()) +
                     " findings, ranked by severity\n";
  for (const auto& f : out["findings"]) {
    text += std::to_string(f["rank"].get<int>()) + ". [" + f["severity"].get<std::string>() + "] " +
            f["kind"].get<std::string>() + ": " + f["title"].get<std::string>() + "\n   " +
            f["summary"].get<std::string>() + "\n";
    const auto& ev = f["evidence"];
    if (!ev["allocation_ids"].empty()) text += "   allocation ids: " + ev["allocation_ids"].dump() + "\n";
    if (!ev["call_ids"].empty()) text += "   call ids: " + ev["call_ids"].dump() + "\n";
    for (const auto& n : f["next"])
      text += "   next: " + n["tool"].get<std::string>() + " " + n["arguments"].dump() + "\n";
    text += "   rule: " + f["rule"].get<std::string>() + "\n";
  }
  if (out["left_out"].get<std::int64_t>() > 0)
    text += "(" + std::to_string(out["left_out"].get<std::int64_t>()) + " more; raise `limit`)\n";
  text += "checked:\n";
  for (const auto& c : out["checked"])
    text += "- " + c["kind"].get<std::string>() + ": " + std::to_string(c["fired"].get<int>()) + " fired" +
            (c["notes"].empty() ? "" : "; " + c["notes"][0].get<std::string>()) + "\n";
  return bound_text(std::move(text), coverage_line(out["coverage"]));
}

Result<ToolOutput> run(const ToolInput& in) {
  auto session = resolve_session(in.db, in.args);
  if (!session) return session.error();
  auto cov = coverage(in.db, *session);
  if (!cov) return cov.error();
  Ctx c(in.db, *session, arg_opt_int(in.args, "pid"));
  load_context(c);
  if (c.pid && !c.processes.count(*c.pid)) {
    std::string pids;
    c.query("SELECT DISTINCT pid FROM processes WHERE session_id = ? ORDER BY pid", {session->id},
            [&](const store::Row& r) { pids += (pids.empty() ? "" : ", ") + std::to_string(r.i64(0)); });
    return Error{"no pid " + std::to_string(*c.pid) + " in session " + std::to_string(session->id) +
                 "; its processes: " + (pids.empty() ? "none" : pids) + " (or leave pid out)"};
  }
  if (!c.status) return Error{c.status.message()};

  struct Rule {
    const char* kind;
    std::function<void(std::vector<Finding>&, std::vector<std::string>&)> run;
  };
  std::set<std::int64_t> leaking;
  const Rule rules[] = {
      {"coverage_gap", [&](auto& f, auto& n) { coverage_gaps(c, *cov, f, n); }},
      {"leak_growth", [&](auto& f, auto& n) { leak_growth(c, f, n); }},
      {"call_errors", [&](auto& f, auto& n) { call_errors(c, f, n); }},
      {"preemption_tail", [&](auto& f, auto& n) { preemption_tail(c, f, n); }},
      {"missed_frees", [&](auto& f, auto& n) { missed_frees(c, f, n); }},
      {"allocator_cache_held", [&](auto& f, auto& n) { allocator_cache_held(c, f, n); }},
      {"library_held", [&](auto& f, auto& n) { library_held(c, f, n); }},
      {"nvml_context_overhead", [&](auto& f, auto& n) { nvml_context_overhead(c, f, n); }},
      {"released_at_exit", [&](auto& f, auto& n) { released_at_exit(c, f, n, leaking); }},
  };
  std::vector<Finding> findings;
  json checked = json::array();
  for (std::size_t i = 0; i < std::size(rules); ++i) {
    if (in.progress.stop_requested()) return Error{"cancelled"};
    in.progress(static_cast<double>(i), static_cast<double>(std::size(rules)), rules[i].kind);
    std::vector<Finding> found;
    std::vector<std::string> notes;
    rules[i].run(found, notes);
    if (!c.status) return Error{c.status.message()};
    for (const auto& f : found)
      if (f.kind == "leak_growth") leaking.insert(*f.pid);
    checked.push_back({{"kind", rules[i].kind}, {"fired", static_cast<int>(found.size())}, {"notes", notes}});
    for (auto& f : found) findings.push_back(std::move(f));
  }
  std::stable_sort(findings.begin(), findings.end(), [](const Finding& a, const Finding& b) {
    auto key = [](const Finding& f) {
      return std::make_tuple(rank_of(kSeverities, std::size(kSeverities), f.severity),
                             rank_of(kKinds, std::size(kKinds), f.kind), -f.size);
    };
    return key(a) < key(b);
  });
  const auto limit = static_cast<std::size_t>(arg_int(in.args, "limit", 20));
  json list = json::array();
  for (std::size_t i = 0; i < findings.size() && i < limit; ++i) list.push_back(finding_json(findings[i], static_cast<int>(i) + 1));
  json out = {{"session_id", session->id},
              {"pid", c.pid ? json(*c.pid) : json(nullptr)},
              {"findings", list},
              {"findings_total", findings.size()},
              {"left_out", findings.size() - list.size()},
              {"checked", checked},
              {"coverage", *cov}};
  std::string text = render(out, *session);
  return ToolOutput{std::move(out), std::move(text), {}};
}

}  // namespace

extern const ToolSpec kFindings;
const ToolSpec kFindings{
    "findings", "Automatic findings",
    "Start here after trace_overview: ranked automatic findings about a session, each with the rule that fired, the "
    "measured numbers, call and allocation ids that the other tools accept, and the tool to call next. Rules: memory "
    "growth in a live process (leak), out-of-memory and other failed calls, lost records and partial observation, "
    "latency tails caused by CPU preemption, missed or unmatched frees, the framework allocator's cache held after its "
    "last call, GPU memory held by libraries outside the framework's allocator (cuBLAS, cuDNN), CUDA context overhead "
    "seen by NVML, and memory released only at process exit. `checked` says what each rule saw when it did not fire. "
    "Use pid to look at one process.",
    run};

}  // namespace vs::tools
