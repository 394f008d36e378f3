"""Times the official `rwkv` pip package (ChatRWKV inference code) on a random RWKV-6 x060 model
of the same shapes as `cargo bench -p visualrwkv-rwkv`, on the CPU in fp32, for same-machine
ratios. Optional: needs a Python with torch and `rwkv` (see scripts/bench-official.sh).

    python scripts/bench-official.py [--sizes 0.1b,0.4b] [--prefill 512] [--decode 16]
"""
import argparse
import os
import resource
import tempfile
import time

os.environ.setdefault("RWKV_JIT_ON", "1")
os.environ.setdefault("RWKV_CUDA_ON", "0")
os.environ.setdefault("RWKV_V7_ON", "0")

import torch  # noqa: E402

import anchors  # noqa: E402  (scripts/anchors.py: the pinned versions)

SIZES = {"0.1b": (12, 768), "0.4b": (24, 1024), "1.6b": (24, 2048)}


def random_x060(n_layer, c, vocab=65536, seed=0):
    g = torch.Generator().manual_seed(seed)
    u = lambda *s, a=0.1: (torch.rand(*s, generator=g) * 2 - 1) * a  # noqa: E731
    h, n = c // 64, 64
    f = (c * 7 // 2) // 32 * 32
    d_mix, d_decay = (64, 128) if c >= 4096 else (32, 64)
    sd = {"emb.weight": u(vocab, c, a=1e-2), "blocks.0.ln0.weight": torch.ones(c), "blocks.0.ln0.bias": torch.zeros(c)}
    for l in range(n_layer):
        p = f"blocks.{l}."
        for ln in ("ln1", "ln2"):
            sd[p + ln + ".weight"] = torch.ones(c)
            sd[p + ln + ".bias"] = torch.zeros(c)
        for m in "xwkvrg":
            sd[p + f"att.time_maa_{m}"] = torch.rand(1, 1, c, generator=g)
        sd[p + "att.time_maa_w1"] = u(c, 5 * d_mix)
        sd[p + "att.time_maa_w2"] = u(5, d_mix, c)
        sd[p + "att.time_decay"] = torch.rand(1, 1, c, generator=g) * 5 - 6
        sd[p + "att.time_decay_w1"] = u(c, d_decay)
        sd[p + "att.time_decay_w2"] = u(d_decay, c)
        sd[p + "att.time_faaaa"] = u(h, n, a=0.5)
        for m in ("receptance", "key", "value", "gate", "output"):
            sd[p + f"att.{m}.weight"] = u(c, c, a=c ** -0.5)
        sd[p + "att.ln_x.weight"] = torch.ones(c)
        sd[p + "att.ln_x.bias"] = torch.zeros(c)
        sd[p + "ffn.time_maa_k"] = torch.rand(1, 1, c, generator=g)
        sd[p + "ffn.time_maa_r"] = torch.rand(1, 1, c, generator=g)
        sd[p + "ffn.key.weight"] = u(f, c, a=c ** -0.5)
        sd[p + "ffn.receptance.weight"] = u(c, c, a=c ** -0.5)
        sd[p + "ffn.value.weight"] = u(c, f, a=f ** -0.5)
    sd["ln_out.weight"] = torch.ones(c)
    sd["ln_out.bias"] = torch.zeros(c)
    sd["head.weight"] = u(vocab, c, a=c ** -0.5)
    return sd


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="0.1b,0.4b")
    ap.add_argument("--prefill", type=int, default=512)
    ap.add_argument("--decode", type=int, default=16)
    args = ap.parse_args()
    anchors.require("torch", "rwkv")
    from rwkv.model import RWKV

    print(f"official rwkv package, CPU fp32, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| model | prefill tokens/s | decode tokens/s | decode ms/token | peak RSS MiB (cumulative) |")
    print("|---|---|---|---|---|")
    for size in args.sizes.split(","):
        n_layer, c = SIZES[size]
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "m.pth")
            torch.save(random_x060(n_layer, c), path)
            model = RWKV(model=path[:-4], strategy="cpu fp32")
        tokens = [(i * 7919) % 65536 for i in range(args.prefill)]
        model.forward(tokens[:8], None)
        t0 = time.perf_counter()
        _, state = model.forward(tokens, None)
        prefill = args.prefill / (time.perf_counter() - t0)
        times = []
        for i in range(args.decode):
            t0 = time.perf_counter()
            _, state = model.forward([(i * 31) % 65536], state)
            times.append(time.perf_counter() - t0)
        times.sort()
        med = times[len(times) // 2]
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"| {size} (C={c}, L={n_layer}) | {prefill:.0f} | {1 / med:.2f} | {med * 1e3:.1f} | {rss:.0f} |")
        del model


if __name__ == "__main__":
    main()
