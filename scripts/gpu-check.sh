#!/usr/bin/env bash
# Runs, on a machine with an NVIDIA GPU, the prebuilt WKV6 kernel checks and benchmark on burn's
# CUDA backend. Builds nothing and needs no network: build the binaries elsewhere with
# scripts/gpu-bundle.sh and bring gpu-bundle/ along (see docs/gpu.md).
#
#   scripts/gpu-check.sh [BUNDLE_DIR]          # default: gpu-bundle
#
# 1. the kernel test suite on cuda (forward, final state, all six gradients against the f64
#    reference: proptest over shapes, T = 1 .. 1100, N in {1..8, 16, 32, 64}, extreme decays,
#    non-zero initial states; f32, f16, bf16);
#    then the WKV7 kernel suite (forward, final state, all seven gradients; f32, f16, bf16);
# 2. the benchmark at B=8, T=4096, H=32, N=64 in f32 and bf16: forward and backward time,
#    tokens/s and bandwidth against a device-to-device copy measured in the same run, the chunked
#    tensor-op formulation as a same-run baseline, and the accuracy table per dtype; then the
#    same for WKV7 (--op wkv7, T=1024, tensor-op baseline);
# 3. `visualrwkv bench-efficiency` for a 1.6B-shaped random VisualRWKV (RWKV-6 24 x 2048 with a
#    CLIP-L/336 tower: 577 image rows, then text) against the same-size transformer with the same
#    tower, at 1K, 4K and 24K rows: prefill (tower included) and decode time, peak device memory
#    (nvidia-smi), state vs KV-cache bytes;
# 4. `visualrwkv bench-train`: stage-2 training steps/s and tokens/s of the same model at 1024
#    rows per sample, batch 4.
# Results go to $RESULTS (default gpu-results/). Every step of 3 and 4 is tested on wgpu in CI
# (crates/cli/tests/efficiency_cli.rs) at tiny sizes.
set -euo pipefail
bundle="${1:-gpu-bundle}"
results="${RESULTS:-gpu-results}"
mkdir -p "$results"
for f in kernels-tests wkv7-tests wkv6_gpu visualrwkv; do
  [[ -x "$bundle/$f" ]] || { echo "error: $bundle/$f missing: run scripts/gpu-bundle.sh first" >&2; exit 2; }
done

# cudarc dlopens libcuda (driver) and libnvrtc: add the usual CUDA library folders.
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/lib/x86_64-linux-gnu \
         $(python3 -c 'import nvidia, os; print(" ".join(os.path.join(p, d, "lib") for p in nvidia.__path__ for d in os.listdir(p)))' 2>/dev/null || true); do
  [[ -d "$d" ]] && LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$d"
done
export LD_LIBRARY_PATH

echo "== device"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true

echo "== kernel tests on cuda"
"$bundle/kernels-tests" cuda:: --test-threads 1
"$bundle/wkv7-tests" cuda:: --test-threads 1

echo "== benchmark on cuda (B=8, T=4096, H=32, N=64)"
"$bundle/wkv6_gpu" --backend cuda --b 8 --t 4096 --h 32 --n 64 --dtypes f32,bf16 --reps 5 --baseline --accuracy

echo "== WKV7 benchmark on cuda (B=8, T=1024, H=32, N=64)"
"$bundle/wkv6_gpu" --op wkv7 --backend cuda --b 8 --t 1024 --h 32 --n 64 --dtypes f32,bf16 --reps 5 --baseline --accuracy

echo "== VisualRWKV vs transformer on cuda: 1.6B shape + CLIP-L/336, 1K / 4K / 24K rows"
timeout 240 "$bundle/visualrwkv" bench-efficiency --device cuda --vision clip-l-336 --width 2048 --layers 24 \
  --vocab 65536 --contexts 1024,4096,24576 --decode-steps 16 --out "$results/efficiency-vlm"

echo "== stage-2 training speed on cuda: 1.6B shape + CLIP-L/336, 1024 rows x batch 4"
timeout 150 "$bundle/visualrwkv" bench-train --device cuda --vision clip-l-336 --width 2048 --layers 24 \
  --vocab 65536 --ctx-len 1024 --batch 4 --steps 6 --out "$results/train.json"
