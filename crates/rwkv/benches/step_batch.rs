//! `cargo bench -p visualrwkv-rwkv --bench step_batch`: one decode step of `n` sequences at once
//! (`Decoder::step_batch`, what `visualrwkv serve` runs per token) against `n` single steps, on
//! a random RWKV-6 of the 0.4B shape (C = 1024, L = 24, V = 65536) on the CPU.
//!
//! For each weight type and batch size: the median time of a batched step, the aggregate
//! tokens/s, the speedup over stepping one sequence at a time, and the dense GFLOP/s (two per
//! weight per row) against this machine's f32 GEMM throughput.
//!
//! Environment: `STEP_BATCH_SIZE` (`0.1b` C = 768, L = 12, or `0.4b`, the default),
//! `STEP_BATCH_N` (default `1,2,4,8,16`), `STEP_BATCH_DTYPES` (default `f32,bf16,i8`),
//! `STEP_BATCH_STEPS` (timed steps per point, default 8).

use std::time::Instant;

use burn::backend::NdArray;
use visualrwkv_rwkv::{Decoder, RwkvConfig, WeightDtype};

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn main() {
    let size = env("STEP_BATCH_SIZE", "0.4b");
    let cfg = match size.as_str() {
        "0.1b" => RwkvConfig::official(12, 768, 65536),
        "0.4b" => RwkvConfig::official(24, 1024, 65536),
        other => panic!("STEP_BATCH_SIZE: unknown size {other} (0.1b, 0.4b)"),
    };
    let ns: Vec<usize> =
        env("STEP_BATCH_N", "1,2,4,8,16").split(',').map(|n| n.trim().parse().expect("STEP_BATCH_N")).collect();
    let steps: usize = env("STEP_BATCH_STEPS", "8").parse().expect("STEP_BATCH_STEPS");
    let model = cfg.init::<NdArray>(&Default::default());
    let weights: usize = cfg.expected_keys().iter().map(|(_, s)| s.iter().product::<usize>()).sum::<usize>()
        - cfg.vocab_size * cfg.n_embd; // the embedding is a lookup, not a product
    let threads = std::thread::available_parallelism().map_or(1, |c| c.get());
    println!("Decoder::step_batch, {size} shape, {threads} threads, median of {steps} steps\n");
    println!("| weights | sequences | batched step ms | tokens/s | speedup over single steps | GFLOP/s |");
    println!("|---|---:|---:|---:|---:|---:|");
    for name in env("STEP_BATCH_DTYPES", "f32,bf16,i8").split(',') {
        let dtype = WeightDtype::parse(name.trim()).expect("STEP_BATCH_DTYPES: f32, bf16, f16, i8 or q4");
        let dec = Decoder::new(&model, dtype).expect("decoder");
        let mut single = None;
        for &n in &ns {
            let mut states: Vec<_> = (0..n).map(|_| dec.zero_state()).collect();
            // Different prompts, so that the states differ.
            for (i, s) in states.iter_mut().enumerate() {
                dec.prefill(&[1 + i as u32, 7, 42], s).expect("prefill");
            }
            let mut times = Vec::new();
            for k in 0..=steps {
                let tokens: Vec<u32> = (0..n).map(|i| ((k * 31 + i * 7919) % 65536) as u32).collect();
                let mut refs: Vec<_> = states.iter_mut().collect();
                let s = Instant::now();
                std::hint::black_box(dec.step_batch(&tokens, &mut refs).expect("step_batch"));
                if k > 0 {
                    times.push(s.elapsed().as_secs_f64());
                }
            }
            times.sort_by(f64::total_cmp);
            let t = times[times.len() / 2];
            let per_token = t / n as f64;
            let base = *single.get_or_insert(per_token);
            println!(
                "| {dtype:?} | {n} | {:.1} | {:.1} | {:.2}x | {:.1} |",
                t * 1e3,
                n as f64 / t,
                base / per_token,
                2.0 * weights as f64 * n as f64 / t / 1e9
            );
        }
    }
}
