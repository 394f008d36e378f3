//! The fast CPU path of WKV7: every `(batch, head)` pair on its own worker (up to the cores), its
//! inputs gathered into contiguous `[T, N]` rows, the decays computed once per step with the
//! vectorisable [`KernelFloat::fast_decay`], and row-wise inner loops the compiler vectorises.
//! The backward pass keeps one state every [`CHECKPOINT`] steps and recomputes the states inside
//! a chunk from it, so its memory is `(T / CHECKPOINT + CHECKPOINT)·N²` per head instead of the
//! reference's `T·N²`.
//!
//! It computes the sums of [`super::reference`] in the same order up to the decay's rounding, so
//! the two agree to rounding. Used by the `NdArray` backend's [`crate::Wkv7Backend`].
//!
//! # Shapes
//!
//! As in [`super::reference`].

use crate::WkvError;
use crate::cpu::{KernelFloat, cores};
use crate::wkv7::reference::{Dims, Gradients, Inputs, Output, check_backward, check_inputs};

/// Steps between two stored states in the backward pass.
pub const CHECKPOINT: usize = 16;

/// The inputs of one head as contiguous `[T, N]` rows, in the order `r, w_raw, k, v, a, b`, and
/// the decays `exp(-exp(w_raw))`.
struct Head<F> {
    x: [Vec<F>; 6],
    decay: Vec<F>,
}

impl<F: KernelFloat> Head<F> {
    fn gather(dims: Dims, x: &Inputs<'_, F>, b: usize, h: usize) -> Self {
        let n = dims.n;
        let x = x
            .sequences()
            .map(|(_, s)| (0..dims.t).flat_map(|t| &s[dims.seq_index(b, t, h, 0)..][..n]).copied().collect::<Vec<F>>());
        let decay = x[1].iter().map(|&w| F::fast_decay(w)).collect();
        Self { x, decay }
    }

    /// The six `[N]` rows of step `t`, with the decay in place of `w_raw`.
    fn at(&self, t: usize, n: usize) -> [&[F]; 6] {
        let rows = t * n..(t + 1) * n;
        std::array::from_fn(|q| if q == 1 { &self.decay[rows.clone()] } else { &self.x[q][rows.clone()] })
    }
}

/// One step on one head: `sa = aᵀS`, `S = D·S + b ⊗ sa + k ⊗ v`, `y = rᵀS` (with `D` the decay
/// itself, not `w_raw`).
#[inline]
fn step<F: KernelFloat>(x: [&[F]; 6], state: &mut [F], sa: &mut [F], y: &mut [F]) {
    let [r, d, k, v, a, b] = x;
    let n = r.len();
    sa.fill(F::zero());
    for (i, row) in state.chunks_exact(n).enumerate() {
        let ai = a[i];
        for (s, &x) in sa.iter_mut().zip(row) {
            *s = *s + ai * x;
        }
    }
    y.fill(F::zero());
    for (i, row) in state.chunks_exact_mut(n).enumerate() {
        let (di, bi, ki, ri) = (d[i], b[i], k[i], r[i]);
        for j in 0..n {
            let s = di * row[j] + bi * sa[j] + ki * v[j];
            row[j] = s;
            y[j] = y[j] + ri * s;
        }
    }
}

/// Runs `job(0..jobs)` on up to [`cores`] threads (one when the work is small) and returns the
/// results in job order.
fn par_map<T: Send>(jobs: usize, work_per_job: usize, job: impl Fn(usize) -> T + Sync) -> Vec<T> {
    // A thread costs tens of microseconds: give each at least ~1M multiply-adds.
    let useful = (jobs * work_per_job / (1 << 20)).max(1);
    let threads = cores().min(jobs).min(useful).max(1);
    if threads == 1 {
        return (0..jobs).map(job).collect();
    }
    let per = jobs.div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..jobs)
            .step_by(per)
            .map(|start| {
                let job = &job;
                scope.spawn(move || (start..(start + per).min(jobs)).map(job).collect::<Vec<T>>())
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("a WKV7 worker panicked")).collect()
    })
}

/// Copies a head's `[T, N]` rows into their places in a `[B, T, H, N]` tensor.
fn scatter<F: Copy>(dims: Dims, rows: &[F], b: usize, h: usize, out: &mut [F]) {
    let n = dims.n;
    for (t, row) in rows.chunks_exact(n).enumerate() {
        out[dims.seq_index(b, t, h, 0)..][..n].copy_from_slice(row);
    }
}

fn initial<F: KernelFloat>(dims: Dims, x: &Inputs<'_, F>, job: usize) -> Vec<F> {
    let nn = dims.n * dims.n;
    x.initial_state.map_or_else(|| vec![F::zero(); nn], |s| s[job * nn..(job + 1) * nn].to_vec())
}

/// The WKV7 forward pass over slices, parallel over `(batch, head)`.
///
/// Same contract as [`super::reference::forward`].
pub fn forward<F: KernelFloat>(dims: Dims, x: Inputs<'_, F>) -> Result<Output<F>, WkvError> {
    check_inputs(dims, &x)?;
    let mut state = x.initial_state.map_or_else(|| vec![F::zero(); dims.state_len()], <[F]>::to_vec);
    let mut y = vec![F::zero(); dims.seq_len()];
    forward_in_place(dims, Inputs { initial_state: None, ..x }, &mut state, &mut y)?;
    Ok(Output { y, state })
}

/// [`forward`] without allocating the state: `state` (`[B, H, N, N]`) holds the initial state and
/// receives the final one; `y` (`[B, T, H, N]`) receives the output. `x.initial_state` is
/// ignored. What the fused decoder runs, one layer's heads (or a part of them) at a time.
pub fn forward_in_place<F: KernelFloat>(
    dims: Dims,
    x: Inputs<'_, F>,
    state: &mut [F],
    y: &mut [F],
) -> Result<(), WkvError> {
    check_inputs(dims, &Inputs { initial_state: Some(state), ..x })?;
    dims.check_seq("y", y.len())?;
    let Dims { t: nt, h: nh, n, .. } = dims;
    let nn = n * n;
    let start: &[F] = state;
    let heads = par_map(dims.b * nh, nt * nn * 4, |job| {
        let head = Head::gather(dims, &x, job / nh, job % nh);
        let mut s = start[job * nn..(job + 1) * nn].to_vec();
        let (mut sa, mut yh) = (vec![F::zero(); n], vec![F::zero(); nt * n]);
        for t in 0..nt {
            step(head.at(t, n), &mut s, &mut sa, &mut yh[t * n..(t + 1) * n]);
        }
        (yh, s)
    });
    for (job, (yh, s)) in heads.into_iter().enumerate() {
        scatter(dims, &yh, job / nh, job % nh, y);
        state[job * nn..(job + 1) * nn].copy_from_slice(&s);
    }
    Ok(())
}

/// The gradients of one head: `[T, N]` rows of `r, w_raw, k, v, a, b` and the initial state.
type HeadGradients<F> = ([Vec<F>; 6], Vec<F>);

fn head_backward<F: KernelFloat>(
    dims: Dims,
    x: &Inputs<'_, F>,
    dy: &[F],
    d_state: Option<&[F]>,
    job: usize,
) -> HeadGradients<F> {
    let Dims { t: nt, h: nh, n, .. } = dims;
    let (b, h) = (job / nh, job % nh);
    let nn = n * n;
    let zero = F::zero();
    let head = Head::gather(dims, x, b, h);
    // Forward sweep, keeping the state before every CHECKPOINT-th step.
    let chunks = nt.div_ceil(CHECKPOINT);
    let mut checkpoints = Vec::with_capacity(chunks * nn);
    let mut s = initial(dims, x, job);
    let (mut sa, mut y) = (vec![zero; n], vec![zero; n]);
    for t in 0..nt {
        if t % CHECKPOINT == 0 {
            checkpoints.extend_from_slice(&s);
        }
        step(head.at(t, n), &mut s, &mut sa, &mut y);
    }
    let [mut g_r, mut gw, mut gk, mut gv, mut ga, mut gb]: [Vec<F>; 6] = std::array::from_fn(|_| vec![zero; nt * n]);
    let mut gs = d_state.map_or_else(|| vec![zero; nn], |d| d[job * nn..(job + 1) * nn].to_vec());
    let mut states = vec![zero; (CHECKPOINT + 1) * nn];
    let mut sas = vec![zero; CHECKPOINT * n];
    let mut dsa = vec![zero; n];
    for c in (0..chunks).rev() {
        let (t0, t1) = (c * CHECKPOINT, ((c + 1) * CHECKPOINT).min(nt));
        states[..nn].copy_from_slice(&checkpoints[c * nn..(c + 1) * nn]);
        for t in t0..t1 {
            let q = t - t0;
            let (before, after) = states.split_at_mut((q + 1) * nn);
            after[..nn].copy_from_slice(&before[q * nn..]);
            step(head.at(t, n), &mut after[..nn], &mut sas[q * n..(q + 1) * n], &mut y);
        }
        for t in (t0..t1).rev() {
            let q = t - t0;
            let [r, d, k, v, a, bb] = head.at(t, n);
            let dyt = &dy[dims.seq_index(b, t, h, 0)..][..n];
            let (s_prev, s) = (&states[q * nn..(q + 1) * nn], &states[(q + 1) * nn..(q + 2) * nn]);
            let sa = &sas[q * n..(q + 1) * n];
            let row = t * n;
            dsa.fill(zero);
            let dv = &mut gv[row..row + n];
            for i in 0..n {
                let (ri, ki, bi) = (r[i], k[i], bb[i]);
                let gr = &mut gs[i * n..(i + 1) * n];
                let (sr, pr) = (&s[i * n..(i + 1) * n], &s_prev[i * n..(i + 1) * n]);
                let (mut dr, mut dk, mut db, mut dw) = (zero, zero, zero, zero);
                for j in 0..n {
                    let gij = gr[j] + ri * dyt[j];
                    gr[j] = gij;
                    dr = dr + sr[j] * dyt[j];
                    dk = dk + gij * v[j];
                    db = db + gij * sa[j];
                    dw = dw + gij * pr[j];
                    dsa[j] = dsa[j] + gij * bi;
                    dv[j] = dv[j] + gij * ki;
                }
                g_r[row + i] = dr;
                gk[row + i] = dk;
                gb[row + i] = db;
                // d decay / d w_raw = decay · (−exp(w_raw)).
                gw[row + i] = dw * d[i] * -head.x[1][row + i].exp();
            }
            for i in 0..n {
                let (di, ai) = (d[i], a[i]);
                let (gr, pr) = (&mut gs[i * n..(i + 1) * n], &s_prev[i * n..(i + 1) * n]);
                let mut da = zero;
                for j in 0..n {
                    da = da + pr[j] * dsa[j];
                    gr[j] = di * gr[j] + ai * dsa[j];
                }
                ga[row + i] = da;
            }
        }
    }
    ([g_r, gw, gk, gv, ga, gb], gs)
}

/// The exact backward pass of WKV7 over slices, parallel over `(batch, head)`, with
/// checkpointed states (see the module docs).
///
/// Same contract as [`super::reference::backward`].
pub fn backward<F: KernelFloat>(
    dims: Dims,
    x: Inputs<'_, F>,
    dy: &[F],
    d_state: Option<&[F]>,
) -> Result<Gradients<F>, WkvError> {
    check_backward(dims, &x, dy, d_state)?;
    let Dims { t: nt, h: nh, n, .. } = dims;
    let heads = par_map(dims.b * nh, nt * n * n * 10, |job| head_backward(dims, &x, dy, d_state, job));
    let mut g = Gradients::zeros(dims);
    g.initial_state.clear();
    for (job, (rows, gs)) in heads.into_iter().enumerate() {
        let (b, h) = (job / nh, job % nh);
        let [r, w, k, v, a, bb] = &rows;
        for (src, dst) in
            [(r, &mut g.r), (w, &mut g.w_raw), (k, &mut g.k), (v, &mut g.v), (a, &mut g.a), (bb, &mut g.b)]
        {
            scatter(dims, src, b, h, dst);
        }
        g.initial_state.extend(gs);
    }
    Ok(g)
}
