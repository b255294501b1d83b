// missed_frees and unmatched_frees: frees the trace could not pair with an allocation.

#include "tools/findings/registry.h"

namespace vs::tools::findings {
namespace {

constexpr KindSeverity kMissedFreesKind{
    "missed_frees", Severity::Medium,
    "outstanding bytes were overstated until the address was reused, so every memory number over that time "
    "reads high"};
constexpr KindSeverity kUnmatchedFreesKind{
    "unmatched_frees", Severity::Low,
    "memory allocated before tracing (or a lost record) was freed: only what the trace saw of it is missing"};
constexpr KindSeverity kKinds[] = {kMissedFreesKind, kUnmatchedFreesKind};

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
    Finding f(kMissedFreesKind);
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
  Finding f(kUnmatchedFreesKind);
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

}  // namespace

constexpr Rule kMissedFreesRule{"missed_frees", kKinds, missed_frees};

}  // namespace vs::tools::findings
