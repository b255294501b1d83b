#!/usr/bin/env bash
# The official MCP Inspector CLI lists and calls the fixture server's tools,
# over stdio (it launches the server) and over HTTP (a real socket).
#   run_inspector.sh SERVER_BINARY
set -euo pipefail
server=$1
here=$(cd "$(dirname "$0")" && pwd)
node=$here/node_modules/.bin/node
inspector=$here/node_modules/@modelcontextprotocol/inspector/clients/launcher/build/index.js
if [ ! -x "$node" ] || [ ! -f "$inspector" ]; then
  echo "FAIL: the MCP clients are not installed ($inspector); run scripts/install-mcp-clients.sh" >&2
  exit 1
fi
scratch=$(mktemp -d)
export MCP_CATALOG_PATH=$scratch/catalog.json  # keep the Inspector out of ~/.mcp-inspector

log=$scratch/server.log
"$server" http 0 >"$log" 2>&1 &
server_pid=$!
trap 'kill "$server_pid" 2>/dev/null; wait "$server_pid" 2>/dev/null; rm -rf "$scratch"' EXIT
for _ in $(seq 100); do
  url=$(sed -n 's/^listening on //p' "$log")
  [ -n "$url" ] && break
  sleep 0.05
done
[ -n "$url" ] || { echo "FAIL: the fixture server did not start:" >&2; cat "$log" >&2; exit 1; }

failures=0
# expect DESCRIPTION NEEDLE -- INSPECTOR ARGS...: the Inspector's output must contain NEEDLE.
expect() {
  local what=$1 needle=$2
  shift 3
  local output
  if ! output=$(timeout 60 "$node" "$inspector" --cli "$@" 2>&1) || [[ "$output" != *"$needle"* ]]; then
    echo "FAILED: $what: no '$needle' in:"
    echo "$output" | head -30
    failures=$((failures + 1))
  else
    echo "ok: $what"
  fi
}
for transport in stdio http; do
  if [ "$transport" = stdio ]; then target=("$server" stdio); else target=("$url"); fi
  expect "$transport tools/list" '"json_schema_2020_12_tool"' -- "${target[@]}" --method tools/list
  expect "$transport tools/call" 'This is a simple text response for testing.' -- "${target[@]}" \
    --method tools/call --tool-name test_simple_text
  expect "$transport tools/call with arguments" '\"name\":\"inspector\"' -- "${target[@]}" \
    --method tools/call --tool-name json_schema_2020_12_tool --tool-arg name=inspector
  expect "$transport resources/read" 'static text resource' -- "${target[@]}" \
    --method resources/read --uri test://static-text
  expect "$transport prompts/get" "arg1='a'" -- "${target[@]}" \
    --method prompts/get --prompt-name test_prompt_with_arguments --prompt-args arg1=a arg2=b
done
[ "$failures" -eq 0 ] || { echo "$failures Inspector check(s) failed"; exit 1; }
echo "Inspector CLI: all checks passed over stdio and HTTP"
