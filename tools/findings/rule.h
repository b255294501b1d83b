// The findings engine's parts: a Rule (one per file in tools/findings/) reads
// the trace through the shared context (Ctx) and emits Findings of the kinds
// it declares, each at a declared severity with the reason for it. The
// registry (registry.h) lists the rules; findings.cpp runs, ranks and renders.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/cuda_api.h"
#include "tools/api_stats.h"
#include "tools/common.h"
#include "tools/findings/frameworks.h"
#include "tools/growth_model.h"

namespace vs::tools::findings {

constexpr std::int64_t kMiB = 1 << 20;
// GPU memory (common/cuda_api.h: occupies_gpu_memory) as a condition on allocations.kind.
inline const std::string kGpuKindsSql = gpu_memory_kinds_sql();
// Ids a finding cites as evidence: enough to start from, few enough to read.
constexpr std::size_t kMaxIds = 10;

// Findings rank by severity first, in this order.
enum class Severity { High, Medium, Low, Info };
std::string_view severity_name(Severity s);

// A kind of finding at one severity, and why that severity: what the user suffers. A kind whose severity
// depends on the case (coverage_gap) is declared once per case.
struct KindSeverity {
  std::string_view kind;
  Severity severity;
  std::string_view reason;
};

struct Finding {
  explicit Finding(const KindSeverity& k) : kind(k.kind), severity(severity_name(k.severity)) {}
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

// One findings run: the session, the pid filter, what the rules share, and the first SQL error.
class Ctx {
 public:
  Ctx(const store::TraceReader& db, const Session& s, std::optional<std::int64_t> pid, json coverage)
      : db(db), session(s), pid(pid), coverage(std::move(coverage)) {}

  const store::TraceReader& db;
  const Session& session;
  const std::optional<std::int64_t> pid;
  const json coverage;  // the coverage block (tools/common.h)
  std::map<std::int64_t, Process> processes;
  std::map<std::int64_t, std::string> callers;  // objects.id -> file name
  // The callers that are a framework allocator's library (tools/findings/frameworks.h), objects.id -> it.
  std::map<std::int64_t, const FrameworkAllocator*> framework_callers;
  ApiTable apis;
  std::vector<Finding> earlier;  // the findings of the rules that ran before this one
  Status status;

  // Reads the processes, callers and APIs of the session; the first error goes to `status`.
  void load();

  // Runs a query unless an earlier one failed (the first error is kept).
  void query(const std::string& sql, const std::vector<store::SqlValue>& params,
             const std::function<void(const store::Row&)>& on_row);
  std::int64_t value(const std::string& sql, const std::vector<store::SqlValue>& params);
  // "session_id = ? [AND pid = ?]" (columns of `alias`, when given); params() gives its parameters.
  std::string scope(const std::string& alias = "") const;
  // scope() for call_rows restricted to a few APIs: `+pid` keeps the planner on (api_id, ts_ns), which visits
  // the APIs' calls, instead of (pid, ts_ns), which visits every call of the process (3 M calls: 0.6 s).
  std::string scope_of_apis() const;
  // The parameters of scope(), followed by `extra`.
  std::vector<store::SqlValue> params(std::vector<store::SqlValue> extra = {}) const;
  std::string t(std::int64_t ts_ns) const { return "t=" + fmt_ns(ts_ns - session.start_ns); }
  std::string who(std::int64_t pid) const;
  // The ids of a query's first column.
  std::vector<std::int64_t> ids(const std::string& sql, const std::vector<store::SqlValue>& params);
  // Per-API stats of the selection (the session, or its one process), by apis.id, computed once: from the
  // summaries when they were built, else from one scan of the calls (tools/api_stats.h: the same numbers).
  const std::map<std::int64_t, store::CallStats>& call_stats();
  // The allocations of the scope, read once for the rules that sweep them all.
  struct Allocation {
    bool gpu;  // kGpuKindsSql: GPU memory, not pinned host memory or VMM address ranges
    std::int64_t id, pid, caller_id, alloc_ts, bytes, alloc_call_id;  // caller_id 0: not recorded
    std::optional<std::int64_t> free_ts;
    std::string end_reason;  // '' while held
    std::string kind;        // allocations.kind
    std::int64_t free_call_id;        // 0: none
    std::int64_t alloc_seq, free_seq;  // the calls' numbers in the process's activity; 0: none
  };
  const std::vector<Allocation>& allocations();
  // The top-level allocation calls (alloc, vmm_create) that failed out of memory, in the order of their start,
  // read once.
  struct OutOfMemory {
    std::int64_t pid, caller_id, ts_ns;  // caller_id 0: not recorded
  };
  const std::vector<OutOfMemory>& out_of_memory_failures();
  // The session's activity numbering (tools/growth_model.h), loaded once.
  const ActivityIndex& activity_index();
  // The ids of the kMaxIds largest allocations that `keep` selects, largest first, then the lowest id.
  std::vector<std::int64_t> largest_allocations(const std::function<bool(const Allocation&)>& keep);
  // Where to drill down: only tools of this build, with arguments their schemas accept.
  void drill(Finding& f, const char* tool, json args, const char* why) const;

 private:
  std::optional<std::map<std::int64_t, store::CallStats>> call_stats_;
  std::optional<std::vector<Allocation>> allocations_;
  std::optional<std::vector<OutOfMemory>> out_of_memory_failures_;
  std::optional<ActivityIndex> activity_index_;
};

// An allocation call's return value for out of memory, in both layers: cudaErrorMemoryAllocation and
// CUDA_ERROR_OUT_OF_MEMORY.
inline constexpr std::int64_t kOutOfMemoryRet = 2;

// A rule: its name (as `checked` lists it), the kinds it emits with their severities, and the check. Its
// thresholds are named constants in its file, each with the reason for its value.
struct Rule {
  std::string_view name;
  std::span<const KindSeverity> kinds;
  // Appends what fired to `out`, and what it saw when it did not fire to `notes`.
  void (*run)(Ctx& c, std::vector<Finding>& out, std::vector<std::string>& notes);
};

// outstanding_allocations arguments for what a process held at its end: a
// microsecond before its exit (at the exit itself, the driver has released it),
// to the microsecond (still before the exit) so that the argument reads cleanly.
json held_at_end(const Ctx& c, std::int64_t pid);

}  // namespace vs::tools::findings
