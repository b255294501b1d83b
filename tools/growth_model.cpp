#include "tools/growth_model.h"

#include <algorithm>
#include <map>

namespace vs::tools {
namespace {

using R = GrowthRules;

// The working phase ends before the teardown: the last run of releases, when nothing but calls that do no
// work (synchronizations, device and context calls) follows it. Returns the number of calls it keeps.
std::size_t working_calls(const std::vector<ActivityCall>& calls) {
  std::size_t end = calls.size();
  while (end > 0 && calls[end - 1].kind == ActivityCall::Kind::Other) --end;
  if (end == 0 || calls[end - 1].kind != ActivityCall::Kind::Release) return calls.size();
  while (end > 0 && calls[end - 1].kind == ActivityCall::Kind::Release) --end;
  return end;
}

}  // namespace

ActivityCall::Kind activity_kind(const std::string& op) {
  if (op == "free" || op == "free_host" || op == "vmm_unmap" || op == "vmm_release" || op == "vmm_address_free")
    return ActivityCall::Kind::Release;
  if (op == "sync" || op == "set_device" || op == "set_context" || op == "primary_ctx_retain" || op == "mem_get_info")
    return ActivityCall::Kind::Other;
  return ActivityCall::Kind::Work;
}

Result<std::vector<ActivityCall>> load_activity(const store::TraceReader& db, const Session& session,
                                                std::int64_t pid, std::int64_t from_ns, std::int64_t to_ns) {
  std::map<std::int64_t, ActivityCall::Kind> kind_of_api;
  Status st = db.query("SELECT id, op FROM apis", {},
                       [&](const store::Row& r) { kind_of_api[r.i64(0)] = activity_kind(r.text(1)); });
  if (!st) return Error{st.message()};
  std::vector<ActivityCall> calls;
  st = db.query("SELECT ts_ns, api_id FROM call_rows WHERE pid = ? AND ts_ns BETWEEN ? AND ? AND session_id = ? "
                "AND parent_id IS NULL ORDER BY ts_ns",
                {pid, from_ns, to_ns, session.id}, [&](const store::Row& r) {
                  auto k = kind_of_api.find(r.i64(1));
                  calls.push_back({r.i64(0), k == kind_of_api.end() ? ActivityCall::Kind::Work : k->second});
                });
  if (!st) return Error{st.message()};
  return calls;
}

GrowthVerdict judge_growth(const StepFunction& level, const std::vector<ActivityCall>& activity, std::int64_t from_ns,
                           std::int64_t to_ns, std::int64_t min_growth_bytes) {
  GrowthVerdict v;
  auto first = std::lower_bound(activity.begin(), activity.end(), from_ns,
                                [](const ActivityCall& c, std::int64_t t) { return c.ts_ns < t; });
  auto last = std::upper_bound(activity.begin(), activity.end(), to_ns,
                               [](std::int64_t t, const ActivityCall& c) { return t < c.ts_ns; });
  const std::vector<ActivityCall> calls(first, last);
  const std::size_t n = working_calls(calls);
  v.teardown_calls = static_cast<std::int64_t>(calls.size() - n);
  v.calls = static_cast<std::int64_t>(n);
  if (n == 0) {
    v.verdict = "steady";
    v.reason = calls.empty() ? "no calls of the process in the window" : "its calls only released memory";
    v.start_bytes = v.high_bytes = v.end_bytes = v.first_episode_end_bytes = level.at(to_ns);
    return v;
  }
  v.work_start_ns = calls.front().ts_ns;
  v.work_end_ns = calls[n - 1].ts_ns;
  v.start_bytes = level.at(v.work_start_ns - 1);
  // One walk over the calls and the level's steps together: the value at a call counts a change at its instant.
  std::int64_t high = v.start_bytes, value = v.start_bytes;
  auto step = std::upper_bound(level.steps.begin(), level.steps.end(), v.work_start_ns - 1,
                               [](std::int64_t t, const auto& s) { return t < s.first; });
  std::vector<std::int64_t> episode_starts;  // call indices
  std::int64_t last_high = -1, mid_high = high;
  std::int64_t first_episode_end = -1;  // the call index of the first episode's last new high
  const std::size_t mid = n / 2;
  bool previous_was_high = false;
  for (std::size_t i = 0; i < n; ++i) {
    for (; step != level.steps.end() && step->first <= calls[i].ts_ns; ++step) value = step->second;
    const bool new_high = value > high;
    if (new_high) {
      high = value;
      ++v.new_highs;
      if (!previous_was_high) episode_starts.push_back(static_cast<std::int64_t>(i));
      if (v.first_high_ns == 0) v.first_high_ns = calls[i].ts_ns;
      v.last_high_ns = calls[i].ts_ns;
      last_high = static_cast<std::int64_t>(i);
    } else if (episode_starts.size() == 1 && previous_was_high) {
      v.first_episode_end_bytes = high;
      first_episode_end = static_cast<std::int64_t>(i) - 1;
    }
    previous_was_high = new_high;
    if (i + 1 == mid) mid_high = high;
  }
  if (episode_starts.size() <= 1) {
    v.first_episode_end_bytes = high;
    first_episode_end = last_high;
  }
  v.high_bytes = high;
  v.end_bytes = value;
  v.episodes = static_cast<std::int64_t>(episode_starts.size());
  v.calls_since_last_high = last_high < 0 ? v.calls : v.calls - 1 - last_high;
  for (std::size_t k = episode_starts.size() > R::kRecentWaits ? episode_starts.size() - R::kRecentWaits : 1;
       k < episode_starts.size(); ++k)
    v.longest_recent_wait_calls = std::max(v.longest_recent_wait_calls, episode_starts[k] - episode_starts[k - 1]);

  const std::int64_t flat = v.calls_since_last_high;
  const std::int64_t second_half_growth = high - mid_high;
  const std::string flat_text = std::to_string(flat) + " of its " + std::to_string(v.calls) + " calls since its last new high";
  if (v.growth_bytes() < min_growth_bytes) {
    v.verdict = "steady";
    v.reason = "grew by " + fmt_bytes(v.growth_bytes()) + " at most, below " + fmt_bytes(min_growth_bytes);
  } else if (static_cast<double>(v.end_bytes) * 100 < static_cast<double>(v.high_bytes) * R::kMinEndPctOfHigh) {
    v.verdict = "steady";
    v.reason = "returned most of its high: " + fmt_bytes(v.end_bytes) + " of " + fmt_bytes(v.high_bytes) +
               " at its last working call";
  } else if (v.episodes >= R::kMinEpisodes && v.repeated_growth_bytes() >= min_growth_bytes) {
    const std::int64_t wait = v.longest_recent_wait_calls;
    const std::string rhythm = std::to_string(v.episodes) + " growth episodes; while growing, a new high at least every " +
                               std::to_string(wait) + " calls; " + flat_text;
    if (flat <= R::kGrowingFactor * wait && second_half_growth >= min_growth_bytes) {
      v.verdict = "growing";
      v.reason = rhythm + "; +" + fmt_bytes(second_half_growth) + " over the second half of its calls";
    } else if (flat <= R::kGrowingFactor * wait) {
      v.verdict = "plateau";
      v.reason = rhythm + ", but only +" + fmt_bytes(second_half_growth) + " over the second half of its calls";
    } else if (flat >= R::kPlateauFactor * wait && flat >= R::kMinFlatCalls) {
      v.verdict = "plateau";
      v.reason = rhythm + ": growth stopped";
    } else {
      v.verdict = "undecided";
      v.calls_to_decide = std::max(R::kPlateauFactor * wait, R::kMinFlatCalls) - flat;
      v.reason = rhythm + ": too few to tell a plateau from the next new high";
    }
  } else {
    // One load-like episode carries the growth (later new highs, if any, added less than the threshold): judge
    // the calls since that episode.
    const bool later_growth = v.repeated_growth_bytes() >= min_growth_bytes;
    const std::int64_t since = later_growth ? flat : v.calls - 1 - first_episode_end;
    const std::string grew = "grew in " + std::to_string(v.episodes) + " episode" + (v.episodes == 1 ? "" : "s") +
                             " (+" + fmt_bytes(v.repeated_growth_bytes()) + " after the first); " +
                             std::to_string(since) + " of its " + std::to_string(v.calls) + " calls since " +
                             (later_growth ? "its last new high" : "the first episode");
    if (since >= R::kMinFlatCalls) {
      v.verdict = "plateau";
      v.reason = grew;
    } else {
      v.verdict = "undecided";
      v.calls_to_decide = R::kMinFlatCalls - since;
      v.reason = grew + ": the activity after its growth is too short to tell";
    }
  }
  return v;
}

std::string growth_rule_text() {
  return "judged on the process's calls, not on time: a call at which outstanding bytes rise above every earlier value "
         "is a new high, consecutive new highs are one episode; the working phase ends before a final burst of "
         "releases. steady: the high is less than the threshold above the start, or the end is below " +
         std::to_string(static_cast<int>(R::kMinEndPctOfHigh)) +
         "% of the high. growing: >= " + std::to_string(R::kMinEpisodes) +
         " episodes, growth after the first episode >= the threshold, the calls since the last new high <= " +
         std::to_string(R::kGrowingFactor) + " x the longest wait between the last " +
         std::to_string(R::kRecentWaits + 1) + " episodes, and growth >= the threshold over the second half of the "
         "calls. plateau: the calls since the last new high >= " + std::to_string(R::kPlateauFactor) +
         " x that wait and >= " + std::to_string(R::kMinFlatCalls) + " (with fewer episodes: >= " +
         std::to_string(R::kMinFlatCalls) + "). undecided: in between; calls_to_decide more calls without a new high "
         "would make it a plateau, a new high would keep it growing";
}

}  // namespace vs::tools
