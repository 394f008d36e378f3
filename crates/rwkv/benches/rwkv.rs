//! `cargo bench -p visualrwkv-rwkv`: prefill and decode throughput and peak memory of random
//! RWKV-6 models on the CPU (`NdArray`, f32).
//!
//! Sizes (V = 65536): `0.1b` (C=768, L=12), `0.4b` (C=1024, L=24), `1.6b` (C=2048, L=24).
//! `RWKV_BENCH_SIZES` picks them (default `0.1b,0.4b`; add `1.6b` with ~8 GB free memory);
//! `RWKV_BENCH_PREFILL` (default 512) and `RWKV_BENCH_DECODE` (default 32) set the token counts.
//! Each size runs in its own process so that the peak RSS (`VmHWM`) is its own.

use std::time::Instant;

use burn::backend::NdArray;
use burn::tensor::{Int, Tensor, TensorData};
use visualrwkv_rwkv::RwkvConfig;

type B = NdArray;

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

use visualrwkv_rwkv::metrics::peak_rss_mib;

fn config(size: &str) -> Option<RwkvConfig> {
    Some(match size {
        "0.1b" => RwkvConfig::official(12, 768, 65536),
        "0.4b" => RwkvConfig::official(24, 1024, 65536),
        "1.6b" => RwkvConfig::official(24, 2048, 65536),
        _ => return None,
    })
}

fn run_one(size: &str) {
    let cfg = config(size).unwrap_or_else(|| panic!("unknown size {size}"));
    let prefill: usize = env("RWKV_BENCH_PREFILL", "512").parse().expect("RWKV_BENCH_PREFILL");
    let decode: usize = env("RWKV_BENCH_DECODE", "32").parse().expect("RWKV_BENCH_DECODE");
    let dev = Default::default();
    let model = cfg.init::<B>(&dev);
    let params: usize = cfg.expected_keys().iter().map(|(_, s)| s.iter().product::<usize>()).sum();
    let ids: Vec<i64> = (0..prefill as i64).map(|i| (i * 7919) % 65536).collect();
    let tokens = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [1, prefill]), &dev);
    // Warm-up on a short prompt, then the timed prefill.
    let _ = model.forward_last(tokens.clone().slice([0..1, 0..8]), None).unwrap();
    let start = Instant::now();
    // Prefill to the last token's logits, as a generator does (and the official package's
    // sequence mode without full_output).
    let out = model.forward_last(tokens, None).unwrap();
    let _ = out.logits.into_data();
    let prefill_s = start.elapsed().as_secs_f64();
    let mut state = out.state;
    let mut times = Vec::new();
    for i in 0..decode {
        let tok = Tensor::<B, 2, Int>::from_data(TensorData::new(vec![(i as i64 * 31) % 65536], [1, 1]), &dev);
        let s = Instant::now();
        let o = model.forward(tok, Some(&state)).unwrap();
        let _ = o.logits.into_data();
        state = o.state;
        times.push(s.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let decode_s = times[times.len() / 2];
    let weight_mib = params as f64 * 4.0 / (1 << 20) as f64;
    println!(
        "| {size} (C={}, L={}) | {:.1} M | {prefill} | {:.0} | {:.2} | {:.1} | {:.0} | {:.0} |",
        cfg.n_embd,
        cfg.n_layer,
        params as f64 / 1e6,
        prefill as f64 / prefill_s,
        1.0 / decode_s,
        decode_s * 1e3,
        weight_mib,
        peak_rss_mib()
    );
}

fn main() {
    if let Ok(size) = std::env::var("RWKV_BENCH_ONE") {
        run_one(&size);
        return;
    }
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    println!(
        "RWKV-6 on NdArray f32, {cores} threads; prefill = one prompt to the last token's logits, decode = median per-token latency\n"
    );
    println!(
        "| model | params | prefill T | prefill tokens/s | decode tokens/s | decode ms/token | f32 weights MiB | peak RSS MiB |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let exe = std::env::current_exe().expect("bench executable");
    for size in env("RWKV_BENCH_SIZES", "0.1b,0.4b").split(',') {
        let status =
            std::process::Command::new(&exe).env("RWKV_BENCH_ONE", size.trim()).status().expect("run one size");
        if !status.success() {
            println!("| {size} | failed ({status}) |");
        }
    }
}
