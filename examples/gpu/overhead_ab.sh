#!/usr/bin/env bash
# Tracing overhead measured inside one process: the bench_loop workload runs
# steps continuously while vramscope attaches (--pid) and detaches in turn:
# untraced, default probe set, untraced, --launches, CYCLES times, WINDOW
# seconds each. Step times inside each traced window are compared with the
# untraced windows around it (the same process, the same GPU state), which
# removes the run-to-run spread that separate processes show.
#
#   bash examples/gpu/overhead_ab.sh [CYCLES] [WINDOW_S] [OUTDIR]
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cycles=${1:-3}
win=${2:-12}
out=${3:-/tmp/vramscope-overhead-ab}
mkdir -p "$out"
source "$here/common.sh"
total=$(( cycles * 4 * win + 40 ))
rm -f "$out"/*.db* "$out/loop.json"
"$py" "$here/workloads.py" bench_loop --seconds "$total" --out "$out/loop.json" > "$out/loop.log" 2>&1 &
target=$!
for _ in $(seq 1 900); do grep -q '"start"' "$out/loop.json" 2>/dev/null && break; sleep 0.1; done
sleep 25  # model built, warm-up step done
for c in $(seq 1 "$cycles"); do
  sleep "$win"
  "$vs" trace -q --db "$out/default-$c.db" --pid "$target" --duration "${win}s" > "$out/default-$c.log" 2>&1
  sleep "$win"
  "$vs" trace -q --launches --db "$out/launches-$c.db" --pid "$target" --duration "${win}s" > "$out/launches-$c.log" 2>&1
done
wait "$target"
"$py" - "$out" "$cycles" <<'PY'
import json, sqlite3, statistics, sys
out, cycles = sys.argv[1], int(sys.argv[2])
steps = json.load(open(f"{out}/loop.json"))["steps"]
def window(db):
    s = sqlite3.connect(db).execute("SELECT start_ts_ns, end_ts_ns, attach_ms, detach_ms, calls_recorded, "
                                    "call_drops FROM sessions").fetchone()
    # Probes are live from start + attach to end - (detach): only steps wholly inside count.
    lo, hi = s[0] + s[2] * 1e6, s[1]
    return lo, hi, s
def inside(lo, hi):
    return [(b - a) / 1e9 for a, b in steps if a >= lo and b <= hi]
rows = []
for mode in ("default", "launches"):
    for c in range(1, cycles + 1):
        lo, hi, s = window(f"{out}/{mode}-{c}.db")
        traced = inside(lo, hi)
        # The untraced steps just before this window, over as long a span.
        before = inside(lo - (hi - lo) - 2e9, lo - 2e9)
        if traced and before:
            rows.append((mode, c, statistics.median(before), statistics.median(traced), len(before), len(traced), s))
print(f"{'probe set':<10} {'cycle':>5} {'untraced step s':>16} {'traced step s':>14} {'ratio':>7} {'steps':>9} "
      f"{'calls':>8} {'drops':>5} {'attach ms':>9} {'detach ms':>9}")
for m, c, u, t, nu, nt, s in rows:
    print(f"{m:<10} {c:>5} {u:>16.4f} {t:>14.4f} {t / u:>7.4f} {nu:>4}/{nt:<4} {s[4]:>8} {s[5]:>5} {s[2]:>9.0f} {s[3]:>9.0f}")
for m in ("default", "launches"):
    r = [t / u for mm, c, u, t, *_ in rows if mm == m]
    if r:
        print(f"{m}: median ratio {statistics.median(r):.4f} over {len(r)} cycles")
PY
