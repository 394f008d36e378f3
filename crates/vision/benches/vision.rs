//! Forward time of a random vision tower on this CPU in f32 — the burn tower (burn-ndarray) and
//! the fused CPU tower (`FusedTower`: GEMMs of the `gemm` crate) on the same weights and pixels —
//! next to the f32 matmul throughput of both libraries measured in the same run.
//!
//! `cargo bench -p visualrwkv-vision` runs the CLIP-ViT-L/14-336 shape (24 layers, width 1024,
//! 577 tokens). Environment: `VISION_BENCH_SHAPE` = `clip-l-336` (default) | `clip-b-224` |
//! `siglip-so400m-384`; `VISION_BENCH_REPS` (default 3) timed runs after one warm-up; reports
//! the median.

use std::time::{Duration, Instant};

use burn::backend::NdArray;
use burn::tensor::{Distribution, Tensor};
use visualrwkv_vision::{Activation, FusedTower, TowerKind, VisionConfig};

type B = NdArray;

fn median(reps: usize, mut f: impl FnMut()) -> Duration {
    f();
    let mut times: Vec<Duration> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

/// Multiply-adds ×2 of one forward pass (projections, MLP, attention scores and mixing).
fn flops(cfg: &VisionConfig, tokens: usize) -> f64 {
    let (t, d, f) = (tokens as f64, cfg.hidden_size as f64, cfg.intermediate_size as f64);
    let per_layer = 2.0 * t * d * d * 4.0 + 2.0 * t * d * f * 2.0 + 2.0 * t * t * d * 2.0;
    let patches = 2.0 * t * d * (cfg.num_channels * cfg.patch_size * cfg.patch_size) as f64;
    cfg.num_hidden_layers as f64 * per_layer + patches
}

fn main() {
    let shape = std::env::var("VISION_BENCH_SHAPE").unwrap_or_else(|_| "clip-l-336".into());
    let reps: usize = std::env::var("VISION_BENCH_REPS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let cfg = match shape.as_str() {
        "clip-l-336" => VisionConfig::clip_vit_large_336(),
        "clip-b-224" => VisionConfig::new(TowerKind::Clip, 224, 16, 768, 3072, 12, 12),
        "siglip-so400m-384" => VisionConfig::siglip_so400m_384().with_hidden_act(Activation::GeluTanh),
        other => panic!("unknown VISION_BENCH_SHAPE {other}"),
    };
    let dev = Default::default();
    let tower = cfg.init::<B>(&dev);
    let side = cfg.image_size;
    let pixels = Tensor::<B, 4>::random([1, 3, side, side], Distribution::Normal(0.0, 1.0), &dev);
    let tokens = cfg.num_positions();
    let forward = median(reps, || {
        let out = tower.forward(pixels.clone()).unwrap();
        let _ = out.last_hidden_state.unwrap().into_data();
    });
    let fused = FusedTower::new(&tower);
    let host = pixels.clone().into_data().into_vec::<f32>().unwrap();
    let fused_forward = median(reps, || {
        let _ = fused.features(&host, pixels.dims(), -1).unwrap();
    });
    let a = Tensor::<B, 2>::random([1024, 1024], Distribution::Normal(0.0, 1.0), &dev);
    let b = Tensor::<B, 2>::random([1024, 1024], Distribution::Normal(0.0, 1.0), &dev);
    let mm = median(9, || {
        let _ = a.clone().matmul(b.clone()).into_data();
    });
    let ceiling = 2.0 * 1024f64.powi(3) / mm.as_secs_f64() / 1e9;
    let gemm_ceiling = {
        let (x, w) = (vec![0.5f32; 1024 * 1024], vec![0.25f32; 1024 * 1024]);
        let mut y = vec![0f32; 1024 * 1024];
        let t = median(9, || {
            // SAFETY: three distinct 1024² buffers, row-major with the strides given.
            unsafe {
                gemm::gemm(
                    1024,
                    1024,
                    1024,
                    y.as_mut_ptr(),
                    1,
                    1024,
                    false,
                    x.as_ptr(),
                    1,
                    1024,
                    w.as_ptr(),
                    1,
                    1024,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::Rayon(0),
                )
            }
        });
        2.0 * 1024f64.powi(3) / t.as_secs_f64() / 1e9
    };
    let gflops = flops(&cfg, tokens) / forward.as_secs_f64() / 1e9;
    let fused_gflops = flops(&cfg, tokens) / fused_forward.as_secs_f64() / 1e9;
    println!(
        "vision tower {shape}: {} layers, width {}, {tokens} tokens, batch 1",
        cfg.num_hidden_layers, cfg.hidden_size
    );
    println!("  burn tower forward (median of {reps}): {:.3} s  = {gflops:.1} GFLOP/s", forward.as_secs_f64());
    println!("  f32 matmul ceiling (burn-ndarray 1024², same run): {ceiling:.1} GFLOP/s");
    println!("  burn tower throughput / its ceiling: {:.0}%", 100.0 * gflops / ceiling);
    println!(
        "  fused tower features (median of {reps}): {:.3} s  = {fused_gflops:.1} GFLOP/s",
        fused_forward.as_secs_f64()
    );
    println!("  f32 GEMM ceiling (gemm crate 1024², same run): {gemm_ceiling:.1} GFLOP/s");
    println!("  fused tower throughput / its ceiling: {:.0}%", 100.0 * fused_gflops / gemm_ceiling);
}
