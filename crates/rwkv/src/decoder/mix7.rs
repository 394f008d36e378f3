//! The RWKV-7 (x070) block of the fused decoder, over the same [`Exec`] engines as the RWKV-6
//! block of `mix.rs` (a thread team for a step, GEMMs for a prompt, a batch of sequences), and
//! its weights as the decoder stores them. The arithmetic is docs/model.md §9, the same as
//! [`crate::x070::layers`] (the oracle it is tested against, with the official package's
//! goldens).
//!
//! # Shapes
//!
//! Rows are row-major `[T, width]` slices: the residual stream and the six mixed inputs
//! `[T, C]`, r/k/v/w/a/g `[T, C]` (C = H·N), the LoRA hidden layers `[T, D]`, the channel mix's
//! hidden layer `[T, F]`. `v_first` (the first block's values) is `[T, C]`.

use visualrwkv_wkv::cpu::exp_f32;
use visualrwkv_wkv::wkv7::reference::Inputs;

use super::mix::{self, Exec, Recurrence, Shift, sigmoid, tanh};
use super::{Matrix, Norm, norm_in_place};
use crate::layers::LN_X_EPS;
use crate::{LmDims, RwkvError};

/// `log σ(z) = −softplus(−z)`, stable for any `z`.
#[inline(always)]
fn log_sigmoid(z: f32) -> f32 {
    z.min(0.0) - exp_f32(-z.abs()).ln_1p()
}

/// A low-rank map `f(x·down)·up` (both f32: they are small).
#[derive(Clone, Debug)]
pub(super) struct Lora {
    /// `C → D`.
    pub(super) down: Matrix,
    /// `D → C`.
    pub(super) up: Matrix,
}

/// The weights of one RWKV-7 block as the decoder stores them.
#[derive(Clone, Debug)]
pub(super) struct Layer7 {
    pub(super) ln1: Norm,
    pub(super) ln2: Norm,
    /// Token-shift mixes `x_r, x_w, x_k, x_v, x_a, x_g`, each `[C]`.
    pub(super) mix: [Vec<f32>; 6],
    /// Decay base `w0` `[C]` and its LoRA (tanh hidden).
    pub(super) w0: Vec<f32>,
    pub(super) w_lora: Lora,
    /// Learning-rate base `a0` `[C]` and its LoRA (linear hidden).
    pub(super) a0: Vec<f32>,
    pub(super) a_lora: Lora,
    /// Value-residual base `v0` `[C]` and its LoRA (linear hidden); `None` in the first block.
    pub(super) v_residual: Option<(Vec<f32>, Lora)>,
    /// Gate LoRA (sigmoid hidden).
    pub(super) g_lora: Lora,
    /// `k_k`, `k_a` `[C]`, `r_k` `[H·N]`.
    pub(super) k_k: Vec<f32>,
    pub(super) k_a: Vec<f32>,
    pub(super) r_k: Vec<f32>,
    pub(super) receptance: Matrix,
    pub(super) key: Matrix,
    pub(super) value: Matrix,
    pub(super) output: Matrix,
    /// GroupNorm (one group per head).
    pub(super) ln_x: Norm,
    /// Channel mix: token-shift mix `x_k` `[C]`, `key` `C → F`, `value` `F → C`.
    pub(super) ffn_mix: Vec<f32>,
    pub(super) ffn_key: Matrix,
    pub(super) ffn_value: Matrix,
}

impl Layer7 {
    /// Every matrix of the block.
    pub(super) fn matrices(&self) -> impl Iterator<Item = &Matrix> {
        let loras =
            [&self.w_lora, &self.a_lora, &self.g_lora].into_iter().chain(self.v_residual.as_ref().map(|v| &v.1));
        loras.flat_map(|l| [&l.down, &l.up]).chain([
            &self.receptance,
            &self.key,
            &self.value,
            &self.output,
            &self.ffn_key,
            &self.ffn_value,
        ])
    }

    /// Every per-channel vector of the block (what a step reads besides the matrices).
    pub(super) fn vectors(&self) -> impl Iterator<Item = &Vec<f32>> {
        self.mix
            .iter()
            .chain([&self.w0, &self.a0, &self.k_k, &self.k_a, &self.r_k, &self.ffn_mix])
            .chain(self.v_residual.as_ref().map(|v| &v.0))
    }
}

/// `base + y` on every row of `y` (`base` `[C]`), then `f`.
fn biased<E: Exec>(e: &E, y: &mut [f32], base: &[f32], f: impl Fn(f32) -> f32 + Sync + Send) {
    e.rows(y, base.len(), |_, row| row.iter_mut().zip(base).for_each(|(y, b)| *y = f(*y + b)));
}

/// The time mix of one block over the residual rows `x` `[T, C]` (updated in place); the first
/// block sets `v_first`, the others mix it into their values.
fn time_mix<E: Exec>(
    e: &mut E,
    d: &LmDims,
    l: &Layer7,
    x: &mut [f32],
    s: &mut E::State,
    v_first: &mut Option<Vec<f32>>,
) -> Result<(), RwkvError> {
    let (c, n) = (d.n_embd, d.head_size);
    let t = x.len() / c;
    let xa = mix::norm_rows(e, x, c, &l.ln1);
    let dx = mix::token_shift(e, &xa, c, s, Shift::TimeMix);
    let [xr, xw, xk, xv, xx, xg] = std::array::from_fn(|j| mix::lerp(e, &xa, &dx, c, &l.mix[j]));
    let [r, mut k, mut v] = e.products(t, [(&l.receptance, &xr), (&l.key, &xk), (&l.value, &xv)]);
    e.store_shift(s, Shift::TimeMix, &xa, c);
    let [mut hw, ha, mut hg] = e.products(t, [(&l.w_lora.down, &xw), (&l.a_lora.down, &xx), (&l.g_lora.down, &xg)]);
    mix::map(e, &mut hw, l.w_lora.down.out, tanh);
    mix::map(e, &mut hg, l.g_lora.down.out, sigmoid);
    let [mut w, mut a, g] = e.products(t, [(&l.w_lora.up, &hw), (&l.a_lora.up, &ha), (&l.g_lora.up, &hg)]);
    biased(e, &mut w, &l.w0, |z| log_sigmoid(z) - 0.5);
    biased(e, &mut a, &l.a0, sigmoid);
    match (v_first.as_ref(), &l.v_residual) {
        (Some(first), Some((v0, lora))) => {
            let [hv] = e.products(t, [(&lora.down, &xv)]);
            let [mut gate] = e.products(t, [(&lora.up, &hv)]);
            biased(e, &mut gate, v0, sigmoid);
            e.rows(&mut v, c, |i, row| {
                let p = i * c..(i + 1) * c;
                for ((v, f), g) in row.iter_mut().zip(&first[p.clone()]).zip(&gate[p]) {
                    *v += (f - *v) * g;
                }
            });
            e.pool().give([hv, gate]);
        }
        _ => {
            let mut first = e.pool().take(v.len());
            first.copy_from_slice(&v);
            *v_first = Some(first);
        }
    }
    // The removal key κ̂ = normalise(k ⊙ k_k) per head, then the key scaled by the learning rate;
    // the recurrence reads out with −κ̂ and writes back with κ̂ ⊙ a.
    let mut ra = e.pool().take(t * c);
    let mut wb = e.pool().take(t * c);
    {
        let (kk_in, a_in): (&[f32], &[f32]) = (&k, &a);
        e.rows(&mut ra, c, |i, row| {
            let p = i * c..(i + 1) * c;
            for ((o, k), m) in row.iter_mut().zip(&kk_in[p]).zip(&l.k_k) {
                *o = k * m;
            }
            for head in row.chunks_mut(n) {
                let norm = head.iter().map(|v| v * v).sum::<f32>().max(1e-24).sqrt();
                head.iter_mut().for_each(|v| *v = -*v / norm);
            }
        });
        let ra: &[f32] = &ra;
        e.rows(&mut wb, c, |i, row| {
            let p = i * c..(i + 1) * c;
            for ((o, kk), a) in row.iter_mut().zip(&ra[p.clone()]).zip(&a_in[p]) {
                *o = -kk * a;
            }
        });
    }
    e.rows(&mut k, c, |i, row| {
        let p = i * c..(i + 1) * c;
        for ((k, a), m) in row.iter_mut().zip(&a[p]).zip(&l.k_a) {
            *k *= 1.0 + (a - 1.0) * m;
        }
    });
    let inputs = Inputs { r: &r, w_raw: &w, k: &k, v: &v, a: &ra, b: &wb, initial_state: None };
    let mut y = e.wkv(s, d, t, Recurrence::Wkv7(inputs))?;
    // ln_x per head, the r·k bonus times the value, then the gate.
    e.rows(&mut y, c, |i, row| {
        let p = i * c..(i + 1) * c;
        let (r, k, v, g) = (&r[p.clone()], &k[p.clone()], &v[p.clone()], &g[p]);
        for (hh, head) in row.chunks_mut(n).enumerate() {
            let q = hh * n..(hh + 1) * n;
            norm_in_place(head, &l.ln_x.gamma[q.clone()], &l.ln_x.beta[q.clone()], LN_X_EPS as f32);
            let bonus: f32 =
                r[q.clone()].iter().zip(&k[q.clone()]).zip(&l.r_k[q.clone()]).map(|((r, k), u)| r * k * u).sum();
            for (y, v) in head.iter_mut().zip(&v[q]) {
                *y += bonus * v;
            }
        }
        for (y, g) in row.iter_mut().zip(g) {
            *y *= g;
        }
    });
    let [out] = e.products(t, [(&l.output, &y)]);
    mix::add(e, x, &out, c);
    e.pool().give([xa, dx, xr, xw, xk, xv, xx, xg]);
    e.pool().give([r, k, v, hw, ha, hg, w, a, g, ra, wb, y, out]);
    Ok(())
}

/// The channel mix of one block over the residual rows `x` `[T, C]` (updated in place):
/// `x += value(relu(key(x + δ·x_k))²)`.
fn channel_mix<E: Exec>(e: &mut E, d: &LmDims, l: &Layer7, x: &mut [f32], s: &mut E::State) {
    let c = d.n_embd;
    let t = x.len() / c;
    let xf = mix::norm_rows(e, x, c, &l.ln2);
    let dx = mix::token_shift(e, &xf, c, s, Shift::ChannelMix);
    let xk = mix::lerp(e, &xf, &dx, c, &l.ffn_mix);
    let [mut k] = e.products(t, [(&l.ffn_key, &xk)]);
    e.store_shift(s, Shift::ChannelMix, &xf, c);
    mix::map(e, &mut k, l.ffn_key.out, |v| v.max(0.0) * v.max(0.0));
    let [val] = e.products(t, [(&l.ffn_value, &k)]);
    mix::add(e, x, &val, c);
    e.pool().give([xf, dx, xk, k, val]);
}

/// One RWKV-7 block over the residual rows `x` `[T, C]` from and into the layer's state `s`.
pub(super) fn block<E: Exec>(
    e: &mut E,
    d: &LmDims,
    l: &Layer7,
    x: &mut [f32],
    s: &mut E::State,
    v_first: &mut Option<Vec<f32>>,
) -> Result<(), RwkvError> {
    time_mix(e, d, l, x, s, v_first)?;
    channel_mix(e, d, l, x, s);
    Ok(())
}
