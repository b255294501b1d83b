#!/usr/bin/env bash
# What the probes cost per call on the GPU machine, and what that makes at
# real workloads' call rates (examples/gpu/probe_cost.py says how). Replaces
# wall-clock A/B runs, whose run-to-run spread (+-20%) hides a cost this small.
#
#   sudo bash examples/gpu/probe_cost.sh [ROUNDS] [N] [OUTDIR]
#
# ROUNDS processes per mode (untraced, runtime probes only, default set,
# --launches), in rotating order; N calls per timed loop of the cheap calls
# (N/50 cudaMalloc+cudaFree pairs, N/2 PyTorch launches), 3 loops per process.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/common.sh"
rounds=${1:-5}
n=${2:-50000}
out=${3:-/tmp/vramscope-probe-cost}
mkdir -p "$out"
echo "host $(hostname), kernel $(uname -r), $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null)"
exec "$py" "$here/probe_cost.py" drive --vs "$vs" --rounds "$rounds" --n "$n" --out "$out"
