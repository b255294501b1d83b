// VRAMSCOPE_TEST_SAMPLE=N: the tests that loop over many inputs (every synthetic
// scenario, thousands of fuzzed messages) take every Nth. scripts/test-sanitized.sh
// sets it: under ASan+UBSan at -O0 those loops took minutes each, and what the
// sanitizers look for (memory errors, UB) needs each code path, which the sample
// runs, not each input. Unset (scripts/test.sh), they take every input.
#pragma once

#include <cstdlib>

namespace vs::test {

inline int test_sample_every() {
  const char* every = std::getenv("VRAMSCOPE_TEST_SAMPLE");
  const int n = every ? std::atoi(every) : 1;
  return n > 1 ? n : 1;
}

}  // namespace vs::test
