#!/usr/bin/env bash
# Validates vramscope against the memory accounting of frameworks other than
# PyTorch (issue 12): CuPy's MemoryPool, JAX's memory_stats() with and without
# preallocation, and Numba's device arrays. Run as root from the repository on
# a machine with an NVIDIA GPU and those packages:
#
#   bash examples/gpu/validate_frameworks.sh [OUTDIR]
#
# Uses examples/gpu/bundle/ (scripts/bundle.sh) else build/vramscope, as
# validate.sh. Traces each workload of frameworks.py, compares at every
# checkpoint (compare_frameworks.py), writes each trace's findings
# (vramscope report) beside it, and exits non-zero on any mismatch.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-/tmp/vramscope-frameworks}
mkdir -p "$out"
source "$here/common.sh"
status=0

run() {  # run NAME [ENV=VAL...]
  local name=$1; shift
  rm -f "$out/$name".db* "$out/$name.json"
  echo "=== $name $*"
  env PYTHONUNBUFFERED=1 "$@" "$vs" trace -q --db "$out/$name.db" -- "$py" "$here/frameworks.py" "$name" \
    --out "$out/$name.json" > "$out/$name.log" 2>&1
  echo "    traced (exit $?); log: $out/$name.log"
  "$py" "$here/compare_frameworks.py" "$out/$name.db" "$out/$name.json" | tee "$out/$name.compare.txt"
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
  "$vs" report --db "$out/$name.db" > "$out/$name.report.txt" 2>&1
  grep -E '^ *[0-9]+\. |^#|\[(high|medium|low|info)\]' "$out/$name.report.txt" | head -8
}

run cupy_pool
run cupy_leak
run jax_grow XLA_PYTHON_CLIENT_PREALLOCATE=false
run jax_leak XLA_PYTHON_CLIENT_PREALLOCATE=false
run jax_leak_short XLA_PYTHON_CLIENT_PREALLOCATE=false
run jax_prealloc
run numba

echo
[ $status -eq 0 ] && echo "validate_frameworks: every comparison equal" || echo "validate_frameworks: MISMATCHES (see above)"
exit $status
