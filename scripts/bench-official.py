"""Times the official `rwkv` pip package (ChatRWKV inference code) on a random RWKV-6 x060 (or,
with `--arch x070`, RWKV-7 x070 through `RWKV_V7_ON=1`) model of the same shapes as
`cargo bench -p visualrwkv-rwkv` (`RWKV_BENCH_ARCH` the same), on the CPU in fp32, for
same-machine ratios. Optional: needs a Python with torch and `rwkv` (see scripts/bench-official.sh).

    python scripts/bench-official.py [--arch x060|x070] [--sizes 0.1b,0.4b] [--prefill 512] [--decode 16]
"""
import argparse
import os
import resource
import tempfile
import time

os.environ.setdefault("RWKV_JIT_ON", "1")
os.environ.setdefault("RWKV_CUDA_ON", "0")

import torch  # noqa: E402

import anchors  # noqa: E402  (scripts/anchors.py: the pinned versions)

SIZES = {"0.1b": (12, 768), "0.4b": (24, 1024), "1.5b": (24, 2048), "1.6b": (24, 2048)}


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


def lora_rank(x):
    """The official RWKV-7 trainer's LoRA rank rule: max(32, round(x / 32) * 32)."""
    return max(32, int(round(x / 32)) * 32)


def random_x070(n_layer, c, vocab=65536, seed=0):
    """A random RWKV-7 model with the shapes of `Rwkv7Config::official` (head size 64, FFN 4C)."""
    g = torch.Generator().manual_seed(seed)
    u = lambda *s, a=0.1: (torch.rand(*s, generator=g) * 2 - 1) * a  # noqa: E731
    h, n, f = c // 64, 64, 4 * c
    dd = da = lora_rank(1.8 * c ** 0.5)
    dv, dg = lora_rank(1.3 * c ** 0.5), lora_rank(0.6 * c ** 0.8)
    sd = {"emb.weight": u(vocab, c, a=1e-2), "blocks.0.ln0.weight": torch.ones(c), "blocks.0.ln0.bias": torch.zeros(c)}
    for l in range(n_layer):
        p = f"blocks.{l}."
        for ln in ("ln1", "ln2"):
            sd[p + ln + ".weight"] = torch.ones(c)
            sd[p + ln + ".bias"] = torch.zeros(c)
        for m in "rwkvag":
            sd[p + f"att.x_{m}"] = torch.rand(1, 1, c, generator=g)
        sd[p + "att.w0"] = torch.rand(1, 1, c, generator=g) * 2 - 3
        sd[p + "att.w1"], sd[p + "att.w2"] = u(c, dd), u(dd, c)
        sd[p + "att.a0"] = u(1, 1, c)
        sd[p + "att.a1"], sd[p + "att.a2"] = u(c, da), u(da, c)
        if l > 0:
            sd[p + "att.v0"] = u(1, 1, c)
            sd[p + "att.v1"], sd[p + "att.v2"] = u(c, dv), u(dv, c)
        sd[p + "att.g1"], sd[p + "att.g2"] = u(c, dg), u(dg, c)
        sd[p + "att.k_k"] = torch.rand(1, 1, c, generator=g)
        sd[p + "att.k_a"] = torch.rand(1, 1, c, generator=g)
        sd[p + "att.r_k"] = u(h, n)
        for m in ("receptance", "key", "value", "output"):
            sd[p + f"att.{m}.weight"] = u(c, c, a=c ** -0.5)
        sd[p + "att.ln_x.weight"] = torch.ones(c)
        sd[p + "att.ln_x.bias"] = torch.zeros(c)
        sd[p + "ffn.x_k"] = torch.rand(1, 1, c, generator=g)
        sd[p + "ffn.key.weight"] = u(f, c, a=c ** -0.5)
        sd[p + "ffn.value.weight"] = u(c, f, a=f ** -0.5)
    sd["ln_out.weight"] = torch.ones(c)
    sd["ln_out.bias"] = torch.zeros(c)
    sd["head.weight"] = u(vocab, c, a=c ** -0.5)
    return sd


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", choices=("x060", "x070"), default="x060")
    ap.add_argument("--sizes", default="0.1b,0.4b")
    ap.add_argument("--prefill", type=int, default=512)
    ap.add_argument("--decode", type=int, default=16)
    args = ap.parse_args()
    anchors.require("torch", "rwkv")
    # The package picks its model class when imported: RWKV_x070 under RWKV_V7_ON=1.
    os.environ["RWKV_V7_ON"] = "1" if args.arch == "x070" else "0"
    from rwkv.model import RWKV

    random_model = random_x070 if args.arch == "x070" else random_x060
    print(f"official rwkv package {args.arch}, CPU fp32, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| model | prefill tokens/s | decode tokens/s | decode ms/token | peak RSS MiB (cumulative) |")
    print("|---|---|---|---|---|")
    for size in args.sizes.split(","):
        n_layer, c = SIZES[size]
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "m.pth")
            torch.save(random_model(n_layer, c), path)
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
