#!/usr/bin/env bash
# The main job, end to end: install dependencies, build, trace the bundled
# fake CUDA workload with the real eBPF tracer, and print a summary.
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
echo "Trace written to $db. Allocations still held when each process ended:"
sqlite3 -header -column "$db" \
  "SELECT pid, kind, bytes, end_reason, (SELECT path FROM objects WHERE id = caller_id) AS caller
   FROM allocations WHERE end_reason <> 'freed' ORDER BY pid, alloc_ts_ns"
