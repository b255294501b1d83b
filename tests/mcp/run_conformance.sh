#!/usr/bin/env bash
# Runs the official MCP conformance suite against the fixture server over a
# real HTTP socket; fails unless exactly EXPECTED checks pass and none fails
# or warns, so a check that stops being scored (INFO, SKIPPED) fails too.
#   run_conformance.sh SERVER_BINARY SUITE ANSWERS EXPECTED RESULTS_DIR
# SUITE: "conformance" (@modelcontextprotocol/conformance, every scenario, pending ones too) or
# "conformance-next" (the 0.2 alpha, the scenarios 2025-11-25 requires).
# ANSWERS: "sse" (every request answered with an SSE stream) or "json" (plain
# JSON unless something comes before the result: the suite then records
# server-sse-streams-functional as INFO, so one check fewer is scored).
set -euo pipefail
server=$1 suite=$2 answers=$3 expected=$4 results=$5
source "$(dirname "$0")/clients_common.sh"
cli=$here/node_modules/$( [ "$suite" = conformance ] && echo @modelcontextprotocol/conformance || echo conformance-next )/dist/index.js
require_clients "$cli"
server_args=(http)
case $answers in
  sse) server_args+=(--sse-responses) ;;
  json) ;;
  *) echo "FAIL: ANSWERS must be sse or json, not '$answers'" >&2; exit 2 ;;
esac
log=$(mktemp)
trap 'kill "$server_pid" 2>/dev/null; wait "$server_pid" 2>/dev/null; rm -f "$log"' EXIT
start_server "$log" '^listening on \(.*\)' "$server" "${server_args[@]}" 0

rm -rf "$results" && mkdir -p "$results"
args=(server --url "$url" -o "$results")
if [ "$suite" = conformance ]; then args+=(--suite all); else args+=(--requirements 2025-11-25); fi
"$node" "$cli" "${args[@]}" >"$results/output.txt" 2>&1 || true

count_checks "$results" "$suite ($answers answers)" "$expected" || { tail -40 "$results/output.txt"; exit 1; }
