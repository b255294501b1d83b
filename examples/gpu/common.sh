# Sourced by the GPU scripts: which vramscope to run, and which Python.
# The bundle (scripts/bundle.sh: the binary with its shared libraries, for
# machines without package registries) wins over a local build.
gpu_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [ -x "$gpu_dir/bundle/vramscope" ]; then
  vs="$gpu_dir/bundle/vramscope"
  export LD_LIBRARY_PATH="$gpu_dir/bundle/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
else
  vs="$gpu_dir/../../build/vramscope"
fi
py=${PYTHON:-python3}
