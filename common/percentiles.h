// Exact percentiles of call durations, by the nearest-rank method: the p-th
// percentile of n values is the value at 1-based rank ceil(p/100 × n) in
// ascending order. It is always one of the stored values (never interpolated),
// and with n < 100 the p99 is the maximum — which is what an agent should be
// told rather than a smoothed number that no call ever took.
//
// In common/ because the writer (per-API summaries at session end) and the
// tools (scans of a selection) must take them the same way.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace vs {

inline constexpr const char* kPercentileMethod =
    "exact nearest-rank over every stored call in the selection: pN is the value at rank ceil(N/100 x count) "
    "in ascending order (no sampling, no interpolation; with fewer than 100 calls p99 is the max)";

// Percentiles are named in per-mille so that ranks are exact integer arithmetic (p99.9 = 999).
inline constexpr int kP50 = 500, kP90 = 900, kP99 = 990, kP999 = 999, kMax = 1000;

// 1-based nearest rank of the per_mille-th percentile among n values (n > 0).
std::size_t nearest_rank(std::size_t n, int per_mille);

// The percentiles in `per_mille` (ascending) of `values`, which it reorders:
// nth_element on successively smaller ranges, O(n) instead of a full sort.
// Empty `values` gives zeros.
std::vector<std::int64_t> nearest_rank_percentiles(std::vector<std::int64_t>& values, std::span<const int> per_mille);

}  // namespace vs
