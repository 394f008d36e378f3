//! What several test files build: a tiny VisualRWKV and test pictures.
#![allow(dead_code)] // each test file uses its own part

use burn::backend::NdArray;
use image::{DynamicImage, Rgb, RgbImage};
use visualrwkv::{VisionOptions, VisualRwkv};
use visualrwkv_projector::{ProjectorConfig, ProjectorKind};
use visualrwkv_rwkv::{LanguageModel, Rwkv7Config, RwkvConfig};
use visualrwkv_vision::{TowerKind, VisionConfig};

/// A tiny VisualRWKV on the CPU with the World vocabulary: `layers` RWKV-6 blocks of `width`
/// (heads of 8, FFN of twice the width), a one-layer CLIP tower on 32-pixel images (patches of
/// 8, width 24) and a linear projector. Random weights from the backend's current seed.
pub fn tiny_vlm(layers: usize, width: usize) -> VisualRwkv<NdArray> {
    tiny_vlm_of(false, layers, width)
}

/// [`tiny_vlm`] on RWKV-7 blocks when `x070` (heads of 8, FFN of twice the width, LoRA ranks 4).
pub fn tiny_vlm_of(x070: bool, layers: usize, width: usize) -> VisualRwkv<NdArray> {
    let dev = Default::default();
    let rwkv: LanguageModel<NdArray> = if x070 {
        Rwkv7Config {
            n_layer: layers,
            n_embd: width,
            n_head: width / 8,
            head_size: 8,
            dim_ffn: 2 * width,
            vocab_size: 65536,
            d_decay: 4,
            d_aaa: 4,
            d_mv: 4,
            d_gate: 4,
        }
        .init::<NdArray>(&dev)
        .into()
    } else {
        tiny_rwkv6(layers, width).into()
    };
    let vision = VisionConfig::new(TowerKind::Clip, 32, 8, 24, 48, 1, 2).init::<NdArray>(&dev);
    let projector = ProjectorConfig::new(ProjectorKind::Linear, 24, width).init::<NdArray>(&dev);
    VisualRwkv::new(rwkv, vision, projector, VisionOptions::default()).unwrap()
}

fn tiny_rwkv6(layers: usize, width: usize) -> visualrwkv_rwkv::Rwkv<NdArray> {
    let dev = Default::default();
    RwkvConfig {
        n_layer: layers,
        n_embd: width,
        n_head: width / 8,
        head_size: 8,
        dim_ffn: 2 * width,
        vocab_size: 65536,
        d_mix: 4,
        d_decay: 4,
    }
    .init::<NdArray>(&dev)
}

/// A 40 × 36 RGB picture whose pixels depend on `seed`.
pub fn picture(seed: u8) -> DynamicImage {
    DynamicImage::ImageRgb8(RgbImage::from_fn(40, 36, |x, y| {
        Rgb([(x as u8).wrapping_mul(seed), (y as u8).wrapping_mul(7), seed.wrapping_add((x + y) as u8)])
    }))
}
