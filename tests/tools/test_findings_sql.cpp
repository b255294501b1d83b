// Issue 10 item 7: every number a finding cites can be reproduced with run_sql on the same file. For every
// finding that `findings` (limit 50) reports on the shipped traces (examples/traces/*/trace.db and
// examples/corpus/traces/*.db), every entry of evidence.numbers is computed again by one SQL query sent through
// the run_sql TOOL (the sandboxed path an agent uses, not the reader directly) and compared: times in ms within
// 0.001 ms, everything else exactly.
//
// number_sql() below is the definition of each number, per kind: what a person would type into run_sql to check
// it. A number with no SQL there fails the test, so that a new number cannot be added without its definition.
//
// Placeholders in the SQL, filled from the finding:
//   {session}  the session (coverage.session_id)
//   {pid}      the finding's pid; coverage_gap's attached-process finding carries none (pid is null), so the
//              "pid N" its title starts with is used
//   {api}      preemption_tail: the API its drill-downs name (next[].arguments.api); the finding has no field for it
//   {severity} call_errors: "info" for the failed calls the caller handled, "low" for the others
//   {seq}      call_rows.seq where the trace has the column (schema 4), else NULL (older traces: every shipped one)
//   {NAME}     the finding's own number NAME, where a number is defined on another (preemption_tail's tail is the
//              calls at or above its p99_ns)
//
// Conventions the definitions share:
//   - times: t_ms = (ts_ns - sessions.start_ts_ns) / 1e6
//   - GPU memory: allocations.kind IN ('device', 'async', 'managed', 'vmm_physical') (common/cuda_api.h:
//     occupies_gpu_memory; pinned host memory and VMM address ranges are not GPU memory)
//   - the framework allocators: callers (objects) whose path has a marker of tools/findings/frameworks.cpp
//     (PyTorch's libc10_cuda, XLA's plugin, CuPy's modules, ...); every shipped process uses at most one
//   - a process's end: processes.exit_ts_ns, or the session's end while it runs (the row with the latest
//     first_ts_ns when a pid was reused)
//   - the leak verdict (leak_growth) counts in the process's activity, its top-level calls (parent_id IS NULL),
//     numbered 1, 2, 3...: call_rows.seq where it is not NULL (schema 4: the order the writer received them),
//     else ROW_NUMBER() OVER (PARTITION BY pid ORDER BY ts_ns, id) over the process's top-level calls (traces
//     written before schema 4, which have no seq; every shipped trace is one). kLeakVerdict spells out the whole
//     verdict of tools/growth_model.h over that numbering, one CTE per step (its CTE `act` selects one pid, so
//     the window needs no PARTITION BY). The synthetic scenarios (tests/tools/synthetic_trace.h) store seq: the
//     last test case checks the numbers there too.
//
// Kinds that fire on no shipped trace (missed_frees, unmatched_frees, and coverage_gap's lost-records and
// unfinished-session cases) have their definitions here but are compared only when they fire. Not reproduced:
// call_errors examines at most 1000 failed calls for what followed them; the SQL looks at all of them (the
// shipped traces have a few).
#include <filesystem>
#include <map>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "tests/test_sample.h"
#include "tests/tools/synthetic_trace.h"
#include "tests/tools/tool_check.h"
#include "tools/findings/registry.h"
#include "tools/growth_model.h"

namespace {

using nlohmann::json;
namespace fs = std::filesystem;
namespace syn = vs::test::synthetic;

// ---- pieces several definitions share ----------------------------------------------------------------------

const std::string kGpu = "kind IN ('device', 'async', 'managed', 'vmm_physical')";
const std::string kT0 = "(SELECT start_ts_ns FROM sessions WHERE id = {session})";
// When the process ended: its exit, or the session's end while it still ran.
const std::string kProcessEnd =
    "(SELECT COALESCE(exit_ts_ns, (SELECT end_ts_ns FROM sessions WHERE id = {session})) FROM processes "
    "WHERE session_id = {session} AND pid = {pid} ORDER BY first_ts_ns DESC LIMIT 1)";
const std::string kFrameworkCallers =
    "(SELECT id FROM objects WHERE instr(path, 'libc10_cuda') OR instr(path, 'xla_cuda_plugin') OR "
    "instr(path, 'xla_extension') OR instr(path, '/jaxlib/') OR instr(path, '/jax_plugins/') OR "
    "instr(path, 'libtensorflow_framework') OR instr(path, '_pywrap_tensorflow') OR instr(path, '/cupy_backends/') "
    "OR instr(path, '/cupy/') OR instr(path, 'librmm') OR instr(path, '/rmm/'))";

// The framework allocator's cacheable GPU memory of the process (device, managed, VMM physical: the
// cudaMallocAsync backend's pool is the driver's), what it still held (never freed by a call: held at the end,
// or released at exit), and when it last allocated. allocator_cache_held and held_after_empty_cache.
const std::string kFrameworkMemory =
    "WITH mine AS (SELECT * FROM allocations WHERE session_id = {session} AND pid = {pid} AND kind IN ('device', "
    "'managed', 'vmm_physical') AND caller_id IN " + kFrameworkCallers + "), "
    "held AS (SELECT * FROM mine WHERE end_reason IS NULL OR end_reason = 'process_exit'), "
    "last_alloc AS (SELECT MAX(alloc_ts_ns) AS ts FROM mine) ";

// The GPU's memory as NVML saw it (the largest GPU's).
const std::string kGpuTotal =
    "(SELECT COALESCE((SELECT MAX(total_bytes) FROM gpus WHERE session_id = {session}), (SELECT MAX(total_bytes) "
    "FROM gpu_memory_samples WHERE session_id = {session})))";

// GPU memory of the process allocated by other libraries (cuBLAS, cuDNN) themselves, with a recorded caller
// and a stored allocating call, never freed by a call.
const std::string kLibraryHeld =
    "WITH held AS (SELECT al.* FROM allocations al JOIN call_rows c ON c.id = al.alloc_call_id "
    "WHERE al.session_id = {session} AND al.pid = {pid} AND al." + kGpu + " AND al.caller_id IS NOT NULL AND "
    "al.caller_id NOT IN " + kFrameworkCallers + " AND (al.end_reason IS NULL OR al.end_reason = 'process_exit')) ";

const std::string kReleasedAtExit =
    "SELECT {agg} FROM allocations WHERE session_id = {session} AND pid = {pid} AND " + kGpu +
    " AND end_reason = 'process_exit'";

// Allocation calls (top-level) refused for lack of memory: ret 2 (cudaErrorMemoryAllocation /
// CUDA_ERROR_OUT_OF_MEMORY) from an allocating API.
const std::string kOutOfMemory =
    "WITH oom AS (SELECT c.* FROM call_rows c JOIN apis a ON a.id = c.api_id WHERE c.session_id = {session} "
    "AND c.parent_id IS NULL AND c.ret = 2 AND a.op IN ('alloc', 'vmm_create')) ";

// The other failed top-level calls, grouped by (API, return value); a group is handled when each of its calls
// was followed, as the next top-level call on its thread, by the same API returning 0 (a capability probe and
// its fallback). The finding with severity "info" counts the handled groups, "low" the others. (The rule
// examines at most 1000 failed calls; the shipped traces have far fewer.)
const std::string kCallErrors =
    "WITH top AS (SELECT c.ts_ns, c.api_id, c.ret, a.op, LEAD(c.api_id) OVER w AS next_api, LEAD(c.ret) OVER w AS "
    "next_ret FROM call_rows c JOIN apis a ON a.id = c.api_id WHERE c.session_id = {session} AND c.parent_id IS "
    "NULL WINDOW w AS (PARTITION BY c.pid, c.tid ORDER BY c.ts_ns, c.id)), "
    "grp AS (SELECT api_id, ret, COUNT(*) AS calls, MIN(ts_ns) AS first_ts, "
    "SUM(next_api IS api_id AND next_ret IS 0) = COUNT(*) AS handled FROM top "
    "WHERE ret != 0 AND NOT (ret = 2 AND op IN ('alloc', 'vmm_create')) GROUP BY api_id, ret), "
    "this AS (SELECT * FROM grp WHERE handled = ('{severity}' = 'info')) ";

// Every call of the API in the session (nested ones too, as call_stats counts them); percentiles are exact
// nearest rank: pN is the value at rank ceil(N/100 x calls) in ascending order.
const std::string kApiCalls =
    "WITH api_calls AS (SELECT c.* FROM call_rows c JOIN apis a ON a.id = c.api_id WHERE c.session_id = "
    "{session} AND a.name = '{api}') ";
std::string percentile(int per_mille) {
  return kApiCalls + "SELECT dur_ns FROM api_calls ORDER BY dur_ns LIMIT 1 OFFSET (SELECT (COUNT(*) * " +
         std::to_string(per_mille) + " + 999) / 1000 - 1 FROM api_calls)";
}
const std::string kTail = kApiCalls + "SELECT {agg} FROM api_calls WHERE dur_ns >= {p99_ns}";

// NVML per-process samples of the process (summed over GPUs per instant); those from its first GPU allocation
// to its exit, of which at most 64 evenly spread are compared (the k-th of n is picked when some i < 64 has
// floor(i x n / min(n, 64)) = k); at each, NVML's used bytes minus the traced outstanding GPU memory at that
// instant (allocated at or before it, minus freed at or before it).
const std::string kNvml =
    "WITH s AS (SELECT ts_ns, SUM(used_bytes) AS used FROM gpu_process_samples WHERE session_id = {session} AND "
    "pid = {pid} GROUP BY ts_ns), "
    "gpu AS (SELECT * FROM allocations WHERE session_id = {session} AND pid = {pid} AND " + kGpu + "), "
    "first_alloc AS (SELECT MIN(alloc_ts_ns) AS ts FROM gpu), "
    "proc_exit AS (SELECT exit_ts_ns AS ts FROM processes WHERE session_id = {session} AND pid = {pid} "
    "ORDER BY first_ts_ns DESC LIMIT 1), "
    "after AS (SELECT ts_ns, used, ROW_NUMBER() OVER (ORDER BY ts_ns) - 1 AS k, COUNT(*) OVER () AS n FROM s "
    "WHERE ts_ns >= COALESCE((SELECT ts FROM first_alloc), ts_ns) AND "
    "ts_ns < COALESCE((SELECT ts FROM proc_exit), ts_ns + 1)), "
    "picked AS (SELECT ts_ns, used FROM after WHERE ((k * MIN(n, 64) + n - 1) / n) * n < (k + 1) * MIN(n, 64)), "
    "overhead AS (SELECT ts_ns, used, used - COALESCE((SELECT SUM(IIF(alloc_ts_ns <= p.ts_ns, bytes, 0)) - "
    "SUM(IIF(free_ts_ns <= p.ts_ns, bytes, 0)) FROM gpu), 0) AS bytes FROM picked p) ";

// The leak verdict of tools/growth_model.h, step by step, on the process's GPU memory along its activity.
//   act        the process's top-level calls, numbered (seq), each a release (free, unmap, release, IPC close, host
//              unregister, pool trim, graph destroy), other (no work by itself: sync, device, context, memory
//              queries and settings, handle exports) or work (the rest), as tools/growth_model.cpp's activity_kind
//   activity   the session's window: its first call; its last; the last working call: the last call that works,
//              when releases come after it (the teardown, with calls that do no work among them); with no
//              release after it, the last call
//   level      outstanding bytes after each call that changed them: +bytes at the allocating call, -bytes at
//              the freeing call (an allocation made by a nested call is not in the activity; memory released at
//              exit was never freed by a call)
//   highs      the calls of the working phase at which the level rose at least 1 MiB above the last new high (the
//              start, before the first): a recursive walk along the working phase (scan)
//   episodes   runs of consecutive new highs; waits: between the starts of the last 17 episodes
//   verdict    the counts the finding cites
//   held       allocated after the first episode and still held after the last working call
const std::string kLeakVerdict = R"(WITH
  sess AS (SELECT start_ts_ns AS t0, end_ts_ns AS t1 FROM sessions WHERE id = {session}),
  act AS (
    SELECT c.id, c.ts_ns, COALESCE({seq}, ROW_NUMBER() OVER (ORDER BY c.ts_ns, c.id)) AS seq,
           CASE WHEN a.op IN ('free', 'free_host', 'vmm_unmap', 'vmm_release', 'vmm_address_free', 'ipc_close',
                              'host_unregister', 'mem_pool_trim', 'graph_exec_destroy') THEN 'release'
                WHEN a.op IN ('sync', 'set_device', 'set_context', 'primary_ctx_retain', 'mem_get_info',
                              'mem_pool_get_attribute', 'mem_pool_set_attribute', 'default_mem_pool',
                              'ipc_get_handle', 'vmm_export') THEN 'other'
                ELSE 'work' END AS what
    FROM call_rows c JOIN apis a ON a.id = c.api_id
    WHERE c.session_id = {session} AND c.pid = {pid} AND c.parent_id IS NULL),
  win AS (SELECT act.*, ROW_NUMBER() OVER (ORDER BY ts_ns DESC, id DESC) AS back FROM act, sess
          WHERE ts_ns BETWEEN t0 AND t1),
  last_work AS (SELECT MIN(back) AS back FROM win WHERE what = 'work'),
  work_end AS (
    SELECT CASE WHEN EXISTS (SELECT 1 FROM win WHERE what = 'release' AND back < COALESCE((SELECT back FROM last_work),
                                                                                         1e18))
                THEN (SELECT back FROM last_work) ELSE 1 END AS back),
  activity AS (
    SELECT f.seq AS first_seq, f.ts_ns AS first_ts_ns, l.seq AS last_seq,
           COALESCE(w.seq, 0) AS last_work_seq, COALESCE(w.ts_ns, 0) AS last_work_ts_ns
    FROM (SELECT seq, ts_ns FROM win ORDER BY ts_ns, id LIMIT 1) f, (SELECT seq FROM win WHERE back = 1) l
    LEFT JOIN win w ON w.back = (SELECT back FROM work_end)),
  lifetimes AS (
    SELECT al.id, al.bytes, al.end_reason IS 'process_exit' AS at_exit, ca.seq AS alloc_seq, cf.seq AS free_seq
    FROM allocations al, sess LEFT JOIN act ca ON ca.id = al.alloc_call_id LEFT JOIN act cf ON cf.id = al.free_call_id
    WHERE al.session_id = {session} AND al.pid = {pid} AND al.kind IN ('device', 'async', 'managed', 'vmm_physical')
      AND al.alloc_ts_ns <= t1 AND (al.free_ts_ns IS NULL OR al.free_ts_ns > t0)),
  deltas AS (
    SELECT alloc_seq AS seq, bytes AS d FROM lifetimes, activity
    WHERE alloc_seq IS NOT NULL AND NOT (free_seq IS NOT NULL AND NOT at_exit AND free_seq < first_seq)
    UNION ALL
    SELECT free_seq, -bytes FROM lifetimes, activity
    WHERE alloc_seq IS NOT NULL AND free_seq IS NOT NULL AND NOT at_exit AND free_seq >= first_seq),
  level AS (SELECT seq, SUM(SUM(d)) OVER (ORDER BY seq) AS bytes FROM deltas GROUP BY seq),
  start AS (SELECT COALESCE((SELECT bytes FROM level, activity WHERE seq < first_seq ORDER BY seq DESC LIMIT 1), 0)
            AS bytes),
  working AS (SELECT ROW_NUMBER() OVER (ORDER BY seq) AS i, seq, bytes FROM level, activity
              WHERE seq BETWEEN first_seq AND last_work_seq),
  scan(i, seq, bytes, counted, is_high) AS (
    SELECT 0, NULL, NULL, start.bytes, 0 FROM start
    UNION ALL
    SELECT w.i, w.seq, w.bytes, IIF(w.bytes >= s.counted + 1048576, w.bytes, s.counted), w.bytes >= s.counted + 1048576
    FROM scan s JOIN working w ON w.i = s.i + 1),
  highs AS (SELECT seq, bytes FROM scan WHERE is_high),
  marked AS (SELECT seq, bytes, COALESCE(seq > LAG(seq) OVER (ORDER BY seq) + 1, 1) AS starts FROM highs),
  episodes AS (SELECT seq, bytes, starts, SUM(starts) OVER (ORDER BY seq) AS episode FROM marked),
  waits AS (SELECT episode, seq - LAG(seq) OVER (ORDER BY seq) AS wait FROM episodes WHERE starts),
  counted AS (
    SELECT a.*, IIF(last_work_seq = 0, 0, last_work_seq - first_seq + 1) AS calls,
           last_seq - MAX(last_work_seq, first_seq - 1) AS teardown_calls,
           (SELECT COUNT(*) FROM highs) AS new_highs, (SELECT COUNT(*) FROM waits) AS episodes,
           start.bytes AS start_bytes, MAX(start.bytes, COALESCE((SELECT MAX(bytes) FROM working), start.bytes))
             AS high_bytes,
           (SELECT MAX(seq) FROM highs) AS last_high_seq,
           (SELECT MAX(seq) FROM episodes WHERE episode = 1) AS first_episode_end_seq,
           COALESCE((SELECT bytes FROM level WHERE seq <= a.last_work_seq ORDER BY seq DESC LIMIT 1), 0) AS end_bytes
    FROM activity a, start),
  verdict AS (
    SELECT c.*,
           COALESCE((SELECT bytes FROM highs WHERE seq = first_episode_end_seq), high_bytes) AS first_episode_end_bytes,
           MAX(start_bytes, COALESCE((SELECT MAX(bytes) FROM working WHERE seq <= first_seq + calls / 2), start_bytes))
             AS mid_high_bytes,
           IIF(last_high_seq IS NULL, calls, last_work_seq - last_high_seq) AS calls_since_last_high,
           COALESCE((SELECT MAX(wait) FROM waits WHERE episode >= MAX(2, c.episodes - 15)), 0)
             AS longest_recent_wait_calls
    FROM counted c),
  held AS (
    SELECT l.* FROM lifetimes l, verdict v
    WHERE l.alloc_seq > v.first_episode_end_seq AND (l.at_exit OR l.free_seq IS NULL OR l.free_seq > v.last_work_seq))
)";

std::string with_agg(std::string sql, const std::string& agg) {
  return sql.replace(sql.find("{agg}"), 5, agg);
}

// ---- the definitions: kind -> number -> SQL ------------------------------------------------------------------

using NumberSql = std::map<std::string, std::string>;
const std::map<std::string, NumberSql>& number_sql() {
  static const std::map<std::string, NumberSql> table = {
      {"coverage_gap",
       {
           {"call_drops", "SELECT call_drops FROM sessions WHERE id = {session}"},
           {"unrecorded_calls", "SELECT unrecorded_calls FROM sessions WHERE id = {session}"},
           {"lifecycle_drops", "SELECT lifecycle_drops FROM sessions WHERE id = {session}"},
           {"libraries_failed",
            "SELECT COUNT(*) FROM libraries WHERE session_id = {session} AND (error IS NOT NULL OR probes_attached = 0)"},
           // Written when the session ends; while it is recorded, what is stored so far.
           {"calls_recorded",
            "SELECT IIF(status = 'recording', (SELECT COUNT(*) FROM call_rows WHERE session_id = {session}), "
            "calls_recorded) FROM sessions WHERE id = {session}"},
           {"observed_from_t_ms",
            "SELECT (first_ts_ns - " + kT0 + ") / 1e6 FROM processes WHERE session_id = {session} AND pid = {pid} "
            "ORDER BY first_ts_ns DESC LIMIT 1"},
       }},
      {"out_of_memory",
       {
           {"failed_calls", kOutOfMemory + "SELECT COUNT(*) FROM oom"},
           {"first_failure_t_ms", kOutOfMemory + "SELECT (MIN(ts_ns) - " + kT0 + ") / 1e6 FROM oom"},
           {"largest_request_bytes", kOutOfMemory + "SELECT COALESCE(MAX(bytes), 0) FROM oom"},
           // GPU memory that the process of the first failed call held at that call's instant.
           {"outstanding_at_first_failure_bytes",
            kOutOfMemory + ", first AS (SELECT pid, ts_ns AS ts FROM oom ORDER BY ts_ns, id LIMIT 1) SELECT "
            "COALESCE(SUM(bytes), 0) FROM allocations a, first WHERE a.session_id = {session} AND a.pid = first.pid "
            "AND a." + kGpu + " AND a.alloc_ts_ns <= first.ts AND (a.free_ts_ns IS NULL OR a.free_ts_ns > first.ts)"},
       }},
      {"call_errors",
       {
           {"failed_calls", kCallErrors + "SELECT SUM(calls) FROM this"},
           {"first_failure_t_ms", kCallErrors + "SELECT (MIN(first_ts) - " + kT0 + ") / 1e6 FROM this"},
       }},
      {"preemption_tail",
       {
           {"calls", kApiCalls + "SELECT COUNT(*) FROM api_calls"},
           {"p50_ns", percentile(500)},
           {"p99_ns", percentile(990)},
           // The tail: the calls at or above p99.
           {"tail_calls", with_agg(kTail, "COUNT(*)")},
           {"tail_dur_ns", with_agg(kTail, "SUM(dur_ns)")},
           {"tail_off_cpu_ns", with_agg(kTail, "SUM(off_cpu_ns)")},
           {"tail_runq_ns", with_agg(kTail, "SUM(runq_ns)")},
           {"tail_descheduled_calls", with_agg(kTail, "SUM(switches > 0)")},
           {"tail_runq_pct", with_agg(kTail, "ROUND(1.0 * SUM(runq_ns) / SUM(dur_ns) * 1000) / 10")},
       }},
      {"missed_frees",
       {
           {"superseded_allocations",
            "SELECT COUNT(*) FROM allocations WHERE session_id = {session} AND end_reason = 'superseded'"},
           {"superseded_bytes",
            "SELECT COALESCE(SUM(bytes), 0) FROM allocations WHERE session_id = {session} AND end_reason = "
            "'superseded'"},
       }},
      {"unmatched_frees",
       {
           {"unmatched_frees", "SELECT COUNT(*) FROM unmatched_frees WHERE session_id = {session} AND ptr != 0"},
       }},
      {"allocator_cache_held",
       {
           {"held_bytes", kFrameworkMemory + "SELECT COALESCE(SUM(bytes), 0) FROM held"},
           {"held_segments", kFrameworkMemory + "SELECT COUNT(*) FROM held"},
           {"last_alloc_t_ms", kFrameworkMemory + "SELECT (ts - " + kT0 + ") / 1e6 FROM last_alloc"},
           {"held_until_t_ms", "SELECT (" + kProcessEnd + " - " + kT0 + ") / 1e6"},
           // Every free of the allocator's memory by a call, over the whole trace.
           {"frees", kFrameworkMemory + "SELECT COUNT(*) FROM mine WHERE end_reason = 'freed'"},
           {"freed_bytes", kFrameworkMemory + "SELECT COALESCE(SUM(bytes), 0) FROM mine WHERE end_reason = 'freed'"},
       }},
      {"preallocated_pool",
       {
           // The allocator's first allocation in the process, and the GPU's size as NVML saw it.
           {"preallocated_bytes", kFrameworkMemory + "SELECT bytes FROM mine ORDER BY alloc_ts_ns, id LIMIT 1"},
           {"gpu_total_bytes", "SELECT " + kGpuTotal},
           {"share_pct", kFrameworkMemory + "SELECT ROUND(bytes * 1000.0 / " + kGpuTotal + ") / 10.0 FROM mine "
            "ORDER BY alloc_ts_ns, id LIMIT 1"},
           {"t_ms", kFrameworkMemory + "SELECT (alloc_ts_ns - " + kT0 + ") / 1e6 FROM mine ORDER BY alloc_ts_ns, id "
            "LIMIT 1"},
           {"held_until_t_ms", kFrameworkMemory + "SELECT (CASE WHEN end_reason = 'freed' THEN free_ts_ns ELSE " +
            kProcessEnd + " END - " + kT0 + ") / 1e6 FROM mine ORDER BY alloc_ts_ns, id LIMIT 1"},
       }},
      {"held_after_empty_cache",
       {
           {"held_bytes", kFrameworkMemory + "SELECT COALESCE(SUM(bytes), 0) FROM held"},
           {"held_segments", kFrameworkMemory + "SELECT COUNT(*) FROM held"},
           // What the allocator freed after its last allocation: the release of its cache.
           {"released_segments",
            kFrameworkMemory + "SELECT COUNT(*) FROM mine WHERE end_reason = 'freed' AND free_ts_ns > (SELECT ts "
            "FROM last_alloc)"},
           {"released_bytes",
            kFrameworkMemory + "SELECT COALESCE(SUM(bytes), 0) FROM mine WHERE end_reason = 'freed' AND free_ts_ns > "
            "(SELECT ts FROM last_alloc)"},
           {"last_release_t_ms",
            kFrameworkMemory + "SELECT (MAX(free_ts_ns) - " + kT0 + ") / 1e6 FROM mine WHERE end_reason = 'freed'"},
           {"last_alloc_t_ms", kFrameworkMemory + "SELECT (ts - " + kT0 + ") / 1e6 FROM last_alloc"},
           {"held_first_alloc_t_ms", kFrameworkMemory + "SELECT (MIN(alloc_ts_ns) - " + kT0 + ") / 1e6 FROM held"},
           {"held_last_alloc_t_ms", kFrameworkMemory + "SELECT (MAX(alloc_ts_ns) - " + kT0 + ") / 1e6 FROM held"},
       }},
      {"library_held",
       {
           {"held_bytes", kLibraryHeld + "SELECT COALESCE(SUM(bytes), 0) FROM held"},
           {"held_allocations", kLibraryHeld + "SELECT COUNT(*) FROM held"},
           {"libraries", kLibraryHeld + "SELECT COUNT(DISTINCT caller_id) FROM held"},
       }},
      {"nvml_context_overhead",
       {
           // The lower median.
           {"overhead_median_bytes",
            kNvml + "SELECT bytes FROM overhead ORDER BY bytes LIMIT 1 OFFSET (SELECT (COUNT(*) - 1) / 2 FROM overhead)"},
           {"overhead_min_bytes", kNvml + "SELECT MIN(bytes) FROM overhead"},
           {"overhead_max_bytes", kNvml + "SELECT MAX(bytes) FROM overhead"},
           {"samples_compared", kNvml + "SELECT COUNT(*) FROM picked"},
           {"samples", kNvml + "SELECT COUNT(*) FROM s"},
           {"nvml_max_used_bytes", kNvml + "SELECT MAX(used) FROM picked"},
           // The last sample before the first allocation (NVML sees the context being created).
           {"before_first_allocation_bytes",
            kNvml + "SELECT used FROM s WHERE ts_ns < (SELECT ts FROM first_alloc) ORDER BY ts_ns DESC LIMIT 1"},
       }},
      {"released_at_exit",
       {
           {"released_bytes", with_agg(kReleasedAtExit, "COALESCE(SUM(bytes), 0)")},
           {"released_allocations", with_agg(kReleasedAtExit, "COUNT(*)")},
           {"exit_t_ms", "SELECT (" + kProcessEnd + " - " + kT0 + ") / 1e6"},
       }},
      {"leak_growth",
       {
           // What the episodes after the first (a load, typically) added.
           {"growth_bytes", kLeakVerdict + "SELECT high_bytes - first_episode_end_bytes FROM verdict"},
           {"start_outstanding_bytes", kLeakVerdict + "SELECT start_bytes FROM verdict"},
           {"first_episode_high_bytes", kLeakVerdict + "SELECT first_episode_end_bytes FROM verdict"},
           {"high_bytes", kLeakVerdict + "SELECT high_bytes FROM verdict"},
           {"end_outstanding_bytes", kLeakVerdict + "SELECT end_bytes FROM verdict"},
           // The high minus the high as of the middle call of the working phase.
           {"second_half_growth_bytes", kLeakVerdict + "SELECT high_bytes - mid_high_bytes FROM verdict"},
           {"calls", kLeakVerdict + "SELECT calls FROM verdict"},
           {"new_highs", kLeakVerdict + "SELECT new_highs FROM verdict"},
           {"episodes", kLeakVerdict + "SELECT episodes FROM verdict"},
           {"longest_recent_wait_calls", kLeakVerdict + "SELECT longest_recent_wait_calls FROM verdict"},
           {"calls_since_last_high", kLeakVerdict + "SELECT calls_since_last_high FROM verdict"},
           {"teardown_calls", kLeakVerdict + "SELECT teardown_calls FROM verdict"},
           {"first_call_t_ms", kLeakVerdict + "SELECT (first_ts_ns - (SELECT t0 FROM sess)) / 1e6 FROM verdict"},
           {"last_working_call_t_ms",
            kLeakVerdict + "SELECT (last_work_ts_ns - (SELECT t0 FROM sess)) / 1e6 FROM verdict"},
           {"held_allocations", kLeakVerdict + "SELECT COUNT(*) FROM held"},
           {"held_bytes", kLeakVerdict + "SELECT COALESCE(SUM(bytes), 0) FROM held"},
           {"released_at_exit_bytes", kLeakVerdict + "SELECT COALESCE(SUM(bytes), 0) FROM held WHERE at_exit"},
           {"returned_in_teardown_bytes",
            kLeakVerdict + "SELECT COALESCE(SUM(bytes), 0) FROM held WHERE NOT at_exit AND free_seq IS NOT NULL"},
       }},
  };
  return table;
}

// ---- running them --------------------------------------------------------------------------------------------


// One value from run_sql, as an agent would get it.
json run_sql_value(const vs::store::TraceReader& db, std::int64_t session, const std::string& sql) {
  auto out = vs::test::run_tool_checked(db, "run_sql", {{"sql", sql}, {"session_id", session}});
  const json& rows = out.structured["rows"];
  INFO("run_sql: " << out.text);
  REQUIRE(rows.size() == 1);
  REQUIRE(rows[0].size() == 1);
  return rows[0][0];
}

std::string sql_text(const std::string& s) {
  std::string out;
  for (char ch : s) out += ch == '\'' ? std::string("''") : std::string(1, ch);
  return out;
}

// The template with the finding's values in place of its placeholders; an empty string names what is missing.
std::string fill(std::string sql, const std::map<std::string, std::string>& values, std::string& missing) {
  static const std::regex placeholder(R"(\{([a-z0-9_]+)\})");
  std::string out;
  std::smatch m;
  while (std::regex_search(sql, m, placeholder)) {
    auto it = values.find(m[1].str());
    if (it == values.end()) {
      missing = m[1].str();
      return "";
    }
    out += m.prefix().str() + it->second;
    sql = m.suffix().str();
  }
  return out + sql;
}

std::string number_text(const json& v) {
  if (v.is_number_integer()) return std::to_string(v.get<std::int64_t>());
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", v.get<double>());
  return buf;
}

bool is_time_ms(const std::string& name) { return name.size() > 3 && name.compare(name.size() - 3, 3, "_ms") == 0; }

bool same(const std::string& name, const json& cited, const json& computed) {
  if (!computed.is_number()) return false;
  if (is_time_ms(name)) return std::abs(cited.get<double>() - computed.get<double>()) <= 0.001;
  if (cited.is_number_integer() && computed.is_number_integer())
    return cited.get<std::int64_t>() == computed.get<std::int64_t>();
  return cited.get<double>() == computed.get<double>();
}

// What was compared, per kind: the numbers' names.
struct Compared {
  std::map<std::string, std::set<std::string>> names;
  std::size_t numbers = 0;
};

// findings on one trace file, and every number of every finding against its SQL through run_sql.
void check_numbers(const std::string& path, Compared& compared) {
  INFO(path);
  auto t = vs::test::open_trace(path);
  const json found = vs::test::run_tool_checked(*t.reader, "findings", {{"limit", 50}}).structured;
  const std::int64_t session = found["coverage"]["session_id"].get<std::int64_t>();
  const bool has_seq =
      run_sql_value(*t.reader, session, "SELECT COUNT(*) FROM pragma_table_info('call_rows') WHERE name = 'seq'")
          .get<std::int64_t>() > 0;
  for (const json& f : found["findings"]) {
    const std::string kind = f["kind"].get<std::string>();
    INFO(kind << ": " << f["title"].get<std::string>());
    auto defs = number_sql().find(kind);
    if (defs == number_sql().end()) {
      FAIL_CHECK("kind " << kind << " has no SQL definitions in number_sql()");
      continue;
    }
    std::map<std::string, std::string> values = {{"session", std::to_string(session)},
                                                 {"seq", has_seq ? "c.seq" : "NULL"},
                                                 {"severity", f["severity"].get<std::string>()}};
    if (f["pid"].is_number_integer()) {
      values["pid"] = std::to_string(f["pid"].get<std::int64_t>());
    } else {
      std::smatch m;
      const std::string title = f["title"].get<std::string>();
      if (std::regex_search(title, m, std::regex(R"(^pid (\d+))"))) values["pid"] = m[1].str();
    }
    for (const json& n : f["next"])
      if (n["arguments"].contains("api")) values["api"] = sql_text(n["arguments"]["api"].get<std::string>());
    for (const auto& [name, v] : f["evidence"]["numbers"].items()) values[name] = number_text(v);

    for (const auto& [name, cited] : f["evidence"]["numbers"].items()) {
      INFO("number " << name << " = " << cited.dump());
      auto def = defs->second.find(name);
      if (def == defs->second.end()) {
        FAIL_CHECK(kind << "." << name << " has no SQL definition in number_sql()");
        continue;
      }
      std::string missing;
      const std::string sql = fill(def->second, values, missing);
      if (sql.empty()) {
        FAIL_CHECK(kind << "." << name << ": the finding gives no value for {" << missing << "}");
        continue;
      }
      INFO("SQL: " << sql);
      const json computed = run_sql_value(*t.reader, session, sql);
      INFO("run_sql gives " << computed.dump());
      CHECK(same(name, cited, computed));
      compared.names[kind].insert(name);
      ++compared.numbers;
    }
  }
}

}  // namespace

TEST_CASE("findings SQL: every kind the registry declares has its numbers' definitions, and only those kinds",
          "[findings_sql]") {
  std::set<std::string> registered;
  for (const vs::tools::findings::Rule* rule : vs::tools::findings::rules())
    for (const auto& k : rule->kinds) registered.insert(std::string(k.kind));
  std::set<std::string> defined;
  for (const auto& [kind, numbers] : number_sql()) {
    defined.insert(kind);
    CHECK_FALSE(numbers.empty());
  }
  CHECK(defined == registered);
}

TEST_CASE("findings SQL: every number a finding cites on the shipped traces is what run_sql computes",
          "[findings_sql]") {
  const auto traces = vs::test::recorded_traces();
  CHECK(traces.size() >= 36);
  Compared compared;
  for (const fs::path& path : traces) check_numbers(path.string(), compared);
  std::string summary;
  for (const auto& [kind, names] : compared.names) summary += kind + " (" + std::to_string(names.size()) + ") ";
  INFO("compared " << compared.numbers << " numbers: " << summary);
  // The kinds that fire on the shipped traces (missed_frees and unmatched_frees fire on none): each had its
  // numbers compared.
  for (const char* kind : {"coverage_gap", "out_of_memory", "call_errors", "preemption_tail", "allocator_cache_held",
                           "held_after_empty_cache", "library_held", "nvml_context_overhead", "released_at_exit",
                           "leak_growth"})
    CHECK(compared.names.count(kind) == 1);
}

// The shipped traces predate schema 4: the synthetic scenarios, written through the store, store call_rows.seq,
// so the leak verdict's SQL is checked on the numbering the writer stores too.
TEST_CASE("findings SQL: the same on the synthetic scenarios, which store call_rows.seq", "[findings_sql]") {
  syn::TempDir dir("vs_findings_sql");
  Compared compared;
  int n = 0;
  for (const syn::Scenario& scenario : syn::sampled_scenarios()) {
    INFO("synthetic '" << scenario.name << "'");
    const std::string file = dir.file("scenario-" + std::to_string(n++) + ".db");
    syn::write_trace(file, scenario.workloads);
    check_numbers(file, compared);
  }
  std::string summary;
  for (const auto& [kind, names] : compared.names) summary += kind + " (" + std::to_string(names.size()) + ") ";
  INFO("compared " << compared.numbers << " numbers: " << summary);
  if (vs::test::test_sample_every() == 1) CHECK(compared.names.count("leak_growth") == 1);
}

// The leak verdict's SQL classifies calls in its CTE `act`, tools/growth_model.cpp in activity_kind: every op of the
// catalog (every apis.op a trace can hold) gets the same class from both, so a new op cannot be added to one only.
TEST_CASE("findings SQL: the leak verdict's act CTE classifies every op as activity_kind does", "[findings_sql]") {
  syn::TempDir dir("vs_findings_sql_ops");
  const std::string file = dir.file("ops.db");
  syn::write_trace(file, syn::scenarios().front().workloads);
  auto t = vs::test::open_trace(file);
  std::int64_t session = 0;
  REQUIRE(t.reader->query("SELECT MIN(id) FROM sessions", {}, [&](const vs::store::Row& r) { session = r.i64(0); }));
  const std::size_t from = kLeakVerdict.find("CASE WHEN a.op IN");
  REQUIRE(from != std::string::npos);
  const std::size_t to = kLeakVerdict.find(" AS what", from);
  REQUIRE(to != std::string::npos);
  const std::string classify = kLeakVerdict.substr(from, to - from);
  std::set<std::string> ops;
  for (const vs::ApiInfo& api : vs::all_apis()) ops.insert(std::string(vs::op_name(api.op)));
  CHECK(ops.count("vmm_import") == 1);
  for (const std::string& op : ops) {
    INFO(op);
    const json what = run_sql_value(*t.reader, session, "SELECT " + classify + " FROM (SELECT '" + op + "' AS op) a");
    const auto kind = vs::tools::activity_kind(op);
    CHECK(what.get<std::string>() == (kind == vs::tools::ActivityKind::Release ? "release"
                                      : kind == vs::tools::ActivityKind::Other ? "other"
                                                                               : "work"));
  }
}
