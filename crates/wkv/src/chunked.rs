//! WKV6 in the chunked matmul formulation, written with burn tensor ops so that it runs (and
//! differentiates, through burn's autodiff) on every backend.
//!
//! The sequence is cut into chunks of `L` steps. With the log-decay `g = -exp(w_raw)`, its
//! inclusive in-chunk prefix sum `G_t = sum_{s<=t} g_s` and the exclusive one `E_t = G_t - g_t`
//! (docs/model.md §1.4), a chunk starting from state `S0` gives
//!
//! ```text
//! y_t    = (r_t ⊙ exp(E_t)) S0                                  (inter-chunk)
//!        + sum_{s<t} [sum_i r_t[i] k_s[i] exp(E_t[i] - G_s[i])] v_s   (intra-chunk)
//!        + (sum_i r_t[i] u[i] k_t[i]) v_t                       (bonus)
//! S_next = diag(exp(G_last)) S0 + sum_s (k_s ⊙ exp(G_last - G_s))ᵀ v_s
//! ```
//!
//! Every exponent above is a sum of log-decays over a non-empty or empty *forward* range, so it
//! is `<= 0`: nothing can overflow. The intra-chunk exponent is formed as a difference and masked
//! (to `-inf` for `s >= t`) *before* `exp` — computing `exp(E_t)` and `exp(-G_s)` separately
//! overflows as soon as decays are strong (the failure of fla#77).
//!
//! Precision: a difference of prefix sums loses bits when the sums are large. The log-decay is
//! therefore split into an integer part (summed exactly in f32) and a remainder in `[-0.5, 0.5]`,
//! and each difference is taken per part. The log-decay is clamped at [`LOG_DECAY_MIN`] (a
//! per-step decay below `e^-80`, already zero at f32 precision), which keeps the sums finite for
//! any `w_raw`.
//!
//! Memory: the per-chunk start states `[B, H, T/L, N, N]` and the intra-chunk tensors
//! `[B, H, T/L, L, L, N]` (`T·L·N` per head) are what autodiff keeps: linear in `T` for a fixed
//! chunk length, never `T²`; with `L² <= N` (the default `L = 8` for `N = 64`) the intra-chunk
//! part is no larger than the states, `O(T·N + (T/L)·N²)`.
//!
//! # Shapes
//!
//! Inputs and outputs as in the crate docs: `r, k, v, w_raw, y`: `[B, T, H, N]`; `u`: `[H, N]`;
//! states `[B, H, N, N]`.

use burn::tensor::{Bool, Tensor, backend::Backend};

/// The smallest per-step log-decay used by the chunked form (`g = max(-exp(w_raw), LOG_DECAY_MIN)`).
///
/// `exp(-80) ≈ 1.8e-35`: a decay this strong already wipes the state at f32 precision, so the clamp
/// changes no result beyond rounding while keeping prefix sums finite.
pub const LOG_DECAY_MIN: f64 = -80.0;

/// The chunked WKV6 forward pass: returns `(y [B,T,H,N], final state [B,H,N,N])`.
///
/// `chunk_len` is clamped to `[1, T]`.
///
/// # Panics
///
/// Shapes are not checked here (burn panics on inconsistent ones): this is the building block of
/// backends; callers with untrusted input use [`crate::wkv6`], which checks and returns errors.
pub fn forward<B: Backend>(
    r: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    w_raw: Tensor<B, 4>,
    u: Tensor<B, 2>,
    initial_state: Tensor<B, 4>,
    chunk_len: usize,
) -> (Tensor<B, 4>, Tensor<B, 4>) {
    let [b, t, h, n] = r.dims();
    let l = chunk_len.clamp(1, t);
    let nc = t.div_ceil(l);
    let device = r.device();
    // Created tensors follow the inputs' dtype: burn's per-device default dtype is shared by
    // backends on the same device (NdArray<f32> and NdArray<f64>), so it cannot be trusted.
    let dtype = r.dtype();

    // [B, T, H, N] -> [B, H, NC, L, N], zero-padded in time. Padded steps have k = v = 0 and
    // log-decay 0 (decay 1), so they leave the state unchanged.
    let chunks = |x: Tensor<B, 4>| -> Tensor<B, 5> {
        let x = x.swap_dims(1, 2);
        let x = if nc * l > t {
            Tensor::cat(vec![x, Tensor::zeros([b, h, nc * l - t, n], (&device, dtype))], 2)
        } else {
            x
        };
        x.reshape([b, h, nc, l, n])
    };
    let g = w_raw.exp().neg().clamp_min(LOG_DECAY_MIN);
    let (r, k, v, g) = (chunks(r), chunks(k), chunks(v), chunks(g));

    // Log-decay split: integer part (exact prefix sums) + remainder in [-0.5, 0.5].
    let g_hi = g.clone().detach().round();
    let g_lo = g - g_hi.clone();
    let gi_hi = g_hi.clone().cumsum(3); // G (inclusive)
    let gi_lo = g_lo.clone().cumsum(3);
    let ge_hi = gi_hi.clone() - g_hi; // E (exclusive)
    let ge_lo = gi_lo.clone() - g_lo;

    // Intra-chunk scores A[t, s] = sum_i r_t[i] k_s[i] exp(E_t[i] - G_s[i]) for s < t.
    let diff = (ge_hi.clone().unsqueeze_dim::<6>(4) - gi_hi.clone().unsqueeze_dim::<6>(3))
        + (ge_lo.clone().unsqueeze_dim::<6>(4) - gi_lo.clone().unsqueeze_dim::<6>(3));
    let strict_lower = Tensor::<B, 2, Bool>::tril_mask([l, l], -1, &device) // true where s >= t
        .reshape([1, 1, 1, l, l, 1])
        .expand([b, h, nc, l, l, n]);
    let decays = diff.mask_fill(strict_lower, f32::NEG_INFINITY).exp();
    let scores =
        (decays * r.clone().unsqueeze_dim::<6>(4) * k.clone().unsqueeze_dim::<6>(3)).sum_dim(5).squeeze_dim::<5>(5); // [B, H, NC, L, L]

    // Bonus on the diagonal: sum_i r_t[i] u[i] k_t[i].
    let u = u.reshape([1, h, 1, 1, n]);
    let bonus = (r.clone() * u * k.clone()).sum_dim(4); // [B, H, NC, L, 1]
    let eye = Tensor::<B, 2>::ones([l, l], (&device, dtype)).tril(0).triu(0).reshape([1, 1, 1, l, l]);
    let scores = scores + bonus * eye;
    let y_intra = scores.matmul(v.clone());

    // Per-chunk state contribution and decay.
    let last_hi = gi_hi.clone().slice([0..b, 0..h, 0..nc, l - 1..l, 0..n]);
    let last_lo = gi_lo.clone().slice([0..b, 0..h, 0..nc, l - 1..l, 0..n]);
    let k_decayed = k * ((last_hi.clone() - gi_hi) + (last_lo.clone() - gi_lo)).exp();
    let chunk_kv = k_decayed.swap_dims(3, 4).matmul(v); // [B, H, NC, N, N]
    let chunk_decay = (last_hi + last_lo).exp().swap_dims(3, 4); // [B, H, NC, N, 1]

    // Sequential scan over chunks: S_{c+1} = diag(decay_c) S_c + KV_c.
    let mut state = initial_state;
    let mut starts = Vec::with_capacity(nc);
    for c in 0..nc {
        starts.push(state.clone());
        let dec = chunk_decay.clone().slice([0..b, 0..h, c..c + 1, 0..n, 0..1]).squeeze_dim::<4>(2);
        let kv = chunk_kv.clone().slice([0..b, 0..h, c..c + 1, 0..n, 0..n]).squeeze_dim::<4>(2);
        state = state * dec + kv;
    }
    let starts = Tensor::stack::<5>(starts, 2); // [B, H, NC, N, N]

    let r_decayed = r * (ge_hi + ge_lo).exp();
    let y = y_intra + r_decayed.matmul(starts);
    let y = y.reshape([b, h, nc * l, n]).slice([0..b, 0..h, 0..t, 0..n]).swap_dims(1, 2);
    (y, state)
}

/// One decoding step for every batch row and head at once: `r, k, v, w_raw`: `[B, H, N]`,
/// `u`: `[H, N]`, `state`: `[B, H, N, N]`; returns `(y [B, H, N], new state)`.
///
/// # Panics
///
/// On inconsistent shapes, as [`forward`]; [`crate::wkv6_step`] is the checked entry point.
pub fn step<B: Backend>(
    r: Tensor<B, 3>,
    k: Tensor<B, 3>,
    v: Tensor<B, 3>,
    w_raw: Tensor<B, 3>,
    u: Tensor<B, 2>,
    state: Tensor<B, 4>,
) -> (Tensor<B, 3>, Tensor<B, 4>) {
    let [b, h, n] = r.dims();
    let decay = w_raw.exp().neg().exp().unsqueeze_dim::<4>(3); // [B, H, N, 1]
    let kv = k.unsqueeze_dim::<4>(3) * v.unsqueeze_dim::<4>(2); // [B, H, N, N]
    let read = state.clone() + u.reshape([1, h, n, 1]) * kv.clone();
    let y = r.unsqueeze_dim::<4>(2).matmul(read).reshape([b, h, n]);
    (y, state * decay + kv)
}
