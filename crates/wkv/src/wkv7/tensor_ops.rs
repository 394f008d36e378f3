//! WKV7 in burn tensor operations, one step at a time: two batched `[1, N] × [N, N]` products
//! and a rank-one update per step, for every `(batch, head)` at once. [`forward`] runs on every
//! backend and burn's autodiff differentiates it; it is the default of [`super::Wkv7Backend`].
//! [`backward`] is its gradient written out, the fallback of backends whose kernels refuse a
//! problem.
//!
//! # Shapes
//!
//! As in [`super::reference`]: inputs `[B, T, H, N]`, state `[B, H, N, N]` (`[key, value]`).

use burn::tensor::{Tensor, backend::Backend};

/// The recurrence over `[r, w_raw, k, v, a, b]` (each `[B, T, H, N]`) from `state`
/// `[B, H, N, N]`; returns `y` `[B, T, H, N]` and the final state.
pub fn forward<B: Backend>(x: [Tensor<B, 4>; 6], state: Tensor<B, 4>) -> (Tensor<B, 4>, Tensor<B, 4>) {
    let [nb, nt, h, n] = x[0].dims();
    let dtype = state.dtype();
    // [B, T, H, N] -> [B, H, T, N], so that step t is a contiguous [B, H, 1, N] slice.
    let [r, w_raw, k, v, a, b] = x.map(|t| t.cast(dtype).swap_dims(1, 2));
    let decay = w_raw.exp().neg().exp();
    let mut s = state;
    let mut ys = Vec::with_capacity(nt);
    for t in 0..nt {
        let row = |x: &Tensor<B, 4>| x.clone().slice([0..nb, 0..h, t..t + 1, 0..n]);
        let column = |x: &Tensor<B, 4>| row(x).swap_dims(2, 3);
        let sa = row(&a).matmul(s.clone());
        s = column(&decay) * s + column(&b) * sa + column(&k) * row(&v);
        ys.push(row(&r).matmul(s.clone()));
    }
    (Tensor::cat(ys, 2).swap_dims(1, 2), s)
}

/// The gradients of `sum(y·dy) + sum(S_T·d_state)` with respect to `[r, w_raw, k, v, a, b]` and
/// the initial state, written out step by step in tensor operations (the equations of
/// [`super::reference::backward`]): no autodiff graph, so it can run inside another backward pass
/// (a kernel's fallback). Keeps every step's state (`T·N²` values per `(batch, head)`).
///
/// `dy` `[B, T, H, N]`, `d_state` `[B, H, N, N]`; returns the seven gradients in the order of the
/// inputs, the sequences `[B, T, H, N]` and the state's `[B, H, N, N]`.
pub fn backward<B: Backend>(
    x: [Tensor<B, 4>; 6],
    state: Tensor<B, 4>,
    dy: Tensor<B, 4>,
    d_state: Tensor<B, 4>,
) -> [Tensor<B, 4>; 7] {
    let [nb, nt, h, n] = x[0].dims();
    let dtype = x[0].dtype();
    let state_dtype = state.dtype();
    let seq = |t: Tensor<B, 4>| t.cast(state_dtype).swap_dims(1, 2);
    let [r, w_raw, k, v, a, b] = x.map(seq);
    let dy = seq(dy);
    let decay = w_raw.clone().exp().neg().exp();
    let row = |x: &Tensor<B, 4>, t: usize| x.clone().slice([0..nb, 0..h, t..t + 1, 0..n]);
    let column = |x: &Tensor<B, 4>, t: usize| row(x, t).swap_dims(2, 3);

    // states[t] is the state before step t; sas[t] = aᵀ states[t] ([B, H, 1, N]).
    let mut states = Vec::with_capacity(nt + 1);
    let mut sas = Vec::with_capacity(nt);
    states.push(state);
    for t in 0..nt {
        let s = &states[t];
        let sa = row(&a, t).matmul(s.clone());
        let next = column(&decay, t) * s.clone() + column(&b, t) * sa.clone() + column(&k, t) * row(&v, t);
        sas.push(sa);
        states.push(next);
    }

    let mut g = d_state.cast(state_dtype);
    let mut out: [Vec<Tensor<B, 4>>; 6] = Default::default();
    for t in (0..nt).rev() {
        g = g + column(&r, t) * row(&dy, t);
        let (prev, now, sa) = (&states[t], &states[t + 1], &sas[t]);
        let dsa = row(&b, t).matmul(g.clone());
        let dr = now.clone().matmul(column(&dy, t));
        let dk = g.clone().matmul(column(&v, t));
        let dv = row(&k, t).matmul(g.clone()).swap_dims(2, 3);
        let db = g.clone().matmul(sa.clone().swap_dims(2, 3));
        let da = prev.clone().matmul(dsa.clone().swap_dims(2, 3));
        // d exp(-exp(w)) / dw = -exp(w - exp(w)).
        let wt = column(&w_raw, t);
        let dw = (g.clone() * prev.clone()).sum_dim(3) * (wt.clone() - wt.exp()).exp().neg();
        for (acc, grad) in out.iter_mut().zip([dr, dw, dk, dv, da, db]) {
            acc.push(grad);
        }
        g = column(&decay, t) * g + column(&a, t) * dsa;
    }
    let [dr, dw, dk, dv, da, db] = out.map(|mut steps| {
        steps.reverse();
        // Each step's gradient is a column [B, H, N, 1]; as rows they stack into [B, H, T, N].
        Tensor::cat(steps.into_iter().map(|c| c.swap_dims(2, 3)).collect(), 2).swap_dims(1, 2).cast(dtype)
    });
    [dr, dw, dk, dv, da, db, g]
}
