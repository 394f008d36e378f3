//! The RWKV-6 layer of the fused decoder and the pass over all layers, written once over
//! [`Exec`]: how a pass runs its dense products, its row-wise maps, the WKV recurrence and the
//! token-shift state. `step.rs` runs it on one row with a thread team splitting each product
//! (GEMV); `prefill.rs` runs it on a whole prompt with each product one GEMM; `batch.rs` on one
//! row of each of several sequences. The arithmetic is docs/model.md §1, the same as
//! [`crate::layers`] (the oracle these functions are tested against); the RWKV-7 layer, on the
//! same [`Exec`], is `mix7.rs`.
//!
//! # Shapes
//!
//! Rows are row-major `[T, width]` slices: the residual stream `[T, C]`, the five ddlerp inputs
//! `[T, C]`, r/k/v/g/w `[T, C_att]`, the LoRA hidden layers `[T, 5·D_MIX]` and `[T, D_DECAY]`.

use std::ops::Range;

use visualrwkv_wkv::cpu::exp_f32;
use visualrwkv_wkv::reference::{Dims, Inputs};
use visualrwkv_wkv::{WkvError, wkv7};

use super::{Blocks, Decoder, Layer, Matrix, Norm, RowOrder, mix7, norm_in_place};
use crate::layers::LN_X_EPS;
use crate::{LmDims, RwkvError};

/// Epsilon of RWKV's layer norms (`ln0`, `ln1`, `ln2`, `ln_out`).
pub(super) const LN_EPS: f32 = 1e-5;

/// The logistic function through the branch-free `exp` of the WKV kernel (vectorises in loops;
/// absolute error below 1e-7).
#[inline(always)]
pub(super) fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp_f32(-x))
}

/// `tanh(x) = 1 - 2 / (e^{2x} + 1)` through the same `exp` (absolute error below 1e-7; saturates
/// to ±1).
#[inline(always)]
pub(super) fn tanh(x: f32) -> f32 {
    1.0 - 2.0 / (exp_f32(2.0 * x) + 1.0)
}

/// Which token-shift row of a layer's state.
#[derive(Clone, Copy, Debug)]
pub(super) enum Shift {
    /// The time mix's (`att_shift`).
    TimeMix,
    /// The channel mix's (`ffn_shift`).
    ChannelMix,
}

/// Reusable buffers: every layer needs the same sizes, so after the first layer nothing is
/// allocated (fresh multi-megabyte buffers cost page faults on every layer).
#[derive(Default)]
pub(super) struct Pool {
    free: Vec<Vec<f32>>,
    /// Scratch for half-precision weights converted to f32 (GEMMs).
    pub(super) weights: Vec<f32>,
}

impl Pool {
    /// A buffer of `len` elements with unspecified (initialised) contents: every caller
    /// overwrites all of it.
    pub(super) fn take(&mut self, len: usize) -> Vec<f32> {
        let mut v = match self.free.iter().position(|v| v.capacity() >= len) {
            Some(i) => self.free.swap_remove(i),
            None => self.free.pop().unwrap_or_default(),
        };
        v.resize(len, 0.0);
        v
    }

    /// Returns buffers for reuse.
    pub(super) fn give<const K: usize>(&mut self, bufs: [Vec<f32>; K]) {
        self.free.extend(bufs);
    }
}

/// How one pass of the decoder runs (see the module docs).
pub(super) trait Exec {
    /// One layer's state as this engine holds it.
    type State;

    /// The engine's buffer pool.
    fn pool(&mut self) -> &mut Pool;

    /// `y_j = x_j · W_jᵀ` over `t` rows for each job `(W_j, x_j)`: `x_j` `[t, in]` →
    /// `y_j` `[t, out]`.
    fn products<const K: usize>(&mut self, t: usize, jobs: [(&Matrix, &[f32]); K]) -> [Vec<f32>; K];

    /// `f(row index, row)` on every `width`-wide row of `buf`.
    fn rows(&self, buf: &mut [f32], width: usize, f: impl Fn(usize, &mut [f32]) + Sync + Send);

    /// The row before each row of `x` `[T, C]` for the token shift `which`: for an engine
    /// running one sequence, the carried row of `s` before row 0 and `x[t-1]` before row `t`
    /// ([`carried_then_rows`]); for a batch of sequences (one row each), every row's own carried
    /// row.
    fn previous_rows<'s>(&self, s: &'s Self::State, which: Shift, x: &'s [f32], c: usize) -> Vec<&'s [f32]>;

    /// Stores the token-shift rows `which` after the pass's rows `x` `[T, C]`: a sequence keeps
    /// its last row, a batch each row in its own sequence. Called only after a
    /// [`Exec::products`] that follows the last read of those rows in this pass.
    fn store_shift(&self, s: &mut Self::State, which: Shift, x: &[f32], c: usize);

    /// The recurrence `x` (WKV6 or WKV7) of a model of sizes `d` over `t` rows from and into
    /// the state `s`: `y` `[t, H·N]`.
    fn wkv(&mut self, s: &mut Self::State, d: &LmDims, t: usize, x: Recurrence<'_>) -> Result<Vec<f32>, RwkvError>;
}

/// The inputs of one layer's recurrence, every sequence input `[t, H·N]` row-major (their
/// `initial_state` unused: the state is the engine's).
#[derive(Clone, Copy, Debug)]
pub(super) enum Recurrence<'a> {
    /// RWKV-6: r, k, v, w_raw and the bonus u `[H·N]`.
    Wkv6(Inputs<'a, f32>),
    /// RWKV-7: r, w_raw, k, v, a, b.
    Wkv7(wkv7::reference::Inputs<'a, f32>),
}

impl<'a> Recurrence<'a> {
    /// Elements `p` of every sequence input (rows of a batch: `i·H·N..(i+1)·H·N`).
    pub(super) fn rows(self, p: Range<usize>) -> Self {
        match self {
            Self::Wkv6(x) => Self::Wkv6(Inputs {
                r: &x.r[p.clone()],
                k: &x.k[p.clone()],
                v: &x.v[p.clone()],
                w_raw: &x.w_raw[p],
                ..x
            }),
            Self::Wkv7(x) => Self::Wkv7(wkv7::reference::Inputs {
                r: &x.r[p.clone()],
                w_raw: &x.w_raw[p.clone()],
                k: &x.k[p.clone()],
                v: &x.v[p.clone()],
                a: &x.a[p.clone()],
                b: &x.b[p],
                ..x
            }),
        }
    }

    /// Channels `p` of a single row (a range of whole heads), the bonus u included.
    pub(super) fn heads(self, p: Range<usize>) -> Self {
        match self.rows(p.clone()) {
            Self::Wkv6(x) => Self::Wkv6(Inputs { u: &x.u[p], ..x }),
            seven => seven,
        }
    }

    /// Runs the recurrence over `dims` from and into `state`, writing `y`.
    pub(super) fn run(self, dims: Dims, state: &mut [f32], y: &mut [f32]) -> Result<(), WkvError> {
        match self {
            Self::Wkv6(x) => visualrwkv_wkv::cpu::forward_in_place(dims, x, state, y),
            Self::Wkv7(x) => wkv7::cpu::forward_in_place(dims, x, state, y),
        }
    }
}

/// The previous rows of one sequence's rows `x` `[T, C]`: `carried` before row 0, `x[t-1]` before
/// row `t` (docs/model.md §1.2).
pub(super) fn carried_then_rows<'s>(carried: &'s [f32], x: &'s [f32], c: usize) -> Vec<&'s [f32]> {
    std::iter::once(carried).chain(x.chunks(c)).take(x.len() / c).collect()
}

/// The layer norm of every `c`-wide row of `x`.
pub(super) fn norm_rows<E: Exec>(e: &mut E, x: &[f32], c: usize, norm: &Norm) -> Vec<f32> {
    let mut y = e.pool().take(x.len());
    y.copy_from_slice(x);
    e.rows(&mut y, c, |_, row| norm_in_place(row, &norm.gamma, &norm.beta, LN_EPS));
    y
}

/// The token-shift difference δ: `dx[t] = prev[t] - x[t]`, the previous rows as the engine gives
/// them ([`Exec::previous_rows`]; docs/model.md §1.2).
pub(super) fn token_shift<E: Exec>(e: &mut E, x: &[f32], c: usize, s: &E::State, which: Shift) -> Vec<f32> {
    let prev = e.previous_rows(s, which, x, c);
    let mut dx = e.pool().take(x.len());
    e.rows(&mut dx, c, |t, d| {
        for ((d, p), v) in d.iter_mut().zip(prev[t]).zip(&x[t * c..(t + 1) * c]) {
            *d = p - v;
        }
    });
    dx
}

/// `x + dx ⊙ mix` for every row (`mix` `[C]`).
pub(super) fn lerp<E: Exec>(e: &mut E, x: &[f32], dx: &[f32], c: usize, mix: &[f32]) -> Vec<f32> {
    let mut y = e.pool().take(x.len());
    e.rows(&mut y, c, |t, row| {
        let r = t * c..(t + 1) * c;
        for (((y, v), d), m) in row.iter_mut().zip(&x[r.clone()]).zip(&dx[r]).zip(mix) {
            *y = v + d * m;
        }
    });
    y
}

/// `f` on every element of `buf` (rows of `width`).
pub(super) fn map<E: Exec>(e: &E, buf: &mut [f32], width: usize, f: impl Fn(f32) -> f32 + Sync + Send) {
    e.rows(buf, width, |_, row| row.iter_mut().for_each(|v| *v = f(*v)));
}

/// The ddlerp weights of one layer (docs/model.md §1.2).
#[derive(Clone, Debug)]
pub(super) struct DdLerpWeights {
    /// `time_maa_x` `[C]`.
    pub(super) maa_x: Vec<f32>,
    /// `time_maa_{w,k,v,r,g}`, each `[C]`.
    pub(super) maa: [Vec<f32>; 5],
    /// `time_maa_w1`: `C → 5·D_MIX`.
    pub(super) w1: Matrix,
    /// The five blocks of `time_maa_w2`, each `D_MIX → C`.
    pub(super) w2: [Matrix; 5],
}

/// The five mixed inputs of [`ddlerp`], each `[T, C]`.
struct Mixed {
    w: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    r: Vec<f32>,
    g: Vec<f32>,
}

/// ddlerp: `x + δ ⊙ (μ_j + tanh((x + δ ⊙ μ_x) W1)_j W2_j)` for j = w, k, v, r, g.
fn ddlerp<E: Exec>(e: &mut E, w: &DdLerpWeights, x: &[f32], dx: &[f32], t: usize, c: usize, d_mix: usize) -> Mixed {
    let xxx = lerp(e, x, dx, c, &w.maa_x);
    let [mut lora] = e.products(t, [(&w.w1, &xxx)]);
    map(e, &mut lora, 5 * d_mix, tanh);
    let parts: [Vec<f32>; 5] = std::array::from_fn(|j| {
        let mut p = e.pool().take(t * d_mix);
        for (p, row) in p.chunks_mut(d_mix).zip(lora.chunks(5 * d_mix)) {
            p.copy_from_slice(&row[j * d_mix..(j + 1) * d_mix]);
        }
        p
    });
    let mut mixed = e.products(t, std::array::from_fn(|j| (&w.w2[j], parts[j].as_slice())));
    for (m, mu) in mixed.iter_mut().zip(&w.maa) {
        e.rows(m, c, |i, row| {
            let r = i * c..(i + 1) * c;
            for (((y, v), d), mu) in row.iter_mut().zip(&x[r.clone()]).zip(&dx[r]).zip(mu) {
                *y = v + d * (*y + mu);
            }
        });
    }
    e.pool().give([xxx, lora]);
    e.pool().give(parts);
    let [w, k, v, r, g] = mixed;
    Mixed { w, k, v, r, g }
}

/// The decay weights of one layer (docs/model.md §1.3).
#[derive(Clone, Debug)]
pub(super) struct DecayWeights {
    /// `time_decay` `[C_att]`.
    pub(super) base: Vec<f32>,
    /// `time_decay_w1`: `C → D_DECAY`.
    pub(super) w1: Matrix,
    /// `time_decay_w2`: `D_DECAY → C_att`.
    pub(super) w2: Matrix,
}

/// The data-dependent decay `w_raw = time_decay + tanh(x_w W1) W2` of the decay inputs `xw`.
fn decay_lora<E: Exec>(e: &mut E, d: &DecayWeights, xw: &[f32], t: usize) -> Vec<f32> {
    let [mut hidden] = e.products(t, [(&d.w1, xw)]);
    map(e, &mut hidden, d.w1.out, tanh);
    let [mut w] = e.products(t, [(&d.w2, &hidden)]);
    e.rows(&mut w, d.base.len(), |_, row| row.iter_mut().zip(&d.base).for_each(|(w, b)| *w += b));
    e.pool().give([hidden]);
    w
}

/// `x += y` row by row.
pub(super) fn add<E: Exec>(e: &E, x: &mut [f32], y: &[f32], c: usize) {
    e.rows(x, c, |i, row| row.iter_mut().zip(&y[i * c..(i + 1) * c]).for_each(|(x, y)| *x += y));
}

/// The time mix of layer `l` over the residual rows `x` `[T, C]` (updated in place).
fn time_mix<E: Exec>(e: &mut E, d: &LmDims, l: &Layer, x: &mut [f32], s: &mut E::State) -> Result<(), RwkvError> {
    let (c, a, n) = (d.n_embd, d.n_head * d.head_size, d.head_size);
    let t = x.len() / c;
    let xa = norm_rows(e, x, c, &l.ln1);
    let dx = token_shift(e, &xa, c, s, Shift::TimeMix);
    let m = ddlerp(e, &l.ddlerp, &xa, &dx, t, c, l.ddlerp.w1.out / 5);
    e.store_shift(s, Shift::TimeMix, &xa, c);
    e.pool().give([xa, dx]);
    let [r, k, v, g] = e.products(t, [(&l.receptance, &m.r), (&l.key, &m.k), (&l.value, &m.v), (&l.gate, &m.g)]);
    let w = decay_lora(e, &l.decay, &m.w, t);
    e.pool().give([m.w, m.k, m.v, m.r, m.g]);
    let inputs = Inputs { r: &r, k: &k, v: &v, w_raw: &w, u: &l.bonus, initial_state: None };
    let mut y = e.wkv(s, d, t, Recurrence::Wkv6(inputs))?;
    // ln_x (a layer norm per head) and the SiLU gate.
    e.rows(&mut y, a, |i, row| {
        for (hh, head) in row.chunks_mut(n).enumerate() {
            let p = hh * n..(hh + 1) * n;
            norm_in_place(head, &l.ln_x.gamma[p.clone()], &l.ln_x.beta[p], LN_X_EPS as f32);
        }
        for (y, g) in row.iter_mut().zip(&g[i * a..(i + 1) * a]) {
            *y *= g * sigmoid(*g);
        }
    });
    let [out] = e.products(t, [(&l.output, &y)]);
    add(e, x, &out, c);
    e.pool().give([r, k, v, g, w, y, out]);
    Ok(())
}

/// The channel-mix weights of one layer (docs/model.md §1.5).
#[derive(Clone, Debug)]
pub(super) struct ChannelMixWeights {
    /// `ffn.time_maa_k` `[C]`.
    pub(super) maa_k: Vec<f32>,
    /// `ffn.time_maa_r` `[C]`.
    pub(super) maa_r: Vec<f32>,
    /// `ffn.key`: `C → F`.
    pub(super) key: Matrix,
    /// `ffn.receptance`: `C → C`.
    pub(super) receptance: Matrix,
    /// `ffn.value`: `F → C`.
    pub(super) value: Matrix,
}

/// The channel mix of layer `l` over the residual rows `x` `[T, C]` (updated in place).
fn channel_mix<E: Exec>(e: &mut E, d: &LmDims, l: &Layer, x: &mut [f32], s: &mut E::State) {
    let c = d.n_embd;
    let t = x.len() / c;
    let f = &l.ffn;
    let xf = norm_rows(e, x, c, &l.ln2);
    let dx = token_shift(e, &xf, c, s, Shift::ChannelMix);
    let (xk, xr) = (lerp(e, &xf, &dx, c, &f.maa_k), lerp(e, &xf, &dx, c, &f.maa_r));
    let [mut k, r] = e.products(t, [(&f.key, &xk), (&f.receptance, &xr)]);
    e.store_shift(s, Shift::ChannelMix, &xf, c);
    map(e, &mut k, f.key.out, |v| v.max(0.0) * v.max(0.0));
    let [val] = e.products(t, [(&f.value, &k)]);
    e.rows(x, c, |i, row| {
        let p = i * c..(i + 1) * c;
        for ((x, r), v) in row.iter_mut().zip(&r[p.clone()]).zip(&val[p]) {
            *x += sigmoid(*r) * v;
        }
    });
    e.pool().give([xf, dx, xk, xr, k, r, val]);
}

/// Which rows' logits a pass computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Head {
    /// The last row's only (`[V]`): what a generator needs.
    Last,
    /// Every row's (`[T, V]`).
    All,
}

/// `y[q] = x[order[q]]` for the `c`-wide rows of `x`.
pub(super) fn gather_rows<E: Exec>(e: &mut E, x: &[f32], order: &[usize], c: usize) -> Vec<f32> {
    let mut y = e.pool().take(x.len());
    e.rows(&mut y, c, |q, row| row.copy_from_slice(&x[order[q] * c..(order[q] + 1) * c]));
    y
}

/// The whole model over embedding rows `x` `[T, C]` (before `ln0`; T ≥ 1) from `states` (one per
/// layer, checked by the caller): the logits `[V]` after the last row, or `[T, V]` of every row.
/// Layer `l` reads the rows in `orders[l]`'s order when there is one (checked to be `T` long by
/// the caller) and writes them back in place: its state ends after the last row it read. RWKV-7's
/// first-block values are kept in the sequence's own order between layers and read in each
/// layer's order, as the rows are.
pub(super) fn forward<E: Exec>(
    e: &mut E,
    dec: &Decoder,
    x: &[f32],
    states: &mut [E::State],
    orders: &[Option<RowOrder>],
    head: Head,
) -> Result<Vec<f32>, RwkvError> {
    let d = &dec.dims;
    let c = d.n_embd;
    let t = x.len() / c;
    let mut h = norm_rows(e, x, c, &dec.ln0);
    let mut v_first: Option<Vec<f32>> = None;
    for (l, s) in states.iter_mut().enumerate() {
        let order = orders.get(l).and_then(Option::as_ref);
        let reorder = |e: &mut E, buf: &mut Vec<f32>, rows: &[usize]| {
            let moved = gather_rows(e, buf, rows, c);
            e.pool().give([std::mem::replace(buf, moved)]);
        };
        if let Some(o) = order {
            reorder(e, &mut h, &o.read);
            if let Some(v) = v_first.as_mut() {
                reorder(e, v, &o.read);
            }
        }
        match &dec.blocks {
            Blocks::X060(layers) => {
                time_mix(e, d, &layers[l], &mut h, s)?;
                channel_mix(e, d, &layers[l], &mut h, s);
            }
            Blocks::X070(layers) => mix7::block(e, d, &layers[l], &mut h, s, &mut v_first)?,
        }
        if let Some(o) = order {
            reorder(e, &mut h, &o.back);
            if let Some(v) = v_first.as_mut() {
                reorder(e, v, &o.back);
            }
        }
    }
    if let Some(v) = v_first {
        e.pool().give([v]);
    }
    let logits = match head {
        Head::Last => {
            let last = dec.ln_out.apply(&h[(t - 1) * c..]);
            let [logits] = e.products(1, [(&dec.head, &last)]);
            logits
        }
        Head::All => {
            let normed = norm_rows(e, &h, c, &dec.ln_out);
            let [logits] = e.products(t, [(&dec.head, &normed)]);
            e.pool().give([normed]);
            logits
        }
    };
    e.pool().give([h]);
    Ok(logits)
}
