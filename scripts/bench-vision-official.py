#!/usr/bin/env python3
"""Peer number for `cargo bench -p visualrwkv-vision`: Hugging Face transformers'
CLIPVisionModel with the CLIP-ViT-L/14-336 shape (random weights), fp32, CPU, batch 1.
Median of 3 forwards after a warm-up. Needs torch + transformers (pip)."""
import time

import anchors  # scripts/anchors.py: the pinned versions
import torch
from transformers import CLIPVisionConfig, CLIPVisionModel

anchors.require("torch", "transformers")

cfg = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                       image_size=336, patch_size=14, hidden_act="quick_gelu")
model = CLIPVisionModel(cfg).eval()
x = torch.randn(1, 3, 336, 336)
times = []
with torch.inference_mode():
    model(pixel_values=x)
    for _ in range(3):
        t = time.perf_counter()
        model(pixel_values=x)
        times.append(time.perf_counter() - t)
times.sort()
print(f"transformers {__import__('transformers').__version__}, torch {torch.__version__}, threads {torch.get_num_threads()}")
print(f"CLIPVisionModel ViT-L/14-336 forward (median of 3): {times[1]:.3f} s")
