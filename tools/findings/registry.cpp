#include "tools/findings/registry.h"

#include <algorithm>

namespace vs::tools::findings {
namespace {

// released_at_exit runs after leak_growth: its text refers to leak_growth's finding for the same process;
// allocator_cache_held after preallocated_pool, whose pool it does not report again.
constexpr const Rule* kRules[] = {
    &kCoverageGapRule,
    &kLeakGrowthRule,
    &kCallErrorsRule,
    &kPreemptionTailRule,
    &kMissedFreesRule,
    &kPreallocatedPoolRule,
    &kAllocatorCacheHeldRule,
    &kHeldAfterEmptyCacheRule,
    &kLibraryHeldRule,
    &kNvmlContextOverheadRule,
    &kReleasedAtExitRule,
};

// Within one severity, what the user suffers more first: failures and growth that will fail, then what bounds
// the trace's own numbers, then memory held that the user believes released, then slowness, then memory held by
// design, then accounting; memory held until exit before NVML's context estimate, which explains rather than
// reports.
constexpr std::string_view kRankedKinds[] = {
    "out_of_memory",        "leak_growth",  "coverage_gap",    "held_after_empty_cache", "preemption_tail",
    "missed_frees",         "call_errors",  "preallocated_pool",
    "allocator_cache_held", "library_held",      "unmatched_frees",
    "released_at_exit",     "nvml_context_overhead",
};

}  // namespace

std::span<const Rule* const> rules() { return kRules; }

std::span<const std::string_view> ranked_kinds() { return kRankedKinds; }

std::size_t kind_rank(std::string_view kind) {
  return static_cast<std::size_t>(std::find(std::begin(kRankedKinds), std::end(kRankedKinds), kind) -
                                  std::begin(kRankedKinds));
}

}  // namespace vs::tools::findings
