#!/usr/bin/env bash
# Packs build/vramscope with the shared libraries it needs that a machine
# without package registries may lack, into examples/gpu/bundle/ (ignored
# by git): carry that folder to the GPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
b=examples/gpu/bundle
rm -rf "$b" && mkdir -p "$b/lib"
cp build/vramscope "$b/"
for lib in libbpf.so.1 libelf.so.1 libspdlog.so.1.10 libfmt.so.9 libsqlite3.so.0 libz.so.1; do
  cp -L "$(ldd build/vramscope | awk -v l="$lib" '$1 == l {print $3}')" "$b/lib/"
done
du -sh "$b"
