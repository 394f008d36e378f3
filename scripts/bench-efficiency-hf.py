"""The transformer users pick, for `visualrwkv bench-efficiency`: Hugging Face transformers'
`LlamaForCausalLM` of the same size as the benchmark's models (width 512, 8 layers, vocabulary
65536, FFN 1792, heads of 64 — 97.5 M parameters), random weights, f32, batch 1, on the CPU with
SDPA attention and its KV cache. Same contexts and the same table columns as
`bench-efficiency`, one process per point (so that each point's peak RSS is its own).

    python scripts/bench-efficiency-hf.py [--contexts 1024,2048,4096,8192,16384,24576] \
        [--out efficiency-hf] [--ours efficiency/efficiency.csv]

Prefill = the whole context in one forward with `use_cache=True` and `logits_to_keep=1` (the
last row's logits, as `generate` computes them; median of 3 up to 4K tokens, 1 above, after a
warm-up of 16 tokens); decode = median of `--decode-steps` single-token steps
from that cache; peak RSS = the process's VmHWM; KV cache = 2 · layers · context · width · 4
bytes. With `--ours` (the `efficiency.csv` that bench-efficiency writes), prints the ratios against
our RWKV rows of the same contexts. Needs torch and transformers (scripts/bench-official.sh).
"""
import argparse
import csv
import json
import os
import subprocess
import sys
import time


def peak_rss_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def point(args):
    import torch
    import transformers
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=args.vocab,
        hidden_size=args.width,
        intermediate_size=args.width * 7 // 2,
        num_hidden_layers=args.layers,
        num_attention_heads=args.width // 64,
        num_key_value_heads=args.width // 64,
        max_position_embeddings=max(args.context + args.decode_steps + 16, 32768),
        attn_implementation="sdpa",
        torch_dtype=torch.float32,
    )
    model = LlamaForCausalLM(cfg).eval()
    params = sum(p.numel() for p in model.parameters())
    n = args.context
    ids = torch.randint(0, args.vocab, (1, n))
    with torch.inference_mode():
        model(ids[:, :16], use_cache=True, logits_to_keep=1)  # warm-up
        reps = 3 if n <= 4096 else 1
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            # The last row's logits only, as `generate` asks for them (and as ours computes).
            out = model(ids, use_cache=True, logits_to_keep=1)
            times.append(time.perf_counter() - t)
        prefill = sorted(times)[len(times) // 2]
        cache = out.past_key_values
        token = out.logits[:, -1:].argmax(-1)
        steps = []
        for _ in range(args.decode_steps):
            t = time.perf_counter()
            out = model(token, past_key_values=cache, use_cache=True)
            steps.append(time.perf_counter() - t)
            cache = out.past_key_values
            token = out.logits[:, -1:].argmax(-1)
    decode_ms = sorted(steps)[len(steps) // 2] * 1e3
    print(json.dumps({
        "model": "hf-llama",
        "context": n,
        "prefill_s": prefill,
        "decode_ms": decode_ms,
        "peak_rss_mib": peak_rss_mib(),
        "cache_mib": 2 * args.layers * n * args.width * 4 / 2**20,
        "prefill_reps": reps,
        "decode_steps": args.decode_steps,
        "params": params,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "threads": torch.get_num_threads(),
    }), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--contexts", default="1024,2048,4096,8192,16384,24576")
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--vocab", type=int, default=65536)
    ap.add_argument("--decode-steps", type=int, default=8)
    ap.add_argument("--out", default="efficiency-hf")
    ap.add_argument("--ours", help="efficiency.csv of `visualrwkv bench-efficiency` (RWKV rows compared)")
    ap.add_argument("--context", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.context is not None:
        point(args)
        return
    import anchors  # scripts/anchors.py: the pinned versions

    anchors.require("torch", "transformers")
    os.makedirs(args.out, exist_ok=True)
    rows = []
    for n in [int(c) for c in args.contexts.split(",") if c.strip()]:
        cmd = [sys.executable, __file__, "--context", str(n), "--width", str(args.width), "--layers",
               str(args.layers), "--vocab", str(args.vocab), "--decode-steps", str(args.decode_steps)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        r = json.loads([l for l in out.splitlines() if l.startswith("{")][-1])
        rows.append(r)
        print(f"  hf-llama {n:>6} tokens: prefill {r['prefill_s']:8.2f} s, decode {r['decode_ms']:7.2f} ms/token, "
              f"peak memory {r['peak_rss_mib']:7.0f} MiB, cache {r['cache_mib']:7.1f} MiB", flush=True)
    path = os.path.join(args.out, "points.csv")
    cols = ["model", "context", "prefill_s", "decode_ms", "peak_rss_mib", "cache_mib", "prefill_reps", "decode_steps",
            "params", "torch", "transformers"]
    with open(path + ".tmp", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    os.replace(path + ".tmp", path)
    ours = {}
    if args.ours:
        with open(args.ours) as f:
            ours = {int(r["context"]): r for r in csv.DictReader(f) if r["model"] == "rwkv"}
    print(f"\nHF LlamaForCausalLM ({rows[0]['params'] / 1e6:.1f} M parameters), torch {rows[0]['torch']}, "
          f"transformers {rows[0]['transformers']}, {rows[0]['threads']} threads\n")
    print("| context | RWKV prefill (s) | HF prefill (s) | prefill ratio | RWKV decode (ms/tok) | HF decode (ms/tok) "
          "| decode ratio | RWKV peak RSS (MiB) | HF peak RSS (MiB) | memory saved | RWKV state (MiB) | HF KV cache (MiB) |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        o = ours.get(r["context"])
        if o is None:
            print(f"| {r['context']} | – | {r['prefill_s']:.2f} | – | – | {r['decode_ms']:.2f} | – | – | "
                  f"{r['peak_rss_mib']:.0f} | – | – | {r['cache_mib']:.1f} |")
            continue
        rp, rd, rm = float(o["prefill_s"]), float(o["decode_ms"]), float(o["peak_rss_mib"])
        print(f"| {r['context']} | {rp:.2f} | {r['prefill_s']:.2f} | {r['prefill_s'] / rp:.2f}x | {rd:.2f} | "
              f"{r['decode_ms']:.2f} | {r['decode_ms'] / rd:.2f}x | {rm:.0f} | {r['peak_rss_mib']:.0f} | "
              f"{100 * (1 - rm / r['peak_rss_mib']):.0f}% | {float(o['cache_mib']):.2f} | {r['cache_mib']:.1f} |")


if __name__ == "__main__":
    main()
