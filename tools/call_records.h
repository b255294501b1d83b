// One call as slowest_calls and find_calls show it: the stored row plus the
// context an agent needs to read it (caller library, enclosing call, and the
// allocation an alloc created or a free released, with its age). The shape is
// $defs.call in schemas/common.defs.json.
#pragma once

#include <string>
#include <vector>

#include "tools/call_filter.h"

namespace vs::tools {

// Columns to SELECT from call_rows (in this order) for read_call_row.
inline constexpr const char* kCallColumns =
    "id, ts_ns, dur_ns, pid, tid, api_id, device, ptr, bytes, ret, caller_id, off_cpu_ns, runq_ns, switches, "
    "preempted_by, preempted_by_comm, longest_off_ns, parent_id, incomplete";

struct CallRow {
  std::int64_t id, ts_ns, dur_ns, pid, tid, api_id;
  std::optional<std::int64_t> device, ptr, bytes;
  std::int64_t ret;
  std::optional<std::int64_t> caller_id;
  std::int64_t off_cpu_ns, runq_ns, switches;
  std::optional<std::int64_t> preempted_by;
  std::string preempted_by_comm;
  std::optional<std::int64_t> longest_off_ns, parent_id;
  bool incomplete;
};
CallRow read_call_row(const store::Row& r);

// The calls as JSON ($defs.call), with their context looked up in a few
// batched queries (one per kind of context, whatever the number of calls).
Result<json> describe_calls(const store::TraceReader& db, const Session& session, const ApiTable& apis,
                            const std::vector<CallRow>& calls);

// One line of text per call, for the renderings.
std::string call_line(const json& call);

}  // namespace vs::tools
