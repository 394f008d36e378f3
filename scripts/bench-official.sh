#!/usr/bin/env bash
# Optional: builds (or reuses) a venv with torch and the official `rwkv` package, then times it on
# random RWKV-6 models shaped like `cargo bench -p visualrwkv-rwkv`. Not part of CI. The same venv
# runs scripts/bench-vlm-official.py and scripts/bench-efficiency-hf.py.
#   scripts/bench-official.sh [VENV] [-- args for bench-official.py]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:-$HOME/.cache/torch-venv}"
shift || true
# The anchors' versions the figures in docs/performance.md were measured against.
if ! "$VENV/bin/python" -c 'import torch, rwkv, numpy, transformers, PIL, safetensors' 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install torch==2.15.0 rwkv==0.8.32 transformers==5.24.0 pillow==11.3.0 numpy safetensors
fi
exec "$VENV/bin/python" scripts/bench-official.py "$@"
