#!/usr/bin/env bash
# Live tracing from MCP on a GPU (issue 13 item 7). Run as root from the
# repository, on a machine with an NVIDIA GPU and PyTorch:
#
#   bash examples/gpu/live_check.sh [OUTDIR]      # OUTDIR default: $OUT, else /tmp/vramscope-live
#
# 1. starts examples/gpu/leaky_server.py (a PyTorch process that keeps 4 MiB per
#    step, a step every 0.2 s) and lets it run for $WARMUP_S seconds;
# 2. examples/sessions/live_watch.py then drives `vramscope mcp --allow-trace`
#    over stdio: gpu_processes, trace_start on the server mid-run ($TRACE_S s),
#    trace_status, findings/leak_candidates/outstanding_allocations while it
#    records, trace_stop, findings; transcript live-watch.txt, numbers live.json
#    (with the trace compared to the server's own printed memory_reserved());
# 3. traces the same server from its start (vramscope trace -- python
#    leaky_server.py, same parameters), writes `vramscope report` and the same
#    questions and comparison over the steps the live trace covered (fromstart.json);
# 4. prints the verdicts side by side and exits non-zero if the live findings
#    do not name the leak as the from-start ones do.
# Uses examples/gpu/bundle/ (scripts/bundle.sh), else build/vramscope. ~3 min.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
out=${1:-${OUT:-/tmp/vramscope-live}}
mkdir -p "$out"
[ -z "${PYTHON:-}" ] && [ -x /opt/torch/.venv/bin/python ] && export PYTHON=/opt/torch/.venv/bin/python
source "$here/common.sh"
serve_s=${SERVE_S:-75}      # how long each leaky server runs
warmup_s=${WARMUP_S:-15}    # how long it runs before the live attach
trace_s=${TRACE_S:-30}      # trace_start's duration
server_args=(--seconds "$serve_s" --step-s 0.2 --leak-mib 4)
nvml=
for f in /usr/local/nvidia/lib64/libnvidia-ml.so.1 /usr/local/nvidia/lib64/libnvidia-ml.so.[0-9]*; do
  [ -e "$f" ] && { nvml=$f; break; }
done
nvml_args=(); [ -n "$nvml" ] && nvml_args=(--nvml-lib "$nvml")
echo "vramscope: $vs; python: $py; NVML: ${nvml:-none found}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null
status=0

# 1 + 2: the server, then the live watch mid-run.
traces=/tmp/vramscope-live-traces
rm -rf "$traces"
PYTHONUNBUFFERED=1 "$py" "$here/leaky_server.py" "${server_args[@]}" > "$out/server_live.jsonl" 2> "$out/server_live.err" &
server=$!
for _ in $(seq 1 600); do grep -q '"step"' "$out/server_live.jsonl" 2>/dev/null && break; sleep 0.1; done
echo "=== leaky server pid $server serving; attaching in $warmup_s s"
sleep "$warmup_s"
"$py" "$repo/examples/sessions/live_watch.py" --vramscope "$vs" --trace-dir "$traces" "${nvml_args[@]}" \
  --match leaky_server.py --duration "$trace_s" --poll 3 --transcript "$out/live-watch.txt" \
  --server-stderr "$out/mcp.log" --server-log "$out/server_live.jsonl" --json "$out/live.json" \
  > "$out/live_watch.out" 2>&1
rc=$?
echo "    live_watch exit $rc (transcript $out/live-watch.txt)"
[ $rc -eq 0 ] || status=1
wait "$server"
echo "    leaky server exit $?: $(tail -1 "$out/server_live.jsonl")"
ls -la "$traces" > "$out/traces.ls" 2>&1

# 3: the same server traced from its start.
rm -f "$out"/fromstart.db*
echo "=== from-start trace"
env PYTHONUNBUFFERED=1 "$vs" trace -q --db "$out/fromstart.db" "${nvml_args[@]}" -- \
  "$py" "$here/leaky_server.py" "${server_args[@]}" > "$out/server_fromstart.jsonl" 2> "$out/fromstart.log"
echo "    traced (exit $?): $(tail -1 "$out/server_fromstart.jsonl")"
"$vs" report --db "$out/fromstart.db" > "$out/fromstart.report.txt" 2>&1
steps=$("$py" -c '
import json, sys
c = json.load(open(sys.argv[1])).get("comparison", {})
print("%d:%d" % (c["first_step"], c["last_step"]) if "first_step" in c else "")' "$out/live.json")
"$py" "$repo/examples/sessions/live_watch.py" --vramscope "$vs" --db "$out/fromstart.db" \
  --server-log "$out/server_fromstart.jsonl" ${steps:+--steps "$steps"} --transcript "$out/fromstart-mcp.txt" \
  --json "$out/fromstart.json" > "$out/fromstart_watch.out" 2>&1 || status=1

# 4: side by side.
"$py" - "$out/live.json" "$out/fromstart.json" <<'EOF' || status=1
import json, sys
live, full = (json.load(open(p)) for p in sys.argv[1:3])
MiB = 1 << 20
def show(name, doc):
    fin = doc.get("final", {})
    print(f"{name}: findings {fin.get('finding_kinds')}")
    for c in fin.get("leak_candidates", [])[:3]:
        print(f"    leak_candidates: {c['kind']} {c['library']!r} {c['classification']} ({c['reason'][:80]}...) "
              f"growth {c['growth_bytes'] / MiB:.1f} MiB, slope {(c['slope_bytes_per_s'] or 0) / MiB:.2f} MiB/s")
    cmp = doc.get("comparison", {})
    if "steps_compared" in cmp:
        print(f"    vs the server's own accounting, steps {cmp['first_step']}..{cmp['last_step']}: "
              f"{cmp['steps_equal']} of {cmp['steps_compared']} equal; growth trace "
              f"{cmp['trace_outstanding_growth_bytes'] / MiB:.1f} MiB, memory_reserved() "
              f"{cmp['server_reserved_growth_bytes'] / MiB:.1f} MiB over {cmp['window_s']:.1f} s "
              f"({cmp['trace_growth_bytes_per_s'] / MiB:.2f} vs {cmp['server_reserved_growth_bytes_per_s'] / MiB:.2f} MiB/s)")
show("live (attached mid-run)", live)
if live.get("live"):
    print(f"  while recording (t={live['live']['at_elapsed_s']:.1f} s, coverage {live['live']['coverage']}): "
          f"findings {live['live']['finding_kinds']}")
show("from the start", full)
leak_kinds = {"leak_growth"}
ok = bool(leak_kinds & set(live.get("final", {}).get("finding_kinds") or [])) and \
     bool(leak_kinds & set(full.get("final", {}).get("finding_kinds") or [])) and \
     bool(leak_kinds & set(live.get("live", {}).get("finding_kinds") or []))
print("live_check: the live findings name the leak, as the from-start trace does" if ok else
      "live_check: VERDICTS DIFFER (see above)")
sys.exit(0 if ok else 1)
EOF
echo
[ $status -eq 0 ] && echo "live_check: done" || echo "live_check: FAILURES (see above)"
exit $status
