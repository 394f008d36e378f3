//! Per-token decode latency of VisualRWKV with the cached state (one single-step pass per token)
//! against a full recompute of the whole sequence per token (what the reference's `generate`
//! does), for prompts of ~600, 2K and 8K rows: O(1) against O(T).
//!
//! `cargo bench -p visualrwkv --bench vlm_decode`. A small random model (C = 256, 4 layers,
//! byte-level vocabulary 257) with a 24×24 + CLS image span (577 rows) scanned bidirectionally;
//! the rest of the prompt is text. Environment: `VLM_BENCH_LENGTHS` (default `600,2048,8192`).

use std::time::{Duration, Instant};

use burn::backend::NdArray;
use burn::tensor::{Distribution, Tensor};
use visualrwkv::{ImageRows, Sample, VisionOptions, VisualRwkv};
use visualrwkv_projector::{ProjectorConfig, ProjectorKind};
use visualrwkv_prompt::IMAGE_TOKEN;
use visualrwkv_rwkv::RwkvConfig;
use visualrwkv_scan::{BiDirectional, ImageLayout};
use visualrwkv_vision::{TowerKind, VisionConfig};

type B = NdArray;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let lengths: Vec<usize> = std::env::var("VLM_BENCH_LENGTHS")
        .unwrap_or_else(|_| "600,2048,8192".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let dev = Default::default();
    let c = 256;
    let rwkv = RwkvConfig {
        n_layer: 4,
        n_embd: c,
        n_head: 4,
        head_size: 64,
        dim_ffn: 896,
        vocab_size: 257,
        d_mix: 32,
        d_decay: 64,
    }
    .init::<B>(&dev);
    let vision = VisionConfig::new(TowerKind::Clip, 32, 8, 32, 64, 1, 2).init::<B>(&dev);
    let projector = ProjectorConfig::new(ProjectorKind::Linear, 32, c).init::<B>(&dev);
    let model = VisualRwkv::new(rwkv, vision, projector, VisionOptions::default()).unwrap();
    let layout = ImageLayout::new(24, 24, 1);
    let image = ImageRows { rows: Tensor::random([577, c], Distribution::Normal(0.0, 1.0), &dev), layout };
    println!("VisualRWKV decode, C={c}, 4 layers, V=257, image span 577 rows (bi scan), f32 burn-ndarray\n");
    println!("| prompt rows | prefill | cached decode / token | full recompute / token | ratio |");
    println!("|---:|---:|---:|---:|---:|");
    for &t in &lengths {
        let text = t.saturating_sub(577).max(2);
        let mut tokens: Vec<i64> = (0..text / 2).map(|i| 33 + (i % 90) as i64).collect();
        tokens.push(IMAGE_TOKEN);
        tokens.extend((0..text - text / 2).map(|i| 33 + (i % 90) as i64));
        let sample = Sample { tokens, image: Some(image.clone()) };
        let start = Instant::now();
        let (_, mut state) = model.prefill(&sample, &BiDirectional).unwrap();
        let prefill = start.elapsed();
        let mut steps = Vec::new();
        for i in 0..16 {
            let t0 = Instant::now();
            let (_, s) = model.step(65 + i, &state).unwrap();
            steps.push(t0.elapsed());
            state = s;
        }
        let reps = if t > 4000 { 2 } else { 3 };
        let recompute: Vec<Duration> = (0..reps)
            .map(|i| {
                let t0 = Instant::now();
                let _ = model.recompute_next_logits(&sample, &[65 + i], &BiDirectional).unwrap();
                t0.elapsed()
            })
            .collect();
        let (cached, full) = (median(steps), median(recompute));
        println!(
            "| {} | {:.2} s | {:.2} ms | {:.0} ms | {:.0}x |",
            sample.len(),
            prefill.as_secs_f64(),
            cached.as_secs_f64() * 1e3,
            full.as_secs_f64() * 1e3,
            full.as_secs_f64() / cached.as_secs_f64()
        );
    }
}
