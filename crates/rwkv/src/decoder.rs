//! A fused decoder for the CPU: RWKV-6 written directly over host buffers, with the large
//! matrices stored in f32, bf16 or f16 — a sequence mode for prompts ([`Decoder::prefill`]) and a
//! single-token step for generation ([`Decoder::step`]).
//!
//! Decoding one token multiplies a single row by every weight matrix, so its cost is reading the
//! weights once. [`Decoder`] keeps each matrix output-major (`[out, in]`, one contiguous dot
//! product per output), converts half-precision weights to f32 in registers (AVX2 + FMA + F16C,
//! detected at run time; a portable loop otherwise), runs each step on a team of threads that
//! split every product by rows (`step.rs`), and runs the small parts (layer norms, LoRAs, WKV
//! step, group norm) in place without a tensor library in between. Storing the matrices in bf16
//! or f16 halves the bytes each token reads; accumulation stays in f32. A prompt instead runs
//! each projection as one GEMM over all its rows (`prefill.rs`).
//!
//! It computes the same function as [`Rwkv::forward`] (tested against the burn model and the
//! official fixtures); the state converts to and from [`State`], so a prompt can also be
//! prefilled by the burn model (on any backend) and decoded here.
//!
//! ```
//! use burn::backend::NdArray;
//! use visualrwkv_rwkv::{Decoder, RwkvConfig, WeightDtype};
//!
//! // A random model (load an official checkpoint with `visualrwkv_rwkv::load` instead).
//! let model = RwkvConfig::official(2, 128, 300).init::<NdArray>(&Default::default());
//! let decoder = Decoder::new(&model, WeightDtype::Bf16)?;
//! let mut state = decoder.zero_state();
//! let logits = decoder.prefill(&[1, 2, 3, 4], &mut state)?; // the prompt, in sequence mode
//! assert_eq!(logits.len(), 300);
//! let next = logits.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i as u32);
//! let logits = decoder.step(next.unwrap(), &mut state)?; // one generated token
//! assert!(logits.iter().all(|v| v.is_finite()));
//! # Ok::<(), visualrwkv_rwkv::RwkvError>(())
//! ```
//!
//! # Shapes
//!
//! Token ids `[T]` (or embedding rows `[T, C]`) → logits `[V]` of the last; per-layer state
//! `att_shift` `[C]`, `wkv` `[H, N, N]` (key-major), `ffn_shift` `[C]` (batch 1).

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use visualrwkv_wkv::cpu::exp_f32;

use crate::dense::RwkvBackend;
use crate::layers::Block;
use crate::state::{LayerState, State};
use crate::{Rwkv, RwkvConfig, RwkvError};

mod matrix;
mod prefill;
mod step;

use matrix::Matrix;

/// Epsilon of RWKV's layer norms (`ln0`, `ln1`, `ln2`, `ln_out`).
const LN_EPS: f32 = 1e-5;

/// Storage type of the decoder's large matrices (projections and head, and the embedding).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightDtype {
    /// 4 bytes per weight.
    F32,
    /// bfloat16 (round to nearest even): 2 bytes per weight.
    Bf16,
    /// IEEE half (round to nearest even): 2 bytes per weight.
    F16,
}

impl WeightDtype {
    /// Bytes per stored weight.
    pub fn bytes(self) -> usize {
        match self {
            WeightDtype::F32 => 4,
            WeightDtype::Bf16 | WeightDtype::F16 => 2,
        }
    }

    /// The dtype named `f32`, `bf16` or `f16`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "f32" => Some(WeightDtype::F32),
            "bf16" => Some(WeightDtype::Bf16),
            "f16" => Some(WeightDtype::F16),
            _ => None,
        }
    }
}

/// `Σ f(x_i)` with eight partial sums (so that the loop vectorises).
#[inline(always)]
fn sum8(x: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = x.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().map(|&v| f(v)).sum();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += f(v);
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `(x - mean) / sqrt(var + eps) * gamma + beta` over `x` in place.
fn norm_in_place(x: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    let n = x.len() as f32;
    let mean = sum8(x, |v| v) / n;
    let var = sum8(x, |v| (v - mean) * (v - mean)) / n;
    let inv = 1.0 / (var + eps).sqrt();
    for ((v, g), b) in x.iter_mut().zip(gamma).zip(beta) {
        *v = (*v - mean) * inv * g + b;
    }
}

/// A layer norm's weight and bias.
#[derive(Clone, Debug)]
struct Norm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
}

impl Norm {
    fn apply(&self, x: &[f32]) -> Vec<f32> {
        let mut y = x.to_vec();
        norm_in_place(&mut y, &self.gamma, &self.beta, LN_EPS);
        y
    }
}

/// The weights of one block.
#[derive(Clone, Debug)]
struct Layer {
    ln1: Norm,
    ln2: Norm,
    maa_x: Vec<f32>,
    /// `time_maa_{w,k,v,r,g}`.
    maa: [Vec<f32>; 5],
    maa_w1: Matrix,
    maa_w2: [Matrix; 5],
    decay: Vec<f32>,
    decay_w1: Matrix,
    decay_w2: Matrix,
    bonus: Vec<f32>,
    receptance: Matrix,
    key: Matrix,
    value: Matrix,
    gate: Matrix,
    output: Matrix,
    ln_x: Norm,
    ffn_maa_k: Vec<f32>,
    ffn_maa_r: Vec<f32>,
    ffn_key: Matrix,
    ffn_receptance: Matrix,
    ffn_value: Matrix,
}

/// The per-layer state of one sequence on the host.
#[derive(Clone, Debug, PartialEq)]
pub struct HostLayerState {
    /// Time-mix shift row `[C]`.
    pub att_shift: Vec<f32>,
    /// WKV state `[H, N, N]`.
    pub wkv: Vec<f32>,
    /// Channel-mix shift row `[C]`.
    pub ffn_shift: Vec<f32>,
}

/// The state of one sequence for [`Decoder`]: one [`HostLayerState`] per block.
#[derive(Clone, Debug, PartialEq)]
pub struct HostState {
    /// Per-layer states.
    pub layers: Vec<HostLayerState>,
}

fn host<B: Backend, const D: usize>(t: Tensor<B, D>, what: &str) -> Result<Vec<f32>, RwkvError> {
    t.into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .map_err(|e| RwkvError::Input(format!("{what}: cannot read the tensor: {e:?}")))
}

impl HostState {
    /// The zero state of a model of configuration `cfg`.
    pub fn zeros(cfg: &RwkvConfig) -> Self {
        let (c, h, n) = (cfg.n_embd, cfg.n_head, cfg.head_size);
        let layer = HostLayerState { att_shift: vec![0.0; c], wkv: vec![0.0; h * n * n], ffn_shift: vec![0.0; c] };
        Self { layers: vec![layer; cfg.n_layer] }
    }

    /// Row `row` of a burn [`State`].
    pub fn from_state<B: Backend>(state: &State<B>, row: usize) -> Result<Self, RwkvError> {
        let b = state.batch_size();
        if row >= b {
            return Err(RwkvError::Input(format!("state row {row} out of range for a state of {b} rows")));
        }
        let layers = state
            .layers
            .iter()
            .enumerate()
            .map(|(l, s)| {
                let [_, c] = s.att_shift.dims();
                let [_, h, n, _] = s.wkv.dims();
                Ok(HostLayerState {
                    att_shift: host(s.att_shift.clone().slice([row..row + 1, 0..c]), &format!("state.{l}.att_shift"))?,
                    wkv: host(s.wkv.clone().slice([row..row + 1, 0..h, 0..n, 0..n]), &format!("state.{l}.wkv"))?,
                    ffn_shift: host(s.ffn_shift.clone().slice([row..row + 1, 0..c]), &format!("state.{l}.ffn_shift"))?,
                })
            })
            .collect::<Result<_, RwkvError>>()?;
        Ok(Self { layers })
    }

    /// Checks that this state fits a model of configuration `cfg` (layer count and the length
    /// of every vector); the error names the first tensor that does not.
    pub fn check(&self, cfg: &RwkvConfig) -> Result<(), RwkvError> {
        let want = HostState::zeros(cfg);
        if self.layers.len() != want.layers.len() {
            return Err(RwkvError::Shape {
                what: "state layers".into(),
                expected: vec![want.layers.len()],
                found: vec![self.layers.len()],
            });
        }
        for (l, (s, w)) in self.layers.iter().zip(&want.layers).enumerate() {
            for (what, a, b) in [
                ("att_shift", &s.att_shift, &w.att_shift),
                ("wkv", &s.wkv, &w.wkv),
                ("ffn_shift", &s.ffn_shift, &w.ffn_shift),
            ] {
                if a.len() != b.len() {
                    return Err(RwkvError::Shape {
                        what: format!("state.{l}.{what} (flattened)"),
                        expected: vec![b.len()],
                        found: vec![a.len()],
                    });
                }
            }
        }
        Ok(())
    }

    /// As a burn [`State`] with one batch row, for a model of configuration `cfg`. Errors when
    /// the state does not fit `cfg` ([`HostState::check`]).
    pub fn to_state<B: Backend>(&self, cfg: &RwkvConfig, device: &B::Device) -> Result<State<B>, RwkvError> {
        self.check(cfg)?;
        let (c, h, n) = (cfg.n_embd, cfg.n_head, cfg.head_size);
        let t = |v: &Vec<f32>, shape: Vec<usize>| TensorData::new(v.clone(), shape);
        Ok(State {
            layers: self
                .layers
                .iter()
                .map(|l| LayerState {
                    att_shift: Tensor::from_data(t(&l.att_shift, vec![1, c]), device),
                    wkv: Tensor::from_data(t(&l.wkv, vec![1, h, n, n]), device),
                    ffn_shift: Tensor::from_data(t(&l.ffn_shift, vec![1, c]), device),
                })
                .collect(),
        })
    }
}

/// The fused CPU decoder of an RWKV-6 model (see the module docs).
#[derive(Clone, Debug)]
pub struct Decoder {
    config: RwkvConfig,
    dtype: WeightDtype,
    emb: Matrix,
    ln0: Norm,
    layers: Vec<Layer>,
    ln_out: Norm,
    head: Matrix,
    /// Threads per decoding step (`None`: automatic).
    threads: Option<usize>,
}

fn linear_matrix<B: Backend>(l: &burn::nn::Linear<B>, dtype: WeightDtype, what: &str) -> Result<Matrix, RwkvError> {
    let [inp, out] = l.weight.dims();
    Ok(Matrix::from_in_out(&host(l.weight.val(), what)?, inp, out, dtype))
}

/// A norm's values from an optional weight and bias (`None`: ones and zeros of length `len`).
fn norm_params<B: Backend>(
    gamma: Option<&burn::module::Param<Tensor<B, 1>>>,
    beta: Option<&burn::module::Param<Tensor<B, 1>>>,
    len: usize,
    what: &str,
) -> Result<Norm, RwkvError> {
    let read = |p: Option<&burn::module::Param<Tensor<B, 1>>>, fill: f32| match p {
        Some(p) => host(p.val(), what),
        None => Ok(vec![fill; len]),
    };
    Ok(Norm { gamma: read(gamma, 1.0)?, beta: read(beta, 0.0)? })
}

fn layer_norm<B: Backend>(l: &burn::nn::LayerNorm<B>, what: &str) -> Result<Norm, RwkvError> {
    norm_params(Some(&l.gamma), l.beta.as_ref(), l.gamma.dims()[0], what)
}

fn load_layer<B: RwkvBackend>(b: &Block<B>, l: usize, dtype: WeightDtype) -> Result<Layer, RwkvError> {
    let a = &b.att;
    let name = |s: &str| format!("blocks.{l}.{s}");
    let (c, d_mix) = (a.maa_x.dims()[0], a.maa_w2.dims()[1]);
    let maa = host(a.maa.val(), &name("att.time_maa"))?;
    let maa_w2 = host(a.maa_w2.val(), &name("att.time_maa_w2"))?;
    let small = |t: Tensor<B, 2>, s: &str| -> Result<Matrix, RwkvError> {
        let [i, o] = t.dims();
        Ok(Matrix::from_in_out(&host(t, &name(s))?, i, o, WeightDtype::F32))
    };
    let ln_x = norm_params(a.ln_x.gamma.as_ref(), a.ln_x.beta.as_ref(), a.decay.dims()[0], &name("att.ln_x"))?;
    Ok(Layer {
        ln1: layer_norm(&b.ln1, &name("ln1"))?,
        ln2: layer_norm(&b.ln2, &name("ln2"))?,
        maa_x: host(a.maa_x.val(), &name("att.time_maa_x"))?,
        maa: std::array::from_fn(|j| maa[j * c..(j + 1) * c].to_vec()),
        maa_w1: small(a.maa_w1.val(), "att.time_maa_w1")?,
        maa_w2: std::array::from_fn(|j| {
            Matrix::from_in_out(&maa_w2[j * d_mix * c..(j + 1) * d_mix * c], d_mix, c, WeightDtype::F32)
        }),
        decay: host(a.decay.val(), &name("att.time_decay"))?,
        decay_w1: small(a.decay_w1.val(), "att.time_decay_w1")?,
        decay_w2: small(a.decay_w2.val(), "att.time_decay_w2")?,
        bonus: host(a.bonus.val(), &name("att.time_faaaa"))?,
        receptance: linear_matrix(&a.receptance, dtype, &name("att.receptance.weight"))?,
        key: linear_matrix(&a.key, dtype, &name("att.key.weight"))?,
        value: linear_matrix(&a.value, dtype, &name("att.value.weight"))?,
        gate: linear_matrix(&a.gate, dtype, &name("att.gate.weight"))?,
        output: linear_matrix(&a.output, dtype, &name("att.output.weight"))?,
        ln_x,
        ffn_maa_k: host(b.ffn.maa_k.val(), &name("ffn.time_maa_k"))?,
        ffn_maa_r: host(b.ffn.maa_r.val(), &name("ffn.time_maa_r"))?,
        ffn_key: linear_matrix(&b.ffn.key, dtype, &name("ffn.key.weight"))?,
        ffn_receptance: linear_matrix(&b.ffn.receptance, dtype, &name("ffn.receptance.weight"))?,
        ffn_value: linear_matrix(&b.ffn.value, dtype, &name("ffn.value.weight"))?,
    })
}

/// The logistic function through the branch-free `exp` of the WKV kernel (vectorises in loops;
/// absolute error below 1e-7).
#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp_f32(-x))
}

/// `tanh(x) = 1 - 2 / (e^{2x} + 1)` through the same `exp` (absolute error below 1e-7; saturates
/// to ±1).
#[inline(always)]
fn tanh(x: f32) -> f32 {
    1.0 - 2.0 / (exp_f32(2.0 * x) + 1.0)
}

impl Decoder {
    /// Copies the weights of `model` to the host, storing the embedding, the projections and the
    /// head in `dtype` (the LoRAs, norms and vectors stay f32).
    pub fn new<B: RwkvBackend>(model: &Rwkv<B>, dtype: WeightDtype) -> Result<Self, RwkvError> {
        let config = model.config();
        let (v, c) = (config.vocab_size, config.n_embd);
        // The embedding is used row by row: "output-major" with in = C, out = V.
        let emb = Matrix::from_out_in(host(model.emb.weight.val(), "emb.weight")?, c, v, dtype);
        let layers =
            model.blocks.iter().enumerate().map(|(l, b)| load_layer(b, l, dtype)).collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            config,
            dtype,
            emb,
            ln0: layer_norm(&model.ln0, "blocks.0.ln0")?,
            layers,
            ln_out: layer_norm(&model.ln_out, "ln_out")?,
            head: linear_matrix(&model.head, dtype, "head.weight")?,
            threads: None,
        })
    }

    /// Sets the number of threads that run each decoding step (`None`, the default: one for
    /// models reading under 8 MiB per token, else rayon's thread count up to the number of
    /// cores). The threads are started once per token and synchronise by spinning between the
    /// products; sequence mode ([`Decoder::prefill`]) always uses rayon's pool.
    pub fn set_threads(&mut self, threads: Option<usize>) {
        self.threads = threads;
    }

    /// The model's configuration.
    pub fn config(&self) -> &RwkvConfig {
        &self.config
    }

    /// The storage type of the large matrices.
    pub fn dtype(&self) -> WeightDtype {
        self.dtype
    }

    /// Bytes of weights one decoding step reads: every matrix except the embedding (one row of
    /// which is read), plus the small f32 parameters.
    pub fn bytes_per_token(&self) -> usize {
        let vec = |v: &Vec<f32>| 4 * v.len();
        let layer = |l: &Layer| {
            [&l.maa_w1, &l.decay_w1, &l.decay_w2, &l.receptance, &l.key, &l.value, &l.gate, &l.output]
                .iter()
                .map(|m| m.bytes())
                .sum::<usize>()
                + l.maa_w2.iter().map(Matrix::bytes).sum::<usize>()
                + [&l.ffn_key, &l.ffn_receptance, &l.ffn_value].iter().map(|m| m.bytes()).sum::<usize>()
                + l.maa.iter().map(vec).sum::<usize>()
                + vec(&l.maa_x)
                + vec(&l.decay)
                + vec(&l.bonus)
        };
        self.head.bytes() + self.layers.iter().map(layer).sum::<usize>() + self.config.n_embd * self.dtype.bytes()
    }

    /// The zero state.
    pub fn zero_state(&self) -> HostState {
        HostState::zeros(&self.config)
    }

    /// One step on token `token`: updates `state` and returns the logits `[V]`.
    pub fn step(&self, token: u32, state: &mut HostState) -> Result<Vec<f32>, RwkvError> {
        self.step_embedding(&self.embed(&[token])?, state)
    }

    /// The embedding rows `[T, C]` of `tokens`; errors on an id outside the vocabulary.
    fn embed(&self, tokens: &[u32]) -> Result<Vec<f32>, RwkvError> {
        let (v, c) = (self.config.vocab_size, self.config.n_embd);
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= v) {
            return Err(RwkvError::Input(format!("token id {bad} is outside the vocabulary 0..{v}")));
        }
        let mut x = vec![0f32; tokens.len() * c];
        for (row, &t) in x.chunks_mut(c).zip(tokens) {
            self.emb.row_into(t as usize, row);
        }
        Ok(x)
    }

    /// One step on an embedding row `x` `[C]` (before `ln0`; e.g. a projected image feature).
    pub fn step_embedding(&self, x: &[f32], state: &mut HostState) -> Result<Vec<f32>, RwkvError> {
        let c = self.config.n_embd;
        if x.len() != c {
            return Err(RwkvError::Shape { what: "embedding row".into(), expected: vec![c], found: vec![x.len()] });
        }
        state.check(&self.config)?;
        Ok(self.step_team(&self.ln0.apply(x), &mut state.layers))
    }

    /// Steps through `tokens` from `state`; the logits after the last one.
    pub fn run(&self, tokens: &[u32], state: &mut HostState) -> Result<Vec<f32>, RwkvError> {
        let (last, rest) = tokens.split_last().ok_or_else(|| RwkvError::Input("no tokens to decode".into()))?;
        for &t in rest {
            self.step(t, state)?;
        }
        self.step(*last, state)
    }
}
