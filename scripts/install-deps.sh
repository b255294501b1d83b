#!/usr/bin/env bash
# Installs what vramscope builds and tests with: Debian 12 packages only.
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then echo "install-deps.sh: run as root (apt-get)" >&2; exit 1; fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# clang-16 and libclang-rt-16-dev (its sanitizer and libFuzzer runtimes): scripts/test-sanitized.sh; clang 14
# (clang, used for the BPF programs) cannot compile our C++20 (structured bindings captured by lambdas).
# ninja-build: scripts/test.sh and test-sanitized.sh build with Ninja where it is installed (a target's
# sources compile while the libraries it links are still being built: both cores stay busy).
# librsvg2-dev (pulls cairo): headers for allocation_timeline's PNG chart (its SVG rasterized for clients that
# show only raster images); the binary loads librsvg at run time, only when a PNG is asked for.
apt-get install -y -qq --no-install-recommends \
  cmake make ninja-build g++ clang clang-16 libclang-rt-16-dev pkg-config \
  libbpf-dev bpftool libelf-dev zlib1g-dev \
  python3 libsqlite3-dev sqlite3 nlohmann-json3-dev libboost-dev libspdlog-dev libcli11-dev catch2 libbenchmark-dev \
  librsvg2-dev \
  >/dev/null
bash "$(dirname "$0")/install-mcp-clients.sh"  # MCP clients for tests/mcp (npm)
