# Shared by the scripts that drive a server with the npm MCP clients
# (sourced, not run). Sets: here, node, conformance_cli, inspector.
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
node=$here/node_modules/.bin/node
inspector=$here/node_modules/@modelcontextprotocol/inspector/clients/launcher/build/index.js

# require_clients FILE...: fail (not skip) when the npm clients are missing.
require_clients() {
  for f in "$node" "$@"; do
    if [ ! -e "$f" ]; then
      echo "FAIL: the MCP clients are not installed ($f); run scripts/install-mcp-clients.sh" >&2
      exit 1
    fi
  done
}

# start_server LOG PATTERN CMD...: starts CMD in the background (stdout and
# stderr to LOG), waits until LOG has a line matching the sed pattern PATTERN
# (whose \1 is the URL) and sets `url` and `server_pid`.
start_server() {
  local log=$1 pattern=$2
  shift 2
  "$@" >"$log" 2>&1 &
  server_pid=$!
  url=
  for _ in $(seq 200); do
    url=$(sed -n "s/$pattern/\1/p" "$log" | head -1)
    [ -n "$url" ] && return 0
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.05
  done
  echo "FAIL: the server did not start ($*):" >&2
  cat "$log" >&2
  exit 1
}

failures=0
# expect DESCRIPTION NEEDLE -- INSPECTOR ARGS...: the Inspector CLI's output must contain NEEDLE.
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

# count_checks RESULTS_DIR LABEL: prints the conformance checks passed and
# failed under RESULTS_DIR; fails when any failed or none ran.
count_checks() {
  "$node" -e '
  const fs = require("fs"), path = require("path");
  const files = [];
  (function walk(d) { for (const e of fs.readdirSync(d, {withFileTypes: true})) {
    const p = path.join(d, e.name); if (e.isDirectory()) walk(p); else if (e.name === "checks.json") files.push(p); } })(process.argv[1]);
  let passed = 0, failed = [], warned = [];
  for (const f of files) for (const c of JSON.parse(fs.readFileSync(f, "utf8"))) {
    if (c.status === "SUCCESS") passed++;
    else if (c.status === "FAILURE") failed.push(`${path.basename(path.dirname(f))}: ${c.id}: ${c.errorMessage || ""}`);
    else if (c.status === "WARNING") warned.push(`${path.basename(path.dirname(f))}: ${c.id}: ${c.errorMessage || ""}`);
  }
  console.log(`${process.argv[2]}: ${passed} checks passed, ${failed.length} failed, ${warned.length} warnings (${files.length} scenarios)`);
  for (const w of warned) console.log("  warning: " + w);
  for (const f of failed) console.log("  FAILED: " + f);
  process.exit(files.length === 0 || failed.length ? 1 : 0);
  ' "$1" "$2"
}

# expect_tool_error DESCRIPTION NEEDLE -- INSPECTOR ARGS...: the call must come
# back as a tool error (the Inspector CLI then exits non-zero) whose message
# contains NEEDLE.
expect_tool_error() {
  local what=$1 needle=$2
  shift 3
  local output
  if output=$(timeout 60 "$node" "$inspector" --cli "$@" 2>&1) || [[ "$output" != *'"isError": true'* ]] ||
     [[ "$output" != *"$needle"* ]]; then
    echo "FAILED: $what: not a tool error with '$needle':"
    echo "$output" | head -30
    failures=$((failures + 1))
  else
    echo "ok: $what"
  fi
}
