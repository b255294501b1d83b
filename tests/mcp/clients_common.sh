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

# count_checks RESULTS_DIR LABEL EXPECTED: prints the conformance checks
# passed, failed and not scored (SKIPPED, or INFO from a check, not a log
# entry) under RESULTS_DIR; fails when any failed or warned, or when the
# number passed is not EXPECTED.
count_checks() {
  "$node" -e '
  const fs = require("fs"), path = require("path");
  const files = [];
  (function walk(d) { for (const e of fs.readdirSync(d, {withFileTypes: true})) {
    const p = path.join(d, e.name); if (e.isDirectory()) walk(p); else if (e.name === "checks.json") files.push(p); } })(process.argv[1]);
  // INFO entries with these ids log the HTTP exchange; any other INFO is a check the suite did not score.
  const log_entries = new Set(["outgoing-request", "incoming-response", "incoming-sse-event", "stream-closed"]);
  let passed = 0, failed = [], warned = [], unscored = [];
  for (const f of files) for (const c of JSON.parse(fs.readFileSync(f, "utf8"))) {
    const where = `${path.basename(path.dirname(f))}: ${c.id}: ${c.errorMessage || c.details?.message || ""}`;
    if (c.status === "SUCCESS") passed++;
    else if (c.status === "FAILURE") failed.push(where);
    else if (c.status === "WARNING") warned.push(where);
    else if (c.status === "SKIPPED" || (c.status === "INFO" && !log_entries.has(c.id))) unscored.push(`${c.status} ${where}`);
  }
  const expected = Number(process.argv[3]);
  console.log(`${process.argv[2]}: ${passed} checks passed (expected ${expected}), ${failed.length} failed, ` +
              `${warned.length} warnings, ${unscored.length} not scored (${files.length} scenarios)`);
  for (const u of unscored) console.log("  not scored: " + u);
  for (const w of warned) console.log("  WARNING: " + w);
  for (const f of failed) console.log("  FAILED: " + f);
  if (passed !== expected) console.log(`  FAILED: ${passed} checks passed, expected ${expected}`);
  process.exit(files.length === 0 || failed.length || warned.length || passed !== expected ? 1 : 0);
  ' "$1" "$2" "$3"
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
