#!/usr/bin/env bash
# Packs BUILD_DIR/vramscope (default build/), stripped, with the shared
# libraries it needs that a machine without package registries may lack, into
# examples/gpu/bundle/ (ignored by git): carry that folder to the GPU machine
# (the device tool carries at most 64 MiB; the unstripped binary is ~90 MB).
#
#   bash scripts/bundle.sh [BUILD_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
b=examples/gpu/bundle
rm -rf "$b" && mkdir -p "$b/lib"
strip -o "$b/vramscope" "$build/vramscope"
for lib in libbpf.so.1 libelf.so.1 libspdlog.so.1.10 libfmt.so.9 libsqlite3.so.0 libz.so.1; do
  cp -L "$(ldd "$build/vramscope" | awk -v l="$lib" '$1 == l {print $3}')" "$b/lib/"
done
du -sh "$b"
