#!/usr/bin/env python3
"""Compares vramscope's record of memory held without being allocated (issue 12 item 5)
with PyTorch's own accounting, as written by held_memory.py.

    compare_held.py --dir OUTDIR        (OUTDIR/{main,pinned,async,expandable}.{db,jsonl,log}, as validate_held.sh leaves them)

Python standard library and sqlite3 only. Every row is one comparison at one instant
(the JSON lines' t_ns: CLOCK_MONOTONIC, the trace's clock) or over one window between two
such instants, and is one of

  equal      the trace's number is PyTorch's (or the program's own) number
  explained  they differ by design, and the row's note says why (no row is explained
             by a guess: each note names the rule that gives the trace's number)
  mismatch   a defect, in vramscope or in this comparison

Checks:
  1 ipc     a tensor shared with a spawned child (torch.multiprocessing): the child's ipc_mapped
            rows (one per handle, open -> close, none unmatched), each linked by its handle to the
            exporter's cudaIpcGetMemHandle of the segment, which is the exporter's allocation;
            the exporter's and the child's allocator bytes = memory_stats() at every checkpoint;
            no GPU bytes for the mapping
  2 async   backend:cudaMallocAsync: the cudaMemPoolGetAttribute values that memory_stats() read
            (reserved/used current/high) = memory_stats()'s reserved/allocated current/peak; the
            trims of empty_cache(); the attributes PyTorch sets; live cudaMallocAsync bytes
  3 host    cudaHostRegister through torch.cuda.cudart(): host_registered ptr/bytes/window;
            pin_memory() (cudaHostAlloc by default, cudaHostRegister with
            pinned_use_cuda_host_register:True) against host_memory_stats()
  1' ipc-es the same sharing with expandable_segments:True (held_memory.py ipc): the exporter's
            cuMemExportToShareableHandle of each physical handle under the shared segments, the
            child's vmm_imported rows (0 bytes, import -> cuMemRelease, none unmatched), its tensors
            inside mappings of imported handles, unmapped as it drops them; reserved bytes of both
            = the trace's cuMemCreate'd memory at every checkpoint
  4 graph   a captured CUDA graph: instantiate / launches / exec destroy by the executable graph's
            handle against the program's own replay count; the capture's cudaMalloc calls = the
            private pool's segments in memory_snapshot() and the num_device_alloc delta

Exits 1 on any mismatch.
"""
import argparse
import json
import os
import re
import sqlite3
import sys

ALLOCATOR = "libc10_cuda"
GPU_KINDS = ("device", "async", "managed", "vmm_physical")
U64 = 1 << 64


def load_jsonl(path):
    out = []
    with open(path, errors="replace") as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
    return out


def u64(v):
    return None if v is None else v % U64


def handle_digest(h):
    """What vramscope records as a 64-byte CUDA IPC handle (common/cuda_api.h handle_digest): FNV-1a over its 8
    little-endian 64-bit words."""
    d = 0xcbf29ce484222325
    for i in range(0, 64, 8):
        d = ((d ^ int.from_bytes(h[i:i + 8], "little")) * 0x100000001b3) % U64
    return d


class Trace:
    def __init__(self, path):
        self.db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)

    def q(self, sql, args=()):
        return self.db.execute(sql, args).fetchall()

    def calls(self, pid, op=None, layer="runtime", t0=None, t1=None, top=True, api=None):
        """(id, ts, dur, api, ptr, bytes, handle, ret, caller, parent_id) of pid's calls of op."""
        sql = ("SELECT c.id, c.ts_ns, c.dur_ns, a.name, c.ptr, c.bytes, c.handle, c.ret, COALESCE(o.path, ''), c.parent_id "
               "FROM call_rows c JOIN apis a ON a.id = c.api_id LEFT JOIN objects o ON o.id = c.caller_id WHERE c.pid = ?")
        args = [pid]
        if op:
            sql += " AND a.op = ?"
            args.append(op)
        if api:
            sql += " AND a.name = ?"
            args.append(api)
        if layer:
            sql += " AND a.layer = ?"
            args.append(layer)
        if top:
            sql += " AND c.parent_id IS NULL"
        if t0 is not None:
            sql += " AND c.ts_ns > ?"
            args.append(t0)
        if t1 is not None:
            sql += " AND c.ts_ns <= ?"
            args.append(t1)
        return self.q(sql + " ORDER BY c.ts_ns, c.id", args)

    def allocs(self, pid, kinds, caller=None):
        """(ptr, bytes, alloc_ts, free_ts or None, end_reason, handle, caller, kind) of pid's allocations."""
        rows = self.q(
            "SELECT a.ptr, a.bytes, a.alloc_ts_ns, CASE WHEN a.end_reason = 'freed' THEN a.free_ts_ns END, "
            "a.end_reason, a.handle, COALESCE(o.path, ''), a.kind FROM allocations a LEFT JOIN objects o ON o.id = a.caller_id "
            f"WHERE a.pid = ? AND a.kind IN ({','.join('?' * len(kinds))}) ORDER BY a.alloc_ts_ns",
            (pid, *kinds))
        return [r for r in rows if caller is None or caller in r[6]]

    @staticmethod
    def outstanding(rows, t):
        live = [r for r in rows if r[2] <= t and (r[3] is None or r[3] > t)]
        return sum(r[1] for r in live), len(live)

    @staticmethod
    def counted(rows, t):
        """(allocations made, their bytes, frees done, their bytes) up to t."""
        made = [r for r in rows if r[2] <= t]
        freed = [r for r in made if r[3] is not None and r[3] <= t]
        return len(made), sum(r[1] for r in made), len(freed), sum(r[1] for r in freed)

    def unmatched(self, pid):
        return self.q("SELECT COUNT(*) FROM unmatched_frees WHERE pid = ?", (pid,))[0][0]

    def lost(self):
        return self.q("SELECT COALESCE(SUM(call_drops + lifecycle_drops), 0) FROM sessions")[0][0]


class Table:
    def __init__(self):
        self.rows = []

    def add(self, check, item, theirs, ours, verdict=None, note=""):
        if verdict is None:
            verdict = "equal" if theirs == ours else "mismatch"
        self.rows.append((check, item, theirs, ours, verdict, note))
        return verdict

    def eq(self, check, item, theirs, ours, note=""):
        return self.add(check, item, theirs, ours, None, note)

    def print(self):
        w = max(len(r[1]) for r in self.rows) if self.rows else 10
        print(f"{'check':<6} {'compared':<{w}} {'pytorch / program':>20} {'vramscope':>20}  verdict")
        for check, item, theirs, ours, verdict, note in self.rows:
            print(f"{check:<6} {item:<{w}} {fmt(theirs):>20} {fmt(ours):>20}  {verdict}" + (f"  ({note})" if note else ""))
        print()
        print(f"{'check':<8} {'equal':>6} {'explained':>10} {'mismatch':>9}")
        for check in dict.fromkeys(r[0] for r in self.rows):
            n = {v: sum(1 for r in self.rows if r[0] == check and r[4] == v) for v in ("equal", "explained", "mismatch")}
            print(f"{check:<8} {n['equal']:>6} {n['explained']:>10} {n['mismatch']:>9}")
        n = {v: sum(1 for r in self.rows if r[4] == v) for v in ("equal", "explained", "mismatch")}
        print(f"{'all':<8} {n['equal']:>6} {n['explained']:>10} {n['mismatch']:>9}")
        return n["mismatch"] == 0


def fmt(v):
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, int) and abs(v) >= 10000:
        return f"{v:,}"
    return str(v)


def checkpoints(lines, pid=None, role=None):
    return [r for r in lines if r.get("event") == "checkpoint" and (pid is None or r["pid"] == pid)
            and (role is None or r.get("role") == role)]


def event(lines, name, **match):
    for r in lines:
        if r.get("event") == name and all(r.get(k) == v for k, v in match.items()):
            return r
    return None


def allocator_rows(tab, check, tr, pid, cps, who, expandable=False):
    """memory_stats() of the native caching allocator = the trace's libc10_cuda device allocations (with expandable
    segments: its cuMemCreate'd physical memory; num_device_alloc counts something else there, not compared)."""
    rows = tr.allocs(pid, ("vmm_physical",) if expandable else ("device",), ALLOCATOR)
    for cp in cps:
        out, _ = tr.outstanding(rows, cp["t_ns"])
        n_alloc, _, n_free, _ = tr.counted(rows, cp["t_ns"])
        tab.eq(check, f"{who} {cp['label']}: reserved current", cp["reserved_bytes.all.current"], out)
        if not expandable:
            tab.eq(check, f"{who} {cp['label']}: cudaMalloc / num_device_alloc", cp["num_device_alloc"], n_alloc)
            tab.eq(check, f"{who} {cp['label']}: cudaFree / num_device_free", cp["num_device_free"], n_free)


def child_accounting(tab, check, tr, child, ccps, log):
    """The importer's GPU bytes (every caller, every GPU kind) = its reserved at each checkpoint: what it maps of the
    exporter's memory adds none; the end summary counts every row of the child."""
    child_gpu = tr.allocs(child, GPU_KINDS)
    for c in ccps:
        out, _ = tr.outstanding(child_gpu, c["t_ns"])
        tab.eq(check, f"child {c['label']}: GPU bytes, all callers = its reserved (mapping not counted)",
               c["reserved_bytes.all.current"], out)
    summ = log_summary(log)
    if child in summ:
        n_alloc = tr.q("SELECT COUNT(*) FROM allocations WHERE pid = ?", (child,))[0][0]
        tab.eq(check, "child: allocations in the end summary = the child's rows (mappings, imports included)",
               n_alloc, summ[child][0])


def log_summary(path):
    """pid -> (allocations, GPU bytes) from vramscope's end summary."""
    out = {}
    if not os.path.exists(path):
        return out
    for line in open(path, errors="replace"):
        m = re.match(r"\s+pid (\d+) \[.*?\]: (\d+) allocations \(([^)]*) of GPU memory\)", line)
        if m:
            out[int(m.group(1))] = (int(m.group(2)), m.group(3))
    return out


# ---- 1. IPC ----

def check_ipc(tab, tr, lines, log):
    start = event(lines, "start")
    started = event(lines, "child_started")
    if start is None or started is None:
        tab.add("ipc", "child started", True, False, "mismatch", "no child_started line: " + errors(lines, "ipc"))
        return
    parent, child = start["pid"], started["child_pid"]
    pcps = checkpoints(lines, parent, "parent")
    ccps = checkpoints(lines, child, "child")
    cp = {c["label"]: c for c in pcps + ccps}
    before = cp.get("parent_before_share")
    if before is None or "child_received" not in cp:
        tab.add("ipc", "checkpoints", True, False, "mismatch", errors(lines, "ipc") + errors(lines, "ipc_child"))
        return
    shared = before["tensors"]
    segments = {v["segment_address"]: v["segment_size"] for v in shared.values()}
    tab.eq("ipc", "child pid traced (processes.how_found)", "fork",
           (tr.q("SELECT how_found FROM processes WHERE pid = ?", (child,)) or [[None]])[0][0])

    # The exporter: one cudaIpcGetMemHandle per send of a storage (PyTorch's, from libc10_cuda), each naming its
    # segment's base; then held_memory.py's own (through ctypes) to read the whole 64-byte handles.
    all_gets = tr.calls(parent, "ipc_get_handle")
    gets = [c for c in all_gets if ALLOCATOR in c[8]]
    alloc_rows = tr.allocs(parent, ("device",), ALLOCATOR)
    tab.eq("ipc", "exporter cudaIpcGetMemHandle calls by PyTorch (3 tensors sent, then a view of a)", 4, len(gets))
    for name, v in sorted(shared.items()):
        seg = v["segment_address"]
        g = [c for c in gets if c[4] == seg]
        tab.eq("ipc", f"{name}: exporter get-handle ptr = its segment's address (memory_snapshot)", seg, g[0][4] if g else None)
        t = g[0][1] if g else 0
        a = [r for r in alloc_rows if r[0] == seg and r[2] <= t and (r[3] is None or r[3] > t)]
        tab.eq("ipc", f"{name}: exporter allocation live at that ptr: bytes = segment_size", v["segment_size"], a[0][1] if a else None)

    # The importer: one ipc_mapped row per handle.
    maps = tr.allocs(child, ("ipc_mapped",))
    opens = tr.calls(child, "ipc_open")
    closes = tr.calls(child, "ipc_close")
    tab.eq("ipc", "child ipc_mapped rows = distinct segments shared", len(segments), len(maps))
    tab.eq("ipc", "child cudaIpcOpenMemHandle calls (ok) = distinct segments (PyTorch caches open handles)",
           len(segments), sum(1 for c in opens if c[7] == 0))
    tab.eq("ipc", "child cudaIpcCloseMemHandle calls (ok)", len(segments), sum(1 for c in closes if c[7] == 0))
    tab.eq("ipc", "child ipc_mapped rows ended by a close (end_reason freed)", len(maps),
           sum(1 for r in maps if r[4] == "freed"))
    tab.eq("ipc", "child unmatched frees/closes", 0, tr.unmatched(child))
    tab.eq("ipc", "exporter unmatched frees", 0, tr.unmatched(parent))
    tab.eq("ipc", "child ipc_mapped bytes (0 by design: the exporter owns and counts the memory)", 0, sum(r[1] for r in maps))
    got = cp["child_received"]["tensors"]
    windows = {"b": ("child_received_again", "child_released_b"), "a": ("child_released_b", "child_released_all"),
               "c": ("child_released_b", "child_released_all")}
    handle_of = {}  # exporter segment -> the trace's handle (the 64 bytes' digest) of PyTorch's get-handle call
    for c in gets:
        handle_of.setdefault(c[4], c[6])
    for name, v in sorted(shared.items()):
        offset = v["storage_ptr"] - v["segment_address"]
        base = got[name]["storage_ptr"] - offset  # where the child must have mapped the segment
        m = [r for r in maps if r[0] == base]
        tab.eq("ipc", f"{name}: child mapping ptr = child storage ptr - exporter offset ({offset})", base, m[0][0] if m else None)
        if not m:
            continue
        tab.eq("ipc", f"{name}: mapping's handle = the exporter's get-handle handle", handle_of.get(v["segment_address"]), m[0][5])
        linked = sorted(s for s, h in handle_of.items() if h == m[0][5] and s in segments)
        tab.add("ipc", f"{name}: exporter segments whose handle is the mapping's (the link)", 1, len(linked), None,
                "DEFECT: the handle kept is the same for several segments of the exporter" if len(linked) > 1 else "")
        w0, w1 = (cp[windows[name][0]]["t_ns"], cp[windows[name][1]]["t_ns"]) if all(k in cp for k in windows[name]) else (0, 0)
        closed = m[0][3]
        tab.add("ipc", f"{name}: mapping closed between {windows[name][0]} and {windows[name][1]}", True,
                closed is not None and w0 < closed <= w1, None)
    hs = event(lines, "ipc_handles")
    if hs is None:
        tab.add("ipc", "whole 64-byte handles read (ctypes)", True, False, "mismatch", errors(lines, "ipc_handles"))
    else:
        raw = {k: bytes.fromhex(v["handle_hex"]) for k, v in hs["handles"].items()}
        own = [c for c in all_gets if ALLOCATOR not in c[8]]
        for name, h in sorted(raw.items()):
            c = [x for x in own if x[4] == hs["handles"][name]["segment_address"]]
            tab.eq("ipc", f"{name}: trace handle = the digest of the 64-byte handle (FNV-1a over its 8 words)",
                   handle_digest(h), u64(c[0][6]) if c else None)
        vals = list(raw.values())
        varying = [i for i in range(64) if len({h[i] for h in vals}) > 1]
        ranges = []
        for i in varying:
            if ranges and ranges[-1][1] == i - 1:
                ranges[-1][1] = i
            else:
                ranges.append([i, i])
        distinct = len({handle_digest(h) for h in vals})
        tab.add("ipc", f"the trace's handles (digests of the 64 bytes) tell the {len(vals)} exporter handles apart",
                len(vals), distinct, None,
                ("DEFECT: " if distinct < len(vals) else "") + "the handles differ only in bytes "
                + ",".join(f"{a}-{b}" if a != b else str(a) for a, b in ranges)
                + f"; their bytes 0-7 take {len({h[:8] for h in vals})} value(s); as read on this driver (no documented"
                " layout): 16-23 the segment's size, 24-31 its 4 KiB pages, 8-11 the exporter's pid")
    nv = tr.q("SELECT ts_ns, used_bytes FROM gpu_process_samples WHERE pid = ? ORDER BY ts_ns", (child,))
    ok_opens = [c[1] for c in opens if c[7] == 0]
    ok_closes = [c[1] + c[2] for c in closes if c[7] == 0]
    if nv and ok_opens and ok_closes:
        held = [u for t, u in nv if max(ok_opens) < t < min(ok_closes)]
        free = [u for t, u in nv if t > max(ok_closes)]
        if held and free:
            tab.add("ipc", "child NVML used bytes: holding the 3 mappings = after closing them", held[-1], free[-1], None,
                    "NVML does not charge the importer for imported memory either" if held[-1] == free[-1] else "")
        else:
            tab.add("ipc", "child NVML used bytes: holding vs closed", None, None, "explained", "no NVML sample in one of the windows")
    # Accounting: the exporter's and the child's caching allocators at every checkpoint; the mapping adds no GPU bytes.
    allocator_rows(tab, "ipc", tr, parent, pcps, "exporter")
    allocator_rows(tab, "ipc", tr, child, ccps, "child")
    child_accounting(tab, "ipc", tr, child, ccps, log)


def check_ipc_expandable(tab, tr, lines, log):
    """The same sharing with expandable_segments:True: PyTorch exports each physical handle under the shared
    segments (cuMemExportToShareableHandle, a POSIX file descriptor), the child gets the descriptors (pidfd_getfd)
    and imports them (cuMemImportFromShareableHandle), maps them at addresses of its own, and unmaps and releases
    them as it drops the tensors. A descriptor is a number of one process: the trace cannot link an import to its
    export, and does not claim to."""
    check = "ipc-es"
    start, started = event(lines, "start"), event(lines, "child_started")
    if start is None or started is None:
        tab.add(check, "child started", True, False, "mismatch", "no child_started line: " + errors(lines, "ipc"))
        return
    parent, child = start["pid"], started["child_pid"]
    pcps, ccps = checkpoints(lines, parent, "parent"), checkpoints(lines, child, "child")
    cp = {c["label"]: c for c in pcps + ccps}
    if "parent_before_share" not in cp or "child_received" not in cp:
        tab.add(check, "checkpoints", True, False, "mismatch", errors(lines, "ipc") + errors(lines, "ipc_child"))
        return
    shared = cp["parent_before_share"]["tensors"]
    tab.eq(check, "child pid traced (processes.how_found)", "fork",
           (tr.q("SELECT how_found FROM processes WHERE pid = ?", (child,)) or [[None]])[0][0])

    # The exporter: the physical handles mapped under the shared tensors' segments (memory_snapshot's ranges, the
    # trace's vmm_mapped rows) are the ones exported, each once (PyTorch keeps the descriptor).
    exports = [c for c in tr.calls(parent, "vmm_export", layer="driver") if c[7] == 0]
    maps = tr.allocs(parent, ("vmm_mapped",))
    under = set()
    for v in shared.values():
        lo, hi = v["segment_address"], v["segment_address"] + v["segment_size"]
        under |= {r[5] for r in maps if r[0] < hi and r[0] + r[1] > lo and r[2] <= cp["parent_before_share"]["t_ns"]}
    tab.eq(check, "exporter cuMemExportToShareableHandle calls (ok) = physical handles under the shared segments",
           len(under), len(exports))
    tab.eq(check, "  the handles exported = those handles", str(sorted(under)), str(sorted(c[6] for c in exports)))
    physical = tr.allocs(parent, ("vmm_physical",))
    tab.eq(check, "  each export's handle is a live cuMemCreate of the exporter", len(exports),
           sum(1 for c in exports if any(r[5] is None and r[2] <= c[1] and (r[3] is None or r[3] > c[1]) and r[0] == c[6]
                                         for r in physical)))
    ids = [c[0] for c in exports]
    tab.eq(check, "  exports allocate nothing (allocation rows made by an export call)", 0,
           tr.q(f"SELECT COUNT(*) FROM allocations WHERE alloc_call_id IN ({','.join('?' * len(ids)) or 'NULL'})", ids)[0][0])

    # The importer: one vmm_imported row per successful import, 0 bytes, ended by its cuMemRelease.
    imports = [c for c in tr.calls(child, "vmm_import", layer="driver") if c[7] == 0]
    imported = tr.allocs(child, ("vmm_imported",))
    tab.eq(check, "child vmm_imported rows = its cuMemImportFromShareableHandle calls (ok)", len(imports), len(imported))
    tab.eq(check, "  their bytes (0 by design: the exporter owns and counts the memory)", 0, sum(r[1] for r in imported))
    tab.eq(check, "  ended by a cuMemRelease (end_reason freed)", len(imported), sum(1 for r in imported if r[4] == "freed"))
    tab.eq(check, "child unmatched frees/releases", 0, tr.unmatched(child))
    tab.eq(check, "exporter unmatched frees/releases", 0, tr.unmatched(parent))
    # Each tensor the child received lies in a mapping of an imported handle, unmapped when the child dropped it.
    handles = {r[0] for r in imported}
    cmaps = [r for r in tr.allocs(child, ("vmm_mapped",)) if r[5] in handles]
    windows = {"b": ("child_received_again", "child_released_b"), "a": ("child_released_b", "child_released_all"),
               "c": ("child_released_b", "child_released_all")}
    got = cp["child_received"]["tensors"]
    for name, v in sorted(got.items()):
        p, t = v["storage_ptr"], cp["child_received"]["t_ns"]
        m = [r for r in cmaps if r[0] <= p < r[0] + r[1] and r[2] <= t]
        tab.eq(check, f"{name}: child storage ptr inside a mapping of an imported handle", True, bool(m))
        if m and all(k in cp for k in windows[name]):
            w0, w1 = cp[windows[name][0]]["t_ns"], cp[windows[name][1]]["t_ns"]
            tab.add(check, f"{name}:   unmapped between {windows[name][0]} and {windows[name][1]}", True,
                    m[0][3] is not None and w0 < m[0][3] <= w1, None)
    allocator_rows(tab, check, tr, parent, pcps, "exporter", expandable=True)
    allocator_rows(tab, check, tr, child, ccps, "child", expandable=True)
    child_accounting(tab, check, tr, child, ccps, log)


# ---- 2. async pool ----

ATTR = {5: "reserved_bytes.all.current", 6: "reserved_bytes.all.peak",
        7: "allocated_bytes.all.current", 8: "allocated_bytes.all.peak"}


def check_async(tab, tr, lines):
    start = event(lines, "start")
    if start is None:
        tab.add("async", "run", True, False, "mismatch", "no start line")
        return
    pid = start["pid"]
    tab.eq("async", "allocator backend", "cudaMallocAsync", start.get("backend"))
    cps = checkpoints(lines, pid)
    gets = tr.calls(pid, "mem_pool_get_attribute")
    pools = {c[6] for c in tr.calls(pid, "default_mem_pool")}
    prev = 0
    for cp in cps:
        window = [c for c in gets if prev < c[1] <= cp["t_ns"]]
        if not window:
            tab.add("async", f"{cp['label']}: attribute reads", 0, 0, "explained" if cp["reserved_bytes.all.current"] == 0 else "mismatch",
                    "the pool was not initialized yet: PyTorch's getDeviceStats returns zeros without asking CUDA")
        for attr, key in ATTR.items():
            last = [c for c in window if c[4] == attr]
            if not window:
                continue
            tab.eq("async", f"{cp['label']}: cudaMemPoolGetAttribute({attr}) = {key}", cp[key], u64(last[-1][5]) if last else None)
        if window:
            tab.eq("async", f"{cp['label']}: attribute calls read the default pool", True, all(c[6] in pools for c in window))
        prev = cp["t_ns"]
    # The attributes PyTorch sets (lazy_init_device; reset_peak_memory_stats).
    sets = tr.calls(pid, "mem_pool_set_attribute")
    seen = [(c[4], u64(c[5])) for c in sets if c[7] == 0]
    want = [(4, U64 - 1), (1, 1), (2, 1), (3, 1), (6, 0), (8, 0)]
    tab.eq("async", "cudaMemPoolSetAttribute (attr, value): init + reset_peak_memory_stats", str(want), str(seen))
    # The trims: one per empty_cache(), to 0 bytes, of the default pool.
    cpd = {c["label"]: c for c in cps}
    for a, b in (("deleted_two", "emptied"), ("all_deleted", "end")):
        trims = [c for c in tr.calls(pid, "mem_pool_trim", t0=cpd[a]["t_ns"], t1=cpd[b]["t_ns"])]
        tab.eq("async", f"cudaMemPoolTrimTo between {a} and {b} (one empty_cache())", 1, len(trims))
        if trims:
            tab.eq("async", f"  its minBytesToKeep", 0, trims[0][5])
            tab.eq("async", f"  its pool = cudaDeviceGetDefaultMemPool's", True, trims[0][6] in pools)
        r0, r1 = cpd[a]["reserved_bytes.all.current"], cpd[b]["reserved_bytes.all.current"]
        tab.add("async", f"  reserved bytes {a} -> {b} (memory_stats) fell", True, r1 < r0 or (r0 == r1 == cpd[b]['allocated_bytes.all.current']),
                None, f"{r0:,} -> {r1:,}")
    # The driver's calls nested in the runtime's: same values, not extra readings.
    drv = tr.calls(pid, "mem_pool_get_attribute", layer="driver", top=False)
    rt = {c[0]: c for c in gets}
    nested = [d for d in drv if d[9] in rt]
    tab.eq("async", "cuMemPoolGetAttribute nested in each cudaMemPoolGetAttribute", len(gets), len(nested))
    tab.eq("async", "  nested driver values = runtime values", True, all(u64(d[5]) == u64(rt[d[9]][5]) for d in nested))
    # Live cudaMallocAsync bytes against the pool's used bytes.
    rows = tr.allocs(pid, ("async",), ALLOCATOR)
    for cp in cps:
        out, _ = tr.outstanding(rows, cp["t_ns"])
        tab.eq("async", f"{cp['label']}: live cudaMallocAsync bytes = allocated_bytes.all.current", cp["allocated_bytes.all.current"], out)


# ---- 3. host memory ----

def check_host_register(tab, tr, lines):
    start = event(lines, "start")
    pid = start["pid"]
    reg = event(lines, "host_register")
    cpd = {c["label"]: c for c in checkpoints(lines, pid)}
    if reg is None or "host_unregistered" not in cpd:
        tab.add("host", "cudaHostRegister run", True, False, "mismatch", errors(lines, "host_register"))
        return
    tab.eq("host", "cudaHostRegister returned (program)", 0, reg["ret"])
    rows = [r for r in tr.allocs(pid, ("host_registered",)) if r[2] > cpd["before_host_register"]["t_ns"]
            and r[2] <= cpd["host_unregistered"]["t_ns"]]
    tab.eq("host", "host_registered rows in the window (nested cuMemHostRegister_v2 not a second)", 1, len(rows))
    if rows:
        r = rows[0]
        tab.eq("host", "  ptr", reg["ptr"], r[0])
        tab.eq("host", "  bytes = what the program registered", reg["bytes"], r[1])
        tab.add("host", "  registered before host_registered, unregistered before host_unregistered", True,
                r[2] <= cpd["host_registered"]["t_ns"] and r[3] is not None and cpd["host_registered"]["t_ns"] < r[3] <= cpd["host_unregistered"]["t_ns"])
        tab.eq("host", "  caller", "libtorch_python.so", os.path.basename(r[6]).split(".so")[0] + ".so")


def check_pinned(tab, tr, lines, how):
    start = event(lines, "start")
    if start is None:
        tab.add("host", f"pin_memory ({how}) run", True, False, "mismatch", "no start line")
        return
    pid = start["pid"]
    pin = event(lines, "pinned")
    cpd = {c["label"]: c for c in checkpoints(lines, pid)}
    if pin is None or "host_cache_emptied" not in cpd:
        tab.add("host", f"pin_memory ({how}) run", True, False, "mismatch", errors(lines, "pin_memory"))
        return
    kind = "host_registered" if how == "cudaHostRegister" else "host"
    rows = [r for r in tr.allocs(pid, (kind,)) if cpd["before_pin"]["t_ns"] < r[2] <= cpd["host_cache_emptied"]["t_ns"]]
    tab.eq("host", f"pin_memory ({how}): {kind} rows", 1, len(rows))
    if not rows:
        return
    r = rows[0]
    tab.eq("host", f"  ptr = the pinned tensor's data_ptr", pin["ptr"], r[0])
    rounded = 1 << (pin["bytes"] - 1).bit_length()
    tab.add("host", "  bytes vs the tensor's nbytes", pin["bytes"], r[1], "explained" if r[1] == rounded else "mismatch",
            f"PyTorch's CachingHostAllocator rounds a request up to a power of two: {rounded:,}")
    for label in ("pinned", "pin_deleted", "host_cache_emptied"):
        hs = cpd[label].get("host") or {}
        out, _ = tr.outstanding([r], cpd[label]["t_ns"])
        key = next((k for k in ("allocated_bytes.current", "reserved_bytes.current", "segment.current") if k in hs), None)
        if key is None:
            tab.add("host", f"  {label}: host_memory_stats()", "n/a", out, "explained", "no host_memory_stats() keys: " + ",".join(sorted(hs))[:80])
            continue
        tab.eq("host", f"  {label}: outstanding = host_memory_stats()['{key}']", int(hs[key]), out)
    tab.eq("host", f"  caller", "libtorch_cuda.so", os.path.basename(r[6]).split(".so")[0] + ".so")
    tab.eq("host", f"  is_pinned()", True, pin["is_pinned"])


# ---- 4. CUDA graph ----

def check_graph(tab, tr, lines):
    pid = event(lines, "start")["pid"]
    cpd = {c["label"]: c for c in checkpoints(lines, pid)}
    cap = cpd.get("graph_captured")
    if cap is None or "graph_pool_emptied" not in cpd:
        tab.add("graph", "graph run", True, False, "mismatch", errors(lines, "graph"))
        return
    t0, t1 = cap["capture_begin_ns"], cap["capture_end_ns"]
    inst = [c for c in tr.calls(pid, "graph_instantiate", t0=t0, t1=t1) if c[7] == 0]
    tab.eq("graph", "cudaGraphInstantiate* in the capture window (1 capture)", 1, len(inst))
    if not inst:
        return
    exe = inst[0][6]
    launches = [c for c in tr.calls(pid, "graph_launch") if c[6] == exe]
    tab.eq("graph", "cudaGraphLaunch of that executable graph = the program's replays", cpd["graph_replayed"]["replays"], len(launches))
    tab.add("graph", "  all launched between capture end and graph_replayed", True,
            all(t1 < c[1] <= cpd["graph_replayed"]["t_ns"] for c in launches))
    drv = tr.calls(pid, "graph_launch", layer="driver", top=False)
    tab.eq("graph", "  cuGraphLaunch nested in them (counted once)", len(launches),
           sum(1 for d in drv if d[9] in {c[0] for c in launches}))
    destroy = [c for c in tr.calls(pid, "graph_exec_destroy") if c[6] == exe]
    tab.eq("graph", "cudaGraphExecDestroy of it", 1, len(destroy))
    if destroy:
        tab.add("graph", "  between graph_replayed and graph_deleted (del g)", True,
                cpd["graph_replayed"]["t_ns"] < destroy[0][1] <= cpd["graph_deleted"]["t_ns"])
    tab.eq("graph", "  caller", "libtorch_cuda.so", os.path.basename(inst[0][8]).split(".so")[0] + ".so")
    # The private pool: the capture's cudaMalloc calls are its segments; what else the capture window
    # allocated is named by the snapshot's pool id and PyTorch's allocation history.
    rows = tr.allocs(pid, ("device",), ALLOCATOR)
    during = [r for r in rows if t0 < r[2] <= t1]
    pool = cap["pool"]
    snap = {s["address"]: s for s in cap.get("segments") or cap["pool_segments"]}
    private = [r for r in during if snap.get(r[0], {}).get("segment_pool_id") == pool]
    other = [r for r in during if r not in private]
    segs = sorted((s["address"], s["total_size"]) for s in cap["pool_segments"])
    tab.eq("graph", "capture-window cudaMalloc in the private pool = its segments (memory_snapshot)", len(segs), len(private))
    tab.eq("graph", "  their (ptr, bytes) = the segments' (address, total_size)", str(segs), str(sorted((r[0], r[1]) for r in private)))
    tab.eq("graph", "  their bytes = the pool's bytes", cap["pool_bytes"], sum(r[1] for r in private))
    hist = {e["addr"]: e for e in (cap.get("segment_allocs") or []) if e["action"] == "segment_alloc"}
    for r in other:
        sg = snap.get(r[0])
        frames = hist.get(r[0], {}).get("frames") or []
        where = next((f for f in frames if "graphs.py" in f), frames[0] if frames else "no history entry")
        tab.add("graph", f"  capture-window cudaMalloc outside the private pool: {r[1]:,} B", "pool " + str(sg and sg["segment_pool_id"]),
                "1 call", "explained" if sg is not None and sg["segment_pool_id"] != pool else "mismatch",
                f"a segment of pool {sg and sg['segment_pool_id']} (memory_snapshot), made at {where}")
    w = cpd["graph_warmed"]
    tab.eq("graph", "capture-window cudaMalloc calls = num_device_alloc delta, graph_warmed -> graph_captured",
           cap["num_device_alloc"] - w["num_device_alloc"], sum(1 for r in rows if w["t_ns"] < r[2] <= cap["t_ns"]))
    # Which private-pool segments each later empty_cache() freed: those gone from the next snapshot.
    steps = [("graph_deleted", "graph_pool_emptied"), ("graph_pool_emptied", "cublas_workspaces_cleared")]
    for a, b in steps:
        if a not in cpd or b not in cpd:
            continue
        left = {s["address"] for s in cpd[b].get("segments") or []}
        before = {s["address"] for s in cpd[a].get("segments") or []} if a != "graph_deleted" else {r[0] for r in private}
        gone = sorted(x for x in before if x not in left and x in {r[0] for r in private})
        freed = sorted(r[0] for r in private if r[3] is not None and cpd[a]["t_ns"] < r[3] <= cpd[b]["t_ns"])
        sizes = "+".join(f"{r[1] >> 20} MiB" for r in private if r[0] in gone)
        tab.eq("graph", f"private-pool segments freed between {a} and {b} = gone from the snapshot ({sizes or 'none'})",
               str(gone), str(freed))


def errors(lines, section):
    e = [r for r in lines if r.get("event") == "error" and r.get("section") == section]
    return "; ".join(r["error"][:200] for r in e) or "no error line"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    args = ap.parse_args()
    tab = Table()
    d = args.dir
    info = []
    for name in ("main", "pinned", "async", "expandable"):
        db, jl = os.path.join(d, name + ".db"), os.path.join(d, name + ".jsonl")
        if not (os.path.exists(db) and os.path.exists(jl)):
            tab.add(name, "trace and JSON lines present", True, False, "mismatch", f"{db} or {jl} missing")
            continue
        tr, lines = Trace(db), load_jsonl(jl)
        tab.eq("all", f"{name}: records lost", 0, tr.lost())
        info.append((name, tr.q("SELECT COUNT(*) FROM call_rows")[0][0], event(lines, "start")))
        if name == "main":
            check_ipc(tab, tr, lines, os.path.join(d, "main.log"))
            check_host_register(tab, tr, lines)
            check_pinned(tab, tr, lines, "cudaHostAlloc")
            pid = event(lines, "start")["pid"]
            allocator_rows(tab, "main", tr, pid, checkpoints(lines, pid, "main"), "main")
            check_graph(tab, tr, lines)
        elif name == "expandable":
            check_ipc_expandable(tab, tr, lines, os.path.join(d, "expandable.log"))
        elif name == "pinned":
            check_pinned(tab, tr, lines, "cudaHostRegister")
        else:
            check_async(tab, tr, lines)
    for name, n, start in info:
        s = start or {}
        print(f"{name}: {n} calls; torch {s.get('torch')} CUDA {s.get('cuda')} on {s.get('device')}; "
              f"PYTORCH_CUDA_ALLOC_CONF='{s.get('alloc_conf', '')}' backend {s.get('backend')}")
    print()
    ok = tab.print()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
