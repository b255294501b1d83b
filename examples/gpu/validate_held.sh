#!/usr/bin/env bash
# Validates vramscope's record of GPU memory held without being allocated
# (issue 12 item 5) against PyTorch's own accounting: CUDA IPC to a child
# process (also with expandable segments: cuMemExport/ImportFromShareableHandle), cudaHostRegister and pin_memory(), a captured CUDA graph, and the
# cudaMallocAsync backend's pool before and after empty_cache(). Run as root
# from the repository on a machine with an NVIDIA GPU and PyTorch:
#
#   bash examples/gpu/validate_held.sh [OUTDIR]
#
# Uses examples/gpu/bundle/ (scripts/bundle.sh) else build/vramscope, as
# validate.sh. Traces the four runs of held_memory.py (each writes its JSON
# lines to OUTDIR/NAME.jsonl; vramscope's log and summary go to NAME.log),
# then compares (compare_held.py: a table of equal / explained / mismatch per
# check) and exits non-zero on any mismatch.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-/tmp/vramscope-held}
mkdir -p "$out"
source "$here/common.sh"
nvml=
for f in /usr/local/nvidia/lib64/libnvidia-ml.so.1 /usr/local/nvidia/lib64/libnvidia-ml.so.[0-9]*; do
  [ -e "$f" ] && { nvml=$f; break; }
done
nvml_args=(); [ -n "$nvml" ] && nvml_args=(--nvml-lib "$nvml")
echo "vramscope: $vs; python: $py; NVML: ${nvml:-none found}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null

trace() {  # trace NAME [ENV=VAL...] -- ARGS...: held_memory.py ARGS under vramscope trace
  local name=$1; shift
  local envs=()
  while [ "$1" != "--" ]; do envs+=("$1"); shift; done
  shift
  rm -f "$out/$name".db* "$out/$name.jsonl"
  echo "=== $name ${envs[*]}"
  local t0=$SECONDS
  env PYTHONUNBUFFERED=1 "${envs[@]}" "$vs" trace --db "$out/$name.db" "${nvml_args[@]}" -- \
    "$py" "$here/held_memory.py" "$@" > "$out/$name.jsonl" 2> "$out/$name.log"
  echo "    traced (exit $?, $((SECONDS - t0)) s); $(grep -c . "$out/$name.jsonl") lines; errors: $(grep -c '"event": "error"' "$out/$name.jsonl")"
  grep -E '^vramscope: session|^  pid ' "$out/$name.log" | sed 's/^/    /'
}

trace main -- main --replays 25
trace pinned PYTORCH_CUDA_ALLOC_CONF=pinned_use_cuda_host_register:True,pinned_num_register_threads:1 -- pinned
trace async PYTORCH_CUDA_ALLOC_CONF=backend:cudaMallocAsync -- async
trace expandable PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True -- ipc

"$py" "$here/compare_held.py" --dir "$out" | tee "$out/compare.txt"
status=${PIPESTATUS[0]}
for name in main pinned async expandable; do "$vs" report --db "$out/$name.db" > "$out/$name.report.txt" 2>&1; done
exit "$status"
