#!/usr/bin/env python3
"""Compares a vramscope trace with PyTorch's own accounting.

    compare.py TRACE.db STATS.json [--label NAME]

STATS.json is what workloads.py wrote: torch.cuda.memory_stats() at
checkpoints, stamped with CLOCK_MONOTONIC. For the traced process and each
checkpoint, vramscope's counts, bytes, outstanding bytes and peak (computed
from the allocations table up to that instant, for the allocations that
PyTorch's caching allocator made, i.e. those called from libc10_cuda) must
equal PyTorch's. Prints one row per comparison and exits 1 on any mismatch.
"""
import argparse
import json
import sqlite3
import sys

ALLOCATOR = "%libc10_cuda%"  # the caching allocator's library


def load(db, pid, kind):
    """(alloc_ts, free_ts or None, bytes) of the allocator's allocations of `kind`."""
    return db.execute(
        "SELECT a.alloc_ts_ns, CASE WHEN a.end_reason = 'freed' THEN a.free_ts_ns END, a.bytes "
        "FROM allocations a JOIN objects o ON o.id = a.caller_id "
        "WHERE a.pid = ? AND a.kind = ? AND o.path LIKE ?", (pid, kind, ALLOCATOR)).fetchall()


def at(rows, t):
    """Counts and bytes allocated/freed up to t, outstanding at t, peak up to t."""
    events = []
    n_alloc = n_free = b_alloc = b_free = 0
    for a, f, b in rows:
        if a <= t:
            n_alloc += 1
            b_alloc += b
            events.append((a, b))
            if f is not None and f <= t:
                n_free += 1
                b_free += b
                events.append((f, -b))
    events.sort()
    cur = peak = 0
    for _, d in events:
        cur += d
        peak = max(peak, cur)
    return {"allocs": n_alloc, "frees": n_free, "alloc_bytes": b_alloc, "free_bytes": b_free,
            "outstanding": b_alloc - b_free, "peak": peak}


def count_calls(db, pid, api, t0, t1):
    return db.execute(
        "SELECT COUNT(*) FROM calls WHERE pid = ? AND api = ? AND ret = 0 AND caller LIKE ? "
        "AND ts_ns > ? AND ts_ns <= ?", (pid, api, ALLOCATOR, t0, t1)).fetchone()[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("db")
    ap.add_argument("stats")
    ap.add_argument("--label", default=None)
    args = ap.parse_args()
    doc = json.load(open(args.stats))
    db = sqlite3.connect(f"file:{args.db}?mode=ro", uri=True)
    pid = doc["pid"]
    label = args.label or doc["workload"]
    conf = doc.get("alloc_conf", "")
    cps = doc["checkpoints"]
    rows_out = []
    ok = True

    def check(cp, metric, torch_value, ours):
        nonlocal ok
        equal = torch_value == ours
        ok &= equal
        rows_out.append((label, cp, metric, torch_value, ours, "yes" if equal else "NO"))

    # The attach workload starts tracing mid-run: compare what happened after "attached".
    base = next((c for c in cps if c["label"] == "attached"), None)
    if "expandable_segments:True" in conf:
        rows = load(db, pid, "vmm_physical")
        for c in cps:
            if base and c["t_ns"] < base["t_ns"]:
                continue
            v = at(rows, c["t_ns"])
            t0 = base["t_ns"] if base else 0
            check(c["label"], "cuMemSetAccess calls = num_device_alloc",
                  c["num_device_alloc"] - (base["num_device_alloc"] if base else 0),
                  count_calls(db, pid, "cuMemSetAccess", t0, c["t_ns"]))
            check(c["label"], "cuMemCreate bytes = reserved allocated", c["reserved_bytes.all.allocated"], v["alloc_bytes"])
            check(c["label"], "cuMemRelease bytes = reserved freed", c["reserved_bytes.all.freed"], v["free_bytes"])
            check(c["label"], "physical outstanding = reserved current", c["reserved_bytes.all.current"], v["outstanding"])
            check(c["label"], "physical peak = reserved peak", c["reserved_bytes.all.peak"], v["peak"])
    elif "cudaMallocAsync" in conf:
        rows = load(db, pid, "async")
        for c in cps:
            v = at(rows, c["t_ns"])
            check(c["label"], "async outstanding = allocated current", c["allocated_bytes.all.current"], v["outstanding"])
            check(c["label"], "async peak = allocated peak", c["allocated_bytes.all.peak"], v["peak"])
    else:
        rows = load(db, pid, "device")
        for c in cps:
            if base:
                if c["t_ns"] < base["t_ns"]:
                    continue
                v0, v = at(rows, base["t_ns"]), at(rows, c["t_ns"])
                for m, key in (("allocs", "num_device_alloc"), ("frees", "num_device_free"),
                               ("alloc_bytes", "reserved_bytes.all.allocated"), ("free_bytes", "reserved_bytes.all.freed")):
                    check(c["label"], f"delta {m} = delta {key}", c[key] - base[key], v[m] - v0[m])
                continue
            v = at(rows, c["t_ns"])
            check(c["label"], "cudaMalloc = num_device_alloc", c["num_device_alloc"], v["allocs"])
            check(c["label"], "cudaFree = num_device_free", c["num_device_free"], v["frees"])
            check(c["label"], "bytes = reserved allocated", c["reserved_bytes.all.allocated"], v["alloc_bytes"])
            check(c["label"], "freed = reserved freed", c["reserved_bytes.all.freed"], v["free_bytes"])
            check(c["label"], "outstanding = reserved current", c["reserved_bytes.all.current"], v["outstanding"])
            check(c["label"], "peak = reserved peak", c["reserved_bytes.all.peak"], v["peak"])
        if doc["workload"] == "exit_holding":
            held = db.execute(
                "SELECT COALESCE(SUM(a.bytes), 0) FROM allocations a JOIN objects o ON o.id = a.caller_id "
                "WHERE a.pid = ? AND a.kind = 'device' AND a.end_reason = 'process_exit' AND o.path LIKE ?",
                (pid, ALLOCATOR)).fetchone()[0]
            last = cps[-1]
            check(last["label"], "released at exit = reserved current", last["reserved_bytes.all.current"], held)

    w = max(len(r[2]) for r in rows_out) if rows_out else 10
    print(f"{'workload':<14} {'checkpoint':<20} {'metric':<{w}} {'pytorch':>14} {'vramscope':>14}  equal")
    for r in rows_out:
        print(f"{r[0]:<14} {r[1]:<20} {r[2]:<{w}} {r[3]:>14} {r[4]:>14}  {r[5]}")

    # Memory from outside the caching allocator, by library (cuBLAS workspace, cuDNN, ...).
    print(f"\n{label}: allocations not made by the caching allocator (pid {pid})")
    for path, kind, n, b in db.execute(
            "SELECT COALESCE(o.path, '?'), a.kind, COUNT(*), SUM(a.bytes) FROM allocations a "
            "LEFT JOIN objects o ON o.id = a.caller_id WHERE a.pid = ? AND COALESCE(o.path, '') NOT LIKE ? "
            "AND a.kind NOT IN ('vmm_reserved', 'vmm_mapped') GROUP BY 1, 2 ORDER BY 4 DESC", (pid, ALLOCATOR)):
        print(f"  {path.rsplit('/', 1)[-1]:<32} {kind:<12} {n:>6} allocations {b:>14} bytes")
    # NVML's view of the process next to what vramscope saw it hold: the difference is the CUDA
    # context and driver overhead, which no allocation call shows.
    has_nvml = db.execute("SELECT COUNT(*) FROM sqlite_master WHERE name = 'gpu_process_samples'").fetchone()[0]
    if has_nvml and db.execute("SELECT COUNT(*) FROM gpu_process_samples WHERE pid = ?", (pid,)).fetchone()[0]:
        print(f"  NVML per-process used vs traced outstanding (all callers, device/async/managed/vmm_physical):")
        for c in cps:
            row = db.execute("SELECT used_bytes, ts_ns FROM gpu_process_samples WHERE pid = ? AND ts_ns >= ? "
                             "ORDER BY ts_ns LIMIT 1", (pid, c["t_ns"])).fetchone()
            if not row:
                continue
            traced = db.execute(
                "SELECT COALESCE(SUM(bytes), 0) FROM allocations WHERE pid = ? AND kind IN "
                "('device', 'async', 'managed', 'vmm_physical') AND alloc_ts_ns <= ? "
                "AND (free_ts_ns IS NULL OR free_ts_ns > ?)", (pid, row[1], row[1])).fetchone()[0]
            print(f"    {c['label']:<20} nvml {row[0] / 2**20:9.1f} MiB  traced {traced / 2**20:9.1f} MiB  "
                  f"not from allocation calls {(row[0] - traced) / 2**20:8.1f} MiB")

    # Latency and scheduling of the memory calls: the seeds' "cudaFree p99 is the OS interrupting it".
    for api in ("cudaFree", "cudaMalloc", "cuMemCreate", "cuMemRelease", "cuMemSetAccess", "cudaFreeAsync"):
        durs = [r[0] for r in db.execute("SELECT dur_ns FROM calls WHERE pid = ? AND api = ? ORDER BY dur_ns", (pid, api))]
        if not durs:
            continue
        pct = lambda q: durs[min(len(durs) - 1, int(q * len(durs)))]
        sw, runq, off = db.execute("SELECT SUM(switches > 0), SUM(runq_ns), SUM(off_cpu_ns) FROM calls "
                                   "WHERE pid = ? AND api = ?", (pid, api)).fetchone()
        print(f"  {api:<15} n={len(durs):<6} p50 {pct(0.5) / 1e3:9.1f} us  p99 {pct(0.99) / 1e3:9.1f} us  "
              f"max {durs[-1] / 1e3:9.1f} us  descheduled {sw} calls, off-CPU {off / 1e6:.1f} ms "
              f"(runnable-waiting {runq / 1e6:.1f} ms)")
    s = db.execute("SELECT call_drops, lifecycle_drops, unrecorded_calls, attach_ms, detach_ms FROM sessions "
                   "ORDER BY id DESC LIMIT 1").fetchone()
    print(f"  drops: calls {s[0]}, lifecycle {s[1]}, unrecorded {s[2]}; attach {s[3]:.0f} ms, detach {s[4]:.0f} ms")
    if s[0] or s[1] or s[2]:
        ok = False
    print(f"\n{label}: {'ALL EQUAL' if ok else 'MISMATCH'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
