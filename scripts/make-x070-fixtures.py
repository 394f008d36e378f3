"""Goldens for RWKV-7 (x070) from the official `rwkv` pip package (0.8.32, RWKV_V7_ON=1, `cpu fp32`).

Weights are drawn from a counter hash (splitmix64 of FNV-1a(key) and the element index), so
that the Rust tests can rebuild the same f32 values bit for bit without shipping large files:

    x     = (splitmix64(fnv1a64(key) ^ (index * 0x9E3779B97F4A7C15)) >> 40) / 2^24   # [0, 1)
    value = base + (x - 0.5) * scale                                                   # f32 ops

`base` and `scale` per key suffix are in SPEC below (and in crates/rwkv/tests/x070.rs); the
scale of every matrix but `emb.weight` and `att.r_k` is further multiplied by the shape's
`matrix_scale` (a power of two), so that wide models stay well conditioned in f32.

Writes tests/fixtures/x070/{name}_golden.safetensors (+ .json) for each shape, and for the
tiny shape also its weights as safetensors and as a torch.save `.pth` (the official format).

    RWKV_V7_ON=1 python scripts/make-x070-fixtures.py [--with-0b1]
"""
import json, os, struct, sys, time

os.environ["RWKV_V7_ON"] = "1"
os.environ.setdefault("RWKV_JIT_ON", "1")
import numpy as np
import torch
import rwkv
from rwkv.model import RWKV

OUT = "tests/fixtures/x070"
M64 = (1 << 64) - 1

# suffix -> (base, scale) as f32.
SPEC = {
    "emb.weight": (0.0, 2.0),
    "ln0.weight": (1.0, 0.4), "ln0.bias": (0.0, 0.2),
    "ln1.weight": (1.0, 0.4), "ln1.bias": (0.0, 0.2),
    "ln2.weight": (1.0, 0.4), "ln2.bias": (0.0, 0.2),
    "ln_out.weight": (1.0, 0.4), "ln_out.bias": (0.0, 0.2),
    "att.x_r": (0.5, 1.0), "att.x_w": (0.5, 1.0), "att.x_k": (0.5, 1.0),
    "att.x_v": (0.5, 1.0), "att.x_a": (0.5, 1.0), "att.x_g": (0.5, 1.0),
    "att.w0": (-2.0, 4.0), "att.w1": (0.0, 0.5), "att.w2": (0.0, 0.5),
    "att.a0": (0.0, 2.0), "att.a1": (0.0, 0.5), "att.a2": (0.0, 0.5),
    "att.v0": (0.0, 2.0), "att.v1": (0.0, 0.5), "att.v2": (0.0, 0.5),
    "att.g1": (0.0, 0.5), "att.g2": (0.0, 0.5),
    "att.k_k": (0.75, 0.5), "att.k_a": (1.0, 0.5), "att.r_k": (0.0, 1.0),
    "att.receptance.weight": (0.0, 0.25), "att.key.weight": (0.0, 0.25),
    "att.value.weight": (0.0, 0.25), "att.output.weight": (0.0, 0.25),
    "att.ln_x.weight": (1.0, 0.4), "att.ln_x.bias": (0.0, 0.2),
    "ffn.x_k": (0.5, 1.0), "ffn.key.weight": (0.0, 0.25), "ffn.value.weight": (0.0, 0.125),
    "head.weight": (0.0, 0.25),
}


def fnv1a64(s):
    h = 0xCBF29CE484222325
    for b in s.encode():
        h = ((h ^ b) * 0x100000001B3) & M64
    return h


def splitmix64(z):
    z = z + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def hashed(key, shape, matrix_scale):
    n = int(np.prod(shape))
    suffix = key.split(".", 2)[2] if key.startswith("blocks.") else key
    base, scale = SPEC[suffix]
    if len(shape) == 2 and suffix not in ("emb.weight", "att.r_k"):
        scale = np.float32(scale) * np.float32(matrix_scale)
    with np.errstate(over="ignore"):
        idx = np.arange(n, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        u = splitmix64(idx ^ np.uint64(fnv1a64(key)))
    x = (u >> np.uint64(40)).astype(np.float32) / np.float32(1 << 24)
    v = np.float32(base) + (x - np.float32(0.5)) * np.float32(scale)
    return v.astype(np.float32).reshape(shape)


def shapes(L, C, H, N, V, F, dd, da, dv, dg):
    out = {"emb.weight": [V, C], "blocks.0.ln0.weight": [C], "blocks.0.ln0.bias": [C]}
    for l in range(L):
        p = f"blocks.{l}."
        out.update({p + "ln1.weight": [C], p + "ln1.bias": [C], p + "ln2.weight": [C], p + "ln2.bias": [C]})
        for m in "rwkvag":
            out[p + f"att.x_{m}"] = [1, 1, C]
        out.update({
            p + "att.w0": [1, 1, C], p + "att.w1": [C, dd], p + "att.w2": [dd, C],
            p + "att.a0": [1, 1, C], p + "att.a1": [C, da], p + "att.a2": [da, C],
        })
        if l > 0:
            out.update({p + "att.v0": [1, 1, C], p + "att.v1": [C, dv], p + "att.v2": [dv, C]})
        out.update({
            p + "att.g1": [C, dg], p + "att.g2": [dg, C],
            p + "att.k_k": [1, 1, C], p + "att.k_a": [1, 1, C], p + "att.r_k": [H, N],
            p + "att.receptance.weight": [C, C], p + "att.key.weight": [C, C],
            p + "att.value.weight": [C, C], p + "att.output.weight": [C, C],
            p + "att.ln_x.weight": [C], p + "att.ln_x.bias": [C],
            p + "ffn.x_k": [1, 1, C], p + "ffn.key.weight": [F, C], p + "ffn.value.weight": [C, F],
        })
    out.update({"ln_out.weight": [C], "ln_out.bias": [C], "head.weight": [V, C]})
    return out


def write_safetensors(path, tensors):
    header, offset, blobs = {}, 0, []
    for k, v in tensors.items():
        b = np.ascontiguousarray(v, dtype="<f4").tobytes()
        header[k] = {"dtype": "F32", "shape": list(v.shape), "data_offsets": [offset, offset + len(b)]}
        offset += len(b)
        blobs.append(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def run(name, dims, T, T_mid, seed, save_weights, state_layers=None, matrix_scale=1.0):
    L, C, H, N, V = dims[:5]
    weights = {k: hashed(k, s, matrix_scale) for k, s in shapes(*dims).items()}
    stem = f"/tmp/x070-{name}"
    torch.save({k: torch.from_numpy(v) for k, v in weights.items()}, stem + ".pth")
    if save_weights:
        write_safetensors(f"{OUT}/{name}_weights.safetensors", weights)
        torch.save({k: torch.from_numpy(v) for k, v in weights.items()}, f"{OUT}/{name}_weights.pth")
    model = RWKV(stem, "cpu fp32")
    rng = np.random.default_rng(seed)
    tokens = [int(t) for t in rng.integers(0, V, T)]
    t0 = time.time()
    logits, state = model.forward(tokens, None, full_output=True)
    runtime = time.time() - t0
    out = {"tokens": np.array(tokens, dtype=np.float32), "logits": logits.float().numpy()}
    # Token by token: T_mid tokens as a sequence, then the rest one at a time from that state.
    _, mid = model.forward(tokens[:T_mid], None)
    mid = [s.clone() for s in mid]
    st = [s.clone() for s in mid]
    steps = []
    for t in tokens[T_mid:]:
        lo, st = model.forward([t], st)
        steps.append(lo.float().numpy())
    out["logits_steps"] = np.stack(steps)
    for prefix, s in (("state", state), ("state_mid", mid)):
        for l in state_layers or range(L):
            out[f"{prefix}.{l}.att_shift"] = s[3 * l].float().numpy()
            # The package keeps [H, value, key]; the fixtures use [H, key, value].
            out[f"{prefix}.{l}.wkv"] = s[3 * l + 1].float().transpose(1, 2).contiguous().numpy()
            out[f"{prefix}.{l}.ffn_shift"] = s[3 * l + 2].float().numpy()
    write_safetensors(f"{OUT}/{name}_golden.safetensors", out)
    meta = {
        "name": name, "arch": "x070", "package": f"rwkv {getattr(rwkv, '__version__', '0.8.32')}",
        "torch": torch.__version__, "strategy": "cpu fp32", "RWKV_V7_ON": "1",
        "n_layer": L, "n_embd": C, "n_head": H, "head_size": N, "vocab_size": V,
        "dim_ffn": dims[5], "d_decay": dims[6], "d_aaa": dims[7], "d_mv": dims[8], "d_gate": dims[9],
        "T": T, "T_mid": T_mid, "matrix_scale": matrix_scale, "state_layers": list(state_layers or range(L)), "tokens": tokens, "package_runtime_s": runtime,
        "weights": "hashed (see scripts/make-x070-fixtures.py)",
    }
    json.dump(meta, open(f"{OUT}/{name}_golden.json", "w"), indent=1)
    print(name, "logits", out["logits"].shape, "runtime", round(runtime, 3), "s")


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    torch.set_num_threads(2)
    #    L   C    H  N   V    F    dd  da  dv  dg
    run("x070_tiny", (2, 64, 2, 32, 128, 256, 16, 16, 8, 24), 24, 13, 1, True)
    run("x070_tiny_b", (3, 48, 6, 8, 97, 192, 8, 8, 8, 16), 19, 7, 2, False)
    if "--with-0b1" in sys.argv:
        # Only the first and last layers' states: the file stays under 5 MB.
        run("x070_0b1", (12, 768, 12, 64, 65536, 3072, 64, 64, 32, 128), 6, 3, 3, False, [0, 11], 0.25)
