//! The `#[cube]` kernels of WKV7.
//!
//! As for WKV6 ([`crate::kernel`]): one cube per `(batch, head)` pair (cube position `x` = head,
//! `y` = batch), one unit per channel of the head, state and accumulations in `f32` whatever the
//! input dtype `F` and state dtype `S`, the decay `exp(-exp(w_raw))` computed in `f32`, runtime
//! time loops, and per-unit arrays of one row or column of an `N × N` matrix (registers).
//!
//! # Shapes
//!
//! | tensor | shape | layout |
//! |---|---|---|
//! | `r, w_raw, k, v, a, b`, `y`, `dy`, gradients | `[B, T, H, N]` | contiguous, row-major |
//! | `s0`, `ds`, `s_out`, `ds0` | `[B, H, N, N]` | `[batch, head, key i, value j]` |
//! | `sa` | `[B, T, H, N]` f32 | `aᵀS` of each step (the state before it, read out by `a`) |
//! | `dsa` | `[B, T, H, N]` f32 | the gradient of `sa` |
//! | `checkpoints` | `[B, H, ceil(T / L), N, N]` f32 | state at the start of each chunk of `L` steps, transposed (`[j, i]`) |
//! | `scratch` | `[B, H, L, N, N]` f32 | the states `S[t-1]` of the chunk being differentiated, transposed |
//!
//! The recurrence (docs/model.md §9), with `w = exp(-exp(w_raw))`:
//!
//! ```text
//! sa[j]   = sum_i a[t, i] * S[i, j]
//! S[i, j] = w[t, i] * S[i, j] + b[t, i] * sa[j] + k[t, i] * v[t, j]
//! y[t, j] = sum_i r[t, i] * S[i, j]
//! ```
//!
//! Backward, with `G` = dL/dS after step `t` (`G[T]` = the final state's cotangent, and
//! `G += r[t] dy[t]ᵀ` first because `y` reads the updated state):
//!
//! ```text
//! dv[t, j]     = sum_i G[i, j] k[t, i]          dsa[t, j] = sum_i G[i, j] b[t, i]
//! dr[t, i]     = sum_j S[t][i, j] dy[t, j]      dk[t, i]  = sum_j G[i, j] v[t, j]
//! db[t, i]     = sum_j G[i, j] sa[t, j]         da[t, i]  = sum_j S[t-1][i, j] dsa[t, j]
//! dw_raw[t, i] = -exp(w_raw - exp(w_raw)) * sum_j G[i, j] S[t-1][i, j]
//! G[t-1]       = w[t] ⊙rows G + a[t] dsa[t]ᵀ
//! ```
//!
//! The column quantities (`dv`, `dsa`) need only columns of `G`, whose recursion needs only the
//! step's own `dsa[j]`: the columns kernel computes them. The row quantities need rows of `G`
//! and of the states; their recursions need `sa[t, :]` and `dsa[t, :]`, which the forward kernel
//! (`save_sa`) and the columns kernel leave in global memory for the rows kernel. `S[t-1]` is
//! recomputed chunk by chunk from checkpoints, as for WKV6.

use cubecl::prelude::*;

use crate::kernel::{decay, seq_base};

/// Forward: one unit per value column `j`, holding column `j` of the state in registers; the
/// step's `r`, decay, `k`, `a` and `b` are shared. With `save_sa`, writes each step's `aᵀS`
/// column into `sa` (the backward's input); otherwise `sa` is not touched.
#[cube(launch)]
pub fn wkv7_forward_kernel<F: Float, S: Float>(
    r: &Tensor<F>,
    w_raw: &Tensor<F>,
    k: &Tensor<F>,
    v: &Tensor<F>,
    a: &Tensor<F>,
    b: &Tensor<F>,
    s0: &Tensor<S>,
    y: &mut Tensor<F>,
    s_out: &mut Tensor<S>,
    sa_out: &mut Tensor<f32>,
    t_len: u32,
    #[comptime] n: usize,
    #[comptime] save_sa: bool,
    #[define(F, S)] _dtypes: [StorageType; 2],
) {
    let h = CUBE_POS_X as usize;
    let bt = CUBE_POS_Y as usize;
    let heads = CUBE_COUNT_X as usize;
    let t_len = t_len as usize;
    let j = UNIT_POS_X as usize;
    let state_base = (bt * heads + h) * n * n;

    let mut state = Array::<f32>::new(n);
    #[unroll]
    for i in 0..n {
        state[i] = f32::cast_from(s0[state_base + i * n + j]);
    }
    let mut r_s = SharedMemory::<f32>::new(n);
    let mut w_s = SharedMemory::<f32>::new(n);
    let mut k_s = SharedMemory::<f32>::new(n);
    let mut a_s = SharedMemory::<f32>::new(n);
    let mut b_s = SharedMemory::<f32>::new(n);

    for t in 0..t_len {
        let idx = seq_base(bt, t, h, t_len, heads, n) + j;
        r_s[j] = f32::cast_from(r[idx]);
        w_s[j] = decay(f32::cast_from(w_raw[idx]));
        k_s[j] = f32::cast_from(k[idx]);
        a_s[j] = f32::cast_from(a[idx]);
        b_s[j] = f32::cast_from(b[idx]);
        sync_cube();
        let vj = f32::cast_from(v[idx]);
        let mut sa = f32::new(0.0);
        #[unroll]
        for i in 0..n {
            sa += a_s[i] * state[i];
        }
        let mut acc = f32::new(0.0);
        #[unroll]
        for i in 0..n {
            let s = state[i] * w_s[i] + b_s[i] * sa + k_s[i] * vj;
            state[i] = s;
            acc += r_s[i] * s;
        }
        y[idx] = F::cast_from(acc);
        if save_sa {
            sa_out[idx] = sa;
        }
        sync_cube();
    }

    #[unroll]
    for i in 0..n {
        s_out[state_base + i * n + j] = S::cast_from(state[i]);
    }
}

/// Backward, column part: one unit per value column `j` with column `j` of `G` in registers,
/// walking time backwards: `dv` and `dsa` (for the rows kernel).
#[cube(launch)]
pub fn wkv7_backward_columns_kernel<F: Float, S: Float>(
    r: &Tensor<F>,
    w_raw: &Tensor<F>,
    k: &Tensor<F>,
    a: &Tensor<F>,
    b: &Tensor<F>,
    dy: &Tensor<F>,
    ds: &Tensor<S>,
    dv: &mut Tensor<F>,
    dsa_out: &mut Tensor<f32>,
    t_len: u32,
    #[comptime] n: usize,
    #[define(F, S)] _dtypes: [StorageType; 2],
) {
    let h = CUBE_POS_X as usize;
    let bt = CUBE_POS_Y as usize;
    let heads = CUBE_COUNT_X as usize;
    let t_len = t_len as usize;
    let j = UNIT_POS_X as usize;
    let state_base = (bt * heads + h) * n * n;

    let mut g = Array::<f32>::new(n);
    #[unroll]
    for i in 0..n {
        g[i] = f32::cast_from(ds[state_base + i * n + j]);
    }
    let mut r_s = SharedMemory::<f32>::new(n);
    let mut w_s = SharedMemory::<f32>::new(n);
    let mut k_s = SharedMemory::<f32>::new(n);
    let mut a_s = SharedMemory::<f32>::new(n);
    let mut b_s = SharedMemory::<f32>::new(n);

    let mut t = t_len;
    while t > 0 {
        t -= 1;
        let idx = seq_base(bt, t, h, t_len, heads, n) + j;
        r_s[j] = f32::cast_from(r[idx]);
        w_s[j] = decay(f32::cast_from(w_raw[idx]));
        k_s[j] = f32::cast_from(k[idx]);
        a_s[j] = f32::cast_from(a[idx]);
        b_s[j] = f32::cast_from(b[idx]);
        sync_cube();
        let dyj = f32::cast_from(dy[idx]);
        let mut acc_v = f32::new(0.0);
        let mut dsa = f32::new(0.0);
        #[unroll]
        for i in 0..n {
            let gi = g[i] + r_s[i] * dyj;
            g[i] = gi;
            acc_v += gi * k_s[i];
            dsa += gi * b_s[i];
        }
        #[unroll]
        for i in 0..n {
            g[i] = g[i] * w_s[i] + a_s[i] * dsa;
        }
        dv[idx] = F::cast_from(acc_v);
        dsa_out[idx] = dsa;
        sync_cube();
    }
}

/// Backward, row part: one unit per key row `i`.
///
/// A forward sweep recomputes row `i` of the state from `sa` (`dr`, and the chunk checkpoints);
/// a backward sweep, chunk by chunk from the last, recomputes the chunk's `S[t-1]` rows into
/// `scratch`, then walks the chunk backwards with row `i` of `G` in registers (`dk`, `db`, `da`,
/// `dw_raw`, and finally the initial state's gradient). Each unit only reads back what it wrote
/// itself, so the checkpoints and scratch need no synchronisation.
#[cube(launch)]
pub fn wkv7_backward_rows_kernel<F: Float, S: Float>(
    r: &Tensor<F>,
    w_raw: &Tensor<F>,
    k: &Tensor<F>,
    v: &Tensor<F>,
    a: &Tensor<F>,
    b: &Tensor<F>,
    s0: &Tensor<S>,
    dy: &Tensor<F>,
    ds: &Tensor<S>,
    sa: &Tensor<f32>,
    dsa: &Tensor<f32>,
    dr: &mut Tensor<F>,
    dw_raw: &mut Tensor<F>,
    dk: &mut Tensor<F>,
    da: &mut Tensor<F>,
    db: &mut Tensor<F>,
    ds0: &mut Tensor<S>,
    checkpoints: &mut Tensor<f32>,
    scratch: &mut Tensor<f32>,
    t_len: u32,
    chunk: u32,
    #[comptime] n: usize,
    #[define(F, S)] _dtypes: [StorageType; 2],
) {
    let h = CUBE_POS_X as usize;
    let bt = CUBE_POS_Y as usize;
    let heads = CUBE_COUNT_X as usize;
    let t_len = t_len as usize;
    let chunk = chunk as usize;
    let i = UNIT_POS_X as usize;
    let bh = bt * heads + h;
    let row = bh * n * n + i * n;
    let n_chunks = t_len.div_ceil(chunk);
    // Transposed (`[.., j, i]`): unit i's value j sits next to unit i+1's, so each store and load
    // of a step is coalesced across the units.
    let ckpt_base = bh * n_chunks * n * n + i;
    let scratch_base = bh * chunk * n * n + i;

    let mut v_s = SharedMemory::<f32>::new(n);
    let mut dy_s = SharedMemory::<f32>::new(n);
    let mut sa_s = SharedMemory::<f32>::new(n);
    let mut dsa_s = SharedMemory::<f32>::new(n);

    // Forward sweep: S[t] row i -> dr; checkpoints of S[t-1] at chunk starts.
    let mut s = Array::<f32>::new(n);
    #[unroll]
    for j in 0..n {
        s[j] = f32::cast_from(s0[row + j]);
    }
    for t in 0..t_len {
        if t % chunk == 0 {
            let base = ckpt_base + (t / chunk) * n * n;
            #[unroll]
            for j in 0..n {
                checkpoints[base + j * n] = s[j];
            }
        }
        let base = seq_base(bt, t, h, t_len, heads, n);
        v_s[i] = f32::cast_from(v[base + i]);
        dy_s[i] = f32::cast_from(dy[base + i]);
        sa_s[i] = sa[base + i];
        sync_cube();
        let wi = decay(f32::cast_from(w_raw[base + i]));
        let ki = f32::cast_from(k[base + i]);
        let bi = f32::cast_from(b[base + i]);
        let mut acc = f32::new(0.0);
        #[unroll]
        for j in 0..n {
            let sj = s[j] * wi + bi * sa_s[j] + ki * v_s[j];
            s[j] = sj;
            acc += sj * dy_s[j];
        }
        dr[base + i] = F::cast_from(acc);
        sync_cube();
    }

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
            let base = seq_base(bt, t, h, t_len, heads, n);
            v_s[i] = f32::cast_from(v[base + i]);
            sa_s[i] = sa[base + i];
            sync_cube();
            let wi = decay(f32::cast_from(w_raw[base + i]));
            let ki = f32::cast_from(k[base + i]);
            let bi = f32::cast_from(b[base + i]);
            #[unroll]
            for j in 0..n {
                s[j] = s[j] * wi + bi * sa_s[j] + ki * v_s[j];
            }
            sync_cube();
        }
        // Walk the chunk backwards with G row i in registers.
        let mut t = t1;
        while t > t0 {
            t -= 1;
            let base = seq_base(bt, t, h, t_len, heads, n);
            v_s[i] = f32::cast_from(v[base + i]);
            dy_s[i] = f32::cast_from(dy[base + i]);
            sa_s[i] = sa[base + i];
            dsa_s[i] = dsa[base + i];
            sync_cube();
            let ri = f32::cast_from(r[base + i]);
            let wr = f32::cast_from(w_raw[base + i]);
            let wi = decay(wr);
            let ai = f32::cast_from(a[base + i]);
            let slot = scratch_base + (t - t0) * n * n;
            let mut acc_k = f32::new(0.0);
            let mut acc_b = f32::new(0.0);
            let mut acc_w = f32::new(0.0);
            let mut acc_a = f32::new(0.0);
            #[unroll]
            for j in 0..n {
                let gj = g[j] + ri * dy_s[j];
                let prev = scratch[slot + j * n];
                acc_k += gj * v_s[j];
                acc_b += gj * sa_s[j];
                acc_w += gj * prev;
                acc_a += prev * dsa_s[j];
                g[j] = gj * wi + ai * dsa_s[j];
            }
            dk[base + i] = F::cast_from(acc_k);
            db[base + i] = F::cast_from(acc_b);
            da[base + i] = F::cast_from(acc_a);
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
