#!/usr/bin/env python3
"""Writes the committed seed corpora of tests/fuzz/corpus/{mcp_stdio,http,tools,proc_maps}
(fuzz_decoder's seeds are real ring records: capture_records; fuzz_elf's are the
fixtures' shared objects, copied at build time). Messages are the kinds
tests/mcp sends: every method, notifications, a batch, and malformed ones."""
import json, os, pathlib

HERE = pathlib.Path(__file__).resolve().parent
CORPUS = HERE / "corpus"

def msg(id_, method, params=None):
    m = {"jsonrpc": "2.0", "method": method}
    if id_ is not None:
        m["id"] = id_
    if params is not None:
        m["params"] = params
    return json.dumps(m, separators=(",", ":"))

INIT = msg(0, "initialize", {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "fuzz", "version": "1"}})
MESSAGES = {
    "ping": msg(1, "ping"),
    "tools_list": msg(2, "tools/list"),
    "tools_list_cursor": msg(3, "tools/list", {"cursor": "50"}),
    "call_overview": msg(4, "tools/call", {"name": "trace_overview", "arguments": {}}),
    "call_findings": msg(5, "tools/call", {"name": "findings", "arguments": {"limit": 3}, "_meta": {"progressToken": "p1"}}),
    "call_find_calls": msg(6, "tools/call", {"name": "find_calls", "arguments": {"api": "cudaMalloc", "limit": 5}}),
    "call_run_sql": msg(7, "tools/call", {"name": "run_sql", "arguments": {"sql": "SELECT api, COUNT(*) FROM calls GROUP BY api", "limit": 10}}),
    "call_timeline_svg": msg(8, "tools/call", {"name": "allocation_timeline", "arguments": {"points": 20, "image": "svg"}}),
    "call_unknown_tool": msg(9, "tools/call", {"name": "nope", "arguments": {}}),
    "prompts_list": msg(10, "prompts/list"),
    "prompts_get": msg(11, "prompts/get", {"name": "investigate", "arguments": {"session_id": "1"}}),
    "resources_list": msg(12, "resources/list"),
    "templates_list": msg(13, "resources/templates/list"),
    "read_schema": msg(14, "resources/read", {"uri": "vramscope://schema"}),
    "read_session": msg(15, "resources/read", {"uri": "vramscope://session/1"}),
    "subscribe": msg(16, "resources/subscribe", {"uri": "vramscope://sessions"}),
    "complete_prompt": msg(17, "completion/complete", {"ref": {"type": "ref/prompt", "name": "leak_hunt"}, "argument": {"name": "pid", "value": "4"}, "context": {"arguments": {"session_id": "1"}}}),
    "complete_template": msg(18, "completion/complete", {"ref": {"type": "ref/resource", "uri": "vramscope://session/{id}"}, "argument": {"name": "id", "value": ""}}),
    "set_level": msg(19, "logging/setLevel", {"level": "debug"}),
    "cancel": msg(20, "tools/call", {"name": "run_sql", "arguments": {"sql": "SELECT 1"}}) + "\n" + msg(None, "notifications/cancelled", {"requestId": 20, "reason": "user"}),
    "client_response": json.dumps({"jsonrpc": "2.0", "id": "s1", "result": {}}),
    "numeric_jsonrpc": '{"jsonrpc":2.0,"id":1,"method":"ping"}',
    "deep": "[" * 70 + "]" * 70,
    "bad_utf8": '{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":"\xff\xfe"}}',
    "not_json": "{\"jsonrpc\":\"2.0\",\"id\":",
}

def write(name, files):
    d = CORPUS / name
    d.mkdir(parents=True, exist_ok=True)
    for fname, data in files.items():
        (d / fname).write_bytes(data if isinstance(data, bytes) else data.encode("utf-8", "surrogateescape"))

# mcp_stdio: stdin as a client writes it (the harness sends initialize first unless the input does).
stdio = {k: v + "\n" for k, v in MESSAGES.items()}
stdio["session_2025_03_26"] = msg(0, "initialize", {"protocolVersion": "2025-03-26", "capabilities": {}, "clientInfo": {"name": "old", "version": "1"}}) + "\n" + "[" + MESSAGES["ping"] + "," + MESSAGES["tools_list"] + "]\n"
stdio["initialize_again"] = INIT + "\n" + msg(None, "notifications/initialized") + "\n" + MESSAGES["call_overview"] + "\n"
stdio["several"] = "\n".join([MESSAGES["ping"], MESSAGES["call_findings"], MESSAGES["read_session"], MESSAGES["complete_prompt"]]) + "\n"
write("mcp_stdio", stdio)

# http: raw requests; @PORT@ and @SESSION@ are filled in by the harness.
def post(body, session=True, extra=""):
    b = body.encode()
    head = ("POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:@PORT@\r\nAccept: application/json, text/event-stream\r\n"
            "Content-Type: application/json\r\n" + ("Mcp-Session-Id: @SESSION@\r\n" if session else "") + extra +
            "Content-Length: %d\r\n\r\n" % len(b))
    return head.encode() + b

http = {
    "initialize": post(INIT, session=False),
    "ping": post(MESSAGES["ping"]),
    "tools_call": post(MESSAGES["call_overview"], extra="MCP-Protocol-Version: 2025-11-25\r\n"),
    "find_calls": post(MESSAGES["call_find_calls"]),
    "read_session": post(MESSAGES["read_session"]),
    "notification": post(msg(None, "notifications/initialized")),
    "no_session": post(MESSAGES["ping"], session=False),
    "bad_origin": post(MESSAGES["ping"], extra="Origin: http://evil.example\r\n"),
    "bad_host": b"POST /mcp HTTP/1.1\r\nHost: evil.example\r\nContent-Length: 2\r\n\r\n{}",
    "get_stream": b"GET /mcp HTTP/1.1\r\nHost: 127.0.0.1:@PORT@\r\nAccept: text/event-stream\r\nMcp-Session-Id: @SESSION@\r\n\r\n",
    "resume": b"GET /mcp HTTP/1.1\r\nHost: 127.0.0.1:@PORT@\r\nAccept: text/event-stream\r\nMcp-Session-Id: @SESSION@\r\nLast-Event-ID: 1-3\r\n\r\n",
    "delete": b"DELETE /mcp HTTP/1.1\r\nHost: 127.0.0.1:@PORT@\r\nMcp-Session-Id: @SESSION@\r\n\r\n",
    "options": b"OPTIONS /mcp HTTP/1.1\r\nHost: 127.0.0.1:@PORT@\r\n\r\n",
    "other_path": b"GET /other HTTP/1.1\r\nHost: 127.0.0.1:@PORT@\r\n\r\n",
    "chunked": b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:@PORT@\r\nAccept: application/json, text/event-stream\r\nContent-Type: application/json\r\nMcp-Session-Id: @SESSION@\r\nTransfer-Encoding: chunked\r\n\r\n" + b"%x\r\n" % len(MESSAGES["ping"]) + MESSAGES["ping"].encode() + b"\r\n0\r\n\r\n",
    "pipelined": post(MESSAGES["ping"]) + post(MESSAGES["tools_list"]),
    "bearer": post(MESSAGES["ping"], extra="Authorization: Bearer x\r\n"),
    "bad_version": post(MESSAGES["ping"], extra="MCP-Protocol-Version: 1999-01-01\r\n"),
    "truncated_body": post(MESSAGES["ping"])[:-5],
    "http10": b"GET /mcp HTTP/1.0\r\n\r\n",
    "garbage": b"\x00\x01GARBAGE\r\n\r\n",
}
write("http", http)

# tools: byte 0 = trace (shipped_traces(), sorted: examples/traces/* then examples/corpus/traces/**),
# byte 1 = tool (tools::catalog() order), then the JSON arguments.
TOOLS = ["trace_overview", "findings", "compare_sessions", "allocation_timeline", "outstanding_allocations",
         "leak_candidates", "api_latency", "offcpu_attribution", "slowest_calls", "find_calls", "run_sql"]
ARGS = {
    "trace_overview": [{}, {"session_id": 1, "limit": 2}],
    "findings": [{}, {"pid": 476, "limit": 5}],
    "compare_sessions": [{"session_a": 1, "session_b": 1}],
    "allocation_timeline": [{}, {"points": 50, "from_ms": 0, "to_ms": 5000}, {"image": "svg", "points": 10}, {"image": "png", "points": 10}],
    "outstanding_allocations": [{}, {"at_ms": 1000, "limit": 5}],
    "leak_candidates": [{}, {"marker_api": "cudaFree", "min_growth_bytes": 1048576}],
    "api_latency": [{}, {"sort_by": "p99", "op": "alloc"}],
    "offcpu_attribution": [{}, {"layer": "runtime"}],
    "slowest_calls": [{}, {"api": "cudaMalloc", "limit": 3, "errors_only": False}],
    "find_calls": [{}, {"ptr": "0x7f0000000000", "limit": 2}, {"cursor": "x", "min_dur_us": 10}],
    "run_sql": [{"sql": "SELECT COUNT(*) FROM calls"}, {"sql": "SELECT * FROM allocations", "limit": 5, "time_limit_ms": 200}],
}
tools = {}
for t, name in enumerate(TOOLS):
    for i, args in enumerate(ARGS[name]):
        trace = (t * 7 + i * 13) % 51  # spread over the shipped traces
        tools["%s_%d" % (name, i)] = bytes([trace, t]) + json.dumps(args).encode()
tools["bad_type"] = bytes([0, 9]) + b'{"limit":"ten"}'
tools["extra_property"] = bytes([1, 0]) + b'{"nope":1}'
tools["null_args"] = bytes([2, 1]) + b"null"
write("tools", tools)

# proc_maps: /proc/PID/maps lines as the kernel prints them, and ldconfig -p output.
write("proc_maps", {
    "maps": (
        "55d0c0a00000-55d0c0a02000 r--p 00000000 08:01 1311290                    /usr/bin/cat\n"
        "7f2a1c000000-7f2a1c021000 rw-p 00000000 00:00 0 \n"
        "7f2a1e400000-7f2a1e4a0000 r-xp 00028000 103:02 5505149                   /usr/lib/x86_64-linux-gnu/libcuda.so.535.104.05\n"
        "7f2a1e600000-7f2a1e700000 r-xp 00000000 00:2e 42 /opt/venv/lib/python3.11/site-packages/nvidia/cuda_runtime/lib/libcudart.so.12 (deleted)\n"
        "7ffc1a3e0000-7ffc1a401000 rw-p 00000000 00:00 0                          [stack]\n"
        "ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]\n"),
    "ldconfig": (
        "1234 libs found in cache `/etc/ld.so.cache'\n"
        "\tlibcudart.so.12 (libc6,x86-64) => /usr/local/cuda/lib64/libcudart.so.12\n"
        "\tlibcuda.so.1 (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libcuda.so.1\n"
        "\tlibc.so.6 (libc6,x86-64, OS ABI: Linux 3.2.0) => /lib/x86_64-linux-gnu/libc.so.6\n"),
})
print("seeds written to", CORPUS)
