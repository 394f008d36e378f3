#!/usr/bin/env bash
# Asks a running `visualrwkv serve` an image question and a streamed one through OpenAI's own
# Python client (the `openai` package), then a text completion and the model list; prints the
# answers as one JSON line (scripts/openai-client-test.py checks the wire objects).
#
#   scripts/openai-client-test.sh http://127.0.0.1:8080 picture.png ["What is in the image?"]
#
# The client lives in a venv outside the repo: $VISUALRWKV_OPENAI_VENV, else
# ~/.cache/visualrwkv-openai-venv, created and filled with pip on first use. Where Python, venv
# or pip is missing the script prints why on stderr and exits 77 (skipped), never silently.
set -euo pipefail
OPENAI_VERSION=3.63.0
venv="${VISUALRWKV_OPENAI_VENV:-$HOME/.cache/visualrwkv-openai-venv}"
here="$(cd "$(dirname "$0")" && pwd)"

python="$(command -v python3 || true)"
if [ -z "$python" ]; then
  echo "skipped: python3 is not installed, so the openai client cannot run" >&2
  exit 77
fi
if ! "$venv/bin/python" -c "import openai, sys; sys.exit(openai.__version__ != '$OPENAI_VERSION')" 2>/dev/null; then
  if ! "$python" -m venv "$venv" >&2; then
    echo "skipped: '$python -m venv $venv' failed (Debian: apt-get install python3-venv)" >&2
    exit 77
  fi
  if ! "$venv/bin/python" -m pip install -q "openai==$OPENAI_VERSION" >&2; then
    echo "skipped: pip could not install openai==$OPENAI_VERSION into $venv (no access to PyPI?)" >&2
    exit 77
  fi
fi
exec "$venv/bin/python" "$here/openai-client-test.py" "$@"
