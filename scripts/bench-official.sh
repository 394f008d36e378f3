#!/usr/bin/env bash
# Optional: builds (or reuses) a venv with torch and the official `rwkv` package, then times it on
# random RWKV-6 models shaped like `cargo bench -p visualrwkv-rwkv`. Not part of CI.
#   scripts/bench-official.sh [VENV] [-- args for bench-official.py]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:-$HOME/.cache/torch-venv}"
shift || true
if ! "$VENV/bin/python" -c 'import torch, rwkv, numpy' 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install torch rwkv numpy
fi
exec "$VENV/bin/python" scripts/bench-official.py "$@"
