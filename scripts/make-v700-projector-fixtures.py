"""Goldens for VisualRWKV-7 v7.00's token pooling and projector, from the official code.

The classes are taken from the official repository's `VisualRWKV-v7/v7.00/src/model.py`
(`MLPWithContextGating`, and `VisualRWKV.adaptive_pooling` with its `nn.AdaptiveAvgPool2d`)
by parsing that file and executing only those definitions, so the goldens come from the
official code, not from a re-implementation. Random weights (torch.manual_seed) are saved with
the official key names under `proj.`.

Writes tests/fixtures/v700/projector_golden.safetensors:
  proj.gate.weight [D, D], proj.o_proj.weight [C, D], proj.ln_v.{weight,bias} [C]
  features [B, L, D] (L = 7·7 patches), pooled [B, 9, D] (3·3 tokens), projected [B, 9, C],
  pooled16 [B, 16, D] (4·4 tokens, windows overlap), projected16 [B, 16, C]

    python scripts/make-v700-projector-fixtures.py /path/to/VisualRWKV/VisualRWKV-v7/v7.00/src/model.py
"""
import ast, sys
import torch
import torch.nn as nn
from safetensors.torch import save_file

src = open(sys.argv[1]).read()
tree = ast.parse(src)
wanted = []
for node in tree.body:
    if isinstance(node, ast.ClassDef) and node.name == "MLPWithContextGating":
        wanted.append(node)
    if isinstance(node, ast.ClassDef) and node.name == "VisualRWKV":
        for item in node.body:
            if isinstance(item, ast.FunctionDef) and item.name == "adaptive_pooling":
                wanted.append(item)
assert len(wanted) == 2, "official definitions not found"
scope = {"nn": nn, "torch": torch}
exec(compile(ast.Module(body=wanted, type_ignores=[]), sys.argv[1], "exec"), scope)


class Pooler:  # the two attributes `adaptive_pooling` reads from VisualRWKV
    def __init__(self, tokens):
        self.pool = nn.AdaptiveAvgPool2d(int(tokens ** 0.5))

    adaptive_pooling = scope["adaptive_pooling"]


torch.manual_seed(7)
B, S, D, C = 2, 7, 8, 12
proj = scope["MLPWithContextGating"](D, C)
with torch.no_grad():
    for p in proj.parameters():
        p.copy_(torch.randn_like(p) * 0.5 + (1.0 if p.dim() == 1 and p is proj.ln_v.weight else 0.0))
features = torch.randn(B, S * S, D)
out = {f"proj.{k}": v.detach().clone().contiguous() for k, v in proj.state_dict().items()}
out["features"] = features
with torch.no_grad():
    for tokens, suffix in [(9, ""), (16, "16")]:
        pooled = Pooler(tokens).adaptive_pooling(features)
        out[f"pooled{suffix}"] = pooled.contiguous()
        out[f"projected{suffix}"] = proj(pooled).contiguous()
save_file(out, "tests/fixtures/v700/projector_golden.safetensors",
          metadata={"source": "VisualRWKV-v7/v7.00/src/model.py", "torch": torch.__version__})
print({k: tuple(v.shape) for k, v in out.items()})
