#!/usr/bin/env bash
# Optional: builds (or reuses) a venv with the anchors' pinned versions (scripts/anchors.py:
# torch 2.15.0, rwkv 0.8.32, transformers 5.24.0, pillow 11.3.0), refuses one that holds other
# versions, then times the official `rwkv` package on random RWKV-6 models shaped like
# `cargo bench -p visualrwkv-rwkv` (RWKV-7 with `-- --arch x070`). Not part of CI. The same venv runs
# scripts/bench-vlm-official.py, scripts/bench-vision-official.py and
# scripts/bench-efficiency-hf.py (each checks the versions itself too).
#   scripts/bench-official.sh [VENV] [-- args for bench-official.py]
# The default venv is its own: scripts/tch-check.sh keeps torch 2.9.0 in another.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:-$HOME/.cache/visualrwkv-anchor-venv}"
shift || true
[ "${1:-}" = "--" ] && shift
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install torch==2.15.0 rwkv==0.8.32 transformers==5.24.0 pillow==11.3.0 numpy safetensors
fi
# Refuses a venv with other versions (e.g. one made for tch-check.sh) before measuring anything.
(cd scripts && "$VENV/bin/python" -c 'import anchors; anchors.require("torch", "rwkv", "transformers", "PIL")')
exec "$VENV/bin/python" scripts/bench-official.py "$@"
