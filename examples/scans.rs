//! Two user-defined scans (snake and spiral, in `lib.rs`) in a tiny random VisualRWKV: their
//! orders, the logits they lead to, and exact cached generation under each.
//!
//! `cargo run --release -p visualrwkv-examples --example scans`

use burn::backend::NdArray;
use burn::tensor::{Distribution, Tensor};
use visualrwkv::{Engine, GenerateOptions, Sample, VisionOptions, VisualRwkv};
use visualrwkv_examples::{Snake, Spiral};
use visualrwkv_projector::{ProjectorConfig, ProjectorKind};
use visualrwkv_prompt::{Conversation, Sandwich, build};
use visualrwkv_rwkv::{RwkvConfig, SamplingOptions};
use visualrwkv_scan::{BiDirectional, ImageLayout, Scan, checked_permutation};
use visualrwkv_tokenizer::Tokenizer;
use visualrwkv_vision::{TowerKind, VisionConfig};

type B = NdArray;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let layout = ImageLayout::new(4, 4, 1);
    let scans: [&dyn Scan; 3] = [&BiDirectional, &Snake, &Spiral];
    println!("Order of the 4x4 grid (+ CLS) read by layer 1:");
    for scan in scans {
        let perm = checked_permutation(scan, 1, 4, &layout)?.unwrap_or_else(|| (0..layout.len()).collect());
        println!("  {:>7}: {perm:?}", scan.name());
    }

    // A tiny random VisualRWKV with byte-level World ids.
    let dev = Default::default();
    let rwkv = RwkvConfig {
        n_layer: 4,
        n_embd: 32,
        n_head: 2,
        head_size: 16,
        dim_ffn: 64,
        vocab_size: 257,
        d_mix: 4,
        d_decay: 8,
    }
    .init::<B>(&dev);
    let vision = VisionConfig::new(TowerKind::Clip, 32, 8, 32, 64, 2, 2).init::<B>(&dev);
    let projector = ProjectorConfig::new(ProjectorKind::Linear, 32, 32).init::<B>(&dev);
    let model = VisualRwkv::new(rwkv, vision, projector, VisionOptions::default())?;
    let pixels = Tensor::<B, 4>::random([1, 3, 32, 32], Distribution::Normal(0.0, 1.0), &dev);
    let image = model.encode_images(pixels)?.remove(0);
    let tokenizer = Tokenizer::world_bytes();
    let prompt = build(&Conversation::question("Where is the circle?"), &Sandwich, tokenizer, true, true)?;
    let sample = Sample::new(&prompt, Some(image));
    let greedy = GenerateOptions {
        sampling: SamplingOptions { temperature: 0.0, ..Default::default() },
        max_tokens: 8,
        stop_tokens: vec![],
        ..Default::default()
    };
    println!("\nA {}-row sandwich prompt through a random 4-layer model:", sample.len());
    for scan in scans {
        let generation = model.generate(&sample, scan, tokenizer, &greedy, Engine::Model, |_| {})?;
        // Cached generation is exact for any scan: compare the last step with a full recompute.
        let (mut logits, mut state) = model.prefill(&sample, scan)?;
        for &t in &generation.tokens[..generation.tokens.len() - 1] {
            (logits, state) = model.step(t, &state)?;
        }
        let n = generation.tokens.len() - 1;
        let full = model.recompute_next_logits(&sample, &generation.tokens[..n], scan)?;
        let diff = logits.iter().zip(&full).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        println!("  {:>7}: greedy ids {:?}, cached vs recompute max |Δ| = {diff:.1e}", scan.name(), generation.tokens);
    }
    Ok(())
}
