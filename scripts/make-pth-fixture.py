"""Writes tests/fixtures/rwkv6_tiny_a_weights_bf16.pth: the official tiny x060 fixture weights
cast to bf16 and saved with torch.save (the format of official RWKV-6 .pth releases).

Run with any Python that has torch:  python scripts/make-pth-fixture.py
"""
import json
import struct

import torch

src = "tests/fixtures/rwkv6_tiny_a_weights.safetensors"
raw = open(src, "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
header = json.loads(raw[8 : 8 + n])
state = {}
for key, meta in header.items():
    if key == "__metadata__":
        continue
    start, end = meta["data_offsets"]
    t = torch.frombuffer(bytearray(raw[8 + n + start : 8 + n + end]), dtype=torch.float32)
    state[key] = t.reshape(meta["shape"]).to(torch.bfloat16).clone()
torch.save(state, "tests/fixtures/rwkv6_tiny_a_weights_bf16.pth")
print(f"wrote {len(state)} tensors with torch {torch.__version__}")
