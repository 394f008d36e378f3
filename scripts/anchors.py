"""The anchors' versions that docs/performance.md was measured against, and a check that refuses
any other: a benchmark against a different torch or `rwkv` is not the comparison the docs state.

Every peer benchmark script calls `require(...)` before it measures. Set
VISUALRWKV_ALLOW_OTHER_VERSIONS=1 to measure anyway (the script then prints the versions it ran
with, and its figures are not comparable with the docs').
"""
import importlib
import importlib.metadata
import os
import sys

# The official package and its stack, as installed by scripts/bench-official.sh.
ANCHORS = {"torch": "2.15.0", "rwkv": "0.8.32", "transformers": "5.24.0", "PIL": "11.3.0"}
# Distribution names where they differ from the module's.
DISTRIBUTIONS = {"PIL": "pillow"}


def installed(module):
    """The version string of an importable module, without a local suffix (`2.15.0+cpu`)."""
    mod = importlib.import_module(module)
    version = getattr(mod, "__version__", None)
    if version is None:
        # `rwkv` has no `__version__`: ask the installed distribution.
        version = importlib.metadata.version(DISTRIBUTIONS.get(module, module))
    return str(version).split("+")[0]


def require(*modules):
    """Exits with an error naming each module whose version is not the anchor's."""
    wrong = []
    for m in modules:
        try:
            found = installed(m)
        except ImportError:
            found = "not installed"
        if found != ANCHORS[m]:
            wrong.append(f"{m} {found} (expected {ANCHORS[m]})")
    if not wrong:
        print("anchors: " + ", ".join(f"{m} {ANCHORS[m]}" for m in modules), file=sys.stderr)
        return
    msg = "wrong peer versions: " + "; ".join(wrong)
    if os.environ.get("VISUALRWKV_ALLOW_OTHER_VERSIONS") == "1":
        print(f"warning: {msg} -- measuring anyway (VISUALRWKV_ALLOW_OTHER_VERSIONS=1)", file=sys.stderr)
        return
    sys.exit(f"error: {msg}. Use scripts/bench-official.sh (its own venv with the pinned versions), "
             "or set VISUALRWKV_ALLOW_OTHER_VERSIONS=1 to measure with these.")
