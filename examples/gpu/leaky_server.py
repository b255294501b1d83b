#!/usr/bin/env python3
"""A long-running PyTorch "server" that leaks GPU memory, for the live-tracing check
(issue 13 item 7: examples/gpu/live_check.sh, examples/sessions/live_watch.py).

Every step is one "request": a batch goes through a small MLP (temporaries that
the caching allocator reuses), the answer is copied to the host (`.item()`: a
cudaMemcpyAsync and a cudaStreamSynchronize per step), and a per-request
"cache entry" of --leak-mib MiB is appended to a list that is never trimmed: a
real leak. The default caching allocator serves it, so the CUDA calls seen are
its segment allocations (a 4 MiB tensor comes out of a 20 MiB segment: one
cudaMalloc every 5 steps), not one per tensor.

Each step prints one JSON line to stdout with time.monotonic_ns() (CLOCK_MONOTONIC,
the clock of vramscope's records), taken after the step's CUDA work, and the
allocator's own accounting at that instant, so a trace's numbers can be compared
with it step by step:

    {"step": 12, "t_ns": ..., "allocated_bytes": ..., "reserved_bytes": ...,
     "num_device_alloc": ..., "num_device_free": ..., "leaked_tensors": 13}

    python3 leaky_server.py --seconds 90 --step-s 0.2 --leak-mib 4
"""
import argparse
import json
import os
import sys
import time

import torch


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=90.0, help="how long to serve (default 90)")
    ap.add_argument("--step-s", type=float, default=0.2, help="one request every this many seconds (default 0.2)")
    ap.add_argument("--leak-mib", type=float, default=4.0, help="MiB kept per request (default 4)")
    ap.add_argument("--batch", type=int, default=512, help="rows per request (default 512)")
    ap.add_argument("--width", type=int, default=2048, help="MLP width (default 2048)")
    args = ap.parse_args()

    def emit(doc):
        print(json.dumps(doc), flush=True)

    dev = torch.device("cuda:0")
    torch.manual_seed(0)
    # The "model": loaded once, before serving (a few MiB of weights).
    w1 = torch.randn(args.width, args.width, device=dev) / args.width ** 0.5
    w2 = torch.randn(args.width, args.width, device=dev) / args.width ** 0.5
    torch.cuda.synchronize()
    emit({"event": "start", "pid": os.getpid(), "t_ns": time.monotonic_ns(), "torch": torch.__version__,
          "cuda": torch.version.cuda, "gpu": torch.cuda.get_device_name(0),
          "alloc_conf": os.environ.get("PYTORCH_CUDA_ALLOC_CONF", ""),
          "seconds": args.seconds, "step_s": args.step_s, "leak_mib": args.leak_mib})

    leak_elems = int(args.leak_mib * (1 << 20)) // 4  # float32
    kept = []  # the leak: one entry per request, never trimmed
    t0 = time.monotonic()
    step = 0
    while time.monotonic() - t0 < args.seconds:
        x = torch.randn(args.batch, args.width, device=dev)
        h = torch.relu(x @ w1)
        y = h @ w2
        answer = y.mean().item()  # cudaMemcpyAsync DtoH + cudaStreamSynchronize
        kept.append(torch.empty(leak_elems, device=dev).fill_(answer))
        del x, h, y
        torch.cuda.synchronize()
        stats = torch.cuda.memory_stats()
        emit({"step": step, "t_ns": time.monotonic_ns(),
              "allocated_bytes": torch.cuda.memory_allocated(),
              "reserved_bytes": torch.cuda.memory_reserved(),
              "num_device_alloc": int(stats.get("num_device_alloc", 0)),
              "num_device_free": int(stats.get("num_device_free", 0)),
              "leaked_tensors": len(kept)})
        step += 1
        # Pace the requests: the next one at its slot, whatever this one took.
        time.sleep(max(0.0, t0 + step * args.step_s - time.monotonic()))
    emit({"event": "end", "t_ns": time.monotonic_ns(), "steps": step,
          "allocated_bytes": torch.cuda.memory_allocated(), "reserved_bytes": torch.cuda.memory_reserved()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
