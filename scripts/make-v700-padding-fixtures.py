"""Goldens for VisualRWKV-7 v7.00's left-padded generation, from the official `rwkv` pip package
(0.8.32, RWKV_V7_ON=1, `cpu fp32`).

v7.00's `RWKV.forward` left-pads every sequence with token 261 (`STOP_TOKEN_INDEX`) to a
multiple of `CHUNK_LEN` = 16 rows, and its `generate` runs the whole sequence again for every
new token (greedy). This replays that with the package: at each step it runs
`[261] * pad(len) + sequence` from a zero state and takes the last row's logits. It also
records, for the prompt alone, the logits after `[261] * k + prompt` for every k in 0..16 and
the unpadded logits of every step (so a test can show that the padding changes the answer).

Weights are hashed as in scripts/make-x070-fixtures.py (one tiny shape with a vocabulary that
holds token 261) and saved as tests/fixtures/x070/x070_pad_weights.safetensors.

    python scripts/make-v700-padding-fixtures.py
"""
import importlib.util
import json
import os

import numpy as np

os.environ["RWKV_V7_ON"] = "1"
HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("x070_fixtures", os.path.join(HERE, "make-x070-fixtures.py"))
fx = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fx)
torch, RWKV = fx.torch, fx.RWKV

PAD, CHUNK = 261, 16
NAME = "x070_pad"
DIMS = (2, 32, 2, 16, 300, 128, 8, 8, 8, 16)  # L C H N V F dd da dv dg
PROMPT_LEN, STEPS = 21, 24


def pad_len(n):
    return (CHUNK - n % CHUNK) % CHUNK


def last(model, tokens):
    logits, _ = model.forward(tokens, None)
    return logits.float().numpy()


def main():
    torch.set_num_threads(2)
    os.makedirs(fx.OUT, exist_ok=True)
    weights = {k: fx.hashed(k, s, 1.0) for k, s in fx.shapes(*DIMS).items()}
    fx.write_safetensors(f"{fx.OUT}/{NAME}_weights.safetensors", weights)
    stem = f"/tmp/x070-{NAME}"
    torch.save({k: torch.from_numpy(v) for k, v in weights.items()}, stem + ".pth")
    model = RWKV(stem, "cpu fp32")
    rng = np.random.default_rng(7)
    prompt = [int(t) for t in rng.integers(0, DIMS[4], PROMPT_LEN)]
    out = {"prompt_padded": np.stack([last(model, [PAD] * k + prompt) for k in range(CHUNK)])}
    seq, steps, plain, margins = list(prompt), [], [], []
    for _ in range(STEPS):
        logits = last(model, [PAD] * pad_len(len(seq)) + seq)
        steps.append(logits)
        plain.append(last(model, seq))
        top = np.sort(logits)[-2:]
        margins.append(float(top[1] - top[0]))
        seq.append(int(np.argmax(logits)))
    out["steps"] = np.stack(steps)
    out["steps_unpadded"] = np.stack(plain)
    fx.write_safetensors(f"{fx.OUT}/{NAME}_golden.safetensors", out)
    meta = {
        "name": NAME, "arch": "x070", "package": "rwkv 0.8.32", "torch": torch.__version__,
        "strategy": "cpu fp32", "RWKV_V7_ON": "1", "pad_token": PAD, "chunk_len": CHUNK,
        "dims": dict(zip(["n_layer", "n_embd", "n_head", "head_size", "vocab_size", "dim_ffn", "d_decay",
                          "d_aaa", "d_mv", "d_gate"], DIMS)),
        "prompt": prompt, "generated": seq[PROMPT_LEN:], "smallest_top2_margin": min(margins),
        "weights": "hashed (scripts/make-x070-fixtures.py), saved in x070_pad_weights.safetensors",
    }
    json.dump(meta, open(f"{fx.OUT}/{NAME}_golden.json", "w"), indent=1)
    print(NAME, "generated", seq[PROMPT_LEN:], "smallest top-2 margin", min(margins))


if __name__ == "__main__":
    main()
