#!/usr/bin/env bash
# Tracing overhead on a GPU machine: the bench workload (generate + a
# training step, timed after a warm-up) untraced, traced with the default
# probe set, and traced with --launches, alternating, N runs each; prints
# the median times and ratios, and attach/detach times.
#
#   bash examples/gpu/overhead.sh [RUNS] [OUTDIR]
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
runs=${1:-5}
out=${2:-/tmp/vramscope-overhead}
mkdir -p "$out"
source "$here/common.sh"
for i in $(seq 1 "$runs"); do
  for mode in untraced default launches; do
    j="$out/$mode-$i.json"; db="$out/$mode-$i.db"; rm -f "$db"*
    case $mode in
      untraced) "$py" "$here/workloads.py" bench --out "$j" >/dev/null 2>&1 ;;
      default) "$vs" trace -q --db "$db" -- "$py" "$here/workloads.py" bench --out "$j" >/dev/null 2>&1 ;;
      launches) "$vs" trace -q --launches --db "$db" -- "$py" "$here/workloads.py" bench --out "$j" >/dev/null 2>&1 ;;
    esac
    echo "$mode run $i: median step $("$py" -c "import json, statistics; print(round(statistics.median(json.load(open('$j'))['step_s']), 4))") s"
  done
done
"$py" - "$out" "$runs" <<'PY'
import json, sqlite3, statistics, sys
out, runs = sys.argv[1], int(sys.argv[2])
# Per run: the median time of its timed steps (robust to a stray slow step); then the median over runs.
t = {m: [statistics.median(json.load(open(f"{out}/{m}-{i}.json"))["step_s"]) for i in range(1, runs + 1)]
     for m in ("untraced", "default", "launches")}
base = statistics.median(t["untraced"])
print(f"\n{'probe set':<12} {'step s':>9} {'ratio':>8}  per-run median step (s)")
for m in t:
    print(f"{m:<12} {statistics.median(t[m]):9.3f} {statistics.median(t[m]) / base:8.4f}  "
          + " ".join(f"{x:.4f}" for x in t[m]))
for m in ("default", "launches"):
    rows = [sqlite3.connect(f"{out}/{m}-{i}.db").execute(
        "SELECT attach_ms, detach_ms, calls_recorded, call_drops, "
        "(SELECT SUM(probes_attached) FROM libraries) FROM sessions").fetchone() for i in range(1, runs + 1)]
    print(f"{m}: attach {statistics.median(r[0] for r in rows):.0f} ms, detach {statistics.median(r[1] for r in rows):.0f} ms, "
          f"{rows[0][4]} probes, calls per run {statistics.median(r[2] for r in rows):.0f}, drops {sum(r[3] for r in rows)}")
PY
