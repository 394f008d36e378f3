//! The plain WKV7 recurrence over slices, with its exact backward pass: the oracle every fast
//! WKV7 path is tested against.
//!
//! WKV7 (RWKV-7, "Goose") is the generalised delta rule: each step decays the state per key
//! channel, removes from it what the vector `a` reads out of it (scaled per key channel by `b`)
//! and writes the key–value outer product; the output reads the **updated** state with `r`.
//! In the model, `a = −κ̂` (the normalised removal key) and `b = κ̂·α` (α the in-context learning
//! rate), but the op takes any `a` and `b`.
//!
//! # Shapes
//!
//! | tensor | shape | layout |
//! |---|---|---|
//! | `r`, `w_raw`, `k`, `v`, `a`, `b`, `y` | `[B, T, H, N]` | row-major, i.e. `[B, T, C]` with head-major channels |
//! | state | `[B, H, N, N]` | `[batch, head, key i, value j]` (as WKV6) |
//!
//! ```text
//! sa[j]   = sum_i a[t, i] * S[i, j]
//! S[i, j] = exp(-exp(w_raw[t, i])) * S[i, j] + b[t, i] * sa[j] + k[t, i] * v[t, j]
//! y[t, j] = sum_i r[t, i] * S[i, j]          (S after the update)
//! ```
//!
//! The official kernels store the transpose (`[value, key]`); the two are the same numbers.

use num_traits::Float;

use crate::WkvError;
pub use crate::reference::{Dims, decay};

/// Borrowed inputs of the WKV7 recurrence, all flat row-major slices (see the module docs).
#[derive(Clone, Copy, Debug)]
pub struct Inputs<'a, F> {
    /// Receptance `[B, T, H, N]`.
    pub r: &'a [F],
    /// Decay pre-activation `[B, T, H, N]`; the decay is `exp(-exp(w_raw))`.
    pub w_raw: &'a [F],
    /// Key `[B, T, H, N]`.
    pub k: &'a [F],
    /// Value `[B, T, H, N]`.
    pub v: &'a [F],
    /// Read-out vector of the removal term `[B, T, H, N]` (`−κ̂` in the model).
    pub a: &'a [F],
    /// Write vector of the removal term `[B, T, H, N]` (`κ̂·α` in the model).
    pub b: &'a [F],
    /// Initial state `[B, H, N, N]`; `None` means zeros.
    pub initial_state: Option<&'a [F]>,
}

impl<'a, F> Inputs<'a, F> {
    /// The six sequence inputs with their names, in the order `r, w_raw, k, v, a, b`.
    pub fn sequences(&self) -> [(&'static str, &'a [F]); 6] {
        [("r", self.r), ("w_raw", self.w_raw), ("k", self.k), ("v", self.v), ("a", self.a), ("b", self.b)]
    }
}

/// Output of a forward pass: `y` `[B, T, H, N]` and the final state `[B, H, N, N]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Output<F> {
    /// `y` `[B, T, H, N]`.
    pub y: Vec<F>,
    /// Final state `[B, H, N, N]`.
    pub state: Vec<F>,
}

/// Gradients of a scalar loss with respect to every input of the recurrence.
#[derive(Clone, Debug, PartialEq)]
pub struct Gradients<F> {
    /// d/dr `[B, T, H, N]`.
    pub r: Vec<F>,
    /// d/dw_raw `[B, T, H, N]`.
    pub w_raw: Vec<F>,
    /// d/dk `[B, T, H, N]`.
    pub k: Vec<F>,
    /// d/dv `[B, T, H, N]`.
    pub v: Vec<F>,
    /// d/da `[B, T, H, N]`.
    pub a: Vec<F>,
    /// d/db `[B, T, H, N]`.
    pub b: Vec<F>,
    /// d/d(initial state) `[B, H, N, N]`.
    pub initial_state: Vec<F>,
}

impl<F: Float> Gradients<F> {
    /// All-zero gradients for a problem of size `dims`.
    pub fn zeros(dims: Dims) -> Self {
        let seq = || vec![F::zero(); dims.seq_len()];
        Self {
            r: seq(),
            w_raw: seq(),
            k: seq(),
            v: seq(),
            a: seq(),
            b: seq(),
            initial_state: vec![F::zero(); dims.state_len()],
        }
    }
}

/// Checks the sizes and slice lengths of a forward pass.
pub(crate) fn check_inputs<F>(dims: Dims, x: &Inputs<'_, F>) -> Result<(), WkvError> {
    dims.check_nonempty()?;
    for (name, s) in x.sequences() {
        dims.check_seq(name, s.len())?;
    }
    if let Some(s) = x.initial_state {
        dims.check_state("initial_state", s.len())?;
    }
    Ok(())
}

/// Checks a backward pass: the inputs, `dy` `[B, T, H, N]` and `d_state` `[B, H, N, N]`.
pub(crate) fn check_backward<F>(
    dims: Dims,
    x: &Inputs<'_, F>,
    dy: &[F],
    d_state: Option<&[F]>,
) -> Result<(), WkvError> {
    check_inputs(dims, x)?;
    dims.check_seq("dy", dy.len())?;
    if let Some(ds) = d_state {
        dims.check_state("d_state", ds.len())?;
    }
    Ok(())
}

/// One step of the recurrence for a single `(batch, head)`: reads `r, w_raw, k, v, a, b` (each
/// `[N]`), updates `state` (`[N, N]`, key-major) in place and writes `y` (`[N]`). `sa` is scratch
/// of length `N` that receives `aᵀS` (the state before the step, read out by `a`).
pub fn step_head<F: Float>(x: [&[F]; 6], state: &mut [F], sa: &mut [F], y: &mut [F]) {
    let [r, w_raw, k, v, a, b] = x;
    let n = r.len();
    sa.iter_mut().for_each(|s| *s = F::zero());
    for i in 0..n {
        for j in 0..n {
            sa[j] = sa[j] + a[i] * state[i * n + j];
        }
    }
    y.iter_mut().for_each(|y| *y = F::zero());
    for i in 0..n {
        let wi = decay(w_raw[i]);
        for j in 0..n {
            let s = wi * state[i * n + j] + b[i] * sa[j] + k[i] * v[j];
            state[i * n + j] = s;
            y[j] = y[j] + r[i] * s;
        }
    }
}

/// The six `[N]` inputs of step `t` of head `(b, h)`.
fn step_inputs<'a, F>(dims: Dims, x: &Inputs<'a, F>, b: usize, t: usize, h: usize) -> [&'a [F]; 6] {
    let o = dims.seq_index(b, t, h, 0);
    x.sequences().map(|(_, s)| &s[o..o + dims.n])
}

/// Runs the WKV7 recurrence step by step and returns the output and the final state.
///
/// Errors if a slice length does not match `dims` or a size is zero.
pub fn forward<F: Float>(dims: Dims, x: Inputs<'_, F>) -> Result<Output<F>, WkvError> {
    check_inputs(dims, &x)?;
    let Dims { b: nb, t: nt, h: nh, n } = dims;
    let mut y = vec![F::zero(); dims.seq_len()];
    let mut state = x.initial_state.map_or_else(|| vec![F::zero(); dims.state_len()], <[F]>::to_vec);
    let mut sa = vec![F::zero(); n];
    for b in 0..nb {
        for h in 0..nh {
            let s = &mut state[dims.state_offset(b, h)..][..n * n];
            for t in 0..nt {
                let o = dims.seq_index(b, t, h, 0);
                step_head(step_inputs(dims, &x, b, t, h), s, &mut sa, &mut y[o..o + n]);
            }
        }
    }
    Ok(Output { y, state })
}

/// The exact backward pass of [`forward`], written from the math.
///
/// `dy` is the gradient of the loss with respect to `y` (`[B, T, H, N]`), `d_state` with respect
/// to the final state (`[B, H, N, N]`, `None` = zeros). The pass keeps every intermediate state
/// (`T·N²` values per head): no recomputation that could hide an error.
///
/// With `S⁻` the state before step t, `D = exp(-exp(w_raw))` and `G = dL/dS` after it:
///
/// ```text
/// G      += r ⊗ dy                     (y reads the updated state)
/// dr[i]   = sum_j S[i, j] dy[j]
/// dk[i]   = sum_j G[i, j] v[j]          dv[j] = sum_i G[i, j] k[i]
/// db[i]   = sum_j G[i, j] sa[j]         dsa[j] = sum_i G[i, j] b[i]
/// da[i]   = sum_j S⁻[i, j] dsa[j]
/// dw[i]   = sum_j G[i, j] S⁻[i, j] · D[i] · (-exp(w_raw[i]))
/// dL/dS⁻  = D[i] G[i, j] + a[i] dsa[j]
/// ```
pub fn backward<F: Float>(
    dims: Dims,
    x: Inputs<'_, F>,
    dy: &[F],
    d_state: Option<&[F]>,
) -> Result<Gradients<F>, WkvError> {
    check_backward(dims, &x, dy, d_state)?;
    let Dims { b: nb, t: nt, h: nh, n } = dims;
    let zero = F::zero();
    let nn = n * n;
    let mut g = Gradients::zeros(dims);
    // states[t] = the state before step t; states[nt] = the final state.
    let mut states = vec![zero; (nt + 1) * nn];
    let mut sas = vec![zero; nt * n];
    let mut y = vec![zero; n];
    let mut gs = vec![zero; nn];
    let mut dsa = vec![zero; n];
    for b in 0..nb {
        for h in 0..nh {
            let off = dims.state_offset(b, h);
            match x.initial_state {
                Some(s0) => states[..nn].copy_from_slice(&s0[off..off + nn]),
                None => states[..nn].iter_mut().for_each(|s| *s = zero),
            }
            for t in 0..nt {
                let (before, after) = states.split_at_mut((t + 1) * nn);
                after[..nn].copy_from_slice(&before[t * nn..]);
                step_head(step_inputs(dims, &x, b, t, h), &mut after[..nn], &mut sas[t * n..(t + 1) * n], &mut y);
            }
            match d_state {
                Some(d) => gs.copy_from_slice(&d[off..off + nn]),
                None => gs.iter_mut().for_each(|d| *d = zero),
            }
            for t in (0..nt).rev() {
                let o = dims.seq_index(b, t, h, 0);
                let [r, w_raw, k, v, a, bb] = step_inputs(dims, &x, b, t, h);
                let dyt = &dy[o..o + n];
                let (s_prev, s) = (&states[t * nn..(t + 1) * nn], &states[(t + 1) * nn..(t + 2) * nn]);
                let sa = &sas[t * n..(t + 1) * n];
                for i in 0..n {
                    for j in 0..n {
                        gs[i * n + j] = gs[i * n + j] + r[i] * dyt[j];
                    }
                }
                dsa.iter_mut().for_each(|d| *d = zero);
                for i in 0..n {
                    let (mut dr, mut dk, mut db, mut dw) = (zero, zero, zero, zero);
                    for j in 0..n {
                        let gij = gs[i * n + j];
                        dr = dr + s[i * n + j] * dyt[j];
                        dk = dk + gij * v[j];
                        db = db + gij * sa[j];
                        dw = dw + gij * s_prev[i * n + j];
                        dsa[j] = dsa[j] + gij * bb[i];
                    }
                    g.r[o + i] = dr;
                    g.k[o + i] = dk;
                    g.b[o + i] = db;
                    g.w_raw[o + i] = dw * decay(w_raw[i]) * (-w_raw[i].exp());
                }
                for j in 0..n {
                    g.v[o + j] = (0..n).fold(zero, |acc, i| acc + gs[i * n + j] * k[i]);
                }
                for i in 0..n {
                    g.a[o + i] = (0..n).fold(zero, |acc, j| acc + s_prev[i * n + j] * dsa[j]);
                    let wi = decay(w_raw[i]);
                    for j in 0..n {
                        gs[i * n + j] = wi * gs[i * n + j] + a[i] * dsa[j];
                    }
                }
            }
            g.initial_state[off..off + nn].copy_from_slice(&gs);
        }
    }
    Ok(g)
}
