#!/usr/bin/env bash
# `vramscope mcp --allow-trace` with real eBPF on the fake CUDA libraries: the
# refusals (no root, no token over HTTP, --db beside it), then an agent's whole
# live investigation with the official SDK over stdio and over HTTP
# (live_trace_client.mjs), and no BPF link left behind once the servers are gone.
#   run_live_tracing.sh VRAMSCOPE FIXTURE_DIR SCRATCH_DIR
# Exit 77 (skipped) when eBPF is unavailable, unless VRAMSCOPE_REQUIRE_BPF=1.
set -euo pipefail
vramscope=$1 fixtures=$2 scratch=$3
source "$(dirname "$0")/clients_common.sh"
require_clients "$inspector"
if [ "$(id -u)" -ne 0 ] || ! bpftool prog list >/dev/null 2>&1; then
  if [ "${VRAMSCOPE_REQUIRE_BPF:-}" = 1 ]; then echo "FAIL: eBPF is required (VRAMSCOPE_REQUIRE_BPF=1) but unavailable" >&2; exit 1; fi
  echo "SKIPPED: eBPF unavailable (needs root and a BTF kernel)"; exit 77
fi
rm -rf "$scratch" && mkdir -p "$scratch"

# refuses DESCRIPTION NEEDLE CMD...: CMD exits with status 2 saying NEEDLE.
refuses() {
  local what=$1 needle=$2 rc=0
  shift 2
  "$@" >"$scratch/refusal.log" 2>&1 </dev/null || rc=$?
  if [ "$rc" -eq 2 ] && grep -qF -- "$needle" "$scratch/refusal.log"; then echo "ok   refused: $what"
  else echo "FAIL refused: $what (exit $rc)"; cat "$scratch/refusal.log"; failures=$((failures + 1)); fi
}
refuses "over HTTP without a token" "needs a bearer token" \
  env -u VRAMSCOPE_MCP_TOKEN "$vramscope" mcp --allow-trace --trace-dir "$scratch/traces" --http 127.0.0.1:0
refuses "not root" "needs root" setpriv --reuid=65534 --regid=65534 --clear-groups \
  "$vramscope" mcp --allow-trace --trace-dir "$scratch/traces"
refuses "--db beside it" "--db and --demo" "$vramscope" mcp --allow-trace --demo contention
mkdir -p "$scratch/open" && chmod 0777 "$scratch/open"
refuses "a trace directory others can write" "writable by root only" \
  "$vramscope" mcp --allow-trace --trace-dir "$scratch/open"
# Without --allow-trace there is no way to trace.
export MCP_CATALOG_PATH=$scratch/catalog.json  # keep the Inspector out of ~/.mcp-inspector
if timeout 60 "$node" "$inspector" --cli "$vramscope" mcp --demo contention --method tools/list 2>&1 | grep -q trace_start; then
  echo "FAIL: trace_start offered without --allow-trace"; failures=$((failures + 1))
else echo "ok   no live tools without --allow-trace"; fi

links_before=$(bpftool link list 2>/dev/null | grep -c '^[0-9]' || true)
for transport in stdio http; do
  "$node" "$here/live_trace_client.mjs" "$vramscope" "$fixtures" "$scratch/$transport" "$transport" ||
    failures=$((failures + 1))
done
sleep 1  # perf-event links are closed by a helper that may outlive the server by a moment
links_after=$(bpftool link list 2>/dev/null | grep -c '^[0-9]' || true)
if [ "$links_after" -le "$links_before" ]; then echo "ok   no BPF link left behind ($links_before before, $links_after after)"
else echo "FAIL: $((links_after - links_before)) BPF link(s) outlive the servers"; bpftool link list; failures=$((failures + 1)); fi
[ "$failures" -eq 0 ] || { echo "$failures check(s) failed"; exit 1; }
echo "vramscope mcp --allow-trace: refusals, live tracing over stdio and HTTP, nothing left behind"
