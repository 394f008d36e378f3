//! `cargo bench -p visualrwkv-peers --features candle`: this project's RWKV-6 against
//! candle-transformers' `rwkv_v6` on the same random weights, in the same process.
//!
//! Sizes (V = 65536): `0.1b` (C=768, L=12) and `0.4b` (C=1024, L=24), with the LoRA ranks candle
//! hard-codes (`candle_compatible`); `RWKV_BENCH_SIZES` picks them, `RWKV_BENCH_PREFILL`
//! (default 512) and `RWKV_BENCH_DECODE` (default 16) set the token counts.
//!
//! candle's `rwkv_v6` is only correct one token at a time (its token shift takes the state row
//! for every position of a longer input), so its prefill feeds the prompt token by token, as its
//! example does. Ours prefills in sequence mode (the fused `Decoder::prefill`, and the burn model)
//! and decodes with the burn model and with the fused `Decoder` (f32 and bf16 weights). Before timing, both run the
//! same 8 tokens and the largest logit difference is printed (candle's `ln_x` uses eps 1e-5
//! where the official model uses 64e-5, so they differ slightly).

use std::collections::HashMap;
use std::time::Instant;

use burn::backend::NdArray;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use candle_core::{DType, Device, Tensor as CTensor};
use candle_transformers::models::rwkv_v6;
use visualrwkv_peers::{candle_compatible, candle_tensors};
use visualrwkv_rwkv::{Decoder, HostState, RwkvConfig, WeightDtype};

type B = NdArray;

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn candle_step(model: &rwkv_v6::Model, state: &mut rwkv_v6::State, id: u32) -> Vec<f32> {
    let x = CTensor::new(&[[id]], &Device::Cpu).expect("input");
    model.forward(&x, state).expect("candle forward").flatten_all().expect("flatten").to_vec1::<f32>().expect("logits")
}

fn run(size: &str) {
    let base = match size {
        "0.1b" => RwkvConfig::official(12, 768, 65536),
        "0.4b" => RwkvConfig::official(24, 1024, 65536),
        other => panic!("unknown size {other}"),
    };
    let cfg = candle_compatible(&base);
    let prefill: usize = env("RWKV_BENCH_PREFILL", "512").parse().expect("RWKV_BENCH_PREFILL");
    let decode: usize = env("RWKV_BENCH_DECODE", "16").parse().expect("RWKV_BENCH_DECODE");
    let dev = Default::default();
    <B as Backend>::seed(&dev, 7);
    let model = cfg.init::<B>(&dev);

    let tensors: HashMap<String, CTensor> = candle_tensors(&model)
        .expect("candle names")
        .into_iter()
        .map(|(k, (shape, v))| (k, CTensor::from_vec(v, shape, &Device::Cpu).expect("tensor")))
        .collect();
    let vb = candle_nn::VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
    let ccfg = rwkv_v6::Config {
        vocab_size: cfg.vocab_size,
        hidden_size: cfg.n_embd,
        num_hidden_layers: cfg.n_layer,
        attention_hidden_size: cfg.n_embd,
        num_attention_heads: cfg.head_size,
        head_size: cfg.head_size,
        intermediate_size: Some(cfg.dim_ffn),
        layer_norm_epsilon: 1e-5,
        rescale_every: 6,
    };
    let cmodel = rwkv_v6::Model::new(&ccfg, vb).expect("candle model");

    // Same 8 tokens through both.
    let ids: Vec<u32> = (0..prefill as u32).map(|i| (i * 7919) % 65536).collect();
    let dec32 = Decoder::new(&model, WeightDtype::F32).expect("decoder");
    let mut cs = rwkv_v6::State::new(1, &ccfg, &Device::Cpu).expect("state");
    let mut hs = dec32.zero_state();
    let mut diff = 0f32;
    for &id in &ids[..8] {
        let a = candle_step(&cmodel, &mut cs, id);
        let b = dec32.step(id, &mut hs).expect("step");
        diff = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(diff, f32::max);
    }

    // Prefill.
    let toks = Tensor::<B, 2, Int>::from_data(
        TensorData::new(ids.iter().map(|&i| i as i64).collect::<Vec<_>>(), [1, prefill]),
        &dev,
    );
    let _ = model.forward_last(toks.clone().slice([0..1, 0..8]), None).expect("warm-up");
    let s = Instant::now();
    let out = model.forward_last(toks, None).expect("prefill");
    let _ = out.logits.into_data();
    let burn_prefill = prefill as f64 / s.elapsed().as_secs_f64();
    dec32.prefill(&ids[..8], &mut dec32.zero_state()).expect("warm-up");
    let s = Instant::now();
    std::hint::black_box(dec32.prefill(&ids, &mut dec32.zero_state()).expect("prefill"));
    let ours_prefill = prefill as f64 / s.elapsed().as_secs_f64();
    let mut cs = rwkv_v6::State::new(1, &ccfg, &Device::Cpu).expect("state");
    let s = Instant::now();
    for &id in &ids {
        std::hint::black_box(candle_step(&cmodel, &mut cs, id));
    }
    let candle_prefill = prefill as f64 / s.elapsed().as_secs_f64();

    // Decode from the prefilled states.
    let step_ids: Vec<u32> = (0..decode as u32).map(|i| (i * 31) % 65536).collect();
    let mut state = out.state;
    let burn_dec = median(
        step_ids
            .iter()
            .map(|&id| {
                let t = Tensor::<B, 2, Int>::from_data(TensorData::new(vec![id as i64], [1, 1]), &dev);
                let s = Instant::now();
                let o = model.forward(t, Some(&state)).expect("step");
                let _ = o.logits.into_data();
                state = o.state;
                s.elapsed().as_secs_f64()
            })
            .collect(),
    );
    let host = HostState::from_state(&state, 0).expect("state");
    let fused = |dtype: WeightDtype| {
        let d = Decoder::new(&model, dtype).expect("decoder");
        let mut st = host.clone();
        median(
            step_ids
                .iter()
                .map(|&id| {
                    let s = Instant::now();
                    std::hint::black_box(d.step(id, &mut st).expect("step"));
                    s.elapsed().as_secs_f64()
                })
                .collect(),
        )
    };
    let (f32_dec, bf16_dec) = (fused(WeightDtype::F32), fused(WeightDtype::Bf16));
    let candle_dec = median(
        step_ids
            .iter()
            .map(|&id| {
                let s = Instant::now();
                std::hint::black_box(candle_step(&cmodel, &mut cs, id));
                s.elapsed().as_secs_f64()
            })
            .collect(),
    );
    println!(
        "| {size} (C={}, L={}) | {diff:.1e} | {ours_prefill:.0} | {burn_prefill:.0} | {candle_prefill:.1} | **{:.1}x** | {:.1} | {:.1} | {:.1} | {:.1} | **{:.1}x** / **{:.1}x** |",
        cfg.n_embd,
        cfg.n_layer,
        ours_prefill / candle_prefill,
        1.0 / burn_dec,
        1.0 / f32_dec,
        1.0 / bf16_dec,
        1.0 / candle_dec,
        candle_dec / f32_dec,
        candle_dec / bf16_dec,
    );
}

fn main() {
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    println!("RWKV-6 vs candle-transformers 0.11.1 rwkv_v6 on the same random f32 weights, CPU, {cores} threads\n");
    println!(
        "| model | max logit diff (8 tokens) | ours prefill (Decoder f32) tok/s | ours prefill (burn) tok/s | candle prefill tok/s | prefill ratio (Decoder) | ours decode (burn) tok/s | ours decode (Decoder f32) tok/s | ours decode (Decoder bf16) tok/s | candle decode tok/s | decode ratio f32 / bf16 |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for size in env("RWKV_BENCH_SIZES", "0.1b,0.4b").split(',') {
        run(size.trim());
    }
}
