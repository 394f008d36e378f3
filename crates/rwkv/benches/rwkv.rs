//! `cargo bench -p visualrwkv-rwkv`: prefill and decode throughput and peak memory of random
//! RWKV-6 (default) or RWKV-7 models on the CPU (`NdArray`, f32).
//!
//! `RWKV_BENCH_ARCH=x060|x070` picks the architecture (default `x060`); the RWKV-7 models use
//! the official trainer's LoRA ranks ([`Rwkv7Config::official`]).
//! Sizes (V = 65536): `0.1b` (C=768, L=12), `0.4b` (C=1024, L=24), `1.6b` or `1.5b` (C=2048, L=24).
//! `RWKV_BENCH_SIZES` picks them (default `0.1b,0.4b`; add `1.6b` with ~8 GB free memory);
//! `RWKV_BENCH_PREFILL` (default 512) and `RWKV_BENCH_DECODE` (default 32) set the token counts.
//! Each size runs in its own process so that the peak RSS (`VmHWM`) is its own (measured before
//! the fused decoders are built).
//!
//! Two more tables time the fused CPU decoder (`Decoder`) with its matrices in f32, bf16 and f16:
//! its sequence mode (`Decoder::prefill`) on the same prompt against this machine's f32 GEMM
//! throughput, and its single steps from the same prefilled state against the bound `bytes read
//! per token ÷ memory bandwidth`. Bandwidth (a multi-threaded sum over 1 GiB) and GEMM
//! throughput are measured in the same process before and after the timed runs; the best is used.
//!
//! `RWKV_BENCH_AGREEMENT=N` (default 0: off) adds a table of what each weight type costs against
//! f32 on the same random model over an N-step run (16 prompt tokens, then the f32 decoder's
//! greedy continuation): the largest logit error, the top-1 agreement and the mean KL
//! ([`visualrwkv_rwkv::agreement`]).

use std::time::Instant;

use burn::backend::NdArray;
use burn::tensor::{Int, Tensor, TensorData};
use visualrwkv_rwkv::{Arch, Decoder, HostState, LmConfig, Rwkv7Config, RwkvConfig, WeightDtype, agreement};

type B = NdArray;

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

use visualrwkv_efficiency::peak_rss_mib;

fn arch() -> Arch {
    env("RWKV_BENCH_ARCH", "x060").parse().expect("RWKV_BENCH_ARCH: x060 or x070")
}

fn config(arch: Arch, size: &str) -> Option<LmConfig> {
    let (n_layer, n_embd) = match size {
        "0.1b" => (12, 768),
        "0.4b" => (24, 1024),
        "1.5b" | "1.6b" => (24, 2048),
        _ => return None,
    };
    Some(match arch {
        Arch::X060 => LmConfig::X060(RwkvConfig::official(n_layer, n_embd, 65536)),
        Arch::X070 => LmConfig::X070(Rwkv7Config::official(n_layer, n_embd, 65536)),
    })
}

fn run_one(size: &str) {
    let cfg = config(arch(), size).unwrap_or_else(|| panic!("unknown size {size}"));
    let dims = cfg.dims();
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
    let rss = peak_rss_mib();
    println!(
        "| {size} (C={}, L={}) | {:.1} M | {prefill} | {:.0} | {:.2} | {:.1} | {:.0} | {:.0} |",
        dims.n_embd,
        dims.n_layer,
        params as f64 / 1e6,
        prefill as f64 / prefill_s,
        1.0 / decode_s,
        decode_s * 1e3,
        weight_mib,
        rss
    );

    // The fused decoder from the same prefilled state, in each weight type.
    // Bandwidth and GEMM ceiling: best of measurements before and after the timed runs (the
    // machine's speed drifts; the best is the fairest ceiling).
    let bandwidth = read_bandwidth_gbs();
    let ceiling = gemm_gflops();
    let mut prefill_rows = Vec::new();
    let mut decode_rows = Vec::new();
    let host = HostState::from_state(&state, 0).expect("state row 0");
    let prompt: Vec<u32> = (0..prefill).map(|i| ((i * 7919) % 65536) as u32).collect();
    for dtype in [WeightDtype::F32, WeightDtype::Bf16, WeightDtype::F16, WeightDtype::I8, WeightDtype::Q4] {
        let dec = Decoder::of_model(&model, dtype).expect("decoder");
        // Sequence mode: a short warm-up, then the timed prompt (best of 2).
        dec.prefill(&prompt[..8], &mut dec.zero_state()).expect("warm-up prefill");
        let mut best = f64::MAX;
        for _ in 0..2 {
            let mut st = dec.zero_state();
            let s = Instant::now();
            std::hint::black_box(dec.prefill(&prompt, &mut st).expect("prefill"));
            best = best.min(s.elapsed().as_secs_f64());
        }
        prefill_rows.push((dtype, best));
        let mut st = host.clone();
        let _ = dec.step(1, &mut st).expect("warm-up");
        let mut times = Vec::new();
        for i in 0..decode {
            let s = Instant::now();
            let logits = dec.step(((i * 31) % 65536) as u32, &mut st).expect("step");
            std::hint::black_box(&logits);
            times.push(s.elapsed().as_secs_f64());
        }
        times.sort_by(f64::total_cmp);
        let t = times[times.len() / 2];
        decode_rows.push((dtype, t, dec.bytes_per_token() as f64));
    }
    let bandwidth = bandwidth.max(read_bandwidth_gbs());
    let again = gemm_gflops();
    let ceiling = (ceiling.0.max(again.0), ceiling.1.max(again.1));
    let flops = 2.0 * dense_macs_per_row(&cfg) as f64 * prefill as f64;
    for (dtype, best) in prefill_rows {
        println!(
            "P| {size} | {dtype:?} | {prefill} | {:.0} | {:.2}x | {:.1} | {:.1} / {:.1} | {:.0} % / {:.0} % |",
            prefill as f64 / best,
            prefill_s / best,
            flops / best / 1e9,
            ceiling.1,
            ceiling.0,
            100.0 * flops / best / 1e9 / ceiling.1,
            100.0 * flops / best / 1e9 / ceiling.0
        );
    }
    for (dtype, t, bytes) in decode_rows {
        let bound = bytes / (bandwidth * 1e9);
        println!(
            "D| {size} | {dtype:?} | {:.1} | {:.1} | {:.2}x | {:.0} | {:.1} | {:.1} | {:.1} | {:.2}x |",
            1.0 / t,
            t * 1e3,
            decode_s / t,
            bytes / (1 << 20) as f64,
            bytes / t / 1e9,
            bandwidth,
            bound * 1e3,
            t / bound
        );
    }
    let steps: usize = env("RWKV_BENCH_AGREEMENT", "0").parse().expect("RWKV_BENCH_AGREEMENT");
    if steps > 16 {
        let reference = Decoder::of_model(&model, WeightDtype::F32).expect("decoder");
        for dtype in [WeightDtype::Bf16, WeightDtype::F16, WeightDtype::I8, WeightDtype::Q4] {
            let other = Decoder::of_model(&model, dtype).expect("decoder");
            let a = agreement(&reference, &other, &prompt[..16], steps - 16).expect("agreement");
            println!(
                "A| {size} | {dtype:?} | {} | {:.4} | {:.1} % | {:.2e} |",
                a.steps,
                a.max_logit_error,
                100.0 * a.top1,
                a.mean_kl
            );
        }
    }
}

/// Multiply-adds of the dense projections per prompt row (the head runs on the last row only).
fn dense_macs_per_row(cfg: &LmConfig) -> usize {
    match cfg {
        LmConfig::X060(cfg) => {
            let (c, f) = (cfg.n_embd, cfg.dim_ffn);
            let lora = c * 5 * cfg.d_mix + 5 * cfg.d_mix * c + c * cfg.d_decay + cfg.d_decay * c;
            cfg.n_layer * (lora + 5 * c * c + 2 * c * f + c * c)
        }
        LmConfig::X070(cfg) => {
            let (c, f) = (cfg.n_embd, cfg.dim_ffn);
            // Decay, learning-rate and gate LoRAs in every block, the value residual's from the
            // second block on; r, k, v, output and the two channel-mix matrices.
            let lora = 2 * c * (cfg.d_decay + cfg.d_aaa + cfg.d_gate);
            cfg.n_layer * (lora + 4 * c * c + 2 * c * f) + (cfg.n_layer - 1) * 2 * c * cfg.d_mv
        }
    }
}

/// f32 GEMM throughput of this machine in GFLOP/s through the `gemm` crate on rayon's pool (the
/// library and setting `Decoder::prefill` uses), on 1024×1024 matrices: `(peak, sustained)`, the
/// best single product and the mean over back-to-back products for about a second (the measure
/// comparable to a prefill of a second or more on a machine whose speed drifts).
fn gemm_gflops() -> (f64, f64) {
    let n = 1024;
    let a: Vec<f32> = (0..n * n).map(|i| (i % 7) as f32 * 0.1).collect();
    let b: Vec<f32> = (0..n * n).map(|i| (i % 5) as f32 * 0.1).collect();
    let mut c = vec![0f32; n * n];
    let flops = 2.0 * (n * n * n) as f64;
    let mut best = f64::MAX;
    let (mut count, start) = (0usize, Instant::now());
    while count < 10 || start.elapsed().as_secs_f64() < 1.0 {
        let s = Instant::now();
        // SAFETY: three distinct row-major n×n buffers.
        unsafe {
            gemm::gemm(
                n,
                n,
                n,
                c.as_mut_ptr(),
                1,
                n as isize,
                false,
                a.as_ptr(),
                1,
                n as isize,
                b.as_ptr(),
                1,
                n as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::Rayon(0),
            )
        };
        best = best.min(s.elapsed().as_secs_f64());
        count += 1;
    }
    let sustained = flops * count as f64 / start.elapsed().as_secs_f64() / 1e9;
    std::hint::black_box(&c);
    (flops / best / 1e9, sustained)
}

/// Memory read bandwidth in GB/s: the best of 5 multi-threaded sums over 1 GiB of f32.
fn read_bandwidth_gbs() -> f64 {
    let n = 1usize << 28;
    let data: Vec<f32> = (0..n).map(|i| (i % 7) as f32).collect();
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let mut best = f64::MAX;
    for _ in 0..5 {
        let s = Instant::now();
        let total: f32 = std::thread::scope(|sc| {
            let handles: Vec<_> = data
                .chunks(n.div_ceil(cores))
                .map(|part| {
                    sc.spawn(move || {
                        // Eight independent partial sums, so the loop is bound by loads, not adds.
                        let mut acc = [0f32; 8];
                        for c in part.chunks_exact(8) {
                            for j in 0..8 {
                                acc[j] += c[j];
                            }
                        }
                        acc.iter().sum::<f32>()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("sum thread")).sum()
        });
        std::hint::black_box(total);
        best = best.min(s.elapsed().as_secs_f64());
    }
    (n * 4) as f64 / best / 1e9
}

fn main() {
    if let Ok(size) = std::env::var("RWKV_BENCH_ONE") {
        run_one(&size);
        return;
    }
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let name = match arch() {
        Arch::X060 => "RWKV-6",
        Arch::X070 => "RWKV-7",
    };
    println!(
        "{name} on NdArray f32, {cores} threads; prefill = one prompt to the last token's logits, decode = median per-token latency\n"
    );
    println!(
        "| model | params | prefill T | prefill tokens/s | decode tokens/s | decode ms/token | f32 weights MiB | peak RSS MiB |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let exe = std::env::current_exe().expect("bench executable");
    let mut fused = Vec::new();
    let mut prefills = Vec::new();
    let mut agreements = Vec::new();
    for size in env("RWKV_BENCH_SIZES", "0.1b,0.4b").split(',') {
        let out = std::process::Command::new(&exe).env("RWKV_BENCH_ONE", size.trim()).output().expect("run one size");
        let text = String::from_utf8_lossy(&out.stdout);
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("A") {
                agreements.push(rest.to_string());
            } else if let Some(rest) = line.strip_prefix("D") {
                fused.push(rest.to_string());
            } else if let Some(rest) = line.strip_prefix("P") {
                prefills.push(rest.to_string());
            } else {
                println!("{line}");
            }
        }
        if !out.status.success() {
            println!("| {size} | failed ({}) |", out.status);
        }
    }
    println!(
        "\nSequence mode of the fused decoder (`Decoder::prefill`, best of 2); ceiling = 1024² f32 GEMM (`gemm` crate, all threads) measured in the same process before and after: sustained over ~1 s / best single product\n"
    );
    println!(
        "| model | weights | prefill T | tokens/s | speed-up vs burn prefill | dense GFLOP/s | GEMM GFLOP/s sustained / peak | of sustained / of peak |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for line in prefills {
        println!("{line}");
    }
    println!(
        "\nFused CPU decoder (`Decoder`) from the same prefilled state; bound = bytes read per token ÷ the memory read bandwidth measured in the same process\n"
    );
    println!(
        "| model | weights | decode tokens/s | ms/token | speed-up vs burn decode | MiB read/token | effective GB/s | measured bandwidth GB/s | bound ms/token | time / bound |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for line in fused {
        println!("{line}");
    }
    if !agreements.is_empty() {
        println!("\nWhat each weight type costs against f32 on the same model (RWKV_BENCH_AGREEMENT steps)\n");
        println!("| model | weights | steps | max logit error | top-1 agreement | mean KL (nats) |");
        println!("|---|---|---|---|---|---|");
        for line in agreements {
            println!("{line}");
        }
    }
}
