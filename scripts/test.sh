#!/usr/bin/env bash
# Builds vramscope and runs every test through CTest. The eBPF integration
# tests need root; VRAMSCOPE_REQUIRE_BPF=1 turns their skip into a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j"$(nproc)"
ctest --test-dir "$build" --output-on-failure "$@"
