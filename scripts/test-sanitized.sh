#!/usr/bin/env bash
# The whole test suite once more, built with clang under AddressSanitizer and
# UndefinedBehaviorSanitizer (UB fails, as a memory error does), in a second
# build directory, plus the libFuzzer harnesses of tests/fuzz: each fuzz_<name>
# test replays its seed corpus, then fuzzes for VRAMSCOPE_FUZZ_SECONDS (default
# 60). Run as root, as scripts/test.sh (the eBPF tests). Arguments go to ctest.
# .ci/run runs it after scripts/test.sh with VRAMSCOPE_FUZZ_SECONDS=30.
#   BUILD_DIR=build-asan  VRAMSCOPE_FUZZ_SECONDS=60  bash scripts/test-sanitized.sh [-R fuzz_]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
build=${BUILD_DIR:-build-asan}
seconds=${VRAMSCOPE_FUZZ_SECONDS:-60}
# clang 16 where installed (scripts/install-deps.sh): clang 14, Debian 12's default, cannot
# capture structured bindings in lambdas (C++20), which tools/findings does.
cc=clang cxx=clang++
if command -v clang-16 >/dev/null && command -v clang++-16 >/dev/null; then cc=clang-16 cxx=clang++-16; fi
# ccache where installed, except in CI (CI=true), whose cache starts empty: there it could
# only add its own preprocessing and hashing to every compilation.
launcher=()
if [ -z "${CI:-}" ] && command -v ccache >/dev/null; then
  launcher=(-DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
  # What ccache needs to cache compilations that use the precompiled headers (cmake/pch.cmake).
  export CCACHE_SLOPPINESS=pch_defines,time_macros
fi
generator=()
if [ ! -f "$build/CMakeCache.txt" ] && command -v ninja >/dev/null; then generator=(-G Ninja); fi
# -O0 and line tables only (file:line in every report, no variables or types):
# with ASan, UBSan and the fuzzers' coverage on every function, optimizing is
# most of a TU's compile time (-O1 cost ~2.5x -O0 per TU, -O2 -g ~2.9x), and CI
# has two cores. The benchmarks have no tests; built here (cheaply, at -O0) so that CI
# compiles them (.ci/run leaves them out of its first build).
flags="-O0 -gline-tables-only -DNDEBUG"
cmake -S . -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_COMPILER="$cc" -DCMAKE_CXX_COMPILER="$cxx" \
  -DCMAKE_C_FLAGS_RELWITHDEBINFO="$flags" -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="$flags" \
  -DVRAMSCOPE_SANITIZE=ON -DVRAMSCOPE_FUZZ=ON -DVRAMSCOPE_BUILD_BENCH=ON -DVRAMSCOPE_FUZZ_SECONDS="$seconds" \
  "${launcher[@]}" >/dev/null
cmake --build "$build" -j"$(nproc)"

# Every sanitized process of the suite (vramscope, its guardian and helper
# children, the test programs, the harnesses) reads these. Leaks fail too;
# scripts/lsan.supp lists the third-party ones, each with why (never ours).
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:halt_on_error=1:detect_stack_use_after_return=1:strict_string_checks=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export LSAN_OPTIONS=suppressions=$root/scripts/lsan.supp:print_suppressions=0
# Reports with file:line (the symbolizer of the compiler in use).
for symbolizer in "$(dirname "$(readlink -f "$(command -v "$cxx")")")/llvm-symbolizer" "$(command -v llvm-symbolizer || true)"; do
  if [ -x "$symbolizer" ]; then export ASAN_SYMBOLIZER_PATH=$symbolizer; break; fi
done
# Stacks of 64 MiB (inherited by every process and, through glibc's default, thread):
# unoptimized frames with ASan's redzones are several times larger, and libstdc++'s
# recursive std::regex (tool_tests' tag matcher over a chart's SVG) overflowed 8 MiB at
# -O0; 32 MiB was enough.
ulimit -s 65536 || echo "test-sanitized.sh: could not raise the stack limit to 64 MiB; tests may overflow" >&2
# The loops over every synthetic scenario take every 3rd (tests/tools/synthetic_trace.h):
# at -O0 under the sanitizers they were minutes, and a memory error or UB needs the code
# path, which the sample runs, not each input. scripts/test.sh runs them all.
export VRAMSCOPE_TEST_SAMPLE=${VRAMSCOPE_TEST_SAMPLE:-3}
# The suite one test per core, as scripts/test.sh runs it (the eBPF tests hold a lock:
# never two at once); then the fuzz tests, one per core: each harness is one process
# on one core, they share nothing (own corpus copy, own artifacts, port 0).
ctest --test-dir "$build" --output-on-failure -j"$(nproc)" -LE '^fuzz$' "$@"
ctest --test-dir "$build" --output-on-failure -L '^fuzz$' -j"$(nproc)" "$@"
