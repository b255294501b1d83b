#include "common/percentiles.h"

#include <algorithm>

namespace vs {

std::size_t nearest_rank(std::size_t n, int per_mille) {
  std::size_t rank = (n * static_cast<std::size_t>(per_mille) + 999) / 1000;
  return std::clamp<std::size_t>(rank, 1, n);
}

std::vector<std::int64_t> nearest_rank_percentiles(std::vector<std::int64_t>& values, std::span<const int> per_mille) {
  std::vector<std::int64_t> out(per_mille.size(), 0);
  if (values.empty()) return out;
  // After nth_element at index k, everything from k on is >= values[k]: the
  // next (higher) rank is searched in that suffix only.
  auto from = values.begin();
  for (std::size_t i = 0; i < per_mille.size(); ++i) {
    auto nth = values.begin() + static_cast<std::ptrdiff_t>(nearest_rank(values.size(), per_mille[i]) - 1);
    if (nth >= from) {
      std::nth_element(from, nth, values.end());
      from = nth;
    }
    out[i] = *nth;
  }
  return out;
}

}  // namespace vs
