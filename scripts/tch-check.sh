#!/usr/bin/env bash
# Builds and tests the WKV6 op on burn's LibTorch backend (CPU) against PyTorch 2.9.0 from PyPI,
# the version burn 0.21's tch 0.22 requires. Not part of CI: the wheel is ~6.7 GB.
#   scripts/tch-check.sh [VENV]      (default VENV: ~/.cache/torch-venv)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:-$HOME/.cache/torch-venv}"
if ! "$VENV/bin/python" -c 'import torch, sys; sys.exit(torch.__version__.split("+")[0] != "2.9.0")' 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install torch==2.9.0
fi
SITE=$("$VENV/bin/python" -c 'import site; print(site.getsitepackages()[0])')
export VIRTUAL_ENV="$VENV" PATH="$VENV/bin:$PATH" LIBTORCH_USE_PYTORCH=1
export LD_LIBRARY_PATH="$SITE/torch/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/visualrwkv-target-tch}"
cargo test -p visualrwkv-wkv --features tch --test tch
