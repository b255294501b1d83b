#!/usr/bin/env bash
# The official MCP Inspector CLI lists and calls the fixture server's tools,
# over stdio (it launches the server) and over HTTP (a real socket).
#   run_inspector.sh SERVER_BINARY
set -euo pipefail
server=$1
source "$(dirname "$0")/clients_common.sh"
require_clients "$inspector"
scratch=$(mktemp -d)
export MCP_CATALOG_PATH=$scratch/catalog.json  # keep the Inspector out of ~/.mcp-inspector
trap 'kill "$server_pid" 2>/dev/null; wait "$server_pid" 2>/dev/null; rm -rf "$scratch"' EXIT
start_server "$scratch/server.log" '^listening on \(.*\)' "$server" http 0

for transport in stdio http; do
  if [ "$transport" = stdio ]; then target=("$server" stdio); else target=("$url"); fi
  expect "$transport tools/list" '"json_schema_2020_12_tool"' -- "${target[@]}" --method tools/list
  expect "$transport tools/call" 'This is a simple text response for testing.' -- "${target[@]}" \
    --method tools/call --tool-name test_simple_text
  expect "$transport tools/call with arguments" '\"name\":\"inspector\"' -- "${target[@]}" \
    --method tools/call --tool-name json_schema_2020_12_tool --tool-arg name=inspector email=i@example.com
  # The schema's if/then: contactMethod "phone" requires a phone.
  expect_tool_error "$transport tools/call checks if/then" 'missing required property \"phone\"' -- "${target[@]}" \
    --method tools/call --tool-name json_schema_2020_12_tool --tool-arg contactMethod=phone email=i@example.com
  expect "$transport resources/read" 'static text resource' -- "${target[@]}" \
    --method resources/read --uri test://static-text
  expect "$transport prompts/get" "arg1='a'" -- "${target[@]}" \
    --method prompts/get --prompt-name test_prompt_with_arguments --prompt-args arg1=a arg2=b
done
[ "$failures" -eq 0 ] || { echo "$failures Inspector check(s) failed"; exit 1; }
echo "Inspector CLI: all checks passed over stdio and HTTP"
