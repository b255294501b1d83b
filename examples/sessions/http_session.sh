#!/usr/bin/env bash
# A scripted MCP session over Streamable HTTP with curl: initialize (the
# server answers with an Mcp-Session-Id), notifications/initialized, tools/list,
# one tool call, then DELETE to end the session. Start the server first:
#
#   vramscope mcp --demo contention --http 127.0.0.1:8765 &
#   examples/sessions/http_session.sh http://127.0.0.1:8765/mcp
#
# With a bearer token (required off loopback): VRAMSCOPE_MCP_TOKEN=... in the
# environment of both.
set -euo pipefail
url=${1:-http://127.0.0.1:8765/mcp}
headers=(-H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream')
if [ -n "${VRAMSCOPE_MCP_TOKEN:-}" ]; then headers+=(-H "Authorization: Bearer $VRAMSCOPE_MCP_TOKEN"); fi

post() {  # post BODY [extra curl args...]: prints the answer's body
  local body=$1; shift
  curl -sS --fail-with-body "${headers[@]}" "$@" --data "$body" "$url"
}

echo "== initialize"
hdrs=$(mktemp); trap 'rm -f "$hdrs"' EXIT
post '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"curl","version":"1"}}}' -D "$hdrs"
echo
session=$(grep -i '^mcp-session-id:' "$hdrs" | cut -d' ' -f2 | tr -d '\r')
echo "session: $session"
headers+=(-H "Mcp-Session-Id: $session" -H 'MCP-Protocol-Version: 2025-11-25')

echo "== notifications/initialized (202, no body)"
post '{"jsonrpc":"2.0","method":"notifications/initialized"}' -o /dev/null -w '%{http_code}\n'

echo "== tools/list (names)"
post '{"jsonrpc":"2.0","id":2,"method":"tools/list"}' | grep -o '"name":"[a-z_]*"' | sort -u | tr '\n' ' '
echo

echo "== tools/call offcpu_attribution"
post '{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"offcpu_attribution","arguments":{"limit":5}}}'
echo

echo "== DELETE (ends the session)"
curl -sS "${headers[@]}" -X DELETE -o /dev/null -w '%{http_code}\n' "$url"
