#!/usr/bin/env bash
# Builds and tests the WKV6 op on burn's LibTorch backend (CPU) against PyTorch 2.9.0 from PyPI,
# the version burn 0.21's tch 0.22 requires. Not part of CI: the wheel is ~6.7 GB.
#   scripts/tch-check.sh [VENV]      (default VENV: ~/.cache/visualrwkv-tch-venv)
# Its venv is its own (the peer benchmarks pin torch 2.15.0 in scripts/bench-official.sh's); a
# VENV holding another torch is refused, not reinstalled.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:-$HOME/.cache/visualrwkv-tch-venv}"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install torch==2.9.0
fi
found=$("$VENV/bin/python" -c 'import torch; print(torch.__version__.split("+")[0])' 2>/dev/null || echo "not installed")
if [ "$found" != "2.9.0" ]; then
  echo "error: $VENV has torch $found; burn 0.21's tch 0.22 needs 2.9.0 (give another VENV)" >&2
  exit 1
fi
SITE=$("$VENV/bin/python" -c 'import site; print(site.getsitepackages()[0])')
export VIRTUAL_ENV="$VENV" PATH="$VENV/bin:$PATH" LIBTORCH_USE_PYTORCH=1
export LD_LIBRARY_PATH="$SITE/torch/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/visualrwkv-target-tch}"
cargo test -p visualrwkv-wkv --features tch --test tch
