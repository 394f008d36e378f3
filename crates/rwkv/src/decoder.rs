//! A fused decoder for the CPU: RWKV-6 (x060) and RWKV-7 (x070) written directly over host
//! buffers, with the large matrices stored in f32, bf16, f16, int8 or 4-bit — a sequence mode for
//! prompts ([`Decoder::prefill`]) and a single-token step for generation ([`Decoder::step`]).
//! The RWKV-6 block is `mix.rs`, the RWKV-7 block `mix7.rs`; both run on the same engines.
//!
//! Decoding one token multiplies a single row by every weight matrix, so its cost is reading the
//! weights once. [`Decoder`] keeps each matrix output-major (`[out, in]`, one contiguous dot
//! product per output), converts half-precision weights to f32 in registers (AVX2 + FMA + F16C,
//! detected at run time; a portable loop otherwise), runs each step on a team of threads that
//! split every product by rows (`step.rs`), and runs the small parts (layer norms, LoRAs, WKV
//! step, group norm) in place without a tensor library in between. Storing the matrices in bf16
//! or f16 halves the bytes each token reads, int8 (blocks of 32 with a scale each) nearly
//! quarters them; accumulation stays in f32. A prompt instead runs each projection as one GEMM
//! over all its rows (`prefill.rs`), layer by layer in any row order a VisualRWKV scan asks for
//! ([`RowOrder`]).
//!
//! It computes the same function as [`Rwkv::forward`] / [`Rwkv7::forward`] (tested against the
//! burn models and the official package's goldens); the state converts to and from [`State`], so
//! a prompt can also be prefilled by the burn model (on any backend) and decoded here.
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

use crate::dense::RwkvBackend;
use crate::layers::Block;
use crate::state::{LayerState, State};
use crate::weights::host_f32;
use crate::x070::{Arch, Rwkv7, Rwkv7Config};
use crate::{LanguageModel, LmConfig, LmDims, Rwkv, RwkvConfig, RwkvError, TensorMap};

mod agreement;
mod batch;
mod matrix;
mod mix;
mod mix7;
mod prefill;
mod quantized;
mod step;

pub use agreement::{Agreement, agreement};
use matrix::Matrix;
use mix::{ChannelMixWeights, DdLerpWeights, DecayWeights, LN_EPS};
use mix7::{Layer7, Lora};

/// A token id, as the tokenizer produces it and every generation API takes it.
pub type TokenId = u32;

/// Storage type of the decoder's large matrices (projections and head, and the embedding).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightDtype {
    /// 4 bytes per weight.
    F32,
    /// bfloat16 (round to nearest even): 2 bytes per weight.
    Bf16,
    /// IEEE half (round to nearest even): 2 bytes per weight.
    F16,
    /// int8 in blocks of 32 along each row with one f32 scale per block (llama.cpp's Q8_0
    /// layout with an f32 scale): 1.125 bytes per weight. Steps and prompts alike multiply it in
    /// integers by the activations quantised the same way per block (as llama.cpp multiplies
    /// Q8_0 by Q8_0): the activations' rounding adds to the weights' (measured in
    /// `docs/performance.md`).
    I8,
    /// 4-bit codes in blocks of 32 along each row with one f32 scale per block (llama.cpp's Q4_0
    /// layout with an f32 scale): 0.625 bytes per weight, multiplied as int8 is.
    Q4,
}

impl WeightDtype {
    /// Bits per stored weight, without the blocks' scales (int8 and 4-bit add 32 bits per
    /// block of 32 weights: one more bit per weight).
    pub fn bits(self) -> usize {
        match self {
            WeightDtype::F32 => 32,
            WeightDtype::Bf16 | WeightDtype::F16 => 16,
            WeightDtype::I8 => 8,
            WeightDtype::Q4 => 4,
        }
    }

    /// The block format of a quantised type (`None` for f32 and half precision).
    pub fn quant(self) -> Option<visualrwkv_checkpoint::quant::Quant> {
        use visualrwkv_checkpoint::quant::Quant;
        match self {
            WeightDtype::I8 => Some(Quant::Q8),
            WeightDtype::Q4 => Some(Quant::Q4),
            WeightDtype::F32 | WeightDtype::Bf16 | WeightDtype::F16 => None,
        }
    }

    /// The dtype named `f32`, `bf16`, `f16`, `i8` or `q4`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "f32" => Some(WeightDtype::F32),
            "bf16" => Some(WeightDtype::Bf16),
            "f16" => Some(WeightDtype::F16),
            "i8" => Some(WeightDtype::I8),
            "q4" => Some(WeightDtype::Q4),
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

/// The weights of one RWKV-6 block.
#[derive(Clone, Debug)]
struct Layer {
    ln1: Norm,
    ln2: Norm,
    ddlerp: DdLerpWeights,
    decay: DecayWeights,
    /// `time_faaaa` `[H·N]`.
    bonus: Vec<f32>,
    receptance: Matrix,
    key: Matrix,
    value: Matrix,
    gate: Matrix,
    output: Matrix,
    ln_x: Norm,
    ffn: ChannelMixWeights,
}

impl Layer {
    /// Every matrix of the block.
    fn matrices(&self) -> impl Iterator<Item = &Matrix> {
        let (d, f) = (&self.ddlerp, &self.ffn);
        [&d.w1, &self.decay.w1, &self.decay.w2, &self.receptance, &self.key, &self.value, &self.gate, &self.output]
            .into_iter()
            .chain(&d.w2)
            .chain([&f.key, &f.receptance, &f.value])
    }

    /// Every per-channel vector a step reads besides the matrices.
    fn vectors(&self) -> impl Iterator<Item = &Vec<f32>> {
        self.ddlerp.maa.iter().chain([&self.ddlerp.maa_x, &self.decay.base, &self.bonus])
    }
}

/// The blocks of either architecture.
#[derive(Clone, Debug)]
enum Blocks {
    X060(Vec<Layer>),
    X070(Vec<Layer7>),
}

impl Blocks {
    /// Every matrix of every block, and the bytes of every block's vectors.
    fn matrices(&self) -> Box<dyn Iterator<Item = &Matrix> + '_> {
        match self {
            Blocks::X060(ls) => Box::new(ls.iter().flat_map(Layer::matrices)),
            Blocks::X070(ls) => Box::new(ls.iter().flat_map(Layer7::matrices)),
        }
    }

    /// Bytes of the blocks' per-channel vectors.
    fn vector_bytes(&self) -> usize {
        let sum = |vs: &mut dyn Iterator<Item = &Vec<f32>>| vs.map(|v| 4 * v.len()).sum::<usize>();
        match self {
            Blocks::X060(ls) => sum(&mut ls.iter().flat_map(Layer::vectors)),
            Blocks::X070(ls) => sum(&mut ls.iter().flat_map(Layer7::vectors)),
        }
    }
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

fn host<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    host_f32(t)
}

impl HostState {
    /// The zero state of an RWKV-6 model of configuration `cfg`.
    pub fn zeros(cfg: &RwkvConfig) -> Self {
        Self::zeros_for(&x060_dims(cfg))
    }

    /// The zero state of a model of sizes `d` (either architecture).
    pub fn zeros_for(d: &LmDims) -> Self {
        let (c, h, n) = (d.n_embd, d.n_head, d.head_size);
        let layer = HostLayerState { att_shift: vec![0.0; c], wkv: vec![0.0; h * n * n], ffn_shift: vec![0.0; c] };
        Self { layers: vec![layer; d.n_layer] }
    }

    /// Row `row` of a burn [`State`].
    pub fn from_state<B: Backend>(state: &State<B>, row: usize) -> Result<Self, RwkvError> {
        let b = state.batch_size();
        if row >= b {
            return Err(RwkvError::BatchRows { rows: row..row + 1, batch: b });
        }
        let layers = state
            .layers
            .iter()
            .map(|s| {
                let [_, c] = s.att_shift.dims();
                let [_, h, n, _] = s.wkv.dims();
                HostLayerState {
                    att_shift: host(s.att_shift.clone().slice([row..row + 1, 0..c])),
                    wkv: host(s.wkv.clone().slice([row..row + 1, 0..h, 0..n, 0..n])),
                    ffn_shift: host(s.ffn_shift.clone().slice([row..row + 1, 0..c])),
                }
            })
            .collect();
        Ok(Self { layers })
    }

    /// Checks that this state fits an RWKV-6 model of configuration `cfg` (layer count and the
    /// length of every vector); the error names the first tensor that does not.
    pub fn check(&self, cfg: &RwkvConfig) -> Result<(), RwkvError> {
        self.check_for(&x060_dims(cfg))
    }

    /// [`HostState::check`] for a model of sizes `d` (either architecture).
    pub fn check_for(&self, d: &LmDims) -> Result<(), RwkvError> {
        let want = HostState::zeros_for(d);
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

    /// As a burn [`State`] with one batch row, for an RWKV-6 model of configuration `cfg`.
    /// Errors when the state does not fit `cfg` ([`HostState::check`]).
    pub fn to_state<B: Backend>(&self, cfg: &RwkvConfig, device: &B::Device) -> Result<State<B>, RwkvError> {
        self.to_state_for(&x060_dims(cfg), device)
    }

    /// [`HostState::to_state`] for a model of sizes `d` (either architecture).
    pub fn to_state_for<B: Backend>(&self, d: &LmDims, device: &B::Device) -> Result<State<B>, RwkvError> {
        self.check_for(d)?;
        let (c, h, n) = (d.n_embd, d.n_head, d.head_size);
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

/// The sizes of an RWKV-6 configuration.
fn x060_dims(cfg: &RwkvConfig) -> LmDims {
    LmConfig::X060(cfg.clone()).dims()
}

/// The order in which one layer reads the rows of a sequence: `read[q]` is the row it reads
/// `q`-th (VisualRWKV's scans permute the image span per layer, docs/model.md §4). The layer
/// writes each result back to the row it came from, so the next layer sees the sequence in its
/// own order; the layer's state ends after the last row it read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowOrder {
    /// Row read at each position.
    read: Vec<usize>,
    /// Position at which each row is read (the inverse of `read`).
    back: Vec<usize>,
}

impl RowOrder {
    /// The order `read` (a permutation of `0..read.len()`); errors on anything else.
    pub fn new(read: Vec<usize>) -> Result<Self, RwkvError> {
        let len = read.len();
        let mut back = vec![usize::MAX; len];
        for (q, &r) in read.iter().enumerate() {
            if r >= len || back[r] != usize::MAX {
                return Err(RwkvError::RowOrder { len, position: q, row: r });
            }
            back[r] = q;
        }
        Ok(Self { read, back })
    }

    /// Rows of the sequence it orders.
    pub fn len(&self) -> usize {
        self.read.len()
    }

    /// Whether it orders no rows.
    pub fn is_empty(&self) -> bool {
        self.read.is_empty()
    }

    /// The row read at each position.
    pub fn read(&self) -> &[usize] {
        &self.read
    }
}

/// The fused CPU decoder of an RWKV-6 or RWKV-7 model (see the module docs).
///
/// `Send + Sync`: [`Decoder::prefill`] and [`Decoder::step`] take `&self` and a caller-owned
/// [`HostState`] (each step's thread team is the caller's own), so one decoder serves several
/// generations from several threads at once, each giving exactly what it gives alone.
#[derive(Clone, Debug)]
pub struct Decoder {
    config: LmConfig,
    dims: LmDims,
    dtype: WeightDtype,
    emb: Matrix,
    ln0: Norm,
    blocks: Blocks,
    ln_out: Norm,
    head: Matrix,
    /// Threads per decoding step (`None`: automatic).
    threads: Option<usize>,
}

/// A burn `Linear` (`[in, out]`) as an output-major matrix in `dtype`.
fn linear_matrix<B: Backend>(l: &burn::nn::Linear<B>, dtype: WeightDtype) -> Matrix {
    let [inp, out] = l.weight.dims();
    Matrix::from_in_out(&host(l.weight.val()), inp, out, dtype)
}

/// A LoRA factor `[in, out]` as an f32 matrix.
fn lora_matrix<B: Backend>(w: Tensor<B, 2>) -> Matrix {
    let [inp, out] = w.dims();
    Matrix::from_in_out(&host(w), inp, out, WeightDtype::F32)
}

/// A norm's values from an optional weight and bias (`None`: ones and zeros of length `len`).
fn norm_params<B: Backend>(
    gamma: Option<&burn::module::Param<Tensor<B, 1>>>,
    beta: Option<&burn::module::Param<Tensor<B, 1>>>,
    len: usize,
) -> Norm {
    let read =
        |p: Option<&burn::module::Param<Tensor<B, 1>>>, fill: f32| p.map_or_else(|| vec![fill; len], |p| host(p.val()));
    Norm { gamma: read(gamma, 1.0), beta: read(beta, 0.0) }
}

fn layer_norm<B: Backend>(l: &burn::nn::LayerNorm<B>) -> Norm {
    norm_params(Some(&l.gamma), l.beta.as_ref(), l.gamma.dims()[0])
}

/// The decoder's copy of one block: the large projections in `dtype`, the rest f32.
fn load_layer<B: RwkvBackend>(b: &Block<B>, dtype: WeightDtype) -> Layer {
    let (a, f) = (&b.att, &b.ffn);
    let c = a.ddlerp.maa_x.dims()[0];
    let [_, d_mix, _] = a.ddlerp.w2.dims();
    let maa = host(a.ddlerp.maa.val());
    let w2 = host(a.ddlerp.w2.val());
    Layer {
        ln1: layer_norm(&b.ln1),
        ln2: layer_norm(&b.ln2),
        ddlerp: DdLerpWeights {
            maa_x: host(a.ddlerp.maa_x.val()),
            maa: std::array::from_fn(|j| maa[j * c..(j + 1) * c].to_vec()),
            w1: lora_matrix(a.ddlerp.w1.val()),
            w2: std::array::from_fn(|j| {
                Matrix::from_in_out(&w2[j * d_mix * c..(j + 1) * d_mix * c], d_mix, c, WeightDtype::F32)
            }),
        },
        decay: DecayWeights {
            base: host(a.decay.base.val()),
            w1: lora_matrix(a.decay.w1.val()),
            w2: lora_matrix(a.decay.w2.val()),
        },
        bonus: host(a.bonus.val()),
        receptance: linear_matrix(&a.receptance, dtype),
        key: linear_matrix(&a.key, dtype),
        value: linear_matrix(&a.value, dtype),
        gate: linear_matrix(&a.gate, dtype),
        output: linear_matrix(&a.output, dtype),
        ln_x: norm_params(a.ln_x.gamma.as_ref(), a.ln_x.beta.as_ref(), a.decay.base.dims()[0]),
        ffn: ChannelMixWeights {
            maa_k: host(f.maa_k.val()),
            maa_r: host(f.maa_r.val()),
            key: linear_matrix(&f.key, dtype),
            receptance: linear_matrix(&f.receptance, dtype),
            value: linear_matrix(&f.value, dtype),
        },
    }
}

/// Takes official tensors out of a checkpoint's map by key (the keys were checked beforehand, so
/// a missing one is reported, not expected).
struct Taker {
    map: TensorMap,
}

impl Taker {
    fn take(&mut self, key: &str) -> Result<Vec<f32>, RwkvError> {
        self.map.tensors.remove(key).map(|(_, v)| v).ok_or_else(|| {
            RwkvError::Checkpoint(visualrwkv_checkpoint::CheckpointError::Keys {
                path: self.map.origin.clone(),
                model: "the fused decoder".into(),
                problems: vec![visualrwkv_checkpoint::KeyProblem::Missing(key.into())],
            })
        })
    }

    fn norm(&mut self, prefix: &str) -> Result<Norm, RwkvError> {
        Ok(Norm { gamma: self.take(&format!("{prefix}.weight"))?, beta: self.take(&format!("{prefix}.bias"))? })
    }
}

/// The official tensors of one block, taken out of the map.
struct LayerTensors {
    vectors: [Vec<f32>; 10],
    norms: [Norm; 3],
    /// `time_maa_w1` `[C, 5·D_MIX]`, `time_maa_w2` `[5, D_MIX, C]`, `time_decay_w1` `[C, D]`,
    /// `time_decay_w2` `[D, C_att]` (LoRAs, `[in, out]`).
    loras: [Vec<f32>; 4],
    /// receptance, key, value, gate, output, ffn key, ffn receptance, ffn value (`[out, in]`).
    linears: [Vec<f32>; 8],
}

impl LayerTensors {
    fn take(t: &mut Taker, l: usize) -> Result<Self, RwkvError> {
        let mut get = |k: &str| t.take(&format!("blocks.{l}.{k}"));
        let vectors = [
            get("att.time_maa_x")?,
            get("att.time_maa_w")?,
            get("att.time_maa_k")?,
            get("att.time_maa_v")?,
            get("att.time_maa_r")?,
            get("att.time_maa_g")?,
            get("att.time_decay")?,
            get("att.time_faaaa")?,
            get("ffn.time_maa_k")?,
            get("ffn.time_maa_r")?,
        ];
        let loras =
            [get("att.time_maa_w1")?, get("att.time_maa_w2")?, get("att.time_decay_w1")?, get("att.time_decay_w2")?];
        let linears = [
            get("att.receptance.weight")?,
            get("att.key.weight")?,
            get("att.value.weight")?,
            get("att.gate.weight")?,
            get("att.output.weight")?,
            get("ffn.key.weight")?,
            get("ffn.receptance.weight")?,
            get("ffn.value.weight")?,
        ];
        let norms = [
            t.norm(&format!("blocks.{l}.ln1"))?,
            t.norm(&format!("blocks.{l}.ln2"))?,
            t.norm(&format!("blocks.{l}.att.ln_x"))?,
        ];
        Ok(Self { vectors, norms, loras, linears })
    }

    /// The decoder's block: large matrices converted to `dtype` (f32 ones moved, not copied).
    fn build(self, cfg: &RwkvConfig, dtype: WeightDtype) -> Layer {
        let (c, a, f, m, d) = (cfg.n_embd, cfg.dim_att(), cfg.dim_ffn, cfg.d_mix, cfg.d_decay);
        let [maa_x, mw, mk, mv, mr, mg, base, bonus, maa_k, maa_r] = self.vectors;
        let [ln1, ln2, ln_x] = self.norms;
        let [w1, w2, dw1, dw2] = self.loras;
        let [r, k, v, g, o, fk, fr, fv] = self.linears;
        let big = |w: Vec<f32>, inp: usize, out: usize| Matrix::from_out_in(w, inp, out, dtype);
        let lora = |w: &[f32], inp: usize, out: usize| Matrix::from_in_out(w, inp, out, WeightDtype::F32);
        Layer {
            ln1,
            ln2,
            ddlerp: DdLerpWeights {
                maa_x,
                maa: [mw, mk, mv, mr, mg],
                w1: lora(&w1, c, 5 * m),
                w2: std::array::from_fn(|j| lora(&w2[j * m * c..(j + 1) * m * c], m, c)),
            },
            decay: DecayWeights { base, w1: lora(&dw1, c, d), w2: lora(&dw2, d, a) },
            bonus,
            receptance: big(r, c, a),
            key: big(k, c, a),
            value: big(v, c, a),
            gate: big(g, c, a),
            output: big(o, a, c),
            ln_x,
            ffn: ChannelMixWeights {
                maa_k,
                maa_r,
                key: big(fk, c, f),
                receptance: big(fr, c, c),
                value: big(fv, f, c),
            },
        }
    }
}

/// The official tensors of one RWKV-7 block, taken out of the map.
struct LayerTensors7 {
    /// `x_r, x_w, x_k, x_v, x_a, x_g, w0, a0, k_k, k_a, r_k, ffn.x_k` (flattened).
    vectors: [Vec<f32>; 12],
    norms: [Norm; 3],
    /// `w1, w2, a1, a2, g1, g2` (`[in, out]`).
    loras: [Vec<f32>; 6],
    /// `v0`, `v1`, `v2` (blocks 1..L).
    value_residual: Option<[Vec<f32>; 3]>,
    /// receptance, key, value, output, ffn key, ffn value (`[out, in]`).
    linears: [Vec<f32>; 6],
}

impl LayerTensors7 {
    fn take(t: &mut Taker, l: usize) -> Result<Self, RwkvError> {
        let mut get = |k: &str| t.take(&format!("blocks.{l}.{k}"));
        let vectors = [
            get("att.x_r")?,
            get("att.x_w")?,
            get("att.x_k")?,
            get("att.x_v")?,
            get("att.x_a")?,
            get("att.x_g")?,
            get("att.w0")?,
            get("att.a0")?,
            get("att.k_k")?,
            get("att.k_a")?,
            get("att.r_k")?,
            get("ffn.x_k")?,
        ];
        let loras = [get("att.w1")?, get("att.w2")?, get("att.a1")?, get("att.a2")?, get("att.g1")?, get("att.g2")?];
        let value_residual = if l > 0 { Some([get("att.v0")?, get("att.v1")?, get("att.v2")?]) } else { None };
        let linears = [
            get("att.receptance.weight")?,
            get("att.key.weight")?,
            get("att.value.weight")?,
            get("att.output.weight")?,
            get("ffn.key.weight")?,
            get("ffn.value.weight")?,
        ];
        let norms = [
            t.norm(&format!("blocks.{l}.ln1"))?,
            t.norm(&format!("blocks.{l}.ln2"))?,
            t.norm(&format!("blocks.{l}.att.ln_x"))?,
        ];
        Ok(Self { vectors, norms, loras, value_residual, linears })
    }

    /// The decoder's block: large matrices converted to `dtype`, the LoRAs f32.
    fn build(self, cfg: &Rwkv7Config, dtype: WeightDtype) -> Layer7 {
        let (c, f) = (cfg.n_embd, cfg.dim_ffn);
        let [x_r, x_w, x_k, x_v, x_a, x_g, w0, a0, k_k, k_a, r_k, ffn_mix] = self.vectors;
        let [ln1, ln2, ln_x] = self.norms;
        let lora = |down: &[f32], up: &[f32], rank: usize| Lora {
            down: Matrix::from_in_out(down, c, rank, WeightDtype::F32),
            up: Matrix::from_in_out(up, rank, c, WeightDtype::F32),
        };
        let [w1, w2, a1, a2, g1, g2] = self.loras;
        let big = |w: Vec<f32>, inp: usize, out: usize| Matrix::from_out_in(w, inp, out, dtype);
        let [r, k, v, o, fk, fv] = self.linears;
        Layer7 {
            ln1,
            ln2,
            mix: [x_r, x_w, x_k, x_v, x_a, x_g],
            w0,
            w_lora: lora(&w1, &w2, cfg.d_decay),
            a0,
            a_lora: lora(&a1, &a2, cfg.d_aaa),
            v_residual: self.value_residual.map(|[v0, v1, v2]| (v0, lora(&v1, &v2, cfg.d_mv))),
            g_lora: lora(&g1, &g2, cfg.d_gate),
            k_k,
            k_a,
            r_k,
            receptance: big(r, c, c),
            key: big(k, c, c),
            value: big(v, c, c),
            output: big(o, c, c),
            ln_x,
            ffn_mix,
            ffn_key: big(fk, c, f),
            ffn_value: big(fv, f, c),
        }
    }
}

impl Decoder {
    /// The decoder of official x060 or x070 checkpoint tensors (`map`, as [`TensorMap::read`]
    /// gives them, prefix removed; the architecture told from the keys, [`Arch::detect`]),
    /// taking the map apart: the configuration is inferred and every key checked
    /// ([`RwkvConfig::from_checkpoint`], [`Rwkv7Config::from_checkpoint`]), then each tensor is
    /// moved into place — `nn.Linear` weights are already output-major, so f32 ones are kept as
    /// they are and the others converted once, layers in parallel. No burn model is built: with
    /// [`crate::Rwkv::from_tensors_lazily`] beside it the process holds one copy of the weights.
    pub fn from_tensors(map: TensorMap, dtype: WeightDtype) -> Result<Self, RwkvError> {
        use rayon::prelude::*;
        let config = match Arch::detect(&map)? {
            Arch::X060 => LmConfig::X060(RwkvConfig::from_checkpoint(&map)?),
            Arch::X070 => LmConfig::X070(Rwkv7Config::from_checkpoint(&map)?),
        };
        let dims = config.dims();
        let mut t = Taker { map };
        let emb = t.take("emb.weight")?;
        let ln0 = t.norm("blocks.0.ln0")?;
        let ln_out = t.norm("ln_out")?;
        let head = t.take("head.weight")?;
        let blocks = match &config {
            LmConfig::X060(cfg) => {
                let layers = (0..dims.n_layer).map(|l| LayerTensors::take(&mut t, l)).collect::<Result<Vec<_>, _>>()?;
                Blocks::X060(layers.into_par_iter().map(|l| l.build(cfg, dtype)).collect())
            }
            LmConfig::X070(cfg) => {
                let layers =
                    (0..dims.n_layer).map(|l| LayerTensors7::take(&mut t, l)).collect::<Result<Vec<_>, _>>()?;
                Blocks::X070(layers.into_par_iter().map(|l| l.build(cfg, dtype)).collect())
            }
        };
        let (v, c) = (dims.vocab_size, dims.n_embd);
        Ok(Self {
            dtype,
            // The embedding is used row by row: "output-major" with in = C, out = V.
            emb: Matrix::from_out_in(emb, c, v, dtype),
            ln0,
            blocks,
            ln_out,
            head: Matrix::from_out_in(head, c, v, dtype),
            threads: None,
            config,
            dims,
        })
    }

    /// Copies the weights of an RWKV-6 `model` to the host, storing the embedding, the
    /// projections and the head in `dtype` (the LoRAs, norms and vectors stay f32).
    pub fn new<B: RwkvBackend>(model: &Rwkv<B>, dtype: WeightDtype) -> Result<Self, RwkvError> {
        let config = model.config();
        let (v, c) = (config.vocab_size, config.n_embd);
        // The embedding is used row by row: "output-major" with in = C, out = V.
        let emb = Matrix::from_out_in(host(model.emb.weight.val()), c, v, dtype);
        Ok(Self {
            dims: x060_dims(&config),
            config: LmConfig::X060(config),
            dtype,
            emb,
            ln0: layer_norm(&model.ln0),
            blocks: Blocks::X060(model.blocks.iter().map(|b| load_layer(b, dtype)).collect()),
            ln_out: layer_norm(&model.ln_out),
            head: linear_matrix(&model.head, dtype),
            threads: None,
        })
    }

    /// The decoder of an RWKV-7 `model` (its tensors under the official keys, then
    /// [`Decoder::from_tensors`]).
    pub fn new7<B: RwkvBackend>(model: &Rwkv7<B>, dtype: WeightDtype) -> Result<Self, RwkvError> {
        Self::from_tensors(model.to_tensor_map()?, dtype)
    }

    /// The decoder of a language model of either architecture.
    pub fn of_model<B: RwkvBackend>(model: &LanguageModel<B>, dtype: WeightDtype) -> Result<Self, RwkvError> {
        match model {
            LanguageModel::X060(m) => Self::new(m, dtype),
            LanguageModel::X070(m) => Self::new7(m, dtype),
        }
    }

    /// Sets the number of threads that run each decoding step (`None`, the default: one for
    /// models reading under 8 MiB per token, else rayon's thread count up to the number of
    /// cores). The threads are started once per token and synchronise by spinning between the
    /// products; sequence mode ([`Decoder::prefill`]) always uses rayon's pool.
    pub fn set_threads(&mut self, threads: Option<usize>) {
        self.threads = threads;
    }

    /// The model's configuration (either architecture).
    pub fn config(&self) -> &LmConfig {
        &self.config
    }

    /// The sizes both architectures share.
    pub fn dims(&self) -> LmDims {
        self.dims
    }

    /// The architecture the decoder runs.
    pub fn arch(&self) -> Arch {
        self.dims.arch
    }

    /// The storage type of the large matrices.
    pub fn dtype(&self) -> WeightDtype {
        self.dtype
    }

    /// Bytes of weights one decoding step reads: every matrix except the embedding (one row of
    /// which is read), plus the small f32 parameters.
    pub fn bytes_per_token(&self) -> usize {
        self.head.bytes()
            + self.blocks.matrices().map(Matrix::bytes).sum::<usize>()
            + self.blocks.vector_bytes()
            + self.dims.n_embd * self.dtype.bits() / 8
    }

    /// The zero state.
    pub fn zero_state(&self) -> HostState {
        HostState::zeros_for(&self.dims)
    }

    /// One step on token `token`: updates `state` and returns the logits `[V]`.
    pub fn step(&self, token: TokenId, state: &mut HostState) -> Result<Vec<f32>, RwkvError> {
        self.step_embedding(&self.embed(&[token])?, state)
    }

    /// The embedding rows `[T, C]` of `tokens` (from the decoder's stored embedding, converted
    /// to f32); errors on an id outside the vocabulary.
    pub fn embed(&self, tokens: &[TokenId]) -> Result<Vec<f32>, RwkvError> {
        let (vocab, c) = (self.dims.vocab_size, self.dims.n_embd);
        if let Some(&id) = tokens.iter().find(|&&t| t as usize >= vocab) {
            return Err(RwkvError::TokenOutOfVocabulary { id: id.into(), vocab });
        }
        let mut x = vec![0f32; tokens.len() * c];
        for (row, &t) in x.chunks_mut(c).zip(tokens) {
            self.emb.row_into(t as usize, row);
        }
        Ok(x)
    }

    /// One step on an embedding row `x` `[C]` (before `ln0`; e.g. a projected image feature).
    pub fn step_embedding(&self, x: &[f32], state: &mut HostState) -> Result<Vec<f32>, RwkvError> {
        let c = self.dims.n_embd;
        if x.len() != c {
            return Err(RwkvError::Shape { what: "embedding row".into(), expected: vec![c], found: vec![x.len()] });
        }
        state.check_for(&self.dims)?;
        self.step_team(x, &mut state.layers)
    }

    /// Steps through `tokens` from `state`; the logits after the last one.
    pub fn run(&self, tokens: &[TokenId], state: &mut HostState) -> Result<Vec<f32>, RwkvError> {
        let (last, rest) =
            tokens.split_last().ok_or(RwkvError::EmptyInput { what: "the tokens to decode", shape: vec![0] })?;
        for &t in rest {
            self.step(t, state)?;
        }
        self.step(*last, state)
    }
}
