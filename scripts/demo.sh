#!/usr/bin/env bash
# The main job, end to end: install dependencies, build, trace the bundled
# fake CUDA workload with the real eBPF tracer, then investigate it -- and a
# PyTorch trace recorded on an H100 -- through the MCP server the way an agent
# does (examples/sessions/investigate.py: initialize, trace_overview, findings,
# the first drill-down), printing what the tools answer. Then the live flow
# (`vramscope mcp --allow-trace`, root): a running fixture server that keeps
# 4 MiB more every 0.1 s; an agent-side script (examples/sessions/live_watch.py)
# lists the GPU processes, attaches to it mid-run, polls the trace, reads the
# findings while it records, stops it and reads them again.
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
echo
echo "######## live: the agent finds a running GPU process, attaches mid-run, answers while it records (--allow-trace)"
live=$(mktemp -d /tmp/vramscope-demo.XXXXXX)  # 0700: --trace-dir must be writable by root only
# The fixture's `serve` scenario: each step keeps two 4 MiB allocations and frees the oldest one.
(for _ in $(seq 200); do echo "alloc 2 4194304"; echo "free 1"; sleep 0.1; done; echo exit) |
  "$fx/workload" serve >"$live/workload.log" &
server_pid=$!
sleep 1  # let it start its leak before the agent looks
# The fake NVML reports 512 MiB for FAKE_NVML_PID, as the real one would for a process on the GPU.
FAKE_NVML_PID=$server_pid python3 examples/sessions/live_watch.py --vramscope "$build/vramscope" \
  --trace-dir "$live/traces" --nvml-lib "$fx/libnvidia-ml.so.1" --match "workload serve" \
  --duration 10 --poll 2 --transcript /dev/fd/3 --server-stderr "$live/server.log" 3>&1 >/dev/null  # the transcript only
wait "$server_pid" || true
rm -rf "$live"
