// leak_growth: per process, outstanding GPU memory that kept reaching new highs
// through the end of the process's work, judged on its calls, not on time
// (tools/growth_model.h), so that neither a long start-up nor the pacing of
// requests changes the verdict.
#include <algorithm>

#include "tools/findings/registry.h"
#include "tools/growth_model.h"

namespace vs::tools::findings {
namespace {

// Growth after the first episode (a model load), above the few large segments (20 MiB and up) a caching
// allocator adds as a workload settles.
constexpr std::int64_t kLeakMinGrowthBytes = 64 * kMiB;

constexpr KindSeverity kLeakGrowthKind{
    "leak_growth", Severity::High,
    "a live process whose memory keeps growing runs out of GPU memory in the end: the workload fails, or starves "
    "the others on the GPU"};
constexpr KindSeverity kKinds[] = {kLeakGrowthKind};

void leak_growth(Ctx& c, std::vector<Finding>& out, std::vector<std::string>& notes) {
  // The GPU allocations of the scope as lifetimes along each process's calls (Ctx reads them once for all rules).
  std::map<std::int64_t, std::vector<Lifetime>> by_pid;
  for (const Ctx::Allocation& a : c.allocations()) {
    if (!a.gpu) continue;
    Lifetime l;
    l.id = a.id;
    l.pid = a.pid;
    l.kind = a.kind;
    l.bytes = a.bytes;
    l.alloc_call_id = a.alloc_call_id;
    if (a.free_call_id) l.free_call_id = a.free_call_id;
    l.alloc_ns = a.alloc_ts;
    l.free_ns = a.free_ts.value_or(kNever);
    l.released_at_exit = a.end_reason == "process_exit";
    if (a.caller_id) l.caller_id = a.caller_id;
    l.alloc_seq = a.alloc_seq;
    l.free_seq = a.free_seq == 0 ? kNever : a.free_seq;
    by_pid[a.pid].push_back(std::move(l));
  }
  const ActivityIndex& index = c.activity_index();
  for (const auto& [pid, lifetimes] : by_pid) {
    std::vector<const Lifetime*> gpu;
    for (const Lifetime& l : lifetimes) gpu.push_back(&l);
    auto activity = index.activity(pid, c.session.start_ns, c.session.end_ns);
    if (!activity) {
      c.status = Status(activity.error());
      return;
    }
    const CallLevel level = call_level(gpu, activity->first_seq);
    const GrowthVerdict v = judge_growth(level, *activity, kLeakMinGrowthBytes);
    if (v.verdict != "growing") {
      notes.push_back(c.who(pid) + ": " + v.verdict + ", " + v.reason +
                      (v.verdict == "undecided" ? "; " + std::to_string(v.calls_to_decide) +
                                                      " more calls without a new high would make it a plateau"
                                                : ""));
      continue;
    }
    // What the growth left behind: allocated after the first episode, still held after the last working call.
    std::int64_t held_count = 0, held_bytes = 0, returned_at_exit = 0, returned_in_teardown = 0;
    std::map<std::int64_t, std::int64_t> count_by_size;
    std::vector<std::pair<std::int64_t, std::int64_t>> held_ids;  // (-bytes, id)
    for (const Lifetime* l : gpu) {
      const bool held_at_end = l->free_seq > activity->last_work_seq || l->released_at_exit;
      if (l->alloc_seq <= v.first_episode_end_seq || !held_at_end) continue;
      ++held_count;
      held_bytes += l->bytes;
      ++count_by_size[l->bytes];
      held_ids.push_back({-l->bytes, l->id});
      if (l->released_at_exit) returned_at_exit += l->bytes;
      else if (l->free_seq != kNever) returned_in_teardown += l->bytes;
    }
    // Growth that ended where an allocation of the process failed out of memory, and that the program then gave
    // back by its own calls (it caught the error and dropped its references: a deliberate allocation to the
    // limit), is out_of_memory's story, not a leak. A leak that ends in an OOM and a crash keeps its memory to
    // the exit, and this finding.
    std::int64_t last_oom_ns = 0;
    for (const Ctx::OutOfMemory& failure : c.out_of_memory_failures())
      if (failure.pid == pid) last_oom_ns = std::max(last_oom_ns, failure.ts_ns);
    if (last_oom_ns > v.last_high_ns && last_oom_ns <= activity->last_work_ts_ns &&
        returned_in_teardown * 2 >= held_bytes) {
      notes.push_back(c.who(pid) + ": grew until an allocation failed out of memory at " + c.t(last_oom_ns) +
                      ", then returned " + fmt_bytes(returned_in_teardown) + " of the " + fmt_bytes(held_bytes) +
                      " it grew by its own calls (out_of_memory's)");
      continue;
    }
    std::vector<std::pair<std::int64_t, std::int64_t>> sizes(count_by_size.begin(), count_by_size.end());
    std::stable_sort(sizes.begin(), sizes.end(), [](const auto& a, const auto& b) { return a.second > b.second; });
    std::string common;
    for (std::size_t i = 0; i < sizes.size() && i < 3; ++i)
      common += (i ? ", " : "") + fmt_bytes(sizes[i].first) + " x " + std::to_string(sizes[i].second);
    std::sort(held_ids.begin(), held_ids.end());

    const Process& p = c.processes[pid];
    Finding f(kLeakGrowthKind);
    f.pid = pid;
    f.size = static_cast<double>(v.repeated_growth_bytes());
    f.title = c.who(pid) + ": outstanding GPU memory kept growing through the end of its work (+" +
              fmt_bytes(v.repeated_growth_bytes()) + " after its first growth episode)";
    std::string given_back;
    if (returned_in_teardown > 0)
      given_back += " " + fmt_bytes(returned_in_teardown) + " of it was returned only in the teardown: the " +
                    std::to_string(v.teardown_calls) + " calls after its last working call (releases, and the "
                    "synchronizations between them).";
    if (returned_at_exit > 0)
      given_back += " " + fmt_bytes(returned_at_exit) + " was released only when the process exited at " +
                    c.t(p.end_ns) + ".";
    if (given_back.empty()) given_back = p.exited ? " Nothing of it was given back." : " The process was still running when the trace ended.";
    f.summary = "Over its " + std::to_string(v.calls) + " calls from " + c.t(activity->first_ts_ns) + " to " +
                c.t(activity->last_work_ts_ns) + ", outstanding GPU memory of " + c.who(pid) + " went from " +
                fmt_bytes(v.start_bytes) + " to a high of " + fmt_bytes(v.high_bytes) + " (" +
                fmt_bytes(v.end_bytes) + " after its last working call): " + std::to_string(v.new_highs) +
                " new highs in " + std::to_string(v.episodes) + " episodes, the first (+" +
                fmt_bytes(v.first_episode_end_bytes - v.start_bytes) + ", a load) then +" +
                fmt_bytes(v.repeated_growth_bytes()) + "; while growing, a new high came at least every " +
                std::to_string(v.longest_recent_wait_calls) + " calls, and the last one only " +
                std::to_string(v.calls_since_last_high) + " calls before the end. " + std::to_string(held_count) +
                " allocations made after the first episode (" + fmt_bytes(held_bytes) + "; most common sizes: " +
                common + ") were still held after its last working call." + given_back;
    f.rule = "GPU memory of one process (device, async, managed, VMM physical), " + growth_rule_text() +
             "; fires when growing, with a threshold of " + fmt_bytes(kLeakMinGrowthBytes);
    f.numbers = {{"growth_bytes", v.repeated_growth_bytes()},
                 {"start_outstanding_bytes", v.start_bytes},
                 {"first_episode_high_bytes", v.first_episode_end_bytes},
                 {"high_bytes", v.high_bytes},
                 {"end_outstanding_bytes", v.end_bytes},
                 {"second_half_growth_bytes", v.second_half_growth_bytes()},
                 {"calls", v.calls},
                 {"new_highs", v.new_highs},
                 {"episodes", v.episodes},
                 {"longest_recent_wait_calls", v.longest_recent_wait_calls},
                 {"calls_since_last_high", v.calls_since_last_high},
                 {"teardown_calls", v.teardown_calls},
                 {"first_call_t_ms", c.session.t_ms(activity->first_ts_ns)},
                 {"last_working_call_t_ms", c.session.t_ms(activity->last_work_ts_ns)},
                 {"held_allocations", held_count},
                 {"held_bytes", held_bytes},
                 {"released_at_exit_bytes", returned_at_exit},
                 {"returned_in_teardown_bytes", returned_in_teardown}};
    for (std::size_t i = 0; i < held_ids.size() && i < kMaxIds; ++i) f.allocation_ids.push_back(held_ids[i].second);
    c.drill(f, "leak_candidates", {{"pid", pid}}, "the growth per kind and calling library, and the sizes never freed");
    c.drill(f, "allocation_timeline", {{"pid", pid}}, "the outstanding-bytes curve over time, with NVML's view");
    c.drill(f, "outstanding_allocations", held_at_end(c, pid), "what was held at the end, by size and calling library");
    out.push_back(std::move(f));
  }
}

}  // namespace

constexpr Rule kLeakGrowthRule{"leak_growth", kKinds, leak_growth};

}  // namespace vs::tools::findings
