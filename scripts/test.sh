#!/usr/bin/env bash
# Builds vramscope and runs every test through CTest. The eBPF integration
# tests need root; VRAMSCOPE_REQUIRE_BPF=1 turns their skip into a failure.
# Ninja where installed (scripts/install-deps.sh installs it): it compiles a
# target's sources while the libraries it links are still being built, which
# keeps both cores busy; a build directory made with another generator keeps it.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build}
generator=()
if [ ! -f "$build/CMakeCache.txt" ] && command -v ninja >/dev/null; then generator=(-G Ninja); fi
# VRAMSCOPE_BUILD_BENCH=OFF (.ci/run, whose sanitized build compiles them) leaves out bench/.
# VRAMSCOPE_DEBUG_INFO=0 (.ci/run sets it): no -g, which is 25-35% of a translation
# unit's compile time; the test fixtures keep their own -g (callers' file:line).
flags="-O2 -g -DNDEBUG"
if [ "${VRAMSCOPE_DEBUG_INFO:-1}" = 0 ]; then flags="-O2 -DNDEBUG"; fi
cmake -S . -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_FLAGS_RELWITHDEBINFO="$flags" -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="$flags" \
  -DVRAMSCOPE_BUILD_BENCH="${VRAMSCOPE_BUILD_BENCH:-ON}" >/dev/null
cmake --build "$build" -j"$(nproc)"
# One test per core; the two that use eBPF (they trace every process that calls CUDA) hold the
# `ebpf` resource lock, so they never run at the same time.
ctest --test-dir "$build" --output-on-failure -j"$(nproc)" "$@"
