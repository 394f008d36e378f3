//! The RWKV-6 layers: [`TimeMix`] (attention replacement, docs/model.md §1.3), [`ChannelMix`] (FFN,
//! §1.5) and [`Block`].
//!
//! # Shapes
//!
//! Layer inputs and outputs are `[B, T, C]` (B sequences of T rows of width C). Per-layer state:
//! token-shift rows `[B, C]` (the last *normalised* input row of the previous call) and the WKV
//! state `[B, H, N, N]` (`[batch, head, key, value]`).

use burn::module::{Module, Param};
use burn::nn::{GroupNorm, LayerNorm, Linear};
use burn::tensor::activation::{relu, sigmoid, silu};
use burn::tensor::{Tensor, backend::Backend};
use visualrwkv_wkv::{wkv6, wkv6_step};

use crate::dense::{RwkvBackend, linear};

use crate::RwkvError;
use crate::state::LayerState;

/// `[shift, x_0, …, x_{T-2}] - x`: the token-shift difference δ of docs/model.md §1.2 for `x` `[B, T, C]`
/// and the previous row `shift` `[B, C]`.
fn shift_delta<B: Backend>(x: &Tensor<B, 3>, shift: Tensor<B, 2>) -> Tensor<B, 3> {
    let [b, t, c] = x.dims();
    let shift = shift.unsqueeze_dim::<3>(1);
    let prev = if t > 1 { Tensor::cat(vec![shift, x.clone().slice([0..b, 0..t - 1, 0..c])], 1) } else { shift };
    prev - x.clone()
}

/// The last row of `x` `[B, T, C]` as `[B, C]`.
fn last_row<B: Backend>(x: &Tensor<B, 3>) -> Tensor<B, 2> {
    let [b, t, c] = x.dims();
    x.clone().slice([0..b, t - 1..t, 0..c]).reshape([b, c])
}

/// Time mixing (x060): ddlerp token shift with a shared LoRA (order w, k, v, r, g),
/// data-dependent decay, WKV6, GroupNorm `ln_x`, SiLU gate, output projection.
#[derive(Module, Debug)]
pub struct TimeMix<B: Backend> {
    /// `time_maa_x` `[C]`.
    pub maa_x: Param<Tensor<B, 1>>,
    /// `time_maa_{w,k,v,r,g}` stacked `[5, C]`.
    pub maa: Param<Tensor<B, 2>>,
    /// `time_maa_w1` `[C, 5·D_MIX]`.
    pub maa_w1: Param<Tensor<B, 2>>,
    /// `time_maa_w2` `[5, D_MIX, C]`.
    pub maa_w2: Param<Tensor<B, 3>>,
    /// `time_decay` `[C_att]`.
    pub decay: Param<Tensor<B, 1>>,
    /// `time_decay_w1` `[C, D_DECAY]`.
    pub decay_w1: Param<Tensor<B, 2>>,
    /// `time_decay_w2` `[D_DECAY, C_att]`.
    pub decay_w2: Param<Tensor<B, 2>>,
    /// `time_faaaa` (bonus u) `[H, N]`.
    pub bonus: Param<Tensor<B, 2>>,
    /// `receptance` `C → C_att`, no bias.
    pub receptance: Linear<B>,
    /// `key` `C → C_att`.
    pub key: Linear<B>,
    /// `value` `C → C_att`.
    pub value: Linear<B>,
    /// `gate` `C → C_att`.
    pub gate: Linear<B>,
    /// `output` `C_att → C`.
    pub output: Linear<B>,
    /// `ln_x`: GroupNorm with H groups, eps 64e-5.
    pub ln_x: GroupNorm<B>,
}

/// Output of [`TimeMix::forward`]: the mix output `[B, T, C]`, the new shift row `[B, C]` and the
/// new WKV state `[B, H, N, N]`.
pub type TimeMixOutput<B> = (Tensor<B, 3>, Tensor<B, 2>, Tensor<B, 4>);

impl<B: RwkvBackend> TimeMix<B> {
    /// `x`: the ln1 output `[B, T, C]`; `shift` `[B, C]` and `wkv` `[B, H, N, N]` from the state.
    /// Returns the mix output `[B, T, C]`, the new shift row and the new WKV state.
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        shift: Tensor<B, 2>,
        wkv: Tensor<B, 4>,
    ) -> Result<TimeMixOutput<B>, RwkvError> {
        let [b, t, c] = x.dims();
        let [h, n] = self.bonus.dims();
        let d_mix = self.maa_w2.dims()[1];
        let new_shift = last_row(&x);
        let dx = shift_delta(&x, shift).reshape([b * t, c]);
        let x2 = x.reshape([b * t, c]);
        let xxx = x2.clone() + dx.clone() * self.maa_x.val().unsqueeze_dim(0);
        let lora = xxx.matmul(self.maa_w1.val()).tanh(); // [BT, 5·D]
        let lora = lora.reshape([b * t, 5, d_mix]).swap_dims(0, 1); // [5, BT, D]
        let mix = lora.matmul(self.maa_w2.val()) + self.maa.val().unsqueeze_dim(1); // [5, BT, C]
        let xs = x2.unsqueeze_dim::<3>(0) + dx.unsqueeze_dim::<3>(0) * mix; // [5, BT, C]
        let part = |j: usize| xs.clone().slice([j..j + 1, 0..b * t, 0..c]).reshape([b * t, c]);
        let (xw, xk, xv, xr, xg) = (part(0), part(1), part(2), part(3), part(4));

        let r = linear(&self.receptance, xr);
        let k = linear(&self.key, xk);
        let v = linear(&self.value, xv);
        let g = silu(linear(&self.gate, xg));
        let w_raw =
            self.decay.val().unsqueeze_dim(0) + xw.matmul(self.decay_w1.val()).tanh().matmul(self.decay_w2.val());

        let (y, wkv) = if t == 1 {
            let seq = |x: Tensor<B, 2>| x.reshape([b, h, n]);
            let out = wkv6_step(seq(r), seq(k), seq(v), seq(w_raw), self.bonus.val(), wkv)?;
            (out.y.reshape([b, h * n]), out.state)
        } else {
            let seq = |x: Tensor<B, 2>| x.reshape([b, t, h, n]);
            let out = wkv6(seq(r), seq(k), seq(v), seq(w_raw), self.bonus.val(), Some(wkv))?;
            (out.y.reshape([b * t, h * n]), out.state)
        };
        let y = self.ln_x.forward(y) * g;
        Ok((linear(&self.output, y).reshape([b, t, c]), new_shift, wkv))
    }
}

/// Channel mixing: token shift, squared ReLU key, sigmoid receptance gate.
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

impl<B: RwkvBackend> ChannelMix<B> {
    /// `x`: the ln2 output `[B, T, C]`; `shift` `[B, C]`. Returns the output and the new shift row.
    pub fn forward(&self, x: Tensor<B, 3>, shift: Tensor<B, 2>) -> (Tensor<B, 3>, Tensor<B, 2>) {
        let new_shift = last_row(&x);
        let dx = shift_delta(&x, shift);
        let mk = self.maa_k.val().unsqueeze_dim::<2>(0).unsqueeze_dim::<3>(0);
        let mr = self.maa_r.val().unsqueeze_dim::<2>(0).unsqueeze_dim::<3>(0);
        let xk = x.clone() + dx.clone() * mk;
        let xr = x + dx * mr;
        let k = relu(linear(&self.key, xk)).powi_scalar(2);
        (sigmoid(linear(&self.receptance, xr)) * linear(&self.value, k), new_shift)
    }
}

/// One RWKV-6 block: `x += TimeMix(ln1(x)); x += ChannelMix(ln2(x))`.
#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    /// `ln1`.
    pub ln1: LayerNorm<B>,
    /// `ln2`.
    pub ln2: LayerNorm<B>,
    /// `att`.
    pub att: TimeMix<B>,
    /// `ffn`.
    pub ffn: ChannelMix<B>,
}

impl<B: RwkvBackend> Block<B> {
    /// Runs the block over `x` `[B, T, C]` from `state`, returning the new residual stream and the
    /// layer's state after the last row.
    pub fn forward(&self, x: Tensor<B, 3>, state: LayerState<B>) -> Result<(Tensor<B, 3>, LayerState<B>), RwkvError> {
        let (att, att_shift, wkv) = self.att.forward(self.ln1.forward(x.clone()), state.att_shift, state.wkv)?;
        let x = x + att;
        let (ffn, ffn_shift) = self.ffn.forward(self.ln2.forward(x.clone()), state.ffn_shift);
        Ok((x + ffn, LayerState { att_shift, wkv, ffn_shift }))
    }
}
