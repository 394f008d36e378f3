//! Measurements behind `visualrwkv bench-efficiency`: RWKV-6 against a same-size transformer
//! (the paper's Figure 1 claim: constant per-token cost and memory for RWKV, growing ones for
//! a transformer with a KV cache).
//!
//! One [`Point`] = one model at one context length, measured in its own process (so the peak
//! RSS belongs to that point alone): prefill time of the context, the per-token decode latency
//! right after it, the process's peak RSS, and the bytes of the recurrent state or KV cache.

use std::time::{Duration, Instant};

use burn::tensor::{Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};
use visualrwkv_rwkv::{Rwkv, RwkvBackend, RwkvConfig, RwkvError};
use visualrwkv_transformer::{KvCache, Transformer, TransformerConfig};

/// The two models compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// RWKV-6 (this project's model).
    Rwkv,
    /// The transformer baseline.
    Transformer,
}

/// Sizes shared by both models.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sizes {
    /// Width C.
    pub width: usize,
    /// Blocks.
    pub layers: usize,
    /// Vocabulary.
    pub vocab: usize,
}

impl Sizes {
    /// Checks the sizes: width a positive multiple of 64 (heads of 64), layers ≥ 1, vocabulary ≥ 2.
    pub fn validate(&self) -> Result<(), String> {
        if self.width == 0 || !self.width.is_multiple_of(64) || self.layers == 0 || self.vocab < 2 {
            return Err(format!(
                "width {} must be a positive multiple of 64, layers {} positive, vocabulary {} at least 2",
                self.width, self.layers, self.vocab
            ));
        }
        Ok(())
    }

    /// The RWKV-6 configuration (official defaults for the width: heads of 64, FFN 3.5·C).
    pub fn rwkv(&self) -> RwkvConfig {
        RwkvConfig::official(self.layers, self.width, self.vocab)
    }

    /// The transformer with the same width, depth, vocabulary and FFN size (heads of 64).
    pub fn transformer(&self, max_len: usize) -> TransformerConfig {
        let r = self.rwkv();
        TransformerConfig::new(self.layers, self.width, (self.width / 64).max(1), r.dim_ffn, self.vocab, max_len)
    }
}

/// One measured point.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Point {
    /// Which model.
    pub model: ModelKind,
    /// Context length (tokens).
    pub context: usize,
    /// Median prefill time of the context, seconds.
    pub prefill_s: f64,
    /// Median per-token decode latency at that context, milliseconds.
    pub decode_ms: f64,
    /// Peak resident memory of the measuring process, MiB.
    pub peak_rss_mib: f64,
    /// Bytes of the recurrent state (RWKV) or KV cache (transformer) after the context, MiB.
    pub cache_mib: f64,
    /// Timed prefill repetitions (after one warm-up at a short length).
    pub prefill_reps: usize,
    /// Timed decode steps.
    pub decode_steps: usize,
}

pub use visualrwkv_rwkv::metrics::peak_rss_mib;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn tokens<B: burn::tensor::backend::Backend>(n: usize, vocab: usize, device: &B::Device) -> Tensor<B, 2, Int> {
    let ids: Vec<i64> = (0..n).map(|i| ((i * 7919 + 13) % (vocab - 1) + 1) as i64).collect();
    Tensor::from_data(TensorData::new(ids, [1, n]), device)
}

/// Prefill repetitions for a context: 3 up to 4096 tokens, then 1 (a 24K transformer prefill
/// takes minutes on a 2-core CPU); always after a warm-up at a short length.
pub fn prefill_reps(context: usize) -> usize {
    if context <= 4096 { 3 } else { 1 }
}

fn input(e: visualrwkv_transformer::TransformerError) -> RwkvError {
    RwkvError::Input(e.to_string())
}

/// Measures one point in this process. Errors on a zero context, zero decode steps or sizes no
/// model can have (width not a positive multiple of 64, no layers, vocabulary below 2).
pub fn measure<B: RwkvBackend>(
    model: ModelKind,
    context: usize,
    sizes: Sizes,
    decode_steps: usize,
    device: &B::Device,
) -> Result<Point, RwkvError> {
    sizes.validate().map_err(RwkvError::Input)?;
    if context == 0 || decode_steps == 0 {
        return Err(RwkvError::Input(format!("cannot measure context {context} with {decode_steps} decode steps")));
    }
    let reps = prefill_reps(context);
    let (prefill, decode, cache_bytes) = match model {
        ModelKind::Rwkv => {
            let m: Rwkv<B> = sizes.rwkv().init(device);
            let _ = m.forward_last(tokens::<B>(64, sizes.vocab, device), None)?.logits.into_data();
            let mut times = Vec::with_capacity(reps);
            let mut state = m.zero_state(1);
            for _ in 0..reps {
                let t0 = Instant::now();
                let out = m.forward_last(tokens::<B>(context, sizes.vocab, device), None)?;
                let _ = out.logits.into_data();
                state = out.state;
                times.push(t0.elapsed());
            }
            let mut steps = Vec::with_capacity(decode_steps);
            for i in 0..decode_steps {
                let t0 = Instant::now();
                let next = tokens::<B>(1 + i % 3, sizes.vocab, device).slice([0..1, 0..1]);
                let out = m.forward(next, Some(&state))?;
                let _ = out.logits.into_data();
                state = out.state;
                steps.push(t0.elapsed());
            }
            let cfg = sizes.rwkv();
            let bytes = 4 * cfg.n_layer * (2 * cfg.n_embd + cfg.n_head * cfg.head_size * cfg.head_size);
            (median(times), median(steps), bytes)
        }
        ModelKind::Transformer => {
            let m: Transformer<B> = sizes.transformer(context + decode_steps + 64).init(device);
            let _ = m.forward_last(tokens::<B>(64, sizes.vocab, device), None).map_err(input)?.0.into_data();
            let mut times = Vec::with_capacity(reps);
            let mut cache = KvCache { layers: Vec::new() };
            for _ in 0..reps {
                let t0 = Instant::now();
                let (logits, c) = m.forward_last(tokens::<B>(context, sizes.vocab, device), None).map_err(input)?;
                let _ = logits.into_data();
                cache = c;
                times.push(t0.elapsed());
            }
            let mut steps = Vec::with_capacity(decode_steps);
            for i in 0..decode_steps {
                let t0 = Instant::now();
                let next = tokens::<B>(1 + i % 3, sizes.vocab, device).slice([0..1, 0..1]);
                let (logits, c) = m.forward_last(next, Some(cache)).map_err(input)?;
                let _ = logits.into_data();
                cache = c;
                steps.push(t0.elapsed());
            }
            let bytes = cache.bytes();
            (median(times), median(steps), bytes)
        }
    };
    Ok(Point {
        model,
        context,
        prefill_s: prefill.as_secs_f64(),
        decode_ms: decode.as_secs_f64() * 1e3,
        peak_rss_mib: peak_rss_mib(),
        cache_mib: cache_bytes as f64 / (1024.0 * 1024.0),
        prefill_reps: reps,
        decode_steps,
    })
}
