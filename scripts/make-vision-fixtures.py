#!/usr/bin/env python3
"""Golden fixtures for the vision side, produced by the official implementations.

Writes into tests/fixtures/:
  siglip_tiny_weights.safetensors, siglip_tiny_config.json, siglip_tiny_golden.safetensors
      a random tiny SigLIP vision tower (HF transformers SiglipVisionModel) and its outputs,
      at the trained size and at another size (interpolate_pos_encoding=True)
  clip_tiny_config.json, clip_tiny_interp_golden.safetensors
      the shared tiny CLIP (clip_tiny_weights.safetensors) run by HF at 40x48 with
      interpolate_pos_encoding=True
  preprocess/*.png, preprocess_golden.safetensors, preprocess_golden.json
      generated images, Pillow's bicubic resize of each (uint8) and the HF processors' pixel_values

Needs: torch, transformers, pillow, numpy, safetensors (pip). Run from the repository root:
  python scripts/make-vision-fixtures.py
"""
import json
import os

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import (CLIPImageProcessorPil, CLIPVisionConfig, CLIPVisionModel, SiglipImageProcessorPil,
                          SiglipVisionConfig, SiglipVisionModel)
import transformers

OUT = "tests/fixtures"
os.makedirs(f"{OUT}/preprocess", exist_ok=True)


def outputs(model, pixels, prefix, interp=False):
    with torch.no_grad():
        o = model(pixel_values=pixels, output_hidden_states=True, interpolate_pos_encoding=interp)
    d = {f"{prefix}pixel_values": pixels.contiguous()}
    for i, h in enumerate(o.hidden_states):
        d[f"{prefix}hidden_states.{i}"] = h.contiguous().clone()
    d[f"{prefix}last_hidden_state"] = o.last_hidden_state.contiguous().clone()
    if o.pooler_output is not None:
        d[f"{prefix}pooler_output"] = o.pooler_output.contiguous().clone()
    return d


# --- SigLIP -------------------------------------------------------------------------------
torch.manual_seed(0)
cfg = SiglipVisionConfig(image_size=32, patch_size=8, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, layer_norm_eps=1e-6, hidden_act="gelu_pytorch_tanh")
cfg._attn_implementation = "eager"
model = SiglipVisionModel(cfg).eval()
with torch.no_grad():  # larger than the default init so every part matters
    for name, p in model.named_parameters():
        p.copy_(torch.randn_like(p) * (0.1 if p.dim() > 1 else 0.2) + (1.0 if "norm" in name and "weight" in name else 0.0))
state = {k: v.contiguous() for k, v in model.state_dict().items()}
save_file(state, f"{OUT}/siglip_tiny_weights.safetensors")
with open(f"{OUT}/siglip_tiny_config.json", "w") as f:
    f.write(cfg.to_json_string())
g = outputs(model, torch.randn(2, 3, 32, 32), "")
g.update(outputs(model, torch.randn(1, 3, 48, 40), "interp.", interp=True))
save_file(g, f"{OUT}/siglip_tiny_golden.safetensors")

# --- CLIP position-embedding interpolation -------------------------------------------------
ccfg = CLIPVisionConfig(image_size=32, patch_size=8, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                        num_attention_heads=4, hidden_act="quick_gelu", layer_norm_eps=1e-5)
ccfg._attn_implementation = "eager"
clip = CLIPVisionModel(ccfg).eval()
with open(f"{OUT}/clip_tiny_config.json", "w") as f:
    f.write(ccfg.to_json_string())
weights = {k.removeprefix("vision_model."): v for k, v in load_file(f"{OUT}/clip_tiny_weights.safetensors").items()}
missing, unexpected = clip.load_state_dict(weights, strict=False)
assert not unexpected and all("position_ids" in m for m in missing), (missing, unexpected)
torch.manual_seed(1)
save_file(outputs(clip, torch.randn(1, 3, 40, 48), "", interp=True), f"{OUT}/clip_tiny_interp_golden.safetensors")

# --- preprocessing --------------------------------------------------------------------------
rng = np.random.default_rng(0)
yy, xx = np.mgrid[0:200, 0:300]
images = {
    "noise_rgb": Image.fromarray(rng.integers(0, 256, (23, 37, 3), dtype=np.uint8), "RGB"),
    "gradient_rgb": Image.fromarray(np.stack([xx * 255 // 299, yy * 255 // 199, (xx + yy) * 255 // 498], -1)
                                    .astype(np.uint8), "RGB"),
    "noise_gray": Image.fromarray(rng.integers(0, 256, (67, 41), dtype=np.uint8), "L"),
    "noise_rgba": Image.fromarray(rng.integers(0, 256, (30, 50, 4), dtype=np.uint8), "RGBA"),
    "solid_rgb": Image.fromarray(np.full((10, 14, 3), (200, 30, 90), dtype=np.uint8), "RGB"),
}
processors = {
    "clip48": CLIPImageProcessorPil(size={"shortest_edge": 48}, crop_size={"height": 48, "width": 48}),
    "clip20": CLIPImageProcessorPil(size={"shortest_edge": 20}, crop_size={"height": 20, "width": 20}),
    "siglip24": SiglipImageProcessorPil(size={"height": 24, "width": 24}),
}
golden, meta = {}, {"transformers_version": transformers.__version__, "pillow": Image.__version__, "cases": []}
for name, img in images.items():
    img.save(f"{OUT}/preprocess/{name}.png")
    for pname, proc in processors.items():
        pv = proc(images=img, return_tensors="pt")["pixel_values"]
        golden[f"{name}.{pname}.pixel_values"] = pv.contiguous().clone()
        h, w = pv.shape[-2:]
        # Pillow alone: the resize step the processor ran (before crop), as uint8 values.
        if pname.startswith("clip"):
            n = proc.size["shortest_edge"]
            W, H = img.size
            short, long = (W, H) if W <= H else (H, W)
            nl = int(n * long / short)
            rh, rw = (nl, n) if W <= H else (n, nl)
        else:
            rh, rw = proc.size["height"], proc.size["width"]
        resized = np.asarray(img.convert("RGB").resize((rw, rh), Image.BICUBIC)).astype(np.float32)
        golden[f"{name}.{pname}.resized_u8"] = torch.from_numpy(resized).contiguous().clone()
        meta["cases"].append({"image": f"{name}.png", "mode": img.mode, "size": img.size, "processor": pname,
                              "pixel_values": list(pv.shape), "resized": [rh, rw]})
save_file(golden, f"{OUT}/preprocess_golden.safetensors")
meta["processors"] = {k: v.to_dict() for k, v in processors.items()}
with open(f"{OUT}/preprocess_golden.json", "w") as f:
    json.dump(meta, f, indent=1, default=str)
print("ok")
