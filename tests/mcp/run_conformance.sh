#!/usr/bin/env bash
# Runs the official MCP conformance suite against the fixture server over a
# real HTTP socket; fails on any failed check and prints the pass count.
#   run_conformance.sh SERVER_BINARY SUITE RESULTS_DIR
# SUITE: "conformance" (@modelcontextprotocol/conformance, every scenario, pending ones too) or
# "conformance-next" (the 0.2 alpha, the scenarios 2025-11-25 requires).
set -euo pipefail
server=$1 suite=$2 results=$3
here=$(cd "$(dirname "$0")" && pwd)
node=$here/node_modules/.bin/node
cli=$here/node_modules/$( [ "$suite" = conformance ] && echo @modelcontextprotocol/conformance || echo conformance-next )/dist/index.js
if [ ! -x "$node" ] || [ ! -f "$cli" ]; then
  echo "FAIL: the MCP clients are not installed ($cli); run scripts/install-mcp-clients.sh" >&2
  exit 1
fi

log=$(mktemp)
"$server" http 0 >"$log" 2>&1 &
server_pid=$!
trap 'kill "$server_pid" 2>/dev/null; wait "$server_pid" 2>/dev/null; rm -f "$log"' EXIT
for _ in $(seq 100); do
  url=$(sed -n 's/^listening on //p' "$log")
  [ -n "$url" ] && break
  sleep 0.05
done
[ -n "$url" ] || { echo "FAIL: the fixture server did not start:" >&2; cat "$log" >&2; exit 1; }

rm -rf "$results" && mkdir -p "$results"
args=(server --url "$url" -o "$results")
if [ "$suite" = conformance ]; then args+=(--suite all); else args+=(--requirements 2025-11-25); fi
"$node" "$cli" "${args[@]}" >"$results/output.txt" 2>&1 || true

# Every checks.json the run wrote: count SUCCESS and FAILURE (WARNING/INFO are neither).
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
' "$results" "$suite" || { tail -40 "$results/output.txt"; exit 1; }
