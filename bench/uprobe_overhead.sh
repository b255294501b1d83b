#!/usr/bin/env bash
# Per-call cost of vramscope's probes on the fake CUDA library, next to the
# untraced call and next to bpftrace attaching a bare uprobe+uretprobe pair to
# the same four symbols. Prints a table; see bench/README.md.
#
#   sudo bench/uprobe_overhead.sh [BUILD_DIR] [N] [RUNS]
#     BUILD_DIR  the CMake build directory (default: build); uses BUILD_DIR/vramscope and BUILD_DIR/fixtures
#     N          iterations of `workload loop N 0` (default 100000); each makes 4 probed calls:
#                cudaMalloc > its cuMemAlloc_v2, cudaFree > its cuMemFree_v2
#     RUNS       runs of each mode, alternating untraced / bpftrace / vramscope (default 5; plus one warm-up each)
#
# ns added per probed call = (median traced ns per iteration - median untraced) / 4.
# bpftrace is attached before the workload starts (-c). vramscope's attach_ms,
# detach_ms, call_drops and calls_recorded come from the `sessions` table of each run.
set -euo pipefail

BUILD=${1:-build}
N=${2:-100000}
RUNS=${3:-5}
BUILD=$(cd "$BUILD" && pwd)
FX=$BUILD/fixtures
W=$FX/workload
VS=$BUILD/vramscope
RT=$FX/libcudart.so.13
DRV=$FX/libcuda.so.1

die() { echo "uprobe_overhead: $*" >&2; exit 1; }
[[ $(id -u) == 0 ]] || die "needs root (eBPF)"
for f in "$W" "$VS" "$RT" "$DRV"; do [[ -e $f ]] || die "$f not found: build first (cmake --build $BUILD)"; done
command -v bpftrace >/dev/null || die "bpftrace not installed"
command -v sqlite3 >/dev/null || die "sqlite3 (CLI) not installed"

TMP=$(mktemp -d /tmp/uprobe_overhead.XXXXXX)
trap 'rm -rf "$TMP"' EXIT

PROG=""
for probe in "$RT:cudaMalloc" "$RT:cudaFree" "$DRV:cuMemAlloc_v2" "$DRV:cuMemFree_v2"; do
  PROG+="uprobe:$probe {} uretprobe:$probe {} "
done

now_ns() { date +%s%N; }
elapsed_of() { sed -n 's/.*"elapsed_ns":\([0-9][0-9]*\).*/\1/p' "$1"; }

# Each run appends "ns_per_iteration wall_ms" to $TMP/<mode>.
run_untraced() {
  local t0 t1
  t0=$(now_ns)
  "$W" loop "$N" 0 >"$TMP/out" 2>"$TMP/err" || die "workload failed: $(cat "$TMP/err")"
  t1=$(now_ns)
  echo "$(elapsed_of "$TMP/out") $(( (t1 - t0) / 1000000 ))" >>"$TMP/${1:-untraced}"
}

run_bpftrace() {
  local t0 t1
  t0=$(now_ns)
  bpftrace -e "$PROG" -c "$W loop $N 0" >"$TMP/out" 2>"$TMP/err" || die "bpftrace failed: $(cat "$TMP/err")"
  t1=$(now_ns)
  grep -q "Attaching 8 probes" "$TMP/out" || die "bpftrace did not attach 8 probes: $(cat "$TMP/out" "$TMP/err")"
  echo "$(elapsed_of "$TMP/out") $(( (t1 - t0) / 1000000 ))" >>"$TMP/${1:-bpftrace}"
}

run_vramscope() {
  local t0 t1 db=$TMP/vs.db
  rm -f "$db" "$db-wal" "$db-shm"
  t0=$(now_ns)
  "$VS" trace -q --db "$db" --cuda-lib "$RT" --cuda-lib "$DRV" -- "$W" loop "$N" 0 >"$TMP/out" 2>"$TMP/err" ||
    die "vramscope trace failed: $(cat "$TMP/err")"
  t1=$(now_ns)
  local s
  s=$(sqlite3 -separator ' ' "$db" \
    "SELECT attach_ms, detach_ms, call_drops, calls_recorded, unrecorded_calls FROM sessions ORDER BY id DESC LIMIT 1")
  echo "$(elapsed_of "$TMP/out") $(( (t1 - t0) / 1000000 )) $s" >>"$TMP/${1:-vramscope}"
}

echo "uprobe_overhead: $W loop $N 0 -- $N iterations x 4 probed calls; $RUNS runs per mode, alternating, after a warm-up"
echo "kernel $(uname -r), $(nproc) CPUs, $(bpftrace --version 2>/dev/null), vramscope $("$VS" --version 2>/dev/null || echo '?')"
run_untraced warmup; run_bpftrace warmup; run_vramscope warmup
for ((i = 1; i <= RUNS; i++)); do
  run_untraced
  run_bpftrace
  run_vramscope
done

# median of column $2 of file $1
median() { awk -v c="$2" '{print $c}' "$1" | sort -g | awk '{v[NR]=$1} END {if (NR % 2) print v[(NR+1)/2]; else print (v[NR/2]+v[NR/2+1])/2}'; }
ns_iter() { awk -v v="$1" -v n="$N" 'BEGIN {printf "%.1f", v / n}'; }

u=$(median "$TMP/untraced" 1)
b=$(median "$TMP/bpftrace" 1)
v=$(median "$TMP/vramscope" 1)
read -r u_it b_it v_it b_call v_call ratio < <(awk -v u="$u" -v b="$b" -v v="$v" -v n="$N" 'BEGIN {
  ui = u / n; bi = b / n; vi = v / n; bc = (bi - ui) / 4; vc = (vi - ui) / 4
  printf "%.1f %.1f %.1f %.0f %.0f %.2f\n", ui, bi, vi, bc, vc, (bc > 0 ? vc / bc : 0) }')

echo
echo "per run (ns per iteration; wall ms of the whole command, attach and exit included):"
printf "  %-4s %14s %14s %14s %12s %12s %10s %10s %6s %8s\n" run untraced bpftrace vramscope "bpft wall" "vs wall" attach_ms detach_ms drops calls
paste -d' ' "$TMP/untraced" "$TMP/bpftrace" "$TMP/vramscope" | awk -v n="$N" '{
  printf "  %-4d %14.1f %14.1f %14.1f %12d %12d %10.2f %10.2f %6d %8d\n", NR, $1 / n, $3 / n, $5 / n, $4, $6, $7, $8, $9, $10 }'

echo
echo "medians of $RUNS runs:"
printf "  %-34s %16s %22s %14s\n" mode "ns / iteration" "ns added / probed call" "vs bpftrace"
printf "  %-34s %16s %22s %14s\n" "untraced" "$u_it" "-" "-"
printf "  %-34s %16s %22s %14s\n" "bpftrace, bare uprobe+uretprobe" "$b_it" "$b_call" "1.00x"
printf "  %-34s %16s %22s %14s\n" "vramscope trace" "$v_it" "$v_call" "${ratio}x"
echo "  target: vramscope <= 1.3x bpftrace's bare pair per call"

expected=$((4 * N))
awk -v want="$expected" -v runs="$RUNS" '
  { a[NR] = $3; d[NR] = $4; drops += $5; c[NR] = $6; unrec += $7; if ($6 < want || $6 > want + 100) bad++ }
  function med(x, n,   i, j, t) { for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (x[j] < x[i]) { t = x[i]; x[i] = x[j]; x[j] = t }
                                  return n % 2 ? x[(n + 1) / 2] : (x[n / 2] + x[n / 2 + 1]) / 2 }
  function mn(x, n,   i, m) { m = x[1]; for (i = 2; i <= n; i++) if (x[i] < m) m = x[i]; return m }
  function mx(x, n,   i, m) { m = x[1]; for (i = 2; i <= n; i++) if (x[i] > m) m = x[i]; return m }
  END {
    printf "\nvramscope sessions (%d runs): attach_ms median %.2f (%.2f..%.2f), detach_ms median %.2f (%.2f..%.2f)\n",
      runs, med(a, NR), mn(a, NR), mx(a, NR), med(d, NR), mn(d, NR), mx(d, NR)
    printf "  call_drops total %d, unrecorded_calls total %d, calls_recorded %d..%d (expected 4N = %d + a few): %s\n",
      drops, unrec, mn(c, NR), mx(c, NR), want, bad ? "MISMATCH" : "OK" }' "$TMP/vramscope"
