"""Times the official VisualRWKV v6.0 app's CPU path on the same random weights and the same
question as `cargo bench -p visualrwkv --bench vlm_ttft`, for same-machine ratios.

    VLM_TTFT_DIR=DIR VLM_TTFT_JSON=ours.json cargo bench -p visualrwkv --bench vlm_ttft
    python scripts/bench-vlm-official.py --repo PATH/TO/VisualRWKV --dir DIR [--ours ours.json]

`--repo` is a checkout of https://github.com/howard-hou/VisualRWKV given by the user; its
`VisualRWKV-v6/v6.0/app/modeling_rwkv.py` and `modeling_vision.py` are imported from there
(nothing of them is copied into this repository). The model runs as the app runs it
(`app_cpu.py`): `RWKV(model, strategy='cpu fp32')` from a `.pth`, the `VisionEncoder` (HF
`CLIPVisionModel` + linear projector) from a `.pth` state dict, `CLIPImageProcessor`, the image
features layer-normed with `blocks.0.ln0` and run as embeddings, then the question's tokens from
that state, greedy. The app reads the image before the question (its prompt is
`"{question}\\n\\nAssistant:"` after the image state); ours is the sandwich prompt, a few tokens
longer — the work is the same to within those tokens.

Each shape is timed in a fresh child process: imports (torch, transformers), loading (torch.load
and the app's conversion; the vision encoder and its state dict), the first token right after
loading (cold) and again (warm), then 32 decoded tokens. The checkpoints the Rust benchmark wrote
(`DIR/visualrwkv-SHAPE.safetensors` and `DIR/vision_config.json`) are split once into the app's
two `.pth` files (`DIR/official-SHAPE-rwkv.pth`, `DIR/official-SHAPE-visual.pth`; not timed).
Needs torch, transformers, rwkv (for its tokenizer) and pillow: see scripts/bench-official.sh.
"""
import time

T0 = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

QUESTION = "What is unusual about this image?"
DECODE_STEPS = 32


def split_checkpoint(dir_, shape):
    """The app's two .pth files from our one safetensors checkpoint (once)."""
    import torch
    from safetensors.torch import load_file

    rwkv_pth = os.path.join(dir_, f"official-{shape}-rwkv.pth")
    visual_pth = os.path.join(dir_, f"official-{shape}-visual.pth")
    if os.path.exists(rwkv_pth) and os.path.exists(visual_pth):
        return rwkv_pth, visual_pth
    src = os.path.join(dir_, f"visualrwkv-{shape}.safetensors")
    if not os.path.exists(src):
        sys.exit(f"{src} is missing: run `VLM_TTFT_DIR={dir_} cargo bench -p visualrwkv --bench vlm_ttft` first")
    sd = load_file(src)
    rwkv = {k[len("rwkv."):]: v for k, v in sd.items() if k.startswith("rwkv.")}
    visual = {k: v for k, v in sd.items() if k.startswith("vit.") or k.startswith("proj.")}
    torch.save(rwkv, rwkv_pth + ".tmp")
    os.replace(rwkv_pth + ".tmp", rwkv_pth)
    torch.save(visual, visual_pth + ".tmp")
    os.replace(visual_pth + ".tmp", visual_pth)
    return rwkv_pth, visual_pth


def child(args):
    """One shape, timed from the process start: prints one JSON line."""
    os.environ["RWKV_JIT_ON"] = "1"
    os.environ["RWKV_CUDA_ON"] = "0"
    app = os.path.join(args.repo, "VisualRWKV-v6", "v6.0", "app")
    sys.path.insert(0, app)
    import torch
    import torch.nn.functional as F
    import transformers
    from PIL import Image
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    import modeling_vision
    from modeling_rwkv import RWKV
    from rwkv.utils import PIPELINE

    imports = time.perf_counter() - T0
    rwkv_pth, visual_pth = args.rwkv_pth, args.visual_pth
    with open(os.path.join(args.dir, "vision_config.json")) as f:
        vcfg = CLIPVisionConfig(**json.load(f))

    # The app calls CLIPVisionModel.from_pretrained(name) (a download); the same model from the
    # saved config, weights from the app's state dict below.
    class Offline:
        @staticmethod
        def from_pretrained(_name):
            return CLIPVisionModel(vcfg)

    modeling_vision.CLIPVisionModel = Offline

    t = time.perf_counter()
    model = RWKV(model=rwkv_pth, strategy="cpu fp32", verbose=False)
    pipeline = PIPELINE(model, "rwkv_vocab_v20230424")
    encoder = modeling_vision.VisionEncoder(
        modeling_vision.VisionEncoderConfig(n_embd=model.args.n_embd, grid_size=-1)
    )
    encoder.load_state_dict(torch.load(visual_pth, map_location="cpu"), strict=False)
    encoder.eval()
    processor = CLIPImageProcessor(
        size={"shortest_edge": vcfg.image_size}, crop_size={"height": vcfg.image_size, "width": vcfg.image_size}
    )
    load = time.perf_counter() - t

    def first_token():
        times = {}
        t = time.perf_counter()
        image = Image.open(args.jpeg).convert("RGB")
        pixels = processor(images=image, return_tensors="pt")["pixel_values"]
        times["preprocess_s"] = time.perf_counter() - t
        t = time.perf_counter()
        with torch.no_grad():
            feats = encoder.encode_images(pixels.unsqueeze(0)).squeeze(0)
            feats = F.layer_norm(
                feats, (feats.shape[-1],), weight=model.w["blocks.0.ln0.weight"], bias=model.w["blocks.0.ln0.bias"]
            )
        times["tower_s"] = time.perf_counter() - t
        t = time.perf_counter()
        _, state = model.forward(embs=feats, state=None)
        out, state = model.forward(tokens=pipeline.encode(f"{QUESTION}\n\nAssistant:"), state=state)
        times["prefill_s"] = time.perf_counter() - t
        times["rows"] = feats.shape[0] + len(pipeline.encode(f"{QUESTION}\n\nAssistant:"))
        return times, int(torch.argmax(out)), state

    cold, _, _ = first_token()
    process_to_first = time.perf_counter() - T0
    warm, token, state = first_token()
    t = time.perf_counter()
    for _ in range(DECODE_STEPS):
        out, state = model.forward(tokens=[token], state=state)
        token = int(torch.argmax(out))
    decode = DECODE_STEPS / (time.perf_counter() - t)
    print(
        json.dumps(
            {
                "shape": args.shape,
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "threads": torch.get_num_threads(),
                "imports_s": imports,
                "load_s": load,
                "rows": warm["rows"],
                "preprocess_s": warm["preprocess_s"],
                "tower_s": warm["tower_s"],
                "prefill_s": warm["prefill_s"],
                "first_token_cold_s": sum(cold[k] for k in ("preprocess_s", "tower_s", "prefill_s")),
                "first_token_warm_s": sum(warm[k] for k in ("preprocess_s", "tower_s", "prefill_s")),
                "process_to_first_token_s": process_to_first,
                "decode_tok_s": decode,
            }
        ),
        flush=True,
    )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repo", required=True, help="a checkout of howard-hou/VisualRWKV")
    ap.add_argument("--dir", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "visualrwkv-vlm-ttft"))
    ap.add_argument("--shapes", default="0.4b,1.6b")
    ap.add_argument("--ours", help="the JSON lines of VLM_TTFT_JSON=FILE cargo bench -p visualrwkv --bench vlm_ttft")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--shape", help=argparse.SUPPRESS)
    ap.add_argument("--rwkv-pth", help=argparse.SUPPRESS)
    ap.add_argument("--visual-pth", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.jpeg = os.path.join(args.dir, "question.jpg")
    if args.child:
        child(args)
        return
    import anchors  # scripts/anchors.py: the pinned versions (the children time their own imports)

    anchors.require("torch", "transformers", "PIL")
    app = os.path.join(args.repo, "VisualRWKV-v6", "v6.0", "app", "modeling_rwkv.py")
    if not os.path.exists(app):
        sys.exit(f"{app} not found: --repo must be a checkout of howard-hou/VisualRWKV")
    results = {}
    for shape in [s.strip() for s in args.shapes.split(",") if s.strip()]:
        rwkv_pth, visual_pth = split_checkpoint(args.dir, shape)
        # Read both files once so that loading is timed from the page cache, as ours is.
        for p in (rwkv_pth, visual_pth):
            with open(p, "rb") as f:
                while f.read(1 << 26):
                    pass
        cmd = [sys.executable, __file__, "--child", "--repo", args.repo, "--dir", args.dir, "--shape", shape,
               "--rwkv-pth", rwkv_pth, "--visual-pth", visual_pth]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        line = [l for l in out.splitlines() if l.startswith("{")][-1]
        results[shape] = json.loads(line)
        print(line, flush=True)
    ours = {}
    if args.ours:
        with open(args.ours) as f:
            ours = {r["shape"]: r for r in map(json.loads, filter(str.strip, f))}
    print("\n| shape | side | load | tower | prefill (rows) | first token warm | whole process to first token | decode |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for shape, o in results.items():
        print(f"| {shape} | official app (torch {o['torch']}) | {o['load_s']:.2f} s | {o['tower_s']:.2f} s | "
              f"{o['prefill_s']:.2f} s ({o['rows']}) | {o['first_token_warm_s']:.2f} s | "
              f"{o['process_to_first_token_s']:.2f} s (imports {o['imports_s']:.1f} s) | {o['decode_tok_s']:.1f} tok/s |")
        r = ours.get(shape)
        if r:
            print(f"| {shape} | visualrwkv (`--decoder {r.get('decoder', 'f32')}`) | {r['load_s']:.2f} s | {r['tower_s']:.2f} s | "
                  f"{r['prefill_s']:.2f} s ({r['rows']}) | {r['first_token_warm_s']:.2f} s | "
                  f"{r['process_to_first_token_s']:.2f} s | {r['decode_tok_s']:.1f} tok/s |")
            print(f"| {shape} | **ratio (official / ours)** | {o['load_s'] / r['load_s']:.2f}x | "
                  f"{o['tower_s'] / r['tower_s']:.2f}x | {o['prefill_s'] / r['prefill_s']:.2f}x | "
                  f"**{o['first_token_warm_s'] / r['first_token_warm_s']:.2f}x** | "
                  f"**{o['process_to_first_token_s'] / r['process_to_first_token_s']:.2f}x** | "
                  f"{r['decode_tok_s'] / o['decode_tok_s']:.2f}x |")


if __name__ == "__main__":
    main()
