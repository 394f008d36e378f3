//! Sequence mode of [`Decoder`]: a whole prompt at once, for prefilling a state before decoding.
//!
//! Each projection runs as one GEMM over all the prompt's rows (the dense work, read once per
//! prompt instead of once per token), the recurrence through the CPU WKV6 kernel
//! ([`visualrwkv_wkv::cpu`]), and the row-wise parts (norms, token shift, LoRAs' activations,
//! gating) in place, rows spread over rayon's pool. Only the last row goes through `ln_out` and
//! the head, as a generator needs (the official package's sequence mode does the same).
//!
//! # Shapes
//!
//! Prompt of `T` rows: token ids `[T]` or embedding rows `[T, C]` (row-major) → logits `[V]` of
//! the last row; the state as in [`super::HostState`].

use rayon::prelude::*;
use visualrwkv_wkv::reference::{Dims, Inputs};

use super::{Decoder, HostLayerState, HostState, LN_EPS, Layer, Matrix, Norm, norm_in_place, sigmoid, tanh};
use crate::{LN_X_EPS, RwkvConfig, RwkvError};

/// Reusable buffers of one prefill: every layer needs the same sizes, so after the first layer
/// no buffer is allocated (fresh multi-megabyte buffers cost page faults on every layer).
#[derive(Default)]
struct Pool {
    free: Vec<Vec<f32>>,
    /// Scratch for half-precision weights converted to f32.
    weights: Vec<f32>,
}

impl Pool {
    /// A buffer of `len` elements with unspecified (initialised) contents: every caller
    /// overwrites all of it.
    fn take(&mut self, len: usize) -> Vec<f32> {
        let mut v = match self.free.iter().position(|v| v.capacity() >= len) {
            Some(i) => self.free.swap_remove(i),
            None => self.free.pop().unwrap_or_default(),
        };
        v.resize(len, 0.0);
        v
    }

    /// Returns buffers for reuse.
    fn give<const K: usize>(&mut self, bufs: [Vec<f32>; K]) {
        self.free.extend(bufs);
    }

    /// `X·Wᵀ` for the `t` rows of `x` into a pooled buffer `[t, out]`.
    fn product(&mut self, m: &Matrix, x: &[f32], t: usize) -> Vec<f32> {
        let mut y = self.take(t * m.out);
        m.matmul(x, t, &mut y, &mut self.weights);
        y
    }
}

/// Applies `f(row index, row)` to every `width`-wide row of `buf`, the rows spread over rayon's
/// pool.
fn each_row(buf: &mut [f32], width: usize, f: impl Fn(usize, &mut [f32]) + Sync + Send) {
    buf.par_chunks_mut(width).enumerate().for_each(|(t, row)| f(t, row));
}

/// The layer norm of every row of `x` `[T, C]` into `y`.
fn norm_rows(x: &[f32], c: usize, norm: &Norm, y: &mut [f32]) {
    y.copy_from_slice(x);
    each_row(y, c, |_, row| norm_in_place(row, &norm.gamma, &norm.beta, LN_EPS));
}

/// Token shift: `dx[t] = prev[t] - x[t]` for every row of `x` `[T, C]`, with `prev[0] = shift`
/// and `prev[t] = x[t-1]`; then `shift` becomes the last row of `x`.
fn shift_difference(x: &[f32], c: usize, shift: &mut [f32], dx: &mut [f32]) {
    {
        let first: &[f32] = shift;
        each_row(dx, c, |t, d| {
            let prev = if t == 0 { first } else { &x[(t - 1) * c..t * c] };
            for ((d, p), v) in d.iter_mut().zip(prev).zip(&x[t * c..(t + 1) * c]) {
                *d = p - v;
            }
        });
    }
    shift.copy_from_slice(&x[x.len() - c..]);
}

/// `y[t] = x[t] + dx[t] * (y[t] + mix)` for every row when `add_y`, else `x[t] + dx[t] * mix`
/// (`mix` `[C]`; the first form is the ddlerp's LoRA term already in `y`).
fn lerp_rows(x: &[f32], dx: &[f32], c: usize, mix: &[f32], y: &mut [f32], add_y: bool) {
    each_row(y, c, |t, row| {
        let r = t * c..(t + 1) * c;
        for (((y, v), d), m) in row.iter_mut().zip(&x[r.clone()]).zip(&dx[r]).zip(mix) {
            *y = v + d * (if add_y { *y + m } else { *m });
        }
    });
}

/// `f` on every element, in parallel.
fn map_in_place(x: &mut [f32], f: impl Fn(f32) -> f32 + Sync + Send) {
    x.par_chunks_mut(4096).for_each(|part| part.iter_mut().for_each(|v| *v = f(*v)));
}

impl Decoder {
    /// Runs the prompt `tokens` from `state` in sequence mode (see the module docs): updates
    /// `state` and returns the logits `[V]` after the last token. Equal to [`Decoder::run`] up to
    /// rounding, several times faster on prompts of more than a few tokens.
    pub fn prefill(&self, tokens: &[u32], state: &mut HostState) -> Result<Vec<f32>, RwkvError> {
        if tokens.is_empty() {
            return Err(RwkvError::Input("no tokens to prefill".into()));
        }
        self.prefill_embeddings(&self.embed(tokens)?, state)
    }

    /// Runs the embedding rows `x` `[T, C]` (before `ln0`; e.g. projected image features mixed
    /// with token embeddings) from `state` in sequence mode; updates `state` and returns the
    /// logits `[V]` after the last row.
    pub fn prefill_embeddings(&self, x: &[f32], state: &mut HostState) -> Result<Vec<f32>, RwkvError> {
        let c = self.config.n_embd;
        if x.is_empty() || !x.len().is_multiple_of(c) {
            return Err(RwkvError::Shape {
                what: "prefill embedding rows (flattened [T, C])".into(),
                expected: vec![x.len().div_ceil(c).max(1) * c],
                found: vec![x.len()],
            });
        }
        state.check(&self.config)?;
        let t = x.len() / c;
        let mut pool = Pool::default();
        let mut h = pool.take(t * c);
        norm_rows(x, c, &self.ln0, &mut h);
        for (layer, s) in self.layers.iter().zip(&mut state.layers) {
            self.time_mix_rows(layer, &mut h, t, s, &mut pool)?;
            self.channel_mix_rows(layer, &mut h, t, s, &mut pool);
        }
        let last = self.ln_out.apply(&h[(t - 1) * c..]);
        let mut logits = vec![0f32; self.config.vocab_size];
        self.head.matvec(&last, &mut logits);
        Ok(logits)
    }

    fn time_mix_rows(
        &self,
        l: &Layer,
        x: &mut [f32],
        t: usize,
        s: &mut HostLayerState,
        pool: &mut Pool,
    ) -> Result<(), RwkvError> {
        let RwkvConfig { n_embd: c, n_head: h, head_size: n, d_mix, .. } = self.config;
        let (mut xa, mut dx, mut xxx) = (pool.take(t * c), pool.take(t * c), pool.take(t * c));
        norm_rows(x, c, &l.ln1, &mut xa);
        shift_difference(&xa, c, &mut s.att_shift, &mut dx);
        lerp_rows(&xa, &dx, c, &l.maa_x, &mut xxx, false);
        let mut lora = pool.product(&l.maa_w1, &xxx, t);
        map_in_place(&mut lora, tanh);
        // Inputs of w, k, v, r, g: xa + dx * (lora_j · W2_j + maa_j).
        let mut part = pool.take(t * d_mix);
        let mixed: [Vec<f32>; 5] = std::array::from_fn(|j| {
            for (p, row) in part.chunks_mut(d_mix).zip(lora.chunks(5 * d_mix)) {
                p.copy_from_slice(&row[j * d_mix..(j + 1) * d_mix]);
            }
            let mut m = pool.product(&l.maa_w2[j], &part, t);
            lerp_rows(&xa, &dx, c, &l.maa[j], &mut m, true);
            m
        });
        pool.give([xa, dx, xxx, lora, part]);
        let [mw, mk, mv, mr, mg] = mixed;
        let (r, k, v, g) = (
            pool.product(&l.receptance, &mr, t),
            pool.product(&l.key, &mk, t),
            pool.product(&l.value, &mv, t),
            pool.product(&l.gate, &mg, t),
        );
        let mut dec = pool.product(&l.decay_w1, &mw, t);
        map_in_place(&mut dec, tanh);
        let mut w = pool.product(&l.decay_w2, &dec, t);
        each_row(&mut w, c, |_, row| row.iter_mut().zip(&l.decay).for_each(|(w, d)| *w += d));
        pool.give([mw, mk, mv, mr, mg, dec]);

        let mut y = pool.take(t * c);
        let inputs = Inputs { r: &r, k: &k, v: &v, w_raw: &w, u: &l.bonus, initial_state: None };
        visualrwkv_wkv::cpu::forward_in_place(Dims::new(1, t, h, n), inputs, &mut s.wkv, &mut y)?;
        each_row(&mut y, c, |i, row| {
            for (hh, head) in row.chunks_mut(n).enumerate() {
                let p = hh * n..(hh + 1) * n;
                norm_in_place(head, &l.ln_x.gamma[p.clone()], &l.ln_x.beta[p], LN_X_EPS as f32);
            }
            for (y, g) in row.iter_mut().zip(&g[i * c..(i + 1) * c]) {
                *y *= g * sigmoid(*g);
            }
        });
        let out = pool.product(&l.output, &y, t);
        x.par_chunks_mut(4096)
            .zip(out.par_chunks(4096))
            .for_each(|(x, o)| x.iter_mut().zip(o).for_each(|(x, o)| *x += o));
        pool.give([r, k, v, g, w, y, out]);
        Ok(())
    }

    fn channel_mix_rows(&self, l: &Layer, x: &mut [f32], t: usize, s: &mut HostLayerState, pool: &mut Pool) {
        let c = self.config.n_embd;
        let (mut xf, mut dx, mut xk, mut xr) = (pool.take(t * c), pool.take(t * c), pool.take(t * c), pool.take(t * c));
        norm_rows(x, c, &l.ln2, &mut xf);
        shift_difference(&xf, c, &mut s.ffn_shift, &mut dx);
        lerp_rows(&xf, &dx, c, &l.ffn_maa_k, &mut xk, false);
        lerp_rows(&xf, &dx, c, &l.ffn_maa_r, &mut xr, false);
        let mut k = pool.product(&l.ffn_key, &xk, t);
        map_in_place(&mut k, |v| v.max(0.0) * v.max(0.0));
        let val = pool.product(&l.ffn_value, &k, t);
        let r = pool.product(&l.ffn_receptance, &xr, t);
        x.par_chunks_mut(c).enumerate().for_each(|(i, row)| {
            let p = i * c..(i + 1) * c;
            for ((x, r), v) in row.iter_mut().zip(&r[p.clone()]).zip(&val[p]) {
                *x += sigmoid(*r) * v;
            }
        });
        pool.give([xf, dx, xk, xr, k, val, r]);
    }
}
