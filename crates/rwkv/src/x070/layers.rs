//! The RWKV-7 (x070) layers as burn modules, each with its config: [`Lora`] (a low-rank
//! `C → D → C` map), [`TimeMix7`] (token shift, the four LoRAs, value residual, WKV7, `ln_x`, the
//! `r·k` bonus, gate), [`ChannelMix7`] (token shift, squared ReLU) and [`Block7`].
//!
//! # Shapes
//!
//! Layer inputs and outputs are `[B, T, C]`; the LoRAs work on flattened rows `[M, C]`
//! (M = B·T). Per-layer state as for RWKV-6 ([`LayerState`]): token-shift rows `[B, C]` and the
//! WKV7 state `[B, H, N, N]` (`[batch, head, key, value]`). The value residual `v_first`
//! `[B·T, C]` is the first layer's value, handed from block to block within one call.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::{GroupNorm, GroupNormConfig, Initializer, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::activation::{log_sigmoid, relu, sigmoid};
use burn::tensor::{Tensor, backend::Backend};
use visualrwkv_wkv::wkv7;

use crate::RwkvError;
use crate::dense::{RwkvBackend, linear};
use crate::layers::{LN_X_EPS, last_row, token_shift};
use crate::state::LayerState;

fn uniform<B: Backend, const D: usize>(
    shape: [usize; D],
    min: f64,
    max: f64,
    device: &B::Device,
) -> Param<Tensor<B, D>> {
    Initializer::Uniform { min, max }.init(shape, device)
}

fn projection<B: Backend>(d_in: usize, d_out: usize, device: &B::Device) -> Linear<B> {
    LinearConfig::new(d_in, d_out).with_bias(false).init(device)
}

/// Configuration of [`Lora`].
#[derive(Config, Debug)]
pub struct LoraConfig {
    /// Width C of the input and output.
    pub d_model: usize,
    /// Rank D.
    pub rank: usize,
}

impl LoraConfig {
    /// A LoRA with both matrices uniform in ±0.1.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Lora<B> {
        Lora {
            down: uniform([self.d_model, self.rank], -0.1, 0.1, device),
            up: uniform([self.rank, self.d_model], -0.1, 0.1, device),
        }
    }
}

/// A low-rank map `x ↦ f(x·down)·up` (official `w1`/`w2`, `a1`/`a2`, `v1`/`v2`, `g1`/`g2`), with
/// the hidden activation `f` chosen by the caller.
#[derive(Module, Debug)]
pub struct Lora<B: Backend> {
    /// `[C, D]` (official `*1`).
    pub down: Param<Tensor<B, 2>>,
    /// `[D, C]` (official `*2`).
    pub up: Param<Tensor<B, 2>>,
}

impl<B: Backend> Lora<B> {
    /// `f(x·down)·up` for rows `x` `[M, C]`.
    pub fn forward(&self, x: Tensor<B, 2>, f: impl FnOnce(Tensor<B, 2>) -> Tensor<B, 2>) -> Tensor<B, 2> {
        f(x.matmul(self.down.val())).matmul(self.up.val())
    }
}

/// Configuration of [`TimeMix7`].
#[derive(Config, Debug)]
pub struct TimeMix7Config {
    /// Residual width C (= H·N).
    pub d_model: usize,
    /// Number of heads H.
    pub n_head: usize,
    /// Head size N.
    pub head_size: usize,
    /// Rank of the decay LoRA (`w1` `[C, D]`).
    pub d_decay: usize,
    /// Rank of the in-context learning rate LoRA (`a1`).
    pub d_aaa: usize,
    /// Rank of the value-residual LoRA (`v1`); absent in the first layer.
    pub d_mv: usize,
    /// Rank of the gate LoRA (`g1`).
    pub d_gate: usize,
    /// Whether this is the first block (which stores `v_first` instead of mixing it in).
    #[config(default = false)]
    pub first: bool,
}

impl TimeMix7Config {
    /// A time mix with random weights in plausible ranges (mixes in `[0, 1)`, decays around the
    /// trainer's, LoRAs in ±0.1, burn's default for the projections).
    pub fn init<B: Backend>(&self, device: &B::Device) -> TimeMix7<B> {
        let c = self.d_model;
        let lora = |rank| LoraConfig::new(c, rank).init(device);
        let mix = || uniform([c], 0.0, 1.0, device);
        TimeMix7 {
            x_r: mix(),
            x_w: mix(),
            x_k: mix(),
            x_v: mix(),
            x_a: mix(),
            x_g: mix(),
            w0: uniform([c], -6.0, -1.0, device),
            w_lora: lora(self.d_decay),
            a0: uniform([c], -1.0, 1.0, device),
            a_lora: lora(self.d_aaa),
            v0: (!self.first).then(|| uniform([c], -1.0, 1.0, device)),
            v_lora: (!self.first).then(|| lora(self.d_mv)),
            g_lora: lora(self.d_gate),
            k_k: uniform([c], 0.7, 1.0, device),
            k_a: uniform([c], 0.5, 1.5, device),
            r_k: uniform([self.n_head, self.head_size], -0.5, 0.5, device),
            receptance: projection(c, c, device),
            key: projection(c, c, device),
            value: projection(c, c, device),
            output: projection(c, c, device),
            ln_x: GroupNormConfig::new(self.n_head, c).with_epsilon(LN_X_EPS).init(device),
        }
    }
}

/// The RWKV-7 time mix (docs/model.md §9).
#[derive(Module, Debug)]
pub struct TimeMix7<B: Backend> {
    /// Token-shift mix of the receptance input `[C]`.
    pub x_r: Param<Tensor<B, 1>>,
    /// Token-shift mix of the decay input `[C]`.
    pub x_w: Param<Tensor<B, 1>>,
    /// Token-shift mix of the key input `[C]`.
    pub x_k: Param<Tensor<B, 1>>,
    /// Token-shift mix of the value input `[C]`.
    pub x_v: Param<Tensor<B, 1>>,
    /// Token-shift mix of the learning-rate input `[C]`.
    pub x_a: Param<Tensor<B, 1>>,
    /// Token-shift mix of the gate input `[C]`.
    pub x_g: Param<Tensor<B, 1>>,
    /// Decay base `[C]`.
    pub w0: Param<Tensor<B, 1>>,
    /// Decay LoRA (tanh hidden).
    pub w_lora: Lora<B>,
    /// Learning-rate base `[C]`.
    pub a0: Param<Tensor<B, 1>>,
    /// Learning-rate LoRA (linear hidden).
    pub a_lora: Lora<B>,
    /// Value-residual base `[C]` (not in the first block).
    pub v0: Option<Param<Tensor<B, 1>>>,
    /// Value-residual LoRA (linear hidden; not in the first block).
    pub v_lora: Option<Lora<B>>,
    /// Gate LoRA (sigmoid hidden).
    pub g_lora: Lora<B>,
    /// Scale of the removal key before normalisation `[C]`.
    pub k_k: Param<Tensor<B, 1>>,
    /// How much the learning rate scales the key `[C]`.
    pub k_a: Param<Tensor<B, 1>>,
    /// Per-head weights of the `r·k` bonus `[H, N]`.
    pub r_k: Param<Tensor<B, 2>>,
    /// `C → C`.
    pub receptance: Linear<B>,
    /// `C → C`.
    pub key: Linear<B>,
    /// `C → C`.
    pub value: Linear<B>,
    /// `C → C`.
    pub output: Linear<B>,
    /// GroupNorm with H groups, eps [`LN_X_EPS`].
    pub ln_x: GroupNorm<B>,
}

/// Output of [`TimeMix7::forward`].
#[derive(Clone, Debug)]
pub struct TimeMix7Output<B: Backend> {
    /// `[B, T, C]`.
    pub output: Tensor<B, 3>,
    /// New token-shift row `[B, C]`.
    pub shift: Tensor<B, 2>,
    /// New WKV7 state `[B, H, N, N]`.
    pub wkv: Tensor<B, 4>,
    /// The first block's value `[B·T, C]`.
    pub v_first: Tensor<B, 2>,
}

/// `x / max(‖x‖₂, 1e-12)` over the last axis (`F.normalize`). The clamp is taken on `‖x‖²`
/// (`1e-24`) before the square root: the same value, and a zero row (a padding row) gets a zero
/// gradient instead of the `0·∞` of the square root's derivative at 0.
fn l2_normalize<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let norm = x.clone().powi_scalar(2).sum_dim(D - 1).clamp_min(1e-24).sqrt();
    x / norm
}

impl<B: RwkvBackend> TimeMix7<B> {
    /// `x`: the ln1 output `[B, T, C]`; `shift` `[B, C]` and `wkv` `[B, H, N, N]` from the state;
    /// `v_first` the first block's value (`None` in the first block, which returns its own).
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        shift: Tensor<B, 2>,
        wkv: Tensor<B, 4>,
        v_first: Option<Tensor<B, 2>>,
    ) -> Result<TimeMix7Output<B>, RwkvError> {
        let [b, t, c] = x.dims();
        let [h, n] = self.r_k.dims();
        let new_shift = last_row(&x);
        let dx = token_shift(&x, shift).reshape([b * t, c]);
        let x = x.reshape([b * t, c]);
        let mixed = |mu: &Param<Tensor<B, 1>>| x.clone() + dx.clone() * mu.val().unsqueeze_dim(0);
        let row = |p: &Param<Tensor<B, 1>>| p.val().unsqueeze_dim::<2>(0);
        let (xv, xa) = (mixed(&self.x_v), mixed(&self.x_a));
        let r = linear(&self.receptance, mixed(&self.x_r));
        // −softplus(−z) − 0.5 = log σ(z) − 0.5: the decay exp(−exp(w_raw)) stays in (e^{−e^{−0.5}}, 1).
        let w_raw = log_sigmoid(row(&self.w0) + self.w_lora.forward(mixed(&self.x_w), |z| z.tanh())) - 0.5;
        let k = linear(&self.key, mixed(&self.x_k));
        let mut v = linear(&self.value, xv.clone());
        let v_first = match (v_first, &self.v0, &self.v_lora) {
            (Some(first), Some(v0), Some(lora)) => {
                let gate = sigmoid(row(v0) + lora.forward(xv, |z| z));
                v = v.clone() + (first.clone() - v) * gate;
                first
            }
            _ => v.clone(),
        };
        let a = sigmoid(row(&self.a0) + self.a_lora.forward(xa, |z| z));
        let g = self.g_lora.forward(mixed(&self.x_g), sigmoid);
        let heads = |x: Tensor<B, 2>| x.reshape([b, t, h, n]);
        let kk = l2_normalize(heads(k.clone() * row(&self.k_k)));
        let k = k * ((a.clone() - 1.0) * row(&self.k_a) + 1.0);
        let a = heads(a);
        let out =
            wkv7(heads(r.clone()), heads(w_raw), heads(k.clone()), heads(v.clone()), -kk.clone(), kk * a, Some(wkv))?;
        let y = self.ln_x.forward(out.y.reshape([b * t, c]));
        let bonus = (heads(r) * heads(k) * self.r_k.val().unsqueeze_dim::<3>(0).unsqueeze_dim(0)).sum_dim(3);
        let y = y + (bonus * heads(v.clone())).reshape([b * t, c]);
        let output = linear(&self.output, y * g).reshape([b, t, c]);
        Ok(TimeMix7Output { output, shift: new_shift, wkv: out.state, v_first })
    }
}

/// Configuration of [`ChannelMix7`].
#[derive(Config, Debug)]
pub struct ChannelMix7Config {
    /// Residual width C.
    pub d_model: usize,
    /// Hidden width F.
    pub d_ffn: usize,
}

impl ChannelMix7Config {
    /// A channel mix with the mix uniform in `[0, 1)` and burn's default projections.
    pub fn init<B: Backend>(&self, device: &B::Device) -> ChannelMix7<B> {
        ChannelMix7 {
            x_k: uniform([self.d_model], 0.0, 1.0, device),
            key: projection(self.d_model, self.d_ffn, device),
            value: projection(self.d_ffn, self.d_model, device),
        }
    }
}

/// The RWKV-7 channel mix: `value(relu(key(x + δ·x_k))²)`, no receptance gate.
#[derive(Module, Debug)]
pub struct ChannelMix7<B: Backend> {
    /// Token-shift mix `[C]`.
    pub x_k: Param<Tensor<B, 1>>,
    /// `C → F`.
    pub key: Linear<B>,
    /// `F → C`.
    pub value: Linear<B>,
}

impl<B: RwkvBackend> ChannelMix7<B> {
    /// `x`: the ln2 output `[B, T, C]`, `shift` `[B, C]`; returns the output and the new shift.
    pub fn forward(&self, x: Tensor<B, 3>, shift: Tensor<B, 2>) -> (Tensor<B, 3>, Tensor<B, 2>) {
        let new_shift = last_row(&x);
        let k = x.clone() + token_shift(&x, shift) * self.x_k.val().unsqueeze_dim::<2>(0).unsqueeze_dim(0);
        (linear(&self.value, relu(linear(&self.key, k)).powi_scalar(2)), new_shift)
    }
}

/// Configuration of [`Block7`].
#[derive(Config, Debug)]
pub struct Block7Config {
    /// The time mix.
    pub att: TimeMix7Config,
    /// The channel mix.
    pub ffn: ChannelMix7Config,
}

impl Block7Config {
    /// A block with unit norms.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Block7<B> {
        let c = self.ffn.d_model;
        Block7 {
            ln1: LayerNormConfig::new(c).init(device),
            ln2: LayerNormConfig::new(c).init(device),
            att: self.att.init(device),
            ffn: self.ffn.init(device),
        }
    }
}

/// One RWKV-7 block: `x += att(ln1(x))`, `x += ffn(ln2(x))`.
#[derive(Module, Debug)]
pub struct Block7<B: Backend> {
    /// Norm before the time mix.
    pub ln1: LayerNorm<B>,
    /// Norm before the channel mix.
    pub ln2: LayerNorm<B>,
    /// Time mix.
    pub att: TimeMix7<B>,
    /// Channel mix.
    pub ffn: ChannelMix7<B>,
}

/// Output of [`Block7::forward`].
#[derive(Clone, Debug)]
pub struct Block7Output<B: Backend> {
    /// `[B, T, C]`.
    pub x: Tensor<B, 3>,
    /// The layer's new state.
    pub state: LayerState<B>,
    /// The first block's value `[B·T, C]`.
    pub v_first: Tensor<B, 2>,
}

impl<B: RwkvBackend> Block7<B> {
    /// Runs the block over `x` `[B, T, C]` from `state`.
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        state: LayerState<B>,
        v_first: Option<Tensor<B, 2>>,
    ) -> Result<Block7Output<B>, RwkvError> {
        let att = self.att.forward(self.ln1.forward(x.clone()), state.att_shift, state.wkv, v_first)?;
        let x = x + att.output;
        let (ffn, ffn_shift) = self.ffn.forward(self.ln2.forward(x.clone()), state.ffn_shift);
        Ok(Block7Output {
            x: x + ffn,
            state: LayerState { att_shift: att.shift, wkv: att.wkv, ffn_shift },
            v_first: att.v_first,
        })
    }
}
