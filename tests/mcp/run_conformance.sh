#!/usr/bin/env bash
# Runs the official MCP conformance suite against the fixture server over a
# real HTTP socket; fails on any failed check and prints the pass count.
#   run_conformance.sh SERVER_BINARY SUITE RESULTS_DIR
# SUITE: "conformance" (@modelcontextprotocol/conformance, every scenario, pending ones too) or
# "conformance-next" (the 0.2 alpha, the scenarios 2025-11-25 requires).
set -euo pipefail
server=$1 suite=$2 results=$3
source "$(dirname "$0")/clients_common.sh"
cli=$here/node_modules/$( [ "$suite" = conformance ] && echo @modelcontextprotocol/conformance || echo conformance-next )/dist/index.js
require_clients "$cli"
log=$(mktemp)
trap 'kill "$server_pid" 2>/dev/null; wait "$server_pid" 2>/dev/null; rm -f "$log"' EXIT
start_server "$log" '^listening on \(.*\)' "$server" http 0

rm -rf "$results" && mkdir -p "$results"
args=(server --url "$url" -o "$results")
if [ "$suite" = conformance ]; then args+=(--suite all); else args+=(--requirements 2025-11-25); fi
"$node" "$cli" "${args[@]}" >"$results/output.txt" 2>&1 || true

count_checks "$results" "$suite" || { tail -40 "$results/output.txt"; exit 1; }
