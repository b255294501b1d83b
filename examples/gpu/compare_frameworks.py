#!/usr/bin/env python3
"""Compares a vramscope trace with a framework's own memory accounting.

    compare_frameworks.py TRACE.db STATS.json [--label NAME]

STATS.json is what frameworks.py wrote. At each checkpoint (CLOCK_MONOTONIC,
the trace's clock), the GPU memory (device, VMM physical, managed) that the
framework's allocator held by the trace, computed from the allocations table
up to that instant, is compared with the framework's own number:

  cupy   outstanding == MemoryPool.total_bytes()   (the pool's blocks, used or free)
  jax    outstanding == memory_stats()["pool_bytes"], peak == "peak_pool_bytes"
  numba  outstanding, each allocation rounded up to the driver's 2 MiB granularity == the device memory
         cuMemGetInfo shows taken since the first checkpoint (Numba has no pool and no statistics: one
         cuMemAlloc per array; the device's own count is the accounting to meet)

The allocator is known by its calling library, as the findings know it
(tools/findings/frameworks.cpp); Numba has no pool, so every allocation of
the process counts. Prints one row per comparison; exits 1 on any mismatch.
"""
import argparse
import json
import sqlite3
import sys

GPU_KINDS = ("device", "managed", "vmm_physical")
MARKERS = {"cupy": ("/cupy_backends/", "/cupy/"),
           "jax": ("xla_cuda_plugin", "xla_extension", "/jaxlib/", "/jax_plugins/"),
           "numba": None}
# (framework number, what the trace gives, the trace's function)
COMPARED = {"cupy": [("pool_total_bytes", "outstanding")],
            "jax": [("pool_bytes", "outstanding"), ("peak_pool_bytes", "peak")],
            "numba": [("device_used_bytes", "outstanding_rounded")]}
GRANULARITY = 2 << 20  # the driver's allocation granularity


def allocations(db, pid, framework):
    """(alloc_ts, free_ts or None, bytes, caller path) of the framework's GPU allocations."""
    rows = db.execute(
        "SELECT a.alloc_ts_ns, CASE WHEN a.end_reason = 'freed' THEN a.free_ts_ns END, a.bytes, "
        "COALESCE(o.path, '') FROM allocations a LEFT JOIN objects o ON o.id = a.caller_id "
        f"WHERE a.pid = ? AND a.kind IN ({','.join('?' * len(GPU_KINDS))})", (pid, *GPU_KINDS)).fetchall()
    markers = MARKERS[framework]
    return [r for r in rows if markers is None or any(m in r[3] for m in markers)]


def at(rows, t):
    events = sorted([(a, b) for a, f, b, _ in rows if a <= t] + [(f, -b) for a, f, b, _ in rows if f is not None and f <= t])
    cur = peak = 0
    for _, d in events:
        cur += d
        peak = max(peak, cur)
    rounded = sum(-(-b // GRANULARITY) * GRANULARITY for a, f, b, _ in rows if a <= t and (f is None or f > t))
    return {"outstanding": cur, "peak": peak, "outstanding_rounded": rounded,
            "allocations": sum(1 for a, *_ in rows if a <= t)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("db")
    ap.add_argument("stats")
    ap.add_argument("--label", default=None)
    args = ap.parse_args()
    doc = json.load(open(args.stats))
    db = sqlite3.connect(f"file:{args.db}?mode=ro", uri=True)
    framework = doc["framework"]
    rows = allocations(db, doc["pid"], framework)
    label = args.label or doc["workload"]
    ok = True
    print(f"{'workload':<14} {'checkpoint':<16} {'metric':<18} {'framework':>14} {'vramscope':>14} equal")
    first_free = doc["checkpoints"][0].get("device_free_bytes")
    for cp in doc["checkpoints"]:
        if first_free is not None:
            cp["device_used_bytes"] = first_free - cp["device_free_bytes"]
        ours = at(rows, cp["t_ns"])
        for metric, traced in COMPARED[framework]:
            equal = cp[metric] == ours[traced]
            ok &= equal
            print(f"{label:<14} {cp['label']:<16} {metric:<18} {cp[metric]:>14} {ours[traced]:>14} "
                  f"{'yes' if equal else 'NO'}")
    callers = sorted({r[3] for r in rows})
    print(f"{label}: {len(rows)} allocations by {', '.join(c.rsplit('/', 1)[-1] for c in callers) or 'none'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
