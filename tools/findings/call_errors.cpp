// call_errors: failed CUDA calls, out-of-memory allocations apart from the rest.
#include <algorithm>
#include <map>

#include "tools/findings/registry.h"

namespace vs::tools::findings {
namespace {

constexpr KindSeverity kOutOfMemoryKind{
    "out_of_memory", Severity::High,
    "an allocation was refused: the workload failed there, or ran on with less memory than it asked for"};
constexpr KindSeverity kCallErrorsKind{
    "call_errors", Severity::Low,
    "the program went on after the failed calls, but not by repeating them: a path it did not take, or an error "
    "it may have hidden"};
constexpr KindSeverity kHandledCallErrorsKind{
    "call_errors", Severity::Info,
    "every failed call was followed at once by the same call succeeding on the same thread: a capability probe "
    "and its fallback, or a retry, which the caller handled; nothing failed for the user"};
constexpr KindSeverity kKinds[] = {kOutOfMemoryKind, kCallErrorsKind, kHandledCallErrorsKind};

// Failed calls looked at one by one for what followed them; a group with more is not called handled.
constexpr std::int64_t kMaxExamined = 1000;

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
    std::int64_t api_id, ret, count, max_bytes, first_ts;
  };
  // Only the APIs whose stats count failed top-level calls: their calls are read through the (api_id, ts_ns) index.
  std::string failing;
  for (const auto& [api_id, s] : c.call_stats())
    if (s.top_level_failed > 0) failing += (failing.empty() ? "" : ",") + std::to_string(api_id);
  std::vector<Group> groups;
  if (!failing.empty())
    c.query("SELECT api_id, ret, COUNT(*), COALESCE(MAX(bytes), 0), MIN(ts_ns) FROM call_rows "
            "WHERE " + c.scope_of_apis() + " AND api_id IN (" + failing + ") AND ret != 0 AND parent_id IS NULL "
            "GROUP BY api_id, ret ORDER BY COUNT(*) DESC, api_id, ret",
            c.params(), [&](const store::Row& r) {
              groups.push_back({r.i64(0), r.i64(1), r.i64(2), r.i64(3), r.i64(4)});
            });
  if (groups.empty()) notes.push_back("no call returned an error");
  auto is_oom = [&](const Group& g) {
    const std::string& op = c.apis[g.api_id].op;
    return g.ret == kOutOfMemoryRet && (op == "alloc" || op == "vmm_create");
  };
  // Per (api, ret): how many of its failed calls the next top-level call on the same thread repeated with success.
  std::map<std::pair<std::int64_t, std::int64_t>, std::int64_t> handled;
  std::string other_failing;
  for (const auto& g : groups)
    if (!is_oom(g)) other_failing += (other_failing.empty() ? "" : ",") + std::to_string(g.api_id);
  if (!other_failing.empty()) {
    struct Failed {
      std::int64_t api_id, ret, pid, tid, ts;
    };
    std::vector<Failed> failed;
    c.query("SELECT api_id, ret, pid, tid, ts_ns FROM call_rows WHERE " + c.scope_of_apis() + " AND api_id IN (" +
                other_failing + ") AND ret != 0 AND parent_id IS NULL ORDER BY ts_ns LIMIT " +
                std::to_string(kMaxExamined),
            c.params(), [&](const store::Row& r) { failed.push_back({r.i64(0), r.i64(1), r.i64(2), r.i64(3), r.i64(4)}); });
    for (const Failed& f : failed)
      c.query("SELECT api_id = ? AND ret = 0 FROM call_rows WHERE pid = ? AND ts_ns > ? AND session_id = ? AND tid = ? "
              "AND parent_id IS NULL ORDER BY ts_ns LIMIT 1",
              {f.api_id, f.pid, f.ts, c.session.id, f.tid},
              [&](const store::Row& r) { handled[{f.api_id, f.ret}] += r.i64(0); });
  }
  enum class Case { OutOfMemory, Unhandled, Handled };
  for (Case which : {Case::OutOfMemory, Case::Unhandled, Case::Handled}) {
    const bool oom = which == Case::OutOfMemory;
    std::vector<const Group*> sel;
    for (const auto& g : groups) {
      const bool all_handled = handled[{g.api_id, g.ret}] == g.count;
      const Case case_of = is_oom(g) ? Case::OutOfMemory : all_handled ? Case::Handled : Case::Unhandled;
      if (case_of == which) sel.push_back(&g);
    }
    if (sel.empty()) continue;
    Finding f(oom ? kOutOfMemoryKind : which == Case::Handled ? kHandledCallErrorsKind : kCallErrorsKind);
    std::int64_t total = 0, max_bytes = 0;
    std::string list;
    const Group* first = sel.front();
    for (const Group* g : sel) {
      total += g->count;
      max_bytes = std::max(max_bytes, g->max_bytes);
      if (g->first_ts < first->first_ts) first = g;
      const char* name = error_name(c.apis[g->api_id].layer, g->ret);
      list += (list.empty() ? "" : "; ") + c.apis[g->api_id].name + " x " + std::to_string(g->count) + " returned " +
              std::to_string(g->ret) + (*name ? std::string(" (") + name + ")" : "");
    }
    f.size = static_cast<double>(total);
    std::string in_groups;
    for (const Group* g : sel)
      in_groups += (in_groups.empty() ? "" : " OR ") + std::string("(api_id = ") + std::to_string(g->api_id) +
                   " AND ret = " + std::to_string(g->ret) + ")";
    // The failed calls in time order: the first names the process the finding is about.
    std::int64_t first_pid = 0;
    c.query("SELECT id, pid FROM call_rows WHERE " + c.scope_of_apis() + " AND parent_id IS NULL AND (" + in_groups +
                ") ORDER BY ts_ns, id LIMIT " + std::to_string(kMaxIds),
            c.params(), [&](const store::Row& r) {
              if (f.call_ids.empty()) first_pid = r.i64(1);
              f.call_ids.push_back(r.i64(0));
            });
    f.numbers = {{"failed_calls", total}, {"first_failure_t_ms", c.session.t_ms(first->first_ts)}};
    if (oom) {
      std::int64_t held = c.value("SELECT COALESCE(SUM(bytes), 0) FROM allocations WHERE session_id = ? AND pid = ? AND " +
                                      std::string(kGpuKindsSql) +
                                      " AND alloc_ts_ns <= ? AND (free_ts_ns IS NULL OR free_ts_ns > ?)",
                                  {c.session.id, first_pid, first->first_ts, first->first_ts});
      f.pid = first_pid;
      f.numbers["largest_request_bytes"] = max_bytes;
      f.numbers["outstanding_at_first_failure_bytes"] = held;
      f.title = std::to_string(total) + " allocation calls failed out of memory";
      f.summary = list + ". The largest request was " + fmt_bytes(max_bytes) + "; the first failure, at " +
                  c.t(first->first_ts) + " in " + c.who(first_pid) + ", came while it held " + fmt_bytes(held) +
                  " of traced GPU memory (NVML's device view, when recorded, shows what else used the GPU).";
      f.rule = "an allocation call (cudaMalloc*, cuMemAlloc*, cuMemCreate, ...) returned 2 (cudaErrorMemoryAllocation / "
               "CUDA_ERROR_OUT_OF_MEMORY)";
      c.drill(f, "allocation_timeline", {{"pid", first_pid}}, "outstanding bytes leading up to the failure");
    } else if (which == Case::Handled) {
      f.title = std::to_string(total) + " CUDA calls returned an error that the caller handled";
      f.summary = list + ". Each was followed at once, on the same thread, by the same call succeeding: a "
                  "capability probe and its fallback (PyTorch tries cuMemCreate with a shareable handle type first), "
                  "or a retry. Nothing failed for the program; the failed calls allocated nothing.";
      f.rule = "a traced call returned non-zero (not an out-of-memory allocation), and the next top-level call on "
               "its thread was the same API returning 0, for every such call (up to " +
               std::to_string(kMaxExamined) + " examined)";
    } else {
      f.title = std::to_string(total) + " CUDA calls returned an error";
      f.summary = list + ". A failed call allocated or freed nothing: the bytes it asked for are not counted.";
      f.rule = "a traced call returned non-zero (not an out-of-memory allocation), not followed at once by the same "
               "call succeeding on its thread";
    }
    c.drill(f, "find_calls", {{"errors_only", true}}, "the failed calls with their arguments");
    out.push_back(std::move(f));
  }
}

}  // namespace

constexpr Rule kCallErrorsRule{"call_errors", kKinds, call_errors};

}  // namespace vs::tools::findings
