#!/usr/bin/env bash
# The main job, end to end: install dependencies, build, trace the bundled
# fake CUDA workload with the real eBPF tracer, then investigate it -- and a
# PyTorch trace recorded on an H100 -- through the MCP server the way an agent
# does (examples/sessions/investigate.py: initialize, trace_overview, findings,
# the first drill-down), printing what the tools answer.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
build=${BUILD_DIR:-build}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j"$(nproc)" >/dev/null
fx="$build/fixtures"
db=${DB:-demo.db}
rm -f "$db" "$db-wal" "$db-shm"
"$build/vramscope" trace --db "$db" --cuda-lib "$fx/libcudart.so.13" --cuda-lib "$fx/libcuda.so.1" -- "$fx/workload" child
echo
echo "######## $db (just traced, fake CUDA libraries), investigated over MCP (stdio)"
python3 examples/sessions/investigate.py "$build/vramscope" mcp --db "$db"
echo
echo "######## the leak trace recorded on an H100 with PyTorch (examples/traces/leak), over MCP"
python3 examples/sessions/investigate.py "$build/vramscope" mcp --demo leak
