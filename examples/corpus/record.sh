#!/usr/bin/env bash
# Records the labeled corpus (examples/corpus/manifest.json) on a machine with an NVIDIA GPU and
# PyTorch. As root, from the repository:
#
#   bash examples/corpus/record.sh OUTDIR [NAME...]      # NAMEs restrict the set
#   CORPUS_SET=heldout bash examples/corpus/record.sh OUTDIR [NAME...]   # the held-out set (heldout.py)
#
# CORPUS_SET picks the set: tuning (the default: workloads.py's 30 traces) or heldout (heldout.py's 15
# traces, the manifest's "set": "heldout" entries; ~2-3 minutes; ship them to examples/corpus/traces/heldout/).
# Uses the vramscope of examples/gpu/bundle/ (scripts/bundle.sh), else build/vramscope, and the Python of
# $PYTHON, else /opt/torch/.venv/bin/python3, else python3. Per trace, in OUTDIR: NAME.db (the trace,
# VACUUMed into a rollback-journal copy like examples/traces), NAME.json (torch.cuda.memory_stats()
# checkpoints; a multi-process trace has NAME.WORKLOAD.json per worker instead), NAME.log (vramscope's and
# the workload's output), NAME.compare.txt (examples/gpu/compare.py against the checkpoints). One line
# per trace on stdout (name, exit code, seconds, file size), also in OUTDIR/summary.tsv; OUTDIR/record.log
# has everything. Then OUTDIR is packed into OUTDIR.tar.gz (split into parts of 15 MiB if larger).
#
# One workload failing does not stop the others: each trace runs under a time limit
# (CORPUS_TRACE_LIMIT_S, default 90), and no trace is started after CORPUS_DEADLINE_S (default 420)
# seconds, so that the pack is made within one 10-minute command. The whole set takes ~4-5 minutes.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if [ $# -lt 1 ]; then
  echo "usage: [CORPUS_SET=tuning|heldout] bash $0 OUTDIR [NAME...]" >&2
  exit 2
fi
out=$(realpath -m "$1")
shift
if [ -z "${PYTHON:-}" ] && [ -x /opt/torch/.venv/bin/python3 ]; then export PYTHON=/opt/torch/.venv/bin/python3; fi
source "$here/../gpu/common.sh"  # sets $vs and $py
corpus_set=${CORPUS_SET:-tuning}
case "$corpus_set" in
  tuning) wl=("$py" "$here/workloads.py") ;;
  heldout) wl=("$py" "$here/heldout.py") ;;
  *) echo "record.sh: CORPUS_SET is '$corpus_set'; the sets: tuning (default), heldout" >&2; exit 2 ;;
esac
trace_limit=${CORPUS_TRACE_LIMIT_S:-90}
deadline=${CORPUS_DEADLINE_S:-420}
export PYTHONUNBUFFERED=1

# Every trace, in recording order (the manifest's names).
all=(leak_default leak_expandable leak_async leak_paced leak_slow leak_loss_accum leak_silent
     multi_leak multi_leak_vs_warmup attach_leak attach_healthy
     live_after_empty_cache_list live_after_empty_cache_optimizer released_clean_model released_clean_serving
     cache_held_idle cache_held_serving oom_hard oom_retry
     plateau_context plateau_context_paced plateau_warmup plateau_step healthy_serving healthy_training
     quiet_sync quiet_copies contention_sync contention_copies exit_holding_state)
if [ "$corpus_set" = heldout ]; then
  all=(kv_cache_dict_leak conv_metrics_leak late_phase_leak stream_prefetch_leak multi_second_leaks
       notebook_live_after_empty_cache notebook_reset_clean gc_cycle_clean cache_held_after_eval
       oom_single_request conv_training_healthy kv_prealloc_healthy async_serving_healthy
       random_batch_plateau lru_cache_plateau)
fi
for name in "$@"; do
  if [[ " ${all[*]} " != *" $name "* ]]; then
    echo "record.sh: no trace named '$name'; the traces: ${all[*]}" >&2
    exit 2
  fi
done
wanted=("$@")

if [ "$(id -u)" -ne 0 ]; then
  echo "record.sh: vramscope trace needs root (eBPF uprobes)" >&2
  exit 2
fi
if ! "$vs" --version > /dev/null 2>&1; then
  echo "record.sh: $vs does not run (make examples/gpu/bundle with scripts/bundle.sh, or build build/vramscope)" >&2
  exit 2
fi
if ! "$py" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' > /dev/null 2>&1; then
  echo "record.sh: $py has no PyTorch with a usable GPU" >&2
  exit 2
fi

# Milliseconds of the wall clock, and seconds since such a time (bash's clock: no bc or date needed).
now_ms() {
  local us=${EPOCHREALTIME//[.,]/}
  echo $((us / 1000))
}
seconds_since() {
  local ms=$(($(now_ms) - $1))
  printf '%d.%d' $((ms / 1000)) $((ms % 1000 / 100))
}

mkdir -p "$out"
exec > >(tee -a "$out/record.log") 2>&1
start=$(now_ms)
printf 'name\texit\tseconds\tbytes\tcompare\n' > "$out/summary.tsv"
{
  echo "recorded: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "host: $(uname -a)"
  echo "vramscope: $("$vs" --version 2>&1) ($vs)"
  echo "repository: $(git -C "$here" rev-parse HEAD 2>/dev/null || echo 'not a git checkout')"
  if [ "$corpus_set" != tuning ]; then echo "corpus set: $corpus_set (${wl[1]})"; fi
  "$py" -c 'import sys, torch; print("python:", sys.version.split()[0], "torch:", torch.__version__, "cuda:", torch.version.cuda, "gpu:", torch.cuda.get_device_name(0))'
  nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv 2>&1
  echo "cpus: $(nproc)"
} > "$out/environment.txt" 2>&1
cat "$out/environment.txt"

hogs=()
trap 'if [ ${#hogs[@]} -gt 0 ]; then kill "${hogs[@]}" 2>/dev/null; fi' EXIT
trap 'exit 130' INT TERM


# want NAME: true when NAME was asked for (or no names were given) and the deadline has not passed.
want() {
  if [ ${#wanted[@]} -gt 0 ] && [[ " ${wanted[*]} " != *" $1 "* ]]; then return 1; fi
  if [ $(($(now_ms) - start)) -gt $((deadline * 1000)) ]; then
    echo "=== $1: skipped, past the ${deadline} s deadline"
    printf '%s\tskipped\t0\t0\t-\n' "$1" >> "$out/summary.tsv"
    return 1
  fi
  rm -f "$out/$1".db* "$out/$1".json "$out/$1".*.json "$out/$1".log "$out/$1".compare.txt "$out/$1".go
  echo "=== $1"
}

# vacuum DB: replaces the trace with a VACUUMed rollback-journal copy (one file, safe to open read-only).
vacuum() {
  "$py" - "$1" <<'EOF'
import os, sqlite3, sys
src = sys.argv[1]
tmp = src + ".vacuum"
if os.path.exists(tmp):
    os.remove(tmp)
con = sqlite3.connect(f"file:{src}?mode=ro", uri=True)
con.execute("VACUUM INTO ?", (tmp,))
con.close()
con = sqlite3.connect(tmp)
con.execute("PRAGMA journal_mode=DELETE")
check = con.execute("PRAGMA quick_check").fetchone()[0]
con.close()
if check != "ok":
    sys.exit(f"vacuum: {tmp}: quick_check says {check}; {src} kept as it was")
for suffix in ("-wal", "-shm", ""):
    if os.path.exists(src + suffix):
        os.remove(src + suffix)
os.replace(tmp, src)
EOF
}

# finish NAME RC T0: vacuums the trace, compares it with every checkpoints file, prints the trace's line.
finish() {
  local name=$1 rc=$2 t0=$3 db="$out/$1.db" compare="-" bytes=0
  local seconds
  seconds=$(seconds_since "$t0")
  if [ -f "$db" ]; then
    vacuum "$db" >> "$out/$name.log" 2>&1 || echo "    vacuum failed (see $name.log); the trace is kept as recorded"
    bytes=$(stat -c %s "$db")
    compare=ok
    local stats
    for stats in "$out/$name".json "$out/$name".*.json; do
      [ -f "$stats" ] || continue
      "$py" "$here/../gpu/compare.py" "$db" "$stats" --label "$name" >> "$out/$name.compare.txt" 2>&1 || compare=MISMATCH
    done
    [ -f "$out/$name.compare.txt" ] || compare=no-checkpoints
  fi
  printf '%-34s exit %-4s %6s s %10s bytes  compare %s\n' "$name" "$rc" "$seconds" "$bytes" "$compare"
  printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$rc" "$seconds" "$bytes" "$compare" >> "$out/summary.tsv"
}

# launch NAME [ENV=VAL...] -- COMMAND...: traces COMMAND (and its children), which gets --out NAME.json.
launch() {
  local name=$1
  shift
  local envs=()
  while [ "$1" != "--" ]; do envs+=("$1"); shift; done
  shift
  want "$name" || return 0
  local t0
  t0=$(now_ms)
  env "${envs[@]}" timeout -k 10 "$trace_limit" "$vs" trace -q --db "$out/$name.db" -- "$@" --out "$out/$name.json" \
    > "$out/$name.log" 2>&1
  finish "$name" $? "$t0"
}

# contended NAME WORKLOAD ARGS...: the workload pinned to CPUs 0,1 while 4 busy loops share them.
contended() {
  local name=$1
  shift
  want "$name" || return 0
  local i t0
  for i in 1 2 3 4; do
    taskset -c 0,1 sh -c 'while :; do :; done' &
    hogs+=($!)
  done
  t0=$(now_ms)
  timeout -k 10 "$trace_limit" "$vs" trace -q --db "$out/$name.db" -- taskset -c 0,1 "${wl[@]}" "$@" \
    --out "$out/$name.json" > "$out/$name.log" 2>&1
  local rc=$?
  kill "${hogs[@]}" 2>/dev/null
  wait "${hogs[@]}" 2>/dev/null
  hogs=()
  finish "$name" "$rc" "$t0"
}

# attach NAME WORKLOAD ARGS...: the workload starts untraced and holds memory; vramscope attaches with
# --pid, then the workload is told to go on (its go file).
attach() {
  local name=$1
  shift
  want "$name" || return 0
  local json="$out/$name.json" go="$out/$name.go" log="$out/$name.log" t0 pid="" i
  t0=$(now_ms)
  timeout -k 10 "$trace_limit" "${wl[@]}" "$@" --out "$json" --go-file "$go" > "$out/$name.workload.log" 2>&1 &
  local runner=$!
  for i in $(seq 1 600); do  # up to 60 s for torch, CUDA and the model
    if grep -q before_attach "$json" 2>/dev/null; then
      pid=$("$py" -c 'import json, sys; print(json.load(open(sys.argv[1]))["pid"])' "$json" 2>/dev/null) && break
    fi
    kill -0 "$runner" 2>/dev/null || break
    sleep 0.1
  done
  if [ -z "$pid" ]; then
    echo "    the workload never reached before_attach (see $name.workload.log)"
    kill "$runner" 2>/dev/null
    wait "$runner"
    finish "$name" noattach "$t0"
    return 0
  fi
  timeout -k 10 "$trace_limit" "$vs" trace -q --db "$out/$name.db" --pid "$pid" --duration 120s > "$log" 2>&1 &
  local tracer=$!
  for i in $(seq 1 300); do
    grep -q "attached in" "$log" 2>/dev/null && break
    kill -0 "$tracer" 2>/dev/null || break
    sleep 0.1
  done
  grep -q "attached in" "$log" || echo "    vramscope did not say it attached within 30 s (see $name.log); going on"
  sleep 0.5
  touch "$go"
  wait "$runner"
  local rc_workload=$?
  wait "$tracer"
  local rc_tracer=$?
  cat "$out/$name.workload.log" >> "$log"
  rm -f "$out/$name.workload.log" "$go"
  finish "$name" "$([ "$rc_tracer" -ne 0 ] && echo "$rc_tracer" || echo "$rc_workload")" "$t0"
}

# The held-out set: each workload with heldout.py's defaults (its DEFAULTS), under the allocator named.
if [ "$corpus_set" = heldout ]; then
  launch kv_cache_dict_leak -- "${wl[@]}" kv_cache_dict_leak
  launch conv_metrics_leak -- "${wl[@]}" conv_metrics_leak
  launch late_phase_leak -- "${wl[@]}" late_phase_leak
  launch stream_prefetch_leak PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True -- "${wl[@]}" stream_prefetch_leak
  launch multi_second_leaks -- "${wl[@]}" multi_second_leaks
  launch notebook_live_after_empty_cache -- "${wl[@]}" notebook_live_after_empty_cache
  launch notebook_reset_clean -- "${wl[@]}" notebook_reset_clean
  launch gc_cycle_clean -- "${wl[@]}" gc_cycle_clean
  launch cache_held_after_eval -- "${wl[@]}" cache_held_after_eval
  launch oom_single_request -- "${wl[@]}" oom_single_request
  launch conv_training_healthy -- "${wl[@]}" conv_training_healthy
  launch kv_prealloc_healthy -- "${wl[@]}" kv_prealloc_healthy
  launch async_serving_healthy PYTORCH_CUDA_ALLOC_CONF=backend:cudaMallocAsync -- "${wl[@]}" async_serving_healthy
  launch random_batch_plateau -- "${wl[@]}" random_batch_plateau
  launch lru_cache_plateau -- "${wl[@]}" lru_cache_plateau
else
launch leak_default -- "${wl[@]}" leak_after_startup --startup-s 4 --requests 40
launch leak_expandable PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True -- "${wl[@]}" leak_after_startup --startup-s 4 --requests 40
launch leak_async PYTORCH_CUDA_ALLOC_CONF=backend:cudaMallocAsync -- "${wl[@]}" leak_after_startup --startup-s 4 --requests 40
launch leak_paced -- "${wl[@]}" leak_after_startup --startup-s 2 --requests 30 --pause-ms 150
launch leak_slow -- "${wl[@]}" leak_slow --requests 400 --pause-ms 4
launch leak_loss_accum -- "${wl[@]}" leak_loss_accum --requests 60
launch leak_silent -- "${wl[@]}" leak_silent --startup-s 4 --requests 40
launch multi_leak -- "${wl[@]}" multi_leak
launch multi_leak_vs_warmup -- "${wl[@]}" multi_leak_vs_warmup
attach attach_leak attach_leak --requests 30
attach attach_healthy attach_healthy --requests 40 --pause-ms 20
launch live_after_empty_cache_list -- "${wl[@]}" live_after_empty_cache_list --requests 20 --idle-s 1
launch live_after_empty_cache_optimizer -- "${wl[@]}" live_after_empty_cache_optimizer --requests 20 --idle-s 1
launch released_clean_model -- "${wl[@]}" released_clean_model --requests 20 --idle-s 1
launch released_clean_serving -- "${wl[@]}" released_clean_serving --requests 20 --idle-s 1
launch cache_held_idle -- "${wl[@]}" cache_held_idle --idle-s 1.5
launch cache_held_serving -- "${wl[@]}" cache_held_serving --requests 30 --idle-s 1.5
launch oom_hard -- "${wl[@]}" oom_hard
launch oom_retry -- "${wl[@]}" oom_retry
launch plateau_context -- "${wl[@]}" plateau_context --growing 25 --requests 75
launch plateau_context_paced -- "${wl[@]}" plateau_context --growing 25 --requests 75 --pause-ms 100
launch plateau_warmup -- "${wl[@]}" plateau_warmup --requests 105
launch plateau_step -- "${wl[@]}" plateau_step --requests 80 --step-at 20
launch healthy_serving -- "${wl[@]}" healthy_serving --requests 60
launch healthy_training -- "${wl[@]}" healthy_training --requests 80
launch quiet_sync -- taskset -c 0,1 "${wl[@]}" sync_loop --requests 3000
launch quiet_copies -- taskset -c 0,1 "${wl[@]}" copy_loop --requests 2000
contended contention_sync sync_loop --requests 3000
contended contention_copies copy_loop --requests 2000
launch exit_holding_state -- "${wl[@]}" exit_holding_state --requests 20
fi

echo "recorded in $(seconds_since "$start") s; packing"
tar -czf "$out.tar.gz" -C "$(dirname "$out")" "$(basename "$out")"
size=$(stat -c %s "$out.tar.gz")
if [ "$size" -gt $((15 << 20)) ]; then
  split -b 15M -d "$out.tar.gz" "$out.tar.gz.part-" && rm "$out.tar.gz"
  echo "packed: $(ls "$out".tar.gz.part-* | tr '\n' ' ')($size bytes in all; join with cat $out.tar.gz.part-* > $out.tar.gz)"
else
  echo "packed: $out.tar.gz ($size bytes)"
fi
