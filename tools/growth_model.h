// Does outstanding memory keep growing? Judged on the process's own activity,
// not on wall-clock time, so that a verdict does not change with the pace of
// the program (a 10 s import before a 1 s leak, 150 ms between requests, a
// machine twice as slow): the findings' leak_growth and leak_candidates share it.
//
// The activity is the process's sequence of top-level calls (allocations,
// frees, copies, synchronizations: every request or step makes some of them,
// they are its heartbeat). At each call the series' outstanding bytes are
// read; a call at which they rise above every earlier value is a new high,
// and a run of consecutive new highs is one growth episode (a model load of
// 100 tensors in a row is one episode; a request that leaves bytes behind,
// then copies a result, is one). The last calls of a process that only free
// memory (the release burst of a shutdown or a final empty_cache()) are its
// teardown, not its working phase: growth seen while it worked stands.
//
// Verdicts, with every count in calls (the rule text states the thresholds):
//   steady     net growth below the threshold, or the end below half the high
//   growing    >= kMinEpisodes episodes, and the calls since the last new high
//              are no more than kGrowingFactor x the longest wait between the
//              last episodes: new highs kept coming through the end
//   plateau    the calls since the last new high are >= kPlateauFactor x that
//              wait (or, with fewer episodes, >= kMinFlatCalls): growth stopped
//              and the process went on working without a new high
//   undecided  between the two: the activity after the last growth is too
//              short to tell; `calls_to_decide` says how many more would
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "tools/timeline_model.h"

namespace vs::tools {

// Thresholds of the growth verdict, each with the reason for its value.
struct GrowthRules {
  // Fewer separate episodes are a load or a warm-up, not a trend: a leak leaves bytes behind
  // request after request (5: the smallest count at which "every time" is more than a coincidence).
  static constexpr std::int64_t kMinEpisodes = 5;
  // The waits between new highs of a caching allocator are irregular (a new segment every few
  // requests): a flat end up to twice the longest recent wait is still the same rhythm.
  static constexpr std::int64_t kGrowingFactor = 2;
  // Flat for four times the longest recent wait, the rhythm has stopped.
  static constexpr std::int64_t kPlateauFactor = 4;
  // The recent rhythm: the waits between the last episodes (an early load's quick episodes do not count).
  static constexpr std::int64_t kRecentWaits = 4;
  // A plateau needs the process to have gone on working: at least this many calls after its last new high
  // (10 requests that copy a result and synchronize).
  static constexpr std::int64_t kMinFlatCalls = 20;
  // The end of the working phase below this share of its high: most of the memory was returned.
  static constexpr double kMinEndPctOfHigh = 50;
};

// One top-level call of the process's activity.
struct ActivityCall {
  // Release: a free, unmap or release (a final run of them is the teardown); Other: a call that does no work by
  // itself (synchronization, device and context calls); Work: the rest (allocations, copies, launches).
  enum class Kind : std::uint8_t { Work, Release, Other };
  std::int64_t ts_ns = 0;
  Kind kind = Kind::Work;
};
ActivityCall::Kind activity_kind(const std::string& op);  // from apis.op

// The top-level calls of `pid` with from_ns <= ts_ns <= to_ns, in time order (call_rows(pid, ts_ns)).
Result<std::vector<ActivityCall>> load_activity(const store::TraceReader& db, const Session& session,
                                                std::int64_t pid, std::int64_t from_ns, std::int64_t to_ns);

struct GrowthVerdict {
  std::string verdict;  // "growing" | "plateau" | "steady" | "undecided"
  std::string reason;   // the verdict's numbers in words
  std::int64_t calls = 0;  // the working phase's calls
  std::int64_t episodes = 0;
  std::int64_t new_highs = 0;  // calls at which the series rose above every earlier value
  std::int64_t calls_since_last_high = 0;
  std::int64_t longest_recent_wait_calls = 0;  // 0 with fewer than two episodes
  std::int64_t calls_to_decide = 0;            // undecided: flat calls still missing for a plateau
  std::int64_t start_bytes = 0;                // before the working phase's first call
  std::int64_t first_episode_end_bytes = 0;    // the high after the first episode (a load, typically)
  std::int64_t high_bytes = 0;                 // the high of the working phase
  std::int64_t end_bytes = 0;                  // at its last call
  std::int64_t work_start_ns = 0, work_end_ns = 0;  // the working phase's first and last call
  std::int64_t first_high_ns = 0, last_high_ns = 0;
  std::int64_t teardown_calls = 0;             // release calls after the working phase
  std::int64_t growth_bytes() const { return high_bytes - start_bytes; }
  // What the episodes after the first left behind: a leak's bytes, not the model load's.
  std::int64_t repeated_growth_bytes() const { return high_bytes - first_episode_end_bytes; }
};

// Judges `level` over the calls of `activity` (ascending ts_ns) from `from_ns` to `to_ns`. A series that
// must grow by at least `min_growth_bytes` to be more than steady.
GrowthVerdict judge_growth(const StepFunction& level, const std::vector<ActivityCall>& activity, std::int64_t from_ns,
                           std::int64_t to_ns, std::int64_t min_growth_bytes);

// The rule in words, for results.
std::string growth_rule_text();

}  // namespace vs::tools
