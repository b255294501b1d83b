#!/usr/bin/env bash
# The real `vramscope mcp` on a shipped H100 trace, driven by the official
# clients: the conformance scenarios that need no fixtures, over HTTP, and the
# Inspector CLI listing and calling the GPU tools, prompts and resources over
# stdio and HTTP.
#   run_vramscope_clients.sh VRAMSCOPE_BINARY RESULTS_DIR
set -euo pipefail
vramscope=$1 results=$2
source "$(dirname "$0")/clients_common.sh"
cli=$here/node_modules/@modelcontextprotocol/conformance/dist/index.js
require_clients "$cli" "$inspector"
scratch=$(mktemp -d)
export MCP_CATALOG_PATH=$scratch/catalog.json  # keep the Inspector out of ~/.mcp-inspector
trap 'kill "$server_pid" 2>/dev/null; wait "$server_pid" 2>/dev/null; rm -rf "$scratch"' EXIT
start_server "$scratch/server.log" '.*mcp http: serving \(http[^ ]*\).*' "$vramscope" mcp --demo contention --http 127.0.0.1:0

rm -rf "$results" && mkdir -p "$results"
# 8 checks: one per scenario, two for dns-rebinding-protection.
for scenario in server-initialize ping logging-set-level tools-list resources-list prompts-list dns-rebinding-protection; do
  "$node" "$cli" server --url "$url" --scenario "$scenario" -o "$results" >>"$results/output.txt" 2>&1 || true
done
count_checks "$results" "conformance on vramscope mcp" 8 || { tail -40 "$results/output.txt"; failures=$((failures + 1)); }

for transport in stdio http; do
  if [ "$transport" = stdio ]; then target=("$vramscope" mcp --demo contention); else target=("$url"); fi
  expect "$transport tools/list" '"offcpu_attribution"' -- "${target[@]}" --method tools/list
  expect "$transport trace_overview" 'coverage: session 1 (complete)' -- "${target[@]}" \
    --method tools/call --tool-name trace_overview
  # The contention trace's slowest cudaFree: 10.29 ms, descheduled, the CPU held by the shell hog.
  expect "$transport offcpu_attribution" 'tail explained by scheduling' -- "${target[@]}" \
    --method tools/call --tool-name offcpu_attribution --tool-arg limit=5
  expect_tool_error "$transport bad argument -> isError" 'limit: must be >= 1' -- "${target[@]}" \
    --method tools/call --tool-name api_latency --tool-arg limit=-1
  expect "$transport prompts/get investigate" 'trace_overview' -- "${target[@]}" \
    --method prompts/get --prompt-name investigate
  expect "$transport resources/read schema" 'CREATE TABLE' -- "${target[@]}" \
    --method resources/read --uri vramscope://schema
done
[ "$failures" -eq 0 ] || { echo "$failures check(s) failed"; exit 1; }
echo "vramscope mcp: conformance scenarios and Inspector CLI checks passed over stdio and HTTP"
