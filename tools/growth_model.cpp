#include "tools/growth_model.h"

#include <algorithm>

namespace vs::tools {
namespace {

using R = GrowthRules;

// Calls read at a time when walking back over a teardown.
constexpr std::int64_t kTeardownChunk = 512;

std::string plural(std::int64_t n, const std::string& word) {
  return std::to_string(n) + " " + word + (n == 1 ? "" : "s");
}

}  // namespace

ActivityKind activity_kind(const std::string& op) {
  // Calls that give something back, as a process does when it shuts down: frees, unmaps, releases (vmm_release
  // also ends an imported handle: the importer's release of another process's memory), an IPC mapping closed, a
  // host range unregistered, the stream-ordered pool trimmed (empty_cache()), an executable graph destroyed (its
  // private memory goes with it). A teardown is a final run of them; they are not work that keeps a phase going.
  if (op == "free" || op == "free_host" || op == "vmm_unmap" || op == "vmm_release" || op == "vmm_address_free" ||
      op == "ipc_close" || op == "host_unregister" || op == "mem_pool_trim" || op == "graph_exec_destroy")
    return ActivityKind::Release;
  // Calls that do no work by themselves and change no memory: synchronization, device and context calls, and the
  // queries and settings of memory: cudaMemGetInfo, the pool's attributes read or set (PyTorch's memory_stats()
  // polls them), the default pool looked up, an IPC handle or a VMM handle exported for another process (the
  // exporter's memory is unchanged). A process that polls them after its last allocation has not gone on working.
  if (op == "sync" || op == "set_device" || op == "set_context" || op == "primary_ctx_retain" || op == "mem_get_info" ||
      op == "mem_pool_get_attribute" || op == "mem_pool_set_attribute" || op == "default_mem_pool" ||
      op == "ipc_get_handle" || op == "vmm_export")
    return ActivityKind::Other;
  // The rest: allocations, copies, launches, mappings opened (ipc_open, vmm_import, host_register), graphs
  // instantiated and launched.
  return ActivityKind::Work;
}

Result<ActivityIndex> ActivityIndex::load(const store::TraceReader& db, const Session& session,
                                          std::optional<std::int64_t> pid) {
  ActivityIndex ix;
  ix.db_ = &db;
  ix.session_ = session;
  Status st = db.query("SELECT id, op FROM apis", {},
                       [&](const store::Row& r) { ix.kind_of_api_[r.i64(0)] = activity_kind(r.text(1)); });
  if (!st) return Error{st.message()};
  bool has_column = false;
  st = db.query("SELECT 1 FROM pragma_table_info('call_rows') WHERE name = 'seq'", {},
                [&](const store::Row&) { has_column = true; });
  if (!st) return Error{st.message()};
  if (has_column) {
    // Numbered by the writer unless this session was written before schema 4 (into an upgraded file).
    st = db.query("SELECT seq IS NOT NULL FROM call_rows WHERE session_id = ? AND parent_id IS NULL LIMIT 1",
                  {session.id}, [&](const store::Row& r) { ix.stored_ = r.i64(0) != 0; });
    if (!st) return Error{st.message()};
  }
  if (ix.stored_) return ix;
  std::map<std::int64_t, std::int64_t> next;  // pid -> seq of its next call
  std::string sql = "SELECT id, pid, ts_ns, api_id FROM call_rows WHERE session_id = ? AND parent_id IS NULL";
  std::vector<store::SqlValue> params{session.id};
  if (pid) {
    sql += " AND pid = ?";
    params.emplace_back(*pid);
  }
  st = db.query(sql + " ORDER BY ts_ns, id", params, [&](const store::Row& r) {
    const std::int64_t seq = ++next[r.i64(1)];
    auto k = ix.kind_of_api_.find(r.i64(3));
    ix.calls_[r.i64(1)].push_back({r.i64(2), seq, k == ix.kind_of_api_.end() ? ActivityKind::Work : k->second});
    ix.seq_of_call_[r.i64(0)] = seq;
  });
  if (!st) return Error{st.message()};
  return ix;
}

std::int64_t ActivityIndex::seq_of_call(std::int64_t call_id) const {
  auto it = seq_of_call_.find(call_id);
  return it == seq_of_call_.end() ? 0 : it->second;
}

void ActivityIndex::number(std::vector<Lifetime>& lifetimes) const {
  if (stored_) return;
  for (Lifetime& l : lifetimes) {
    l.alloc_seq = seq_of_call(l.alloc_call_id);
    const std::int64_t free_seq = l.free_call_id ? seq_of_call(*l.free_call_id) : 0;
    l.free_seq = free_seq == 0 ? kNever : free_seq;
  }
}

namespace {

// Walks back from a process's last call: the teardown is the final run of releases, among which calls that do
// no work may come (a shutting-down XLA client makes the context current and synchronizes before each region it
// unmaps and releases); the last call that works before it is the last of the working phase.
struct TeardownScan {
  bool released = false, done = false;
  std::int64_t work_seq = 0, work_ts = 0;
  void add(ActivityKind kind, std::int64_t seq, std::int64_t ts) {
    if (done || kind == ActivityKind::Other) return;
    if (kind == ActivityKind::Release) {
      released = true;
      return;
    }
    done = true;
    work_seq = seq;
    work_ts = ts;
  }
  // Without a release at the end there is no teardown: the work ends with the last call.
  void finish(Activity& a, std::int64_t last_ts) const {
    a.last_work_seq = released ? work_seq : a.last_seq;
    a.last_work_ts_ns = released ? work_ts : last_ts;
  }
};

}  // namespace

Activity activity_of(const std::vector<ActivityCall>& calls, std::int64_t from_ns, std::int64_t to_ns) {
  Activity a;
  auto first = std::lower_bound(calls.begin(), calls.end(), from_ns,
                                [](const ActivityCall& c, std::int64_t t) { return c.ts_ns < t; });
  auto last = std::upper_bound(calls.begin(), calls.end(), to_ns,
                               [](std::int64_t t, const ActivityCall& c) { return t < c.ts_ns; });
  if (first >= last) return a;
  a.first_seq = first->seq;
  a.first_ts_ns = first->ts_ns;
  a.last_seq = std::prev(last)->seq;
  TeardownScan scan;
  for (auto c = last; c != first && !scan.done;) {
    --c;
    scan.add(c->kind, c->seq, c->ts_ns);
  }
  scan.finish(a, std::prev(last)->ts_ns);
  return a;
}

Result<Activity> ActivityIndex::activity(std::int64_t pid, std::int64_t from_ns, std::int64_t to_ns) const {
  Activity a;
  TeardownScan scan;
  if (!stored_) {
    auto it = calls_.find(pid);
    return it == calls_.end() ? a : activity_of(it->second, from_ns, to_ns);
  }
  const std::string scope = " FROM call_rows WHERE pid = ? AND ts_ns BETWEEN ? AND ? AND session_id = ? "
                            "AND parent_id IS NULL";
  Status st = db_->query("SELECT seq, ts_ns" + scope + " ORDER BY ts_ns LIMIT 1", {pid, from_ns, to_ns, session_.id},
                         [&](const store::Row& r) {
                           a.first_seq = r.i64(0);
                           a.first_ts_ns = r.i64(1);
                         });
  if (!st) return Error{st.message()};
  if (a.first_seq == 0) return a;
  std::int64_t last_ts = 0;
  for (std::int64_t offset = 0; !scan.done; offset += kTeardownChunk) {
    std::int64_t rows = 0;
    st = db_->query("SELECT seq, ts_ns, api_id" + scope + " ORDER BY ts_ns DESC LIMIT ? OFFSET ?",
                    {pid, from_ns, to_ns, session_.id, kTeardownChunk, offset}, [&](const store::Row& r) {
                      if (rows++ == 0 && offset == 0) {
                        a.last_seq = r.i64(0);
                        last_ts = r.i64(1);
                      }
                      auto k = kind_of_api_.find(r.i64(2));
                      scan.add(k == kind_of_api_.end() ? ActivityKind::Work : k->second, r.i64(0), r.i64(1));
                    });
    if (!st) return Error{st.message()};
    if (rows < kTeardownChunk) break;
  }
  scan.finish(a, last_ts);
  return a;
}

std::int64_t CallLevel::at(std::int64_t seq) const {
  auto it = std::upper_bound(changes.begin(), changes.end(), seq,
                             [](std::int64_t s, const Change& c) { return s < c.seq; });
  return it == changes.begin() ? initial : std::prev(it)->bytes;
}

CallLevel call_level(const std::vector<const Lifetime*>& lifetimes, std::int64_t first_seq) {
  CallLevel level;
  struct Delta {
    std::int64_t seq, ts_ns, bytes;
  };
  std::vector<Delta> deltas;
  for (const Lifetime* l : lifetimes) {
    if (l->alloc_seq == 0) continue;  // made by a call outside the numbering (nested): not in the activity
    const bool freed = l->free_seq != kNever && !l->released_at_exit;
    if (freed && l->free_seq < first_seq) continue;
    if (l->alloc_seq < first_seq) level.initial += l->bytes;
    else deltas.push_back({l->alloc_seq, l->alloc_ns, l->bytes});
    if (freed) deltas.push_back({l->free_seq, l->free_ns, -l->bytes});
  }
  std::sort(deltas.begin(), deltas.end(), [](const Delta& a, const Delta& b) { return a.seq < b.seq; });
  std::int64_t bytes = level.initial;
  for (const Delta& d : deltas) {
    bytes += d.bytes;
    if (!level.changes.empty() && level.changes.back().seq == d.seq) level.changes.back().bytes = bytes;
    else level.changes.push_back({d.seq, d.ts_ns, bytes});
  }
  return level;
}

GrowthVerdict judge_growth(const CallLevel& level, const Activity& activity, std::int64_t min_growth_bytes) {
  GrowthVerdict v;
  v.calls = activity.calls();
  v.teardown_calls = activity.teardown_calls();
  if (v.calls == 0) {
    v.verdict = "steady";
    v.reason = activity.first_seq == 0 ? "no calls of the process in the window" : "its calls only released memory";
    v.start_bytes = v.high_bytes = v.end_bytes = v.first_episode_end_bytes = v.mid_high_bytes =
        level.at(activity.last_seq);
    return v;
  }
  const std::int64_t first = activity.first_seq, last = activity.last_work_seq;
  const std::int64_t mid = first + v.calls / 2;
  v.start_bytes = level.at(first - 1);
  std::int64_t high = v.start_bytes;
  v.mid_high_bytes = high;  // the high as of the middle call
  std::vector<std::int64_t> episode_starts;  // seqs
  std::int64_t previous_high_seq = -1, first_episode_end_seq = -1;
  auto change = std::upper_bound(level.changes.begin(), level.changes.end(), first - 1,
                                 [](std::int64_t s, const CallLevel::Change& c) { return s < c.seq; });
  std::int64_t counted_high = high;  // the last new high: the next must rise kMinNewHighBytes above it
  for (; change != level.changes.end() && change->seq <= last; ++change) {
    high = std::max(high, change->bytes);
    if (change->bytes >= counted_high + R::kMinNewHighBytes) {
      counted_high = change->bytes;
      // Any call between two new highs (one per seq) separates their episodes.
      if (previous_high_seq < 0 || change->seq > previous_high_seq + 1) episode_starts.push_back(change->seq);
      if (episode_starts.size() == 1) {
        v.first_episode_end_bytes = change->bytes;
        first_episode_end_seq = change->seq;
      }
      ++v.new_highs;
      if (v.first_high_ns == 0) v.first_high_ns = change->ts_ns;
      v.last_high_ns = change->ts_ns;
      previous_high_seq = change->seq;
    }
    if (change->seq <= mid) v.mid_high_bytes = high;
  }
  if (episode_starts.empty()) v.first_episode_end_bytes = high;
  v.high_bytes = high;
  v.end_bytes = level.at(last);
  v.episodes = static_cast<std::int64_t>(episode_starts.size());
  v.second_half_episodes = std::count_if(episode_starts.begin(), episode_starts.end(), [&](std::int64_t seq) { return seq > mid; });
  v.last_high_seq = previous_high_seq;
  v.first_episode_end_seq = first_episode_end_seq;
  v.calls_since_last_high = previous_high_seq < 0 ? v.calls : last - previous_high_seq;
  for (std::size_t k = episode_starts.size() > R::kRecentWaits ? episode_starts.size() - R::kRecentWaits : 1;
       k < episode_starts.size(); ++k)
    v.longest_recent_wait_calls = std::max(v.longest_recent_wait_calls, episode_starts[k] - episode_starts[k - 1]);

  const std::int64_t flat = v.calls_since_last_high;
  const std::string flat_text = std::to_string(flat) + " of its " + std::to_string(v.calls) + " calls since its last new high";
  if (v.growth_bytes() < min_growth_bytes) {
    v.verdict = "steady";
    v.reason = "grew by " + fmt_bytes(v.growth_bytes()) + " at most, below " + fmt_bytes(min_growth_bytes);
  } else if (static_cast<double>(v.end_bytes) * 100 < static_cast<double>(v.high_bytes) * R::kMinEndPctOfHigh) {
    v.verdict = "steady";
    v.reason = "returned most of its high: " + fmt_bytes(v.end_bytes) + " of " + fmt_bytes(v.high_bytes) +
               " after its last working call";
  } else if (v.episodes >= R::kMinEpisodes && v.repeated_growth_bytes() >= min_growth_bytes) {
    const std::int64_t wait = v.longest_recent_wait_calls;
    const std::string rhythm = plural(v.episodes, "growth episode") + "; while growing, a new high at least every " +
                               plural(wait, "call") + "; " + flat_text;
    const bool in_rhythm = flat <= R::kGrowingFactor * wait;
    const std::string late = "+" + fmt_bytes(v.second_half_growth_bytes()) + " in " +
                             plural(v.second_half_episodes, "episode") + " over the second half of its calls";
    if (in_rhythm && v.second_half_growth_bytes() >= min_growth_bytes) {
      v.verdict = "growing";
      v.reason = rhythm + "; " + late;
    } else if (in_rhythm && v.second_half_episodes < R::kMinEpisodes) {
      // A few late new highs (a segment after a long flat run, fragmentation) that added less than the
      // threshold: the growth as good as stopped.
      v.verdict = "plateau";
      v.reason = rhythm + ", but only " + late;
    } else if (flat >= R::kPlateauFactor * wait && flat >= R::kMinFlatCalls) {
      v.verdict = "plateau";
      v.reason = rhythm + ": growth stopped";
    } else {
      // Episodes still coming at the rhythm through the second half but adding less than the threshold there: a
      // leak slower than the threshold, or a warm-up that is slowing down. Not a plateau, since the growth has
      // not stopped: more calls tell (flat ones make a plateau, more growth at this rhythm makes it growing).
      v.verdict = "undecided";
      v.calls_to_decide = std::max(R::kPlateauFactor * wait, R::kMinFlatCalls) - flat;
      v.reason = rhythm + (in_rhythm ? ": still growing, but only " + late + ", below " + fmt_bytes(min_growth_bytes)
                                     : ": too few to tell a plateau from the next new high");
    }
  } else {
    // One load-like episode carries the growth (later new highs, if any, added less than the threshold): judge
    // the calls since that episode.
    const bool later_growth = v.repeated_growth_bytes() >= min_growth_bytes;
    const std::int64_t since = later_growth ? flat : last - first_episode_end_seq;
    const std::string grew = "grew in " + plural(v.episodes, "episode") + " (+" +
                             fmt_bytes(v.repeated_growth_bytes()) + " after the first); " + std::to_string(since) +
                             " of its " + std::to_string(v.calls) + " calls since " +
                             (later_growth ? "its last new high" : "the first episode");
    // Growth in three episodes or more has a rhythm, as above: flat for kPlateauFactor x its longest recent wait
    // before it stopped (a pool that doubles its regions, as XLA's, waits twice as long for each next one). Two
    // are a load and a step (a new largest input): one wait is no rhythm.
    const bool rhythm = later_growth && v.episodes >= R::kMinRhythmEpisodes;
    const std::int64_t needed =
        rhythm ? std::max(R::kPlateauFactor * v.longest_recent_wait_calls, R::kMinFlatCalls) : R::kMinFlatCalls;
    if (since >= needed) {
      v.verdict = "plateau";
      v.reason = grew;
    } else {
      v.verdict = "undecided";
      v.calls_to_decide = needed - since;
      v.reason = grew + ": the activity after its growth is too short to tell";
    }
  }
  return v;
}

std::string growth_rule_text() {
  return "judged on the process's calls, not on time: a call at which outstanding bytes rise at least " +
         fmt_bytes(R::kMinNewHighBytes) + " above the last new high is a new high, consecutive new highs are one "
         "episode; the working phase ends before a final burst of releases (synchronizations between them "
         "included). steady: the high is less than the threshold above the start, or the end is below " +
         std::to_string(static_cast<int>(R::kMinEndPctOfHigh)) + "% of the high. growing: >= " +
         std::to_string(R::kMinEpisodes) + " episodes, growth after the first episode >= the threshold, the calls "
         "since the last new high <= " + std::to_string(R::kGrowingFactor) + " x the longest wait between the last " +
         std::to_string(R::kRecentWaits + 1) + " episodes, and growth >= the threshold over the second half of the "
         "calls. plateau: the calls since the last new high >= " + std::to_string(R::kPlateauFactor) +
         " x that wait and >= " + std::to_string(R::kMinFlatCalls) + " (the same with " +
         std::to_string(R::kMinRhythmEpisodes) + " or more episodes that grew >= the threshold after the first; with "
         "fewer: >= " + std::to_string(R::kMinFlatCalls) + " since the last). "
         "undecided: in between, or new highs still at the rhythm, in " + std::to_string(R::kMinEpisodes) +
         " or more episodes over the second half of the calls, that added less than the threshold there (with fewer "
         "such episodes: plateau); calls_to_decide more calls without a new high would make it a plateau, growth "
         "at the rhythm would make it growing";
}

}  // namespace vs::tools
