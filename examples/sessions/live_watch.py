#!/usr/bin/env python3
"""An agent's live watch, scripted: find the GPU process, attach mid-run, read the
findings while the trace records, stop, read them again (issue 13 item 7).

Starts `vramscope mcp --allow-trace` as a subprocess speaking JSON-RPC lines on
stdio, then: initialize, notifications/initialized, tools/list, the `watch`
prompt, gpu_processes, trace_start {pid, duration} on the process that uses the
most GPU memory among those whose command line contains --match, trace_status
every --poll seconds, findings / leak_candidates / outstanding_allocations while
it records, trace_stop, findings and leak_candidates on the finished session.
Every request and the text part of every result (trimmed) go to --transcript.
Python standard library only; must run as root (--allow-trace needs it).

With --server-log (the JSON lines of examples/gpu/leaky_server.py), it also
compares what the live trace measured with the server's own accounting over the
same time: the trace's allocations (run_sql) against torch.cuda.memory_reserved()
at every step the trace covers, and the growth rates; --json writes the numbers.

    live_watch.py --vramscope build/vramscope --trace-dir /tmp/traces \\
        --nvml-lib /usr/local/nvidia/lib64/libnvidia-ml.so.1 --match leaky_server.py \\
        --duration 30 --transcript live-watch.txt --server-log server.jsonl --json live.json
"""
import argparse
import json
import queue
import subprocess
import sys
import threading
import time

MiB = 1 << 20


class StdioClient:
    """JSON-RPC over the server's stdin/stdout, one message a line."""

    def __init__(self, argv, stderr, log):
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
                                     text=True, bufsize=1)
        self.next_id = 1
        self.log = log
        self.lines = queue.Queue()
        self.notifications = {}
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def send(self, message):
        self.proc.stdin.write(json.dumps(message) + "\n")
        self.proc.stdin.flush()

    def request(self, method, params=None, timeout=120):
        request_id = self.next_id
        self.next_id += 1
        self.send({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params or {}})
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise RuntimeError(f"no answer to {method} within {timeout} s")
            if line is None:
                raise RuntimeError(f"vramscope mcp exited before answering {method} (rc {self.proc.wait()})")
            message = json.loads(line)
            if message.get("id") == request_id and "method" not in message:
                if "error" in message:
                    raise RuntimeError(f"{method}: error {message['error']}")
                return message["result"]
            if "method" in message:  # a notification (list_changed, progress, log)
                self.notifications[message["method"]] = self.notifications.get(message["method"], 0) + 1

    def call_tool(self, name, arguments=None, allow_error=False):
        arguments = arguments or {}
        self.log.request(f"tools/call {name} {json.dumps(arguments)}")
        result = self.request("tools/call", {"name": name, "arguments": arguments})
        text = "\n".join(c.get("text", "") for c in result.get("content", []) if c.get("type") == "text")
        self.log.result(text, error=result.get("isError", False))
        if result.get("isError"):
            if allow_error:
                return None, text
            raise RuntimeError(f"{name} failed: {text}")
        return result.get("structuredContent", {}), text

    def close(self):
        self.proc.stdin.close()
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            return self.proc.wait(timeout=30)


class Transcript:
    """Requests and the text of each result, trimmed, with the time since the start."""

    def __init__(self, path, max_lines, max_chars):
        self.f = open(path, "w")
        self.t0 = time.monotonic()
        self.max_lines = max_lines
        self.max_chars = max_chars

    def stamp(self):
        return f"[t+{time.monotonic() - self.t0:6.1f} s]"

    def note(self, text):
        self.f.write(f"{self.stamp()} # {text}\n\n")
        self.f.flush()
        print(f"{self.stamp()} # {text}", flush=True)

    def request(self, text):
        self.f.write(f"{self.stamp()} -> {text}\n")
        self.f.flush()
        print(f"{self.stamp()} -> {text}", flush=True)

    def result(self, text, error=False, max_lines=None):
        lines = text.splitlines()
        limit = max_lines or self.max_lines
        shown = []
        for line in lines[:limit]:
            shown.append(line if len(line) <= self.max_chars else line[:self.max_chars] + " [...]")
        if len(lines) > limit:
            shown.append(f"[... {len(lines) - limit} more lines trimmed]")
        self.f.write(("<- ERROR\n" if error else "") + "\n".join("<- " + s for s in shown) + "\n\n")
        self.f.flush()


def pick_process(processes, match):
    """The process with the most GPU memory whose command line contains `match`."""
    mine = [p for p in processes if match in (p.get("cmdline") or "") and not p.get("traced")]
    if not mine:
        return None
    return max(mine, key=lambda p: (p.get("gpu_used_bytes") or 0, p["pid"]))


def sql_rows(client, session_id, sql, limit=1000):
    arguments = {"sql": sql, "limit": limit}
    if session_id is not None:
        arguments["session_id"] = session_id
    res, _ = client.call_tool("run_sql", arguments)
    if res.get("stopped_by"):
        raise RuntimeError(f"run_sql stopped by {res['stopped_by']}: {sql}")
    return [dict(zip(res["columns"], row)) for row in res["rows"]]


def read_server_log(path):
    """The leaky server's JSON lines: its start line and one line per step."""
    start, steps = {}, []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                doc = json.loads(line)
                if "step" in doc:
                    steps.append(doc)
                elif doc.get("event") == "start":
                    start = doc
    return start, steps


def compare_with_server(client, session_id, pid, server_log, log, step_range=None, allocator_lib="libc10_cuda"):
    """The trace's allocations against the server's printed accounting at the steps it covers
    (only steps first..last of step_range, when given)."""
    _, steps = read_server_log(server_log)
    if step_range:
        steps = [s for s in steps if step_range[0] <= s["step"] <= step_range[1]]
    sess = sql_rows(client, session_id, f"SELECT start_ts_ns, end_ts_ns FROM sessions WHERE id = {session_id}")[0]
    libs = sql_rows(client, session_id,
                    f"SELECT MAX(attached_ts_ns) AS attached FROM libraries WHERE session_id = {session_id} "
                    f"AND attached_ts_ns IS NOT NULL")[0]
    # memory_reserved() counts the caching allocator's segments (made from libc10_cuda), not what cuBLAS
    # allocates itself: compare with those allocations, and count the others apart.
    every = sql_rows(client, session_id,
                     f"SELECT a.id, a.kind, a.bytes, a.alloc_ts_ns, a.free_ts_ns, a.end_reason, o.path AS caller "
                     f"FROM allocations a LEFT JOIN objects o ON o.id = a.caller_id "
                     f"WHERE a.session_id = {session_id} AND a.pid = {pid} "
                     f"AND a.kind IN ('device', 'async', 'managed', 'vmm_physical') ORDER BY a.alloc_ts_ns")
    allocs = [a for a in every if allocator_lib in (a["caller"] or "")]
    others = [a for a in every if allocator_lib not in (a["caller"] or "")]
    unmatched = sql_rows(client, session_id,
                         f"SELECT COUNT(*) AS n FROM unmatched_frees WHERE session_id = {session_id} AND pid = {pid}")[0]
    malloc_calls = sql_rows(client, session_id,
                            f"SELECT api, COUNT(*) AS n, SUM(bytes) AS bytes FROM calls WHERE session_id = {session_id} "
                            f"AND pid = {pid} AND parent_id IS NULL GROUP BY api ORDER BY n DESC")
    start, end = sess["start_ts_ns"], sess["end_ts_ns"]
    attached = libs["attached"] or start
    # The steps whose printed numbers the trace covers entirely: printed after every probe was live.
    covered = [s for s in steps if attached <= s["t_ns"] <= end]
    if len(covered) < 2:
        log.note(f"comparison: only {len(covered)} server steps inside the trace; nothing to compare")
        return {"covered_steps": len(covered)}

    def outstanding(t):
        return sum(a["bytes"] for a in allocs
                   if a["alloc_ts_ns"] <= t and (a["free_ts_ns"] is None or a["free_ts_ns"] > t))

    def allocated_count(t):
        return sum(1 for a in allocs if a["alloc_ts_ns"] <= t)

    base = covered[0]
    base_out, base_n = outstanding(base["t_ns"]), allocated_count(base["t_ns"])
    equal, mismatches = 0, []
    for s in covered[1:]:
        d_trace = outstanding(s["t_ns"]) - base_out
        d_server = s["reserved_bytes"] - base["reserved_bytes"]
        n_trace = allocated_count(s["t_ns"]) - base_n
        n_server = s["num_device_alloc"] - base["num_device_alloc"]
        if d_trace == d_server and n_trace == n_server:
            equal += 1
        else:
            mismatches.append({"step": s["step"], "trace_bytes": d_trace, "reserved_bytes": d_server,
                               "trace_allocs": n_trace, "num_device_alloc": n_server})
    last = covered[-1]
    span_s = (last["t_ns"] - base["t_ns"]) / 1e9
    n_steps = last["step"] - base["step"]
    server_growth = last["reserved_bytes"] - base["reserved_bytes"]
    server_alloc_growth = last["allocated_bytes"] - base["allocated_bytes"]
    trace_growth = outstanding(last["t_ns"]) - base_out
    result = {
        "session": {"start_ts_ns": start, "end_ts_ns": end, "attached_ts_ns": attached,
                    "duration_s": (end - start) / 1e9 if end else None},
        "covered_steps": len(covered), "first_step": base["step"], "last_step": last["step"],
        "steps_compared": len(covered) - 1, "steps_equal": equal, "mismatches": mismatches[:20],
        "window_s": span_s,
        "server_reserved_growth_bytes": server_growth,
        "server_allocated_growth_bytes": server_alloc_growth,
        "trace_outstanding_growth_bytes": trace_growth,
        "server_reserved_growth_bytes_per_s": server_growth / span_s if span_s else None,
        "trace_growth_bytes_per_s": trace_growth / span_s if span_s else None,
        "server_reserved_growth_bytes_per_step": server_growth / n_steps if n_steps else None,
        "server_allocated_growth_bytes_per_step": server_alloc_growth / n_steps if n_steps else None,
        "trace_growth_bytes_per_step": trace_growth / n_steps if n_steps else None,
        "server_reserved_at_first_step_bytes": base["reserved_bytes"],
        # what the allocator held that the trace never saw allocated (an attach mid-run): not in the trace
        "server_reserved_not_in_trace_bytes": base["reserved_bytes"] - base_out,
        "trace_allocations": len(allocs), "trace_unmatched_frees": unmatched["n"],
        "trace_other_callers": [{"caller": a["caller"], "bytes": a["bytes"], "freed": a["free_ts_ns"] is not None}
                                for a in others][:20],
        "trace_top_level_calls": malloc_calls,
    }
    log.note(
        f"comparison with the server's own accounting over steps {base['step']}..{last['step']} "
        f"({span_s:.1f} s, {n_steps} steps, all printed after the probes were live): "
        f"{equal} of {len(covered) - 1} steps equal (trace outstanding delta and allocation count vs "
        f"memory_reserved() and num_device_alloc deltas); growth: trace {trace_growth / MiB:.1f} MiB, "
        f"memory_reserved() {server_growth / MiB:.1f} MiB, memory_allocated() {server_alloc_growth / MiB:.1f} MiB; "
        f"per second: trace {result['trace_growth_bytes_per_s'] / MiB:.2f} MiB/s, reserved "
        f"{result['server_reserved_growth_bytes_per_s'] / MiB:.2f} MiB/s; per step: trace "
        f"{result['trace_growth_bytes_per_step'] / MiB:.2f} MiB, reserved "
        f"{result['server_reserved_growth_bytes_per_step'] / MiB:.2f} MiB, allocated "
        f"{result['server_allocated_growth_bytes_per_step'] / MiB:.2f} MiB; memory_reserved() that the trace never saw "
        f"allocated (held before it began): {result['server_reserved_not_in_trace_bytes'] / MiB:.1f} MiB"
        + (f"; first mismatches: {json.dumps(mismatches[:3])}" if mismatches else "")
        + (f"; not compared (allocated by other libraries than {allocator_lib}): "
           f"{sum(a['bytes'] for a in others) / MiB:.2f} MiB in {len(others)} allocations" if others else ""))
    return result


def finding_kinds(structured):
    return [f.get("kind") for f in structured.get("findings", [])]


def summary(structured, keys):
    return [{k: c.get(k) for k in keys} for c in structured.get("candidates", [])]


LEAK_KEYS = ("kind", "library", "classification", "reason", "growth_bytes", "slope_bytes_per_s", "r2", "new_highs",
             "iterations")


def leak_candidates(client, sid, pid):
    """leak_candidates with the per-request marker (the server's .item() syncs its stream), else without."""
    lc, _ = client.call_tool("leak_candidates", {"session_id": sid, "pid": pid, "marker_api": "cudaStreamSynchronize"},
                             allow_error=True)
    if lc is None:
        lc, _ = client.call_tool("leak_candidates", {"session_id": sid, "pid": pid})
    return lc


def connect(client, log, name):
    log.request("initialize")
    init = client.request("initialize", {"protocolVersion": "2025-11-25", "capabilities": {},
                                         "clientInfo": {"name": name, "version": "1"}})
    client.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
    info = init["serverInfo"]
    tools = [t["name"] for t in client.request("tools/list")["tools"]]
    log.result(f"{info['name']} {info['version']}, protocol {init['protocolVersion']}, {len(tools)} tools: "
               + ", ".join(tools))


def watch(client, args, log, out):
    """The live flow: gpu_processes, trace_start mid-run, trace_status, analyses while recording, trace_stop."""
    log.request(f'prompts/get watch {{"seconds": "{int(args.duration)}"}}')
    prompt = client.request("prompts/get", {"name": "watch", "arguments": {"seconds": str(int(args.duration))}})
    log.result("\n".join(m["content"]["text"] for m in prompt["messages"] if m["content"].get("type") == "text"))

    # 1. Which process.
    gp, _ = client.call_tool("gpu_processes", {"limit": 50})
    out["gpu_processes"] = [{k: p.get(k) for k in ("pid", "comm", "gpu_used_bytes", "cuda_libraries", "traced")}
                            for p in gp.get("processes", [])]
    target = pick_process(gp.get("processes", []), args.match)
    if target is None:
        raise RuntimeError(f"no untraced process whose command line contains {args.match!r}")
    pid = target["pid"]
    log.note(f"picked pid {pid}: {target.get('gpu_used_bytes', 0) / MiB:.0f} MiB of GPU memory per NVML, "
             f"command line {target.get('cmdline', '')[:200]!r}")
    out["target"] = target
    if args.server_log:
        printed = read_server_log(args.server_log)[0].get("pid")
        out["server_pid"] = printed
        if printed != pid:
            raise RuntimeError(f"picked pid {pid}, but the leaky server says it is pid {printed}")

    # 2. Attach, mid-run.
    started, _ = client.call_tool("trace_start", {"pid": pid, "duration": args.duration})
    sid = started["session_id"]
    out["trace_start"] = {k: started.get(k) for k in ("session_id", "file", "state", "pids", "libraries_attached")}

    # 3. Watch: status every --poll s; the analyses once, halfway, while it records.
    statuses, live = [], {}
    t_start = time.monotonic()
    while True:
        time.sleep(args.poll)
        state, _ = client.call_tool("trace_status", {"session_id": sid})
        statuses.append({k: state.get(k) for k in ("state", "elapsed_s", "calls", "calls_per_s", "records_lost")}
                        | {"gpu_bytes": state["outstanding"]["gpu_bytes"]})
        if state["state"] != "recording":
            break
        if not live and state["elapsed_s"] >= args.duration / 2:
            f, _ = client.call_tool("findings", {"session_id": sid})
            lc = leak_candidates(client, sid, pid)
            oa, _ = client.call_tool("outstanding_allocations", {"session_id": sid, "pid": pid})
            live = {"at_elapsed_s": state["elapsed_s"], "coverage": f.get("coverage", {}).get("status"),
                    "finding_kinds": finding_kinds(f), "leak_candidates": summary(lc, LEAK_KEYS),
                    "outstanding_coverage": oa.get("coverage", {}).get("status")}
        if time.monotonic() - t_start + args.poll + args.stop_early_s > args.duration:
            break
    out["statuses"] = statuses
    out["live"] = live

    # 4. Stop, and read the finished session.
    stopped, _ = client.call_tool("trace_stop", {"session_id": sid})
    out["trace_stop"] = {k: stopped.get(k) for k in ("state", "stop_reason", "elapsed_s", "calls", "records_lost",
                                                     "outstanding")}
    f, _ = client.call_tool("findings", {"session_id": sid})
    lc = leak_candidates(client, sid, pid)
    out["final"] = {"coverage": f.get("coverage", {}).get("status"), "finding_kinds": finding_kinds(f),
                    "leak_candidates": summary(lc, LEAK_KEYS)}
    if args.server_log:
        out["comparison"] = compare_with_server(client, sid, pid, args.server_log, log)


def recorded(client, args, log, out):
    """The same questions on a trace recorded from the start (vramscope trace -- CMD): --db."""
    start, _ = read_server_log(args.server_log)
    pid = start["pid"]
    sid = sql_rows(client, None, "SELECT MAX(id) AS id FROM sessions")[0]["id"]
    f, _ = client.call_tool("findings", {"session_id": sid})
    lc = leak_candidates(client, sid, pid)
    out["final"] = {"coverage": f.get("coverage", {}).get("status"), "finding_kinds": finding_kinds(f),
                    "leak_candidates": summary(lc, LEAK_KEYS)}
    step_range = tuple(int(x) for x in args.steps.split(":")) if args.steps else None
    out["comparison"] = compare_with_server(client, sid, pid, args.server_log, log, step_range)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vramscope", required=True)
    ap.add_argument("--trace-dir", help="live: vramscope mcp --allow-trace --trace-dir DIR")
    ap.add_argument("--db", help="instead of live: read this recorded trace (vramscope mcp --db) with --server-log")
    ap.add_argument("--steps", help="with --db: compare only steps FROM:TO of the server log")
    ap.add_argument("--nvml-lib")
    ap.add_argument("--match", default="leaky_server.py", help="text in the command line of the process to watch")
    ap.add_argument("--duration", type=float, default=30, help="trace_start's duration (s)")
    ap.add_argument("--poll", type=float, default=3, help="trace_status every this many seconds")
    ap.add_argument("--stop-early-s", type=float, default=1.5,
                    help="call trace_stop this long before the duration would end the trace")
    ap.add_argument("--transcript", required=True)
    ap.add_argument("--server-stderr", help="file for vramscope mcp's log (default: inherited)")
    ap.add_argument("--server-log", help="the leaky server's JSON lines, to compare with")
    ap.add_argument("--json", help="write the numbers here")
    ap.add_argument("--max-lines", type=int, default=40, help="lines of each result kept in the transcript")
    args = ap.parse_args()
    if bool(args.db) == bool(args.trace_dir):
        ap.error("give --trace-dir (live) or --db (recorded)")
    if args.db and not args.server_log:
        ap.error("--db needs --server-log")

    log = Transcript(args.transcript, args.max_lines, 400)
    if args.db:
        argv = [args.vramscope, "mcp", "--db", args.db]
    else:
        argv = [args.vramscope, "mcp", "--allow-trace", "--trace-dir", args.trace_dir]
        if args.nvml_lib:
            argv += ["--nvml-lib", args.nvml_lib]
    stderr = open(args.server_stderr, "w") if args.server_stderr else None
    log.note("server: " + " ".join(argv))
    client = StdioClient(argv, stderr, log)
    out = {"argv": argv}
    rc = 1
    try:
        connect(client, log, "live_watch.py")
        (recorded if args.db else watch)(client, args, log, out)
        out["notifications"] = client.notifications
        rc = 0
    except Exception as e:  # noqa: BLE001 - the transcript says what failed
        log.note(f"FAILED: {e}")
        out["error"] = str(e)
    finally:
        out["server_rc"] = client.close()
        log.note(f"vramscope mcp exited {out['server_rc']}")
        if args.json:
            with open(args.json, "w") as f:
                json.dump(out, f, indent=1)
    return rc


if __name__ == "__main__":
    sys.exit(main())
