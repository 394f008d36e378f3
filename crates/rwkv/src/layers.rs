//! The RWKV-6 layers as burn modules, each with its config: [`token_shift`] (docs/model.md §1.2),
//! [`DdLerp`] (the data-dependent token shift, §1.2), [`DecayLora`] (the data-dependent decay,
//! §1.3), [`TimeMix`] (§1.3–1.4), [`ChannelMix`] (§1.5) and [`Block`].
//!
//! # Shapes
//!
//! Layer inputs and outputs are `[B, T, C]` (B sequences of T rows of width C). [`DdLerp`] and
//! [`DecayLora`] work on flattened rows `[M, C]` (M = B·T). Per-layer state: token-shift rows
//! `[B, C]` (the last *normalised* input row of the previous call) and the WKV state
//! `[B, H, N, N]` (`[batch, head, key, value]`).

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::{GroupNorm, GroupNormConfig, Initializer, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::activation::{relu, sigmoid, silu};
use burn::tensor::{Tensor, backend::Backend};
use visualrwkv_wkv::{wkv6, wkv6_step};

use crate::RwkvError;
use crate::dense::{RwkvBackend, linear};
use crate::state::LayerState;

/// Epsilon of `ln_x` (`1e-5 · head_size_divisor²`, divisor 8).
pub const LN_X_EPS: f64 = 64e-5;

/// The token-shift difference δ of docs/model.md §1.2: `[shift, x_0, …, x_{T-2}] - x` for rows
/// `x` `[B, T, C]` and the row before them, `shift` `[B, C]`.
pub fn token_shift<B: Backend>(x: &Tensor<B, 3>, shift: Tensor<B, 2>) -> Tensor<B, 3> {
    let [b, t, c] = x.dims();
    let shift = shift.unsqueeze_dim::<3>(1);
    let prev = if t > 1 { Tensor::cat(vec![shift, x.clone().slice([0..b, 0..t - 1, 0..c])], 1) } else { shift };
    prev - x.clone()
}

/// The last row of `x` `[B, T, C]` as `[B, C]`: the token-shift state after `x`.
pub fn last_row<B: Backend>(x: &Tensor<B, 3>) -> Tensor<B, 2> {
    let [b, t, c] = x.dims();
    x.clone().slice([0..b, t - 1..t, 0..c]).reshape([b, c])
}

/// A parameter drawn uniformly from `[min, max)` when first used.
fn uniform<B: Backend, const D: usize>(
    shape: [usize; D],
    min: f64,
    max: f64,
    device: &B::Device,
) -> Param<Tensor<B, D>> {
    Initializer::Uniform { min, max }.init(shape, device)
}

/// A bias-free linear layer `d_in → d_out` (the official `nn.Linear(..., bias=False)`).
fn projection<B: Backend>(d_in: usize, d_out: usize, device: &B::Device) -> Linear<B> {
    LinearConfig::new(d_in, d_out).with_bias(false).init(device)
}

/// Configuration of [`DdLerp`].
#[derive(Config, Debug)]
pub struct DdLerpConfig {
    /// Residual width C.
    pub d_model: usize,
    /// Rank of the shared LoRA (`time_maa_w1` is `[C, 5·D_MIX]`).
    pub d_mix: usize,
}

impl DdLerpConfig {
    /// A ddlerp with the official trainer's ranges: mixes uniform in `[0, 1)`, LoRA in ±0.1.
    pub fn init<B: Backend>(&self, device: &B::Device) -> DdLerp<B> {
        let (c, d) = (self.d_model, self.d_mix);
        DdLerp {
            maa_x: uniform([c], 0.0, 1.0, device),
            maa: uniform([5, c], 0.0, 1.0, device),
            w1: uniform([c, 5 * d], -0.1, 0.1, device),
            w2: uniform([5, d, c], -0.1, 0.1, device),
        }
    }
}

/// ddlerp, the data-dependent token shift (docs/model.md §1.2): the inputs of the five
/// projections w, k, v, r, g are `x + δ ⊙ (μ_j + tanh((x + δ ⊙ μ_x) W1)_j W2_j)`, one LoRA shared
/// by the five (its hidden layer split into five blocks of `D_MIX`).
#[derive(Module, Debug)]
pub struct DdLerp<B: Backend> {
    /// `time_maa_x` `[C]`: the mix that feeds the LoRA.
    pub maa_x: Param<Tensor<B, 1>>,
    /// `time_maa_{w,k,v,r,g}` stacked `[5, C]`, in that order.
    pub maa: Param<Tensor<B, 2>>,
    /// `time_maa_w1` `[C, 5·D_MIX]`.
    pub w1: Param<Tensor<B, 2>>,
    /// `time_maa_w2` `[5, D_MIX, C]`.
    pub w2: Param<Tensor<B, 3>>,
}

/// The five mixed inputs of [`DdLerp::forward`], each `[M, C]`.
#[derive(Clone, Debug)]
pub struct DdLerpOutput<B: Backend> {
    /// Input of the decay LoRA.
    pub w: Tensor<B, 2>,
    /// Input of `key`.
    pub k: Tensor<B, 2>,
    /// Input of `value`.
    pub v: Tensor<B, 2>,
    /// Input of `receptance`.
    pub r: Tensor<B, 2>,
    /// Input of `gate`.
    pub g: Tensor<B, 2>,
}

impl<B: Backend> DdLerp<B> {
    /// The five mixed inputs of rows `x` `[M, C]` with token-shift differences `dx` `[M, C]`.
    pub fn forward(&self, x: Tensor<B, 2>, dx: Tensor<B, 2>) -> DdLerpOutput<B> {
        let [m, c] = x.dims();
        let d = self.w2.dims()[1];
        let xxx = x.clone() + dx.clone() * self.maa_x.val().unsqueeze_dim(0);
        let lora = xxx.matmul(self.w1.val()).tanh().reshape([m, 5, d]).swap_dims(0, 1); // [5, M, D]
        let mix = lora.matmul(self.w2.val()) + self.maa.val().unsqueeze_dim(1); // [5, M, C]
        let xs = x.unsqueeze_dim::<3>(0) + dx.unsqueeze_dim::<3>(0) * mix;
        let part = |j: usize| xs.clone().slice([j..j + 1, 0..m, 0..c]).reshape([m, c]);
        DdLerpOutput { w: part(0), k: part(1), v: part(2), r: part(3), g: part(4) }
    }
}

/// Configuration of [`DecayLora`].
#[derive(Config, Debug)]
pub struct DecayLoraConfig {
    /// Residual width C.
    pub d_model: usize,
    /// Width of the decay, `C_att = H·N`.
    pub d_att: usize,
    /// Rank of the LoRA (`time_decay_w1` is `[C, D_DECAY]`).
    pub d_decay: usize,
    /// Depth of the layer in the stack, `l / L` in `[0, 1)`: deeper layers start with slower
    /// decays.
    #[config(default = 0.0)]
    pub depth: f64,
}

impl DecayLoraConfig {
    /// A decay LoRA with the official trainer's ranges: base in `[-6, -1 + depth)`, LoRA in ±0.1.
    pub fn init<B: Backend>(&self, device: &B::Device) -> DecayLora<B> {
        DecayLora {
            base: uniform([self.d_att], -6.0, -1.0 + self.depth, device),
            w1: uniform([self.d_model, self.d_decay], -0.1, 0.1, device),
            w2: uniform([self.d_decay, self.d_att], -0.1, 0.1, device),
        }
    }
}

/// The data-dependent decay (docs/model.md §1.3): `w_raw = time_decay + tanh(x_w W1) W2`; the
/// WKV applies `exp(-exp(w_raw))`.
#[derive(Module, Debug)]
pub struct DecayLora<B: Backend> {
    /// `time_decay` `[C_att]`.
    pub base: Param<Tensor<B, 1>>,
    /// `time_decay_w1` `[C, D_DECAY]`.
    pub w1: Param<Tensor<B, 2>>,
    /// `time_decay_w2` `[D_DECAY, C_att]`.
    pub w2: Param<Tensor<B, 2>>,
}

impl<B: Backend> DecayLora<B> {
    /// `w_raw` `[M, C_att]` of the decay inputs `xw` `[M, C]`.
    pub fn forward(&self, xw: Tensor<B, 2>) -> Tensor<B, 2> {
        self.base.val().unsqueeze_dim(0) + xw.matmul(self.w1.val()).tanh().matmul(self.w2.val())
    }
}

/// Configuration of [`TimeMix`].
#[derive(Config, Debug)]
pub struct TimeMixConfig {
    /// Residual width C.
    pub d_model: usize,
    /// Heads H.
    pub n_head: usize,
    /// Head size N.
    pub head_size: usize,
    /// Rank of the ddlerp LoRA.
    pub d_mix: usize,
    /// Rank of the decay LoRA.
    pub d_decay: usize,
    /// Depth of the layer, `l / L` (see [`DecayLoraConfig::depth`]).
    #[config(default = 0.0)]
    pub depth: f64,
}

impl TimeMixConfig {
    /// A time mix with the official trainer's initial ranges (projections: burn's default).
    pub fn init<B: Backend>(&self, device: &B::Device) -> TimeMix<B> {
        let (c, a) = (self.d_model, self.n_head * self.head_size);
        TimeMix {
            ddlerp: DdLerpConfig::new(c, self.d_mix).init(device),
            decay: DecayLoraConfig::new(c, a, self.d_decay).with_depth(self.depth).init(device),
            bonus: uniform([self.n_head, self.head_size], -0.5, 0.5, device),
            receptance: projection(c, a, device),
            key: projection(c, a, device),
            value: projection(c, a, device),
            gate: projection(c, a, device),
            output: projection(a, c, device),
            ln_x: GroupNormConfig::new(self.n_head, a).with_epsilon(LN_X_EPS).init(device),
        }
    }
}

/// Time mixing (docs/model.md §1.3–1.4): [`DdLerp`], receptance/key/value/gate projections,
/// [`DecayLora`], WKV6, GroupNorm `ln_x`, SiLU gate, output projection.
#[derive(Module, Debug)]
pub struct TimeMix<B: Backend> {
    /// The data-dependent token shift.
    pub ddlerp: DdLerp<B>,
    /// The data-dependent decay.
    pub decay: DecayLora<B>,
    /// `time_faaaa`, the bonus u of the current token, `[H, N]`.
    pub bonus: Param<Tensor<B, 2>>,
    /// `receptance` `C → C_att`.
    pub receptance: Linear<B>,
    /// `key` `C → C_att`.
    pub key: Linear<B>,
    /// `value` `C → C_att`.
    pub value: Linear<B>,
    /// `gate` `C → C_att`.
    pub gate: Linear<B>,
    /// `output` `C_att → C`.
    pub output: Linear<B>,
    /// `ln_x`: GroupNorm with H groups, eps [`LN_X_EPS`].
    pub ln_x: GroupNorm<B>,
}

/// Output of [`TimeMix::forward`].
#[derive(Clone, Debug)]
pub struct TimeMixOutput<B: Backend> {
    /// The mix output `[B, T, C]` (added to the residual stream).
    pub output: Tensor<B, 3>,
    /// The new token-shift row `[B, C]`.
    pub shift: Tensor<B, 2>,
    /// The new WKV state `[B, H, N, N]`.
    pub wkv: Tensor<B, 4>,
}

impl<B: RwkvBackend> TimeMix<B> {
    /// `x`: the ln1 output `[B, T, C]`; `shift` `[B, C]` and `wkv` `[B, H, N, N]` from the state.
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        shift: Tensor<B, 2>,
        wkv: Tensor<B, 4>,
    ) -> Result<TimeMixOutput<B>, RwkvError> {
        let [b, t, c] = x.dims();
        let [h, n] = self.bonus.dims();
        let new_shift = last_row(&x);
        let dx = token_shift(&x, shift).reshape([b * t, c]);
        let mixed = self.ddlerp.forward(x.reshape([b * t, c]), dx);
        let r = linear(&self.receptance, mixed.r);
        let k = linear(&self.key, mixed.k);
        let v = linear(&self.value, mixed.v);
        let g = silu(linear(&self.gate, mixed.g));
        let w_raw = self.decay.forward(mixed.w);
        let (y, wkv) = if t == 1 {
            let heads = |x: Tensor<B, 2>| x.reshape([b, h, n]);
            let out = wkv6_step(heads(r), heads(k), heads(v), heads(w_raw), self.bonus.val(), wkv)?;
            (out.y.reshape([b, h * n]), out.state)
        } else {
            let heads = |x: Tensor<B, 2>| x.reshape([b, t, h, n]);
            let out = wkv6(heads(r), heads(k), heads(v), heads(w_raw), self.bonus.val(), Some(wkv))?;
            (out.y.reshape([b * t, h * n]), out.state)
        };
        let y = self.ln_x.forward(y) * g;
        Ok(TimeMixOutput { output: linear(&self.output, y).reshape([b, t, c]), shift: new_shift, wkv })
    }
}

/// Configuration of [`ChannelMix`].
#[derive(Config, Debug)]
pub struct ChannelMixConfig {
    /// Residual width C.
    pub d_model: usize,
    /// Hidden width F.
    pub d_ffn: usize,
}

impl ChannelMixConfig {
    /// A channel mix with mixes uniform in `[0, 1)` (projections: burn's default).
    pub fn init<B: Backend>(&self, device: &B::Device) -> ChannelMix<B> {
        let (c, f) = (self.d_model, self.d_ffn);
        ChannelMix {
            maa_k: uniform([c], 0.0, 1.0, device),
            maa_r: uniform([c], 0.0, 1.0, device),
            key: projection(c, f, device),
            receptance: projection(c, c, device),
            value: projection(f, c, device),
        }
    }
}

/// Channel mixing (docs/model.md §1.5): token shift with static mixes, squared-ReLU key, sigmoid
/// receptance gate.
#[derive(Module, Debug)]
pub struct ChannelMix<B: Backend> {
    /// `ffn.time_maa_k` `[C]`.
    pub maa_k: Param<Tensor<B, 1>>,
    /// `ffn.time_maa_r` `[C]`.
    pub maa_r: Param<Tensor<B, 1>>,
    /// `ffn.key` `C → F`.
    pub key: Linear<B>,
    /// `ffn.receptance` `C → C`.
    pub receptance: Linear<B>,
    /// `ffn.value` `F → C`.
    pub value: Linear<B>,
}

/// Output of [`ChannelMix::forward`].
#[derive(Clone, Debug)]
pub struct ChannelMixOutput<B: Backend> {
    /// The mix output `[B, T, C]`.
    pub output: Tensor<B, 3>,
    /// The new token-shift row `[B, C]`.
    pub shift: Tensor<B, 2>,
}

impl<B: RwkvBackend> ChannelMix<B> {
    /// `x`: the ln2 output `[B, T, C]`; `shift` `[B, C]` from the state.
    pub fn forward(&self, x: Tensor<B, 3>, shift: Tensor<B, 2>) -> ChannelMixOutput<B> {
        let new_shift = last_row(&x);
        let dx = token_shift(&x, shift);
        let mix = |m: &Param<Tensor<B, 1>>| m.val().unsqueeze_dim::<2>(0).unsqueeze_dim::<3>(0);
        let xk = x.clone() + dx.clone() * mix(&self.maa_k);
        let xr = x + dx * mix(&self.maa_r);
        let k = relu(linear(&self.key, xk)).powi_scalar(2);
        ChannelMixOutput { output: sigmoid(linear(&self.receptance, xr)) * linear(&self.value, k), shift: new_shift }
    }
}

/// Configuration of [`Block`].
#[derive(Config, Debug)]
pub struct BlockConfig {
    /// The time mix.
    pub time_mix: TimeMixConfig,
    /// The channel mix.
    pub channel_mix: ChannelMixConfig,
}

impl BlockConfig {
    /// A block: layer norms at identity, the mixes as their configs give.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Block<B> {
        let ln = || LayerNormConfig::new(self.time_mix.d_model).init(device);
        Block { ln1: ln(), ln2: ln(), att: self.time_mix.init(device), ffn: self.channel_mix.init(device) }
    }
}

/// One RWKV-6 block: `x += TimeMix(ln1(x)); x += ChannelMix(ln2(x))`.
#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    /// Norm before the time mix.
    pub ln1: LayerNorm<B>,
    /// Norm before the channel mix.
    pub ln2: LayerNorm<B>,
    /// The time mix.
    pub att: TimeMix<B>,
    /// The channel mix.
    pub ffn: ChannelMix<B>,
}

/// Output of [`Block::forward`].
#[derive(Clone, Debug)]
pub struct BlockOutput<B: Backend> {
    /// The residual stream after the block `[B, T, C]`.
    pub x: Tensor<B, 3>,
    /// The layer's state after the last row.
    pub state: LayerState<B>,
}

impl<B: RwkvBackend> Block<B> {
    /// Runs the block over `x` `[B, T, C]` from `state`.
    pub fn forward(&self, x: Tensor<B, 3>, state: LayerState<B>) -> Result<BlockOutput<B>, RwkvError> {
        let att = self.att.forward(self.ln1.forward(x.clone()), state.att_shift, state.wkv)?;
        let x = x + att.output;
        let ffn = self.ffn.forward(self.ln2.forward(x.clone()), state.ffn_shift);
        Ok(BlockOutput {
            x: x + ffn.output,
            state: LayerState { att_shift: att.shift, wkv: att.wkv, ffn_shift: ffn.shift },
        })
    }
}
