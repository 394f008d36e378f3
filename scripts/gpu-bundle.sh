#!/usr/bin/env bash
# Builds, on this machine (no GPU needed), the CUDA test and benchmark binaries and the
# `visualrwkv` CLI with CUDA that scripts/gpu-check.sh runs on a GPU machine, and copies them into
# gpu-bundle/ (git-ignored).
#
#   scripts/gpu-bundle.sh            # CUDA 13.0 driver API (the lent H100/H200 machines)
#   CUDARC_CUDA_VERSION=12080 scripts/gpu-bundle.sh
#
# cubecl-cuda 0.10 loads libcuda and libnvrtc at run time (cudarc, dynamic loading), so nothing
# CUDA is needed here; cudarc picks the CUDA API version at build time from `nvcc --version` or
# CUDARC_CUDA_VERSION. Then copy gpu-bundle/ and scripts/gpu-check.sh to the GPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
export CUDARC_CUDA_VERSION="${CUDARC_CUDA_VERSION:-13000}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/visualrwkv-target-gpu}"
out=gpu-bundle
mkdir -p "$out"

# The last executable cargo reports for a target (its JSON messages name the binaries).
exe_of() {
  python3 -c '
import json, sys
name = sys.argv[1]
exe = None
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("target", {}).get("name") == name and m.get("executable"):
        exe = m["executable"]
if exe is None:
    sys.exit("no executable for target " + name)
print(exe)' "$1"
}

test_json=$(cargo test -p visualrwkv-kernels --features cuda --release --no-run --message-format json)
tests=$(exe_of kernels <<< "$test_json")
wkv7_tests=$(exe_of wkv7 <<< "$test_json")
bench=$(cargo bench -p visualrwkv-kernels --features cuda --bench wkv6_gpu --no-run --message-format json | exe_of wkv6_gpu)
cli=$(cargo build --release -p visualrwkv-cli --features cuda --message-format json | exe_of visualrwkv)
cp "$tests" "$out/kernels-tests"
cp "$wkv7_tests" "$out/wkv7-tests"
cp "$bench" "$out/wkv6_gpu"
cp "$cli" "$out/visualrwkv"
strip "$out/kernels-tests" "$out/wkv7-tests" "$out/wkv6_gpu" "$out/visualrwkv"   # debug info is most of the size
echo "bundle in $out/:"
ls -l "$out"
