// Does outstanding memory keep growing? Judged on the process's own activity,
// not on wall-clock time, so that a verdict does not change with the pace of
// the program (a 10 s import before a 1 s leak, 150 ms between requests, a
// machine twice as slow): the findings' leak_growth and leak_candidates share it.
//
// The activity is the process's sequence of top-level calls (allocations,
// frees, copies, synchronizations: every request or step makes some of them,
// they are its heartbeat), numbered 1, 2, 3... (call_rows.seq). At each call
// the series' outstanding bytes are read; a call at which they rise at least
// 1 MiB above the last new high (and so above every earlier value) is a new
// high, and a run of consecutive new highs is one growth episode (a model
// load of 100 tensors in a row is one episode; a request that leaves bytes
// behind, then copies a result back, is one). The last calls of a
// process that free memory and do no other work (the release burst of a
// shutdown or of a final empty_cache(), with the synchronizations and context
// calls between its frees) are its teardown, not its working phase: growth seen
// while it worked stands.
//
// Verdicts, with every count in calls (growth_rule_text() states them):
//   steady     the high is less than the threshold above the start, or the end is below half the high
//   growing    >= kMinEpisodes episodes that added >= the threshold after the first, the calls since the last
//              new high no more than kGrowingFactor x the longest wait between the last episodes, and growth
//              >= the threshold over the second half of the calls: new highs kept coming through the end
//   plateau    the calls since the last new high >= kPlateauFactor x that wait and >= kMinFlatCalls (the same
//              with >= kMinRhythmEpisodes episodes; with fewer: >= kMinFlatCalls since the last episode that
//              grew, or since the first): growth stopped, the process went on working
//              (also: new highs still at the rhythm, but in fewer than kMinEpisodes episodes over the second
//              half, adding less than the threshold there: a late segment, fragmentation)
//   undecided  in between (too short to tell), or new highs still at the rhythm, in kMinEpisodes or more
//              episodes over the second half, that added less than the threshold there (a slow leak or a
//              slowing warm-up); calls_to_decide: how many more calls without a new high make it a plateau
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "tools/timeline_model.h"

namespace vs::tools {

// Thresholds of the growth verdict, each with the reason for its value.
struct GrowthRules {
  // Fewer separate episodes are a load and a warm-up, not a trend: a training loop's first steps make several
  // (the first forward, backward and optimizer state, then a few segments as the cache settles: 6-7 in the
  // warm-up traces of examples/corpus), while a leak leaves bytes behind request after request.
  static constexpr std::int64_t kMinEpisodes = 8;
  // The waits between new highs of a caching allocator are irregular (a new segment every few requests): a flat
  // end up to twice the longest recent wait is still the same rhythm.
  static constexpr std::int64_t kGrowingFactor = 2;
  // Flat for four times the longest recent wait, the rhythm has stopped.
  static constexpr std::int64_t kPlateauFactor = 4;
  // The recent rhythm: the longest of the waits between the last episodes (an early load's quick episodes do not
  // count). One request can make several episodes (a VMM allocation is cuMemCreate, cuMemMap, cuMemSetAccess;
  // a step allocates between copies): over 16 waits, its own period is in view.
  static constexpr std::int64_t kRecentWaits = 16;
  // A plateau needs the process to have gone on working: at least this many calls after its last new high
  // (10 requests that copy a result back and synchronize).
  static constexpr std::int64_t kMinFlatCalls = 20;
  // The end of the working phase below this share of its high: most of the memory was returned.
  static constexpr double kMinEndPctOfHigh = 50;
  // With fewer episodes than kMinEpisodes, a plateau waits out the rhythm from this many on (two waits to
  // compare); two episodes are a load and a step (a new largest input), for which kMinFlatCalls will do.
  static constexpr std::int64_t kMinRhythmEpisodes = 3;
  // A new high rises at least this far above the last one: below the driver's 2 MiB granularity, a rise is a
  // handle, an event or a library's small buffer (XLA's 25 KB and 4 B allocations at start), not the workload's
  // memory, and would count as an episode of its own. A caching allocator's segments are 2 MiB and up.
  static constexpr std::int64_t kMinNewHighBytes = 1 << 20;
};

// What a call is to the activity: Release, a call that gives memory back (free, unmap, release, IPC close, host
// unregister, pool trim, graph destroy: a final run of them is the teardown); Other, a call that does no work by
// itself (synchronization, device and context calls, memory queries and settings, handle exports); Work, the rest
// (allocations, copies, launches, mappings opened). activity_kind() lists them.
enum class ActivityKind : std::uint8_t { Work, Release, Other };
ActivityKind activity_kind(const std::string& op);  // from apis.op

// One top-level call of a process.
struct ActivityCall {
  std::int64_t ts_ns = 0, seq = 0;
  ActivityKind kind = ActivityKind::Work;
};

// A process's calls in a window, by seq.
struct Activity {
  std::int64_t first_seq = 0;       // the window's first top-level call; 0: none
  std::int64_t last_seq = 0;        // its last
  std::int64_t last_work_seq = 0;   // the last before the teardown; 0: only releases
  std::int64_t first_ts_ns = 0, last_work_ts_ns = 0;
  std::int64_t calls() const { return last_work_seq == 0 ? 0 : last_work_seq - first_seq + 1; }
  std::int64_t teardown_calls() const { return last_seq == 0 ? 0 : last_seq - std::max(last_work_seq, first_seq - 1); }
};

// The activity of `calls` (one process's, in seq order) with from_ns <= ts_ns <= to_ns.
Activity activity_of(const std::vector<ActivityCall>& calls, std::int64_t from_ns, std::int64_t to_ns);

// The activity numbering of a session's processes: call_rows.seq where the trace stores it (schema 4), else
// the top-level calls numbered here in call id order (entry order), which reads every call once.
class ActivityIndex {
 public:
  static Result<ActivityIndex> load(const store::TraceReader& db, const Session& session,
                                    std::optional<std::int64_t> pid);
  // The top-level calls of `pid` with from_ns <= ts_ns <= to_ns.
  Result<Activity> activity(std::int64_t pid, std::int64_t from_ns, std::int64_t to_ns) const;
  // Fills Lifetime::alloc_seq / free_seq where the trace does not store them.
  void number(std::vector<Lifetime>& lifetimes) const;
  // Where the trace does not store them: the seq of a top-level call (0: a nested or unknown call).
  std::int64_t seq_of_call(std::int64_t call_id) const;
  bool stored() const { return stored_; }

 private:
  const store::TraceReader* db_ = nullptr;
  Session session_;
  bool stored_ = false;
  std::map<std::int64_t, ActivityKind> kind_of_api_;
  std::map<std::int64_t, std::vector<ActivityCall>> calls_;           // not stored: by pid, in seq order
  std::unordered_map<std::int64_t, std::int64_t> seq_of_call_;  // not stored: call id -> seq
};

// A series' outstanding bytes along its process's calls: `initial` before first_seq, then (seq, ts_ns, bytes
// from that call on), one change per seq, ascending.
struct CallLevel {
  struct Change {
    std::int64_t seq, ts_ns, bytes;
  };
  std::int64_t initial = 0;
  std::vector<Change> changes;
  std::int64_t at(std::int64_t seq) const;  // the bytes after call `seq`
};
// From the lifetimes of one series (seqs filled; those without an alloc_seq are left out).
CallLevel call_level(const std::vector<const Lifetime*>& lifetimes, std::int64_t first_seq);

struct GrowthVerdict {
  std::string verdict;  // "growing" | "plateau" | "steady" | "undecided"
  std::string reason;   // the verdict's numbers in words
  std::int64_t calls = 0;  // the working phase's calls
  std::int64_t teardown_calls = 0;
  std::int64_t episodes = 0;
  std::int64_t second_half_episodes = 0;  // of them, those that began after the middle call of the working phase
  std::int64_t new_highs = 0;  // calls at which the series rose above every earlier value
  std::int64_t calls_since_last_high = 0;
  std::int64_t longest_recent_wait_calls = 0;  // 0 with fewer than two episodes
  std::int64_t calls_to_decide = 0;            // undecided: flat calls still missing for a plateau
  std::int64_t start_bytes = 0;                // before the working phase's first call
  std::int64_t first_episode_end_bytes = 0;    // the high after the first episode (a load, typically)
  std::int64_t mid_high_bytes = 0;             // the high at the middle call of the working phase
  std::int64_t high_bytes = 0;                 // the high of the working phase
  std::int64_t end_bytes = 0;                  // after its last call
  std::int64_t first_high_ns = 0, last_high_ns = 0;
  std::int64_t first_episode_end_seq = 0;  // the call of the first episode's last new high
  std::int64_t last_high_seq = 0;
  std::int64_t growth_bytes() const { return high_bytes - start_bytes; }
  // What the episodes after the first left behind: a leak's bytes, not the model load's.
  std::int64_t repeated_growth_bytes() const { return high_bytes - first_episode_end_bytes; }
  std::int64_t second_half_growth_bytes() const { return high_bytes - mid_high_bytes; }
};

// The verdict on `level` over `activity`, for a series that must grow by at least `min_growth_bytes` to be
// more than steady.
GrowthVerdict judge_growth(const CallLevel& level, const Activity& activity, std::int64_t min_growth_bytes);

// The rule in words, for results.
std::string growth_rule_text();

}  // namespace vs::tools
