//! WKV7 in burn tensor operations, one step at a time: two batched `[1, N] × [N, N]` products
//! and a rank-one update per step, for every `(batch, head)` at once. It runs on every backend
//! and burn's autodiff differentiates it; it is the default of [`super::Wkv7Backend`] and the
//! path GPU backends take until WKV7 has cubecl kernels.
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
