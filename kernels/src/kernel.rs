//! The `#[cube]` kernels of WKV6.
//!
//! Every kernel runs one cube per `(batch, head)` pair (cube position `x` = head, `y` = batch) and
//! one unit per channel of the head (`N` units). State, accumulations and decays are `f32`
//! whatever the input dtype `F` (f32, f16, bf16) and state dtype `S`; the decay
//! `exp(-exp(w_raw))` is computed in `f32` inside the kernels. Nothing is sized by `T`: the time
//! loops have a runtime bound, and the only per-unit arrays hold one row or column of an `N × N`
//! matrix (`N` is a compile-time constant, so they live in registers).
//!
//! # Shapes
//!
//! | tensor | shape | layout |
//! |---|---|---|
//! | `r`, `k`, `v`, `w_raw`, `y`, `dy`, gradients | `[B, T, H, N]` | contiguous, row-major |
//! | `u`, `du` | `[H, N]` | contiguous |
//! | `s0`, `ds`, `s_out`, `ds0` | `[B, H, N, N]` | `[batch, head, key i, value j]` |
//! | `du_part` | `[B, H, N]` | per-batch bonus gradient, summed over `B` by the caller |
//! | `checkpoints` | `[B, H, ceil(T / L), N, N]` f32 | state at the start of each chunk of `L` steps, stored transposed (`[j, i]`) |
//! | `scratch` | `[B, H, L, N, N]` f32 | the states `S[t-1]` of the chunk being differentiated, transposed |
//!
//! The recurrence (docs/model.md §1.4), with `w = exp(-exp(w_raw))`:
//!
//! ```text
//! y[t, j] = sum_i r[t, i] * (S[i, j] + u[i] * k[t, i] * v[t, j])
//! S[i, j] = w[t, i] * S[i, j] + k[t, i] * v[t, j]
//! ```
//!
//! Backward, with `G[t] = dL/dS[t]` (`G[T]` = the final state's cotangent):
//!
//! ```text
//! G[t-1]       = w[t] ⊙rows G[t] + r[t] dy[t]^T                  (G[0] is the initial state's gradient)
//! dr[t, i]     = sum_j S[t-1][i, j] dy[t, j] + u[i] k[t, i] (v[t] · dy[t])
//! dk[t, i]     = sum_j G[t][i, j] v[t, j]     + u[i] r[t, i] (v[t] · dy[t])
//! dv[t, j]     = sum_i G[t][i, j] k[t, i]     + (sum_i r[t, i] u[i] k[t, i]) dy[t, j]
//! du[i]        = sum_t r[t, i] k[t, i] (v[t] · dy[t])
//! dw_raw[t, i] = -exp(w_raw[t, i] - exp(w_raw[t, i])) * sum_j G[t][i, j] S[t-1][i, j]
//! ```
//!
//! `dw_raw` is computed directly from `G[t]` and `S[t-1]`, not as the difference of running sums
//! (the form of the reference CUDA kernel and of fla), which cancels catastrophically when decays
//! are extreme. `S[t-1]` is recomputed chunk by chunk from checkpoints.

use cubecl::prelude::*;

/// The per-step decay `exp(-exp(w_raw))`, in f32.
#[cube]
pub(crate) fn decay(w_raw: f32) -> f32 {
    (-(w_raw.exp())).exp()
}

/// Flat index of channel 0 of `(b, t, h)` in a contiguous `[B, T, H, N]` tensor.
#[cube]
pub(crate) fn seq_base(b: usize, t: usize, h: usize, t_len: usize, heads: usize, #[comptime] n: usize) -> usize {
    ((b * t_len + t) * heads + h) * n
}

/// Forward: one unit per value column `j`, holding column `j` of the state in registers; the
/// step's `r`, `k`, decay and `u` are shared.
#[cube(launch)]
pub fn wkv6_forward_kernel<F: Float, S: Float>(
    r: &Tensor<F>,
    k: &Tensor<F>,
    v: &Tensor<F>,
    w_raw: &Tensor<F>,
    u: &Tensor<F>,
    s0: &Tensor<S>,
    y: &mut Tensor<F>,
    s_out: &mut Tensor<S>,
    t_len: u32,
    #[comptime] n: usize,
    #[define(F, S)] _dtypes: [StorageType; 2],
) {
    let h = CUBE_POS_X as usize;
    let b = CUBE_POS_Y as usize;
    let heads = CUBE_COUNT_X as usize;
    let t_len = t_len as usize;
    let j = UNIT_POS_X as usize;
    let state_base = (b * heads + h) * n * n;

    let mut state = Array::<f32>::new(n);
    #[unroll]
    for i in 0..n {
        state[i] = f32::cast_from(s0[state_base + i * n + j]);
    }
    let mut r_s = SharedMemory::<f32>::new(n);
    let mut k_s = SharedMemory::<f32>::new(n);
    let mut w_s = SharedMemory::<f32>::new(n);
    let mut u_s = SharedMemory::<f32>::new(n);
    u_s[j] = f32::cast_from(u[h * n + j]);

    for t in 0..t_len {
        let idx = seq_base(b, t, h, t_len, heads, n) + j;
        r_s[j] = f32::cast_from(r[idx]);
        k_s[j] = f32::cast_from(k[idx]);
        w_s[j] = decay(f32::cast_from(w_raw[idx]));
        sync_cube();
        let vj = f32::cast_from(v[idx]);
        let mut acc = f32::new(0.0);
        #[unroll]
        for i in 0..n {
            let kv = k_s[i] * vj;
            acc += r_s[i] * (state[i] + u_s[i] * kv);
            state[i] = state[i] * w_s[i] + kv;
        }
        y[idx] = F::cast_from(acc);
        sync_cube();
    }

    #[unroll]
    for i in 0..n {
        s_out[state_base + i * n + j] = S::cast_from(state[i]);
    }
}

/// Backward, row part: one unit per key row `i`.
///
/// A forward sweep recomputes row `i` of the state (`dr`, `du`, and the chunk checkpoints); a
/// backward sweep, chunk by chunk from the last, recomputes the chunk's `S[t-1]` rows into
/// `scratch`, then walks the chunk backwards with row `i` of `G` in registers (`dk`, `dw_raw`,
/// and finally the initial state's gradient). Each unit only reads back what it wrote itself, so
/// the checkpoints and scratch need no synchronisation.
#[cube(launch)]
pub fn wkv6_backward_rows_kernel<F: Float, S: Float>(
    r: &Tensor<F>,
    k: &Tensor<F>,
    v: &Tensor<F>,
    w_raw: &Tensor<F>,
    u: &Tensor<F>,
    s0: &Tensor<S>,
    dy: &Tensor<F>,
    ds: &Tensor<S>,
    dr: &mut Tensor<F>,
    dk: &mut Tensor<F>,
    dw_raw: &mut Tensor<F>,
    du_part: &mut Tensor<f32>,
    ds0: &mut Tensor<S>,
    checkpoints: &mut Tensor<f32>,
    scratch: &mut Tensor<f32>,
    t_len: u32,
    chunk: u32,
    #[comptime] n: usize,
    #[define(F, S)] _dtypes: [StorageType; 2],
) {
    let h = CUBE_POS_X as usize;
    let b = CUBE_POS_Y as usize;
    let heads = CUBE_COUNT_X as usize;
    let t_len = t_len as usize;
    let chunk = chunk as usize;
    let i = UNIT_POS_X as usize;
    let bh = b * heads + h;
    let row = bh * n * n + i * n;
    let n_chunks = t_len.div_ceil(chunk);
    // Checkpoints and scratch are stored transposed (`[.., j, i]`): unit i's value j sits next to
    // unit i+1's, so each store and load of a step is coalesced across the units.
    let ckpt_base = bh * n_chunks * n * n + i;
    let scratch_base = bh * chunk * n * n + i;

    let mut v_s = SharedMemory::<f32>::new(n);
    let mut dy_s = SharedMemory::<f32>::new(n);
    let ui = f32::cast_from(u[h * n + i]);

    // Forward sweep: S[t-1] row i -> dr, du; checkpoints at chunk starts.
    let mut s = Array::<f32>::new(n);
    #[unroll]
    for j in 0..n {
        s[j] = f32::cast_from(s0[row + j]);
    }
    let mut du_acc = f32::new(0.0);
    for t in 0..t_len {
        if t % chunk == 0 {
            let base = ckpt_base + (t / chunk) * n * n;
            #[unroll]
            for j in 0..n {
                checkpoints[base + j * n] = s[j];
            }
        }
        let base = seq_base(b, t, h, t_len, heads, n);
        v_s[i] = f32::cast_from(v[base + i]);
        dy_s[i] = f32::cast_from(dy[base + i]);
        sync_cube();
        let ri = f32::cast_from(r[base + i]);
        let ki = f32::cast_from(k[base + i]);
        let wi = decay(f32::cast_from(w_raw[base + i]));
        let mut vdy = f32::new(0.0);
        let mut acc = f32::new(0.0);
        #[unroll]
        for j in 0..n {
            vdy += v_s[j] * dy_s[j];
            acc += s[j] * dy_s[j];
            s[j] = s[j] * wi + ki * v_s[j];
        }
        dr[base + i] = F::cast_from(acc + ui * ki * vdy);
        du_acc += ri * ki * vdy;
        sync_cube();
    }
    du_part[bh * n + i] = du_acc;

    // Backward sweep, chunk by chunk.
    let mut g = Array::<f32>::new(n);
    #[unroll]
    for j in 0..n {
        g[j] = f32::cast_from(ds[row + j]);
    }
    let mut c = n_chunks;
    while c > 0 {
        c -= 1;
        let t0 = c * chunk;
        let mut t1 = t0 + chunk;
        if t1 > t_len {
            t1 = t_len;
        }
        // Recompute S[t-1] (row i) for t in [t0, t1) from the chunk's checkpoint.
        let ckpt = ckpt_base + c * n * n;
        #[unroll]
        for j in 0..n {
            s[j] = checkpoints[ckpt + j * n];
        }
        for t in t0..t1 {
            let slot = scratch_base + (t - t0) * n * n;
            #[unroll]
            for j in 0..n {
                scratch[slot + j * n] = s[j];
            }
            let base = seq_base(b, t, h, t_len, heads, n);
            v_s[i] = f32::cast_from(v[base + i]);
            sync_cube();
            let ki = f32::cast_from(k[base + i]);
            let wi = decay(f32::cast_from(w_raw[base + i]));
            #[unroll]
            for j in 0..n {
                s[j] = s[j] * wi + ki * v_s[j];
            }
            sync_cube();
        }
        // Walk the chunk backwards with G[t] row i in registers.
        let mut t = t1;
        while t > t0 {
            t -= 1;
            let base = seq_base(b, t, h, t_len, heads, n);
            v_s[i] = f32::cast_from(v[base + i]);
            dy_s[i] = f32::cast_from(dy[base + i]);
            sync_cube();
            let ri = f32::cast_from(r[base + i]);
            let wr = f32::cast_from(w_raw[base + i]);
            let wi = decay(wr);
            let slot = scratch_base + (t - t0) * n * n;
            let mut vdy = f32::new(0.0);
            let mut acc_k = f32::new(0.0);
            let mut acc_w = f32::new(0.0);
            #[unroll]
            for j in 0..n {
                vdy += v_s[j] * dy_s[j];
                acc_k += g[j] * v_s[j];
                acc_w += g[j] * scratch[slot + j * n];
                g[j] = g[j] * wi + ri * dy_s[j];
            }
            dk[base + i] = F::cast_from(acc_k + ui * ri * vdy);
            // d w / d w_raw = -exp(w_raw) * exp(-exp(w_raw)) = -exp(w_raw - exp(w_raw)).
            dw_raw[base + i] = F::cast_from(-((wr - wr.exp()).exp()) * acc_w);
            sync_cube();
        }
    }
    #[unroll]
    for j in 0..n {
        ds0[row + j] = S::cast_from(g[j]);
    }
}

/// Backward, column part: one unit per value column `j` with column `j` of `G` in registers,
/// walking time backwards (`dv`).
#[cube(launch)]
pub fn wkv6_backward_columns_kernel<F: Float, S: Float>(
    r: &Tensor<F>,
    k: &Tensor<F>,
    w_raw: &Tensor<F>,
    u: &Tensor<F>,
    dy: &Tensor<F>,
    ds: &Tensor<S>,
    dv: &mut Tensor<F>,
    t_len: u32,
    #[comptime] n: usize,
    #[define(F, S)] _dtypes: [StorageType; 2],
) {
    let h = CUBE_POS_X as usize;
    let b = CUBE_POS_Y as usize;
    let heads = CUBE_COUNT_X as usize;
    let t_len = t_len as usize;
    let j = UNIT_POS_X as usize;
    let state_base = (b * heads + h) * n * n;

    let mut g = Array::<f32>::new(n);
    #[unroll]
    for i in 0..n {
        g[i] = f32::cast_from(ds[state_base + i * n + j]);
    }
    let mut r_s = SharedMemory::<f32>::new(n);
    let mut k_s = SharedMemory::<f32>::new(n);
    let mut w_s = SharedMemory::<f32>::new(n);
    let mut u_s = SharedMemory::<f32>::new(n);
    u_s[j] = f32::cast_from(u[h * n + j]);

    let mut t = t_len;
    while t > 0 {
        t -= 1;
        let idx = seq_base(b, t, h, t_len, heads, n) + j;
        r_s[j] = f32::cast_from(r[idx]);
        k_s[j] = f32::cast_from(k[idx]);
        w_s[j] = decay(f32::cast_from(w_raw[idx]));
        sync_cube();
        let dyj = f32::cast_from(dy[idx]);
        let mut acc = f32::new(0.0);
        let mut ruk = f32::new(0.0);
        #[unroll]
        for i in 0..n {
            acc += g[i] * k_s[i];
            ruk += r_s[i] * u_s[i] * k_s[i];
            g[i] = g[i] * w_s[i] + r_s[i] * dyj;
        }
        dv[idx] = F::cast_from(acc + ruk * dyj);
        sync_cube();
    }
}

/// Sums the per-batch bonus gradient `du_part` `[B, H, N]` (f32) over `B` into `du` `[H, N]`:
/// one cube per head, one unit per channel.
#[cube(launch)]
pub fn wkv6_sum_batch_kernel<F: Float>(
    du_part: &Tensor<f32>,
    du: &mut Tensor<F>,
    batch: u32,
    #[comptime] n: usize,
    #[define(F)] _dtype: StorageType,
) {
    let h = CUBE_POS_X as usize;
    let heads = CUBE_COUNT_X as usize;
    let i = UNIT_POS_X as usize;
    let mut acc = f32::new(0.0);
    for b in 0..batch as usize {
        acc += du_part[(b * heads + h) * n + i];
    }
    du[h * n + i] = F::cast_from(acc);
}
