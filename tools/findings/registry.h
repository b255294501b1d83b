// The registry of findings rules: which rules run, in which order, and how
// the kinds they emit rank.
#pragma once

#include <span>
#include <string_view>

#include "tools/findings/rule.h"

namespace vs::tools::findings {

// One per file of tools/findings/.
extern const Rule kCoverageGapRule, kLeakGrowthRule, kCallErrorsRule, kPreemptionTailRule, kMissedFreesRule,
    kPreallocatedPoolRule, kAllocatorCacheHeldRule,
    kHeldAfterEmptyCacheRule, kLibraryHeldRule, kNvmlContextOverheadRule, kReleasedAtExitRule;

// The rules, in the order they run and `checked` lists them.
std::span<const Rule* const> rules();
// Every kind the rules emit, in the order findings of one severity rank: each kind once.
std::span<const std::string_view> ranked_kinds();
// The position of `kind` in ranked_kinds() (its size when it is not there).
std::size_t kind_rank(std::string_view kind);

}  // namespace vs::tools::findings
