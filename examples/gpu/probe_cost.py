#!/usr/bin/env python3
"""What vramscope's probes add per CUDA call, measured on the GPU machine.

`bench` (one process): times cheap CUDA calls made straight through ctypes on
the libcudart that PyTorch loaded, plus a PyTorch kernel launch, REPS times
each, and writes ns/call and each repetition's CLOCK_MONOTONIC window.

`drive`: runs `bench` untraced and under `vramscope trace` (runtime probes
only, the default set, the default set + --launches), ROUNDS times in
alternating order; counts from each trace how many probes fired per call
inside each window; measures the probed-call rate of real workloads (the
bench workload traced with the default set and with --launches, during its
timed steps; the shipped example traces over their whole sessions); prints
ns added per call and per probe hit (median over rounds), the overhead that
gives at each workload's rate, the tracer's own CPU, and attach/detach times.

    python3 probe_cost.py drive --vs build/vramscope [--rounds 5] [--n 50000] [--out DIR]
"""
import argparse
import ctypes
import glob
import json
import os
import site
import sqlite3
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = ["getdevice", "memgetinfo", "setdevice", "streamsync", "malloc_free_2MiB", "torch_launch"]
# Fewer iterations for the slow ones (a cudaMalloc+cudaFree pair of 2 MiB is ~100-300 us).
SCALE = {"malloc_free_2MiB": 50, "torch_launch": 2}


def bench(args):
    import torch
    torch.cuda.init()
    x = torch.zeros(1, device="cuda")
    torch.cuda.synchronize()
    path = next(l.split()[-1] for l in open("/proc/self/maps") if "/libcudart.so" in l)
    rt = ctypes.CDLL(path)
    P = ctypes.POINTER
    rt.cudaGetDevice.argtypes = [P(ctypes.c_int)]
    rt.cudaSetDevice.argtypes = [ctypes.c_int]
    rt.cudaMemGetInfo.argtypes = [P(ctypes.c_size_t), P(ctypes.c_size_t)]
    rt.cudaStreamSynchronize.argtypes = [ctypes.c_void_p]
    rt.cudaMalloc.argtypes = [P(ctypes.c_void_p), ctypes.c_size_t]
    rt.cudaFree.argtypes = [ctypes.c_void_p]
    dev, free, total, ptr = ctypes.c_int(), ctypes.c_size_t(), ctypes.c_size_t(), ctypes.c_void_p()
    stream = torch.cuda.Stream()
    sh = ctypes.c_void_p(stream.cuda_stream)

    def run(test, n):
        if test == "getdevice":          # not probed: the control
            f, a = rt.cudaGetDevice, ctypes.byref(dev)
            for _ in range(n): f(a)
        elif test == "memgetinfo":
            f, a, b = rt.cudaMemGetInfo, ctypes.byref(free), ctypes.byref(total)
            for _ in range(n): f(a, b)
        elif test == "setdevice":
            f = rt.cudaSetDevice
            for _ in range(n): f(0)
        elif test == "streamsync":       # an idle stream
            f = rt.cudaStreamSynchronize
            for _ in range(n): f(sh)
        elif test == "malloc_free_2MiB":
            m, fr, a = rt.cudaMalloc, rt.cudaFree, ctypes.byref(ptr)
            for _ in range(n):
                m(a, 2 << 20)
                fr(ptr)
        elif test == "torch_launch":
            for _ in range(n): x.add_(1)
            torch.cuda.synchronize()

    # Every call must succeed, or the timings mean nothing.
    assert rt.cudaGetDevice(ctypes.byref(dev)) == 0 and rt.cudaSetDevice(0) == 0
    assert rt.cudaMemGetInfo(ctypes.byref(free), ctypes.byref(total)) == 0 and rt.cudaStreamSynchronize(sh) == 0
    assert rt.cudaMalloc(ctypes.byref(ptr), 2 << 20) == 0 and rt.cudaFree(ptr) == 0
    for t in TESTS:
        run(t, 200)  # warm-up
    res = {"cudart": path, "tests": {}}
    for t in TESTS:
        n = max(args.n // SCALE.get(t, 1), 100)
        reps = []
        for _ in range(args.reps):
            a = time.monotonic_ns()
            run(t, n)
            b = time.monotonic_ns()
            reps.append([a, b])
        res["tests"][t] = {"n": n, "windows": reps, "ns_per_call": [(b - a) / n for a, b in reps]}
    json.dump(res, open(args.out, "w"))


def cudart_path():
    for d in site.getsitepackages() + [site.getusersitepackages()]:
        hits = sorted(glob.glob(f"{d}/nvidia/*/lib/libcudart.so.*"))
        if hits:
            return hits[0]
    sys.exit("libcudart not found beside PyTorch; pass --cudart")


MODES = {
    "untraced": None,
    # Meant as libcudart's probes alone, but in launch mode vramscope also attaches to every CUDA library
    # the process maps (src/trace_command.cpp), so on the H100 this arm probed libcuda too (hits say so).
    "runtime_only": ["--cuda-lib", "{cudart}"],
    "default": [],                               # libcudart + libcuda (nested driver calls too)
    "launches": ["--launches"],
}


def traced(vs, db, extra, cmd):
    return [vs, "trace", "-q", "--db", db] + extra + ["--"] + cmd


def run_timed(cmd, log):
    """Runs cmd; returns (wall s, CPU s of the whole process tree it waited for)."""
    t0 = time.monotonic()
    with open(log, "w") as f:
        p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT)
        _, status, ru = os.wait4(p.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        print(f"FAILED ({os.waitstatus_to_exitcode(status)}): {' '.join(cmd)}; see {log}", flush=True)
    return time.monotonic() - t0, ru.ru_utime + ru.ru_stime


def session(db):
    c = sqlite3.connect(db)
    s = c.execute("SELECT start_ts_ns, end_ts_ns, attach_ms, detach_ms, calls_recorded, call_drops, "
                  "unrecorded_calls FROM sessions ORDER BY id DESC LIMIT 1").fetchone()
    return c, s


def hits_in(c, lo, hi):
    # apis outermost, so that each API's rows in the window come from the (api_id, ts_ns) index.
    return dict(c.execute("SELECT a.layer, COUNT(*) FROM apis a CROSS JOIN call_rows c ON c.api_id = a.id "
                          "AND c.ts_ns >= ? AND c.ts_ns < ? GROUP BY a.layer", (lo, hi)).fetchall())


def drive(args):
    vs, py, out = args.vs, sys.executable, args.out
    os.makedirs(out, exist_ok=True)
    cudart = args.cudart or cudart_path()
    print(f"vramscope {vs}; libcudart {cudart}; {args.rounds} rounds, n={args.n}, reps={args.reps}", flush=True)
    order = list(MODES)
    runs = []  # (mode, round, result json, db or None, wall, tracer+target CPU)
    for r in range(1, args.rounds + 1):
        k = (r - 1) % len(order)
        for mode in order[k:] + order[:k]:  # rotate the order each round
            j, db = f"{out}/{mode}-{r}.json", f"{out}/{mode}-{r}.db"
            for f in glob.glob(db + "*"):
                os.remove(f)
            cmd = [py, os.path.abspath(__file__), "bench", "--out", j, "--n", str(args.n), "--reps", str(args.reps)]
            if MODES[mode] is not None:
                cmd = traced(vs, db, [a.format(cudart=cudart) for a in MODES[mode]], cmd)
            wall, cpu = run_timed(cmd, f"{out}/{mode}-{r}.log")
            try:
                res = json.load(open(j))
            except Exception as e:
                print(f"round {r} {mode}: no result ({e!r}); log tail: {open(f'{out}/{mode}-{r}.log').read()[-800:]}",
                      flush=True)
                continue
            runs.append((mode, r, res, db if MODES[mode] is not None else None, wall, cpu))
            med = {t: statistics.median(v["ns_per_call"]) for t, v in res["tests"].items()}
            print(f"round {r} {mode:<12} wall {wall:5.1f} s  " + "  ".join(f"{t} {med[t]:.0f}" for t in TESTS),
                  flush=True)

    # Everything the summary needs, compact, so it can be re-run anywhere (summarize --data).
    data = {"order": order, "runs": []}
    for mode, r, res, db, wall, cpu in runs:
        run = {"mode": mode, "round": r, "wall": wall, "cpu": cpu, "tests": {}}
        c, s = session(db) if db else (None, None)
        run["session"] = s
        for t, tt in res["tests"].items():
            h = {}
            if c:
                for a, b in tt["windows"]:
                    for layer, cnt in hits_in(c, a, b).items():
                        h[layer] = h.get(layer, 0) + cnt
            run["tests"][t] = {"n": tt["n"], "ns_per_call": tt["ns_per_call"], "hits": h}
        data["runs"].append(run)
    json.dump(data, open(f"{out}/data.json", "w"))

    # Probed-call rates of real workloads.
    data["rates"] = []
    if args.bench_workload:
        for m in ("default", "launches"):
            j, db = f"{out}/workload-{m}.json", f"{out}/workload-{m}.db"
            for f in glob.glob(db + "*"):
                os.remove(f)
            cmd = traced(vs, db, MODES[m], [py, f"{HERE}/workloads.py", "bench", "--out", j])
            run_timed(cmd, f"{out}/workload-{m}.log")
            try:
                doc = json.load(open(j))
                end = next(cp["t_ns"] for cp in doc["checkpoints"] if cp["label"] == "timed")
                lo = end - int(doc["elapsed_s"] * 1e9)
                c, s = session(db)
                h = hits_in(c, lo, end)
                launches = c.execute("SELECT COUNT(*) FROM calls WHERE ts_ns >= ? AND ts_ns < ? AND api LIKE '%Launch%'",
                                     (lo, end)).fetchone()[0]
                data["rates"].append([f"bench steps ({m})", m, h, launches, doc["elapsed_s"], s])
            except Exception as e:  # keep the rest of the results
                print(f"bench workload ({m}) failed: {e!r}", flush=True)
    for d in sorted(glob.glob(f"{HERE}/../traces/*/trace.db")):
        c, s = session(d)
        h = dict(c.execute("SELECT layer, COUNT(*) FROM calls GROUP BY layer").fetchall())
        data["rates"].append([f"{os.path.basename(os.path.dirname(d))} (shipped)", "default", h, 0, (s[1] - s[0]) / 1e9, s])
    json.dump(data, open(f"{out}/data.json", "w"))
    summarize(data)


def summarize(data):
    order, runs = data["order"], data["runs"]

    def per_run(mode, t):  # each run's median over its repetitions
        return [statistics.median(r["tests"][t]["ns_per_call"]) for r in runs if r["mode"] == mode]
    base = {t: statistics.median(per_run("untraced", t)) for t in TESTS}
    print("\n== ns per call (median over rounds of each run's median); added = mode - untraced")
    print(f"{'test':<18} {'untraced':>9} " + " ".join(f"{m:>26}" for m in order[1:]))
    cost = {}
    for t in TESTS:
        cells = []
        for m in order[1:]:
            v = statistics.median(per_run(m, t))
            hr = statistics.median(r["tests"][t]["hits"].get("runtime", 0) / (r["tests"][t]["n"] * len(r["tests"][t]["ns_per_call"]))
                                   for r in runs if r["mode"] == m)
            hd = statistics.median(r["tests"][t]["hits"].get("driver", 0) / (r["tests"][t]["n"] * len(r["tests"][t]["ns_per_call"]))
                                   for r in runs if r["mode"] == m)
            cost[(m, t)] = (v - base[t], hr, hd)
            cells.append(f"{v:8.0f} {v - base[t]:+7.0f} {hr:.2f}r+{hd:.2f}d")
        print(f"{t:<18} {base[t]:9.0f} " + " ".join(f"{c:>26}" for c in cells))
    print("(cells: ns/call, ns added vs untraced, probe hits per call: r = libcudart, d = libcuda)")
    print("untraced spread over rounds (ns/call): "
          + "; ".join(f"{t} {min(per_run('untraced', t)):.0f}-{max(per_run('untraced', t)):.0f}" for t in TESTS))
    print("\n== ns added per probe hit (ns added / hits per call): per round, then the median")
    per_hit = {}
    for m in order[1:]:
        for t in TESTS:
            added, hr, hd = cost[(m, t)]
            if hr + hd < 0.5:
                continue
            each = [(x - base[t]) / (hr + hd) for x in per_run(m, t)]
            per_hit[(m, t)] = statistics.median(each)
            print(f"{m:<12} {t:<18} {per_hit[(m, t)]:7.0f} ns/hit   rounds: " + " ".join(f"{e:.0f}" for e in each))

    print("\n== attach / detach (ms) and drops, per probe set")
    for m in order[1:]:
        ss = [r["session"] for r in runs if r["mode"] == m]
        print(f"{m:<12} attach median {statistics.median(s[2] for s in ss):6.1f} ({min(s[2] for s in ss):.1f}-{max(s[2] for s in ss):.1f})"
              f"  detach median {statistics.median(s[3] for s in ss):6.1f} ({min(s[3] for s in ss):.1f}-{max(s[3] for s in ss):.1f})"
              f"  calls/run {statistics.median(s[4] for s in ss):.0f}  drops {sum(s[5] for s in ss)}  unrecorded {sum(s[6] for s in ss)}")
    print("process-tree CPU s per run (tracer + bench), median: "
          + "  ".join(f"{m} {statistics.median(r['cpu'] for r in runs if r['mode'] == m):.2f}" for m in order))

    print("\n== probed-call rates of workloads and the overhead they give")
    cands = {m: [v for (mm, _), v in per_hit.items() if mm == m] for m in order[1:]}
    hit_cost = {m: max(v) for m, v in cands.items() if v}
    print(f"{'workload':<28} {'span s':>7} {'hits/s':>9} {'(r / d)':>15} {'launch hits/s':>14} {'attach':>7} {'detach':>7} {'overhead %':>11}")
    for name, m, h, launches, secs, s in data.get("rates", []):
        rate = sum(h.values()) / secs
        ov = rate * hit_cost.get(m, float("nan")) / 1e9 * 100
        rd = f"{h.get('runtime', 0) / secs:.0f} / {h.get('driver', 0) / secs:.0f}"
        print(f"{name:<28} {secs:7.1f} {rate:9.0f} {rd:>15} {launches / secs:14.0f} {s[2]:7.1f} {s[3]:7.1f} {ov:11.4f}")
    print("(overhead % = hits/s x the largest per-hit cost measured for that probe set ("
          + ", ".join(f"{m} {v:.0f} ns" for m, v in hit_cost.items())
          + ") / 1e9 x 100: the traced threads' added CPU time per second of run time; span = the timed steps"
          " for the bench workload, the whole session for the shipped traces)")


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bench")
    b.add_argument("--out", required=True)
    b.add_argument("--n", type=int, default=50000)
    b.add_argument("--reps", type=int, default=3)
    d = sub.add_parser("drive")
    d.add_argument("--vs", required=True)
    d.add_argument("--out", default="/tmp/vramscope-probe-cost")
    d.add_argument("--rounds", type=int, default=5)
    d.add_argument("--n", type=int, default=50000)
    d.add_argument("--reps", type=int, default=3)
    d.add_argument("--cudart", default="")
    d.add_argument("--no-bench-workload", dest="bench_workload", action="store_false")
    sm = sub.add_parser("summarize")
    sm.add_argument("--data", required=True)
    args = ap.parse_args()
    if args.cmd == "bench":
        bench(args)
    elif args.cmd == "drive":
        drive(args)
    else:
        summarize(json.load(open(args.data)))


if __name__ == "__main__":
    main()
