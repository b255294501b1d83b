#!/usr/bin/env python3
"""A scripted MCP session over stdio: what an agent does first with a trace.

Starts `vramscope mcp` with the given arguments, initializes, lists the tools,
prints the `investigate` prompt, calls trace_overview and findings, then follows the first finding's first `next`
drill-down (a tool and the arguments it names), and prints each tool's
text -- the same `content` a model reads. Every message is logged to stderr
with --verbose. Python standard library only.

    examples/sessions/investigate.py build/vramscope mcp --demo leak
    examples/sessions/investigate.py vramscope mcp --db run.db

investigate-leak.txt is its output on the H100 leak trace: the scripted
equivalent of an agent's first steps, not a model's answer.
"""
import json
import subprocess
import sys


class StdioClient:
    def __init__(self, argv, verbose):
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.next_id = 1
        self.verbose = verbose

    def send(self, message):
        line = json.dumps(message)
        if self.verbose:
            print("-> " + line, file=sys.stderr)
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def request(self, method, params=None):
        request_id = self.next_id
        self.next_id += 1
        self.send({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params or {}})
        while True:  # skip notifications (progress, log messages) until our answer
            line = self.proc.stdout.readline()
            if not line:
                sys.exit("vramscope mcp exited before answering " + method)
            if self.verbose:
                print("<- " + line.rstrip()[:2000], file=sys.stderr)
            message = json.loads(line)
            if message.get("id") == request_id:
                if "error" in message:
                    sys.exit(f"{method}: error {message['error']}")
                return message["result"]

    def call_tool(self, name, arguments=None):
        result = self.request("tools/call", {"name": name, "arguments": arguments or {}})
        text = "\n".join(c["text"] for c in result["content"] if c["type"] == "text")
        if result.get("isError"):
            sys.exit(f"{name} failed: {text}")
        return result.get("structuredContent", {}), text

    def close(self):
        self.proc.stdin.close()
        return self.proc.wait(timeout=30)


def main():
    args = [a for a in sys.argv[1:] if a != "--verbose"]
    if not args:
        sys.exit(__doc__)
    client = StdioClient(args, "--verbose" in sys.argv)
    init = client.request("initialize", {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "investigate.py", "version": "1"}})
    client.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
    info = init["serverInfo"]
    tools = client.request("tools/list")["tools"]
    print(f"== {info['name']} {info['version']}, protocol {init['protocolVersion']}, "
          f"{len(tools)} tools: {', '.join(t['name'] for t in tools)}\n")

    prompt = client.request("prompts/get", {"name": "investigate", "arguments": {}})
    print("== prompts/get investigate (the workflow a model is given)\n"
          + "\n".join(m["content"]["text"] for m in prompt["messages"]) + "\n")
    _, overview = client.call_tool("trace_overview")
    print("== trace_overview\n" + overview + "\n")
    findings, text = client.call_tool("findings")
    print("== findings\n" + text + "\n")
    for finding in findings.get("findings", [])[:1]:
        for drill in finding.get("next", [])[:1]:
            _, detail = client.call_tool(drill["tool"], drill.get("arguments", {}))
            print(f"== {drill['tool']} {json.dumps(drill.get('arguments', {}))} (drill-down of the first finding)\n"
                  + detail + "\n")
    sys.exit(client.close())


if __name__ == "__main__":
    main()
