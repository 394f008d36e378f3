//! The WKV6 backward pass on the CPU: the gradients of [`crate::reference::backward`], parallel
//! over `(batch, head)`, with memory `O((T/L + L)·N²)` per head instead of the oracle's `T·N²`.
//!
//! Each head runs a forward sweep that keeps only the states at the start of every chunk of
//! `L = ⌈√T⌉` steps, then walks the chunks backwards: it recomputes the chunk's states from its
//! checkpoint and runs the reverse recurrence `dS_{t-1} = w_t ⊙ dS_t + r_t ⊗ dy_t` through it.
//! Per step and key row `i` it reads the state row and its gradient once and produces
//!
//! ```text
//! dr[t, i] = Σ_j dy[t, j]·S_{t-1}[i, j] + u[i]·k[t, i]·(dy_t · v_t)
//! dk[t, i] = r[t, i]·u[i]·(dy_t · v_t) + Σ_j dS_t[i, j]·v[t, j]
//! dw[t, i] = −exp(w_raw[t, i] − e^{w_raw[t, i]}) · Σ_j dS_t[i, j]·S_{t-1}[i, j]
//! dv[t, j] = (Σ_i r[t, i]·u[i]·k[t, i])·dy[t, j] + Σ_i dS_t[i, j]·k[t, i]
//! du[i]   += r[t, i]·k[t, i]·(dy_t · v_t)
//! ```
//!
//! The decay derivative is computed directly from `w_raw` (no division by a decay that may have
//! underflowed), so `w_raw` from −20 to 5 is safe.
//!
//! # Shapes
//!
//! As [`crate::reference::backward`]: `r, k, v, w_raw, dy` `[B, T, H, N]`, `u` `[H, N]`, states
//! and `d_state` `[B, H, N, N]`; `du` is summed over the batch.

use super::{KernelFloat, threads_for};
use crate::WkvError;
use crate::reference::{Dims, Gradients, Inputs};

/// The gradients of one `(batch, head)`: `r, k, v, w_raw` as `[T, N]`, `u` `[N]`, the initial
/// state `[N, N]`.
struct HeadGrads<F> {
    seq: [Vec<F>; 4],
    u: Vec<F>,
    initial_state: Vec<F>,
}

/// One forward step of a head's state: `S = w ⊙ S + k ⊗ v`.
#[inline(always)]
fn advance<F: KernelFloat>(n: usize, k: &[F], v: &[F], w_raw: &[F], state: &mut [F]) {
    for i in 0..n {
        let (ki, wi) = (k[i], F::fast_decay(w_raw[i]));
        for (s, &vj) in state[i * n..(i + 1) * n].iter_mut().zip(&v[..n]) {
            *s = wi * *s + ki * vj;
        }
    }
}

/// The backward pass of one head. `x` and `dy` start at `(b, 0, h, 0)` with time stride
/// `stride`; `s0` and `ds_final` are the head's `[N, N]` initial state and final-state gradient.
#[allow(clippy::too_many_arguments)]
fn head<F: KernelFloat>(
    n: usize,
    nt: usize,
    stride: usize,
    x: [&[F]; 4],
    dy: &[F],
    u: &[F],
    s0: &[F],
    ds_final: &[F],
) -> HeadGrads<F> {
    let nn = n * n;
    let zero = F::zero();
    let at = |t: usize| t * stride..t * stride + n;
    let [xr, xk, xv, xw] = x;
    let chunk = (nt as f64).sqrt().ceil().max(1.0) as usize;
    let n_chunks = nt.div_ceil(chunk);

    // Forward sweep: the state at the start of every chunk.
    let mut checkpoints = vec![zero; n_chunks * nn];
    let mut s = s0.to_vec();
    for t in 0..nt {
        if t % chunk == 0 {
            checkpoints[(t / chunk) * nn..][..nn].copy_from_slice(&s);
        }
        advance(n, &xk[at(t)], &xv[at(t)], &xw[at(t)], &mut s);
    }

    let mut g =
        HeadGrads { seq: std::array::from_fn(|_| vec![zero; nt * n]), u: vec![zero; n], initial_state: Vec::new() };
    let mut ds = ds_final.to_vec();
    // states[j] = S_{t0 + j - 1}, the state before step t0 + j of the current chunk.
    let mut states = vec![zero; chunk * nn];
    let mut dv = vec![zero; n];
    for c in (0..n_chunks).rev() {
        let (t0, t1) = (c * chunk, ((c + 1) * chunk).min(nt));
        s.copy_from_slice(&checkpoints[c * nn..][..nn]);
        for t in t0..t1 {
            states[(t - t0) * nn..][..nn].copy_from_slice(&s);
            if t + 1 < t1 {
                advance(n, &xk[at(t)], &xv[at(t)], &xw[at(t)], &mut s);
            }
        }
        for t in (t0..t1).rev() {
            let (r, k, v, wr) = (&xr[at(t)], &xk[at(t)], &xv[at(t)], &xw[at(t)]);
            let dyt = &dy[at(t)];
            let sp = &states[(t - t0) * nn..][..nn];
            let dyv = dyt.iter().zip(v).fold(zero, |a, (&d, &vv)| a + d * vv);
            let mut rukv = zero;
            dv.iter_mut().for_each(|d| *d = zero);
            let [gr, gk, gv, gw] = &mut g.seq;
            for i in 0..n {
                let (ri, ki, ui, wi) = (r[i], k[i], u[i], wr[i]);
                let srow = &sp[i * n..(i + 1) * n];
                let drow = &mut ds[i * n..(i + 1) * n];
                let (mut dr, mut dk, mut dw) = (zero, zero, zero);
                for j in 0..n {
                    dr = dr + dyt[j] * srow[j];
                    dk = dk + drow[j] * v[j];
                    dw = dw + drow[j] * srow[j];
                    dv[j] = dv[j] + drow[j] * ki;
                }
                gr[t * n + i] = dr + ui * ki * dyv;
                gk[t * n + i] = ri * ui * dyv + dk;
                gw[t * n + i] = -(wi - wi.exp()).exp() * dw;
                g.u[i] = g.u[i] + ri * ki * dyv;
                rukv = rukv + ri * ui * ki;
                // dS_{t-1} = w ⊙ dS_t + r ⊗ dy.
                let decay = F::fast_decay(wi);
                for j in 0..n {
                    drow[j] = decay * drow[j] + ri * dyt[j];
                }
            }
            for j in 0..n {
                gv[t * n + j] = rukv * dyt[j] + dv[j];
            }
        }
    }
    g.initial_state = ds;
    g
}

/// Gradients of every WKV6 input, as [`crate::reference::backward`] (same contract and errors),
/// computed in `F` with chunk checkpoints and parallel over `(batch, head)`.
pub fn backward<F: KernelFloat>(
    dims: Dims,
    x: Inputs<'_, F>,
    dy: &[F],
    d_state: Option<&[F]>,
) -> Result<Gradients<F>, WkvError> {
    dims.check_backward(&x, dy, d_state)?;
    let Dims { b: nb, t: nt, h: nh, n } = dims;
    let nn = n * n;
    let zeros = vec![F::zero(); nn];
    let jobs: Vec<usize> = (0..nb * nh).collect();
    let run = |job: usize| {
        let (b, h) = (job / nh, job % nh);
        let o = dims.seq_index(b, 0, h, 0);
        let len = (nt - 1) * nh * n + n;
        let xs = [&x.r[o..o + len], &x.k[o..o + len], &x.v[o..o + len], &x.w_raw[o..o + len]];
        let off = dims.state_offset(b, h);
        let s0 = x.initial_state.map_or(&zeros[..], |s| &s[off..off + nn]);
        let ds = d_state.map_or(&zeros[..], |s| &s[off..off + nn]);
        head(n, nt, nh * n, xs, &dy[o..o + len], &x.u[h * n..(h + 1) * n], s0, ds)
    };
    let threads = threads_for(jobs.len(), 3 * nt * nn);
    let per_thread = jobs.len().div_ceil(threads);
    let results: Vec<HeadGrads<F>> = if threads == 1 {
        jobs.iter().map(|&j| run(j)).collect()
    } else {
        std::thread::scope(|scope| {
            let handles: Vec<_> = jobs
                .chunks(per_thread)
                .map(|part| scope.spawn(|| part.iter().map(|&j| run(j)).collect::<Vec<_>>()))
                .collect();
            handles.into_iter().flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))).collect()
        })
    };

    let mut g = Gradients::zeros(dims);
    for (job, hg) in results.into_iter().enumerate() {
        let (b, h) = (job / nh, job % nh);
        for (dst, src) in [&mut g.r, &mut g.k, &mut g.v, &mut g.w_raw].into_iter().zip(&hg.seq) {
            for t in 0..nt {
                let o = dims.seq_index(b, t, h, 0);
                dst[o..o + n].copy_from_slice(&src[t * n..(t + 1) * n]);
            }
        }
        for (du, &d) in g.u[h * n..(h + 1) * n].iter_mut().zip(&hg.u) {
            *du = *du + d;
        }
        let off = dims.state_offset(b, h);
        g.initial_state[off..off + nn].copy_from_slice(&hg.initial_state);
    }
    Ok(g)
}
