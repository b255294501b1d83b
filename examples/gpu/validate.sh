#!/usr/bin/env bash
# Validates vramscope against PyTorch's own accounting on a machine with an
# NVIDIA GPU and PyTorch (+ transformers). Run as root from the repository:
#
#   bash examples/gpu/validate.sh [OUTDIR]
#
# It uses the vramscope binary in examples/gpu/bundle/ (made on the build
# machine by scripts/bundle.sh: the binary and the shared libraries it needs,
# for machines without package registries), else build/vramscope.
# Traces each workload, compares with torch.cuda.memory_stats() at every
# checkpoint (compare.py), prints the tables, and exits non-zero on any
# mismatch.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-/tmp/vramscope-validate}
mkdir -p "$out"
source "$here/common.sh"
status=0

trace() {  # trace NAME [ENV=VAL...] -- ARGS...
  local name=$1; shift
  local envs=()
  while [ "$1" != "--" ]; do envs+=("$1"); shift; done
  shift
  rm -f "$out/$name".db*
  echo "=== $name"
  env "${envs[@]}" "$vs" trace -q --db "$out/$name.db" -- "$@" > "$out/$name.log" 2>&1
  echo "    traced (exit $?); log: $out/$name.log"
}

compare() {  # compare NAME
  "$py" "$here/compare.py" "$out/$1.db" "$out/$1.json" --label "$1" | tee "$out/$1.compare.txt"
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
}

trace empty_cache PYTHONUNBUFFERED=1 -- "$py" "$here/workloads.py" empty_cache --out "$out/empty_cache.json"
compare empty_cache
trace leak PYTHONUNBUFFERED=1 -- "$py" "$here/workloads.py" leak --out "$out/leak.json"
compare leak
trace expandable PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True -- "$py" "$here/workloads.py" empty_cache --out "$out/expandable.json"
compare expandable
trace async PYTORCH_CUDA_ALLOC_CONF=backend:cudaMallocAsync -- "$py" "$here/workloads.py" empty_cache --out "$out/async.json"
compare async
trace exit_holding PYTHONUNBUFFERED=1 -- "$py" "$here/workloads.py" exit_holding --out "$out/exit_holding.json"
compare exit_holding

# CPU contention: the workload and 4 CPU hogs share 2 cores.
hogs=()
for i in 1 2 3 4; do taskset -c 0,1 sh -c 'while :; do :; done' & hogs+=($!); done
trace contention PYTHONUNBUFFERED=1 -- taskset -c 0,1 "$py" "$here/workloads.py" empty_cache --out "$out/contention.json"
kill "${hogs[@]}" 2>/dev/null; wait "${hogs[@]}" 2>/dev/null
compare contention

# Attach to a process that already initialized CUDA and holds memory.
rm -f "$out/go" "$out/attach.json" "$out"/attach.db*
PYTHONUNBUFFERED=1 "$py" "$here/workloads.py" attach --out "$out/attach.json" --go-file "$out/go" > "$out/attach.py.log" 2>&1 &
target=$!
for _ in $(seq 1 600); do grep -q before_attach "$out/attach.json" 2>/dev/null && break; sleep 0.1; done
echo "=== attach (pid $target)"
"$vs" trace -q --db "$out/attach.db" --pid "$target" --duration 120s > "$out/attach.log" 2>&1 &
tracer=$!
for _ in $(seq 1 100); do grep -q "attached in" "$out/attach.log" 2>/dev/null && break; sleep 0.1; done
sleep 1
touch "$out/go"
wait "$target"; wait "$tracer"
compare attach

echo
[ $status -eq 0 ] && echo "validate: every comparison equal" || echo "validate: MISMATCHES (see above)"
exit $status
