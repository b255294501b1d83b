#!/usr/bin/env bash
# The whole test suite once more, built with clang under AddressSanitizer and
# UndefinedBehaviorSanitizer (UB fails, as a memory error does), in a second
# build directory, plus the libFuzzer harnesses of tests/fuzz: each fuzz_<name>
# test replays its seed corpus, then fuzzes for VRAMSCOPE_FUZZ_SECONDS (default
# 60). Run as root, as scripts/test.sh (the eBPF tests). Arguments go to ctest.
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
launcher=()
if command -v ccache >/dev/null; then
  launcher=(-DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
fi
# The benchmarks have no tests: not built here.
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER="$cc" -DCMAKE_CXX_COMPILER="$cxx" \
  -DVRAMSCOPE_SANITIZE=ON -DVRAMSCOPE_FUZZ=ON -DVRAMSCOPE_BUILD_BENCH=OFF -DVRAMSCOPE_FUZZ_SECONDS="$seconds" \
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
ctest --test-dir "$build" --output-on-failure "$@"
