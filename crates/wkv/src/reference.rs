//! The plain WKV6 recurrence over slices: the oracle every fast path is tested against.
//!
//! This is the recurrence of docs/model.md §1.4, written as directly as possible, in the fixture layout.
//! It is generic over the float type ([`f32`] and [`f64`]), so the same code gives the f32
//! reference and the f64 oracle used for finite differences.
//!
//! # Shapes
//!
//! | tensor | shape | layout |
//! |---|---|---|
//! | `r`, `k`, `v`, `w_raw`, `y` | `[B, T, H, N]` | row-major, i.e. `[B, T, C]` with head-major channels |
//! | `u` | `[H, N]` | bonus (`time_faaaa`), used as is |
//! | state | `[B, H, N, N]` | `[batch, head, key i, value j]` |
//!
//! The per-step decay is `exp(-exp(w_raw))`:
//!
//! ```text
//! y[t, j] = sum_i r[t, i] * (S[i, j] + u[i] * k[t, i] * v[t, j])
//! S[i, j] = exp(-exp(w_raw[t, i])) * S[i, j] + k[t, i] * v[t, j]
//! ```

use num_traits::Float;

use crate::WkvError;

/// Sizes of one WKV6 problem: batch `b`, time `t`, heads `h`, head size `n`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Dims {
    /// Batch size B.
    pub b: usize,
    /// Sequence length T.
    pub t: usize,
    /// Number of heads H.
    pub h: usize,
    /// Head size N (key and value channels per head).
    pub n: usize,
}

impl Dims {
    /// Creates the sizes `[B, T, H, N]`.
    pub fn new(b: usize, t: usize, h: usize, n: usize) -> Self {
        Self { b, t, h, n }
    }

    /// Elements of one `[B, T, H, N]` sequence tensor.
    pub fn seq_len(&self) -> usize {
        self.b * self.t * self.h * self.n
    }

    /// Elements of the `[H, N]` bonus.
    pub fn u_len(&self) -> usize {
        self.h * self.n
    }

    /// Elements of one `[B, H, N, N]` state.
    pub fn state_len(&self) -> usize {
        self.b * self.h * self.n * self.n
    }

    /// Flat index of `(b, t, h, i)` in a `[B, T, H, N]` tensor.
    #[inline]
    pub fn seq_index(&self, b: usize, t: usize, h: usize, i: usize) -> usize {
        ((b * self.t + t) * self.h + h) * self.n + i
    }

    /// Flat offset of the `(b, h)` matrix in a `[B, H, N, N]` state.
    #[inline]
    pub fn state_offset(&self, b: usize, h: usize) -> usize {
        (b * self.h + h) * self.n * self.n
    }

    fn check(&self, name: &'static str, len: usize, expected: usize, shape: Vec<usize>) -> Result<(), WkvError> {
        if len == expected { Ok(()) } else { Err(WkvError::Length { name, expected: shape, found: len }) }
    }

    /// [`WkvError::Empty`] when a size is zero.
    pub(crate) fn check_nonempty(&self) -> Result<(), WkvError> {
        let (b, t, h, n) = (self.b, self.t, self.h, self.n);
        if b == 0 || t == 0 || h == 0 || n == 0 { Err(WkvError::Empty { dims: vec![b, t, h, n] }) } else { Ok(()) }
    }

    /// [`WkvError::Length`] unless `len` fits a `[B, T, H, N]` sequence tensor.
    pub(crate) fn check_seq(&self, name: &'static str, len: usize) -> Result<(), WkvError> {
        self.check(name, len, self.seq_len(), vec![self.b, self.t, self.h, self.n])
    }

    /// [`WkvError::Length`] unless `len` fits a `[B, H, N, N]` state.
    pub(crate) fn check_state(&self, name: &'static str, len: usize) -> Result<(), WkvError> {
        self.check(name, len, self.state_len(), vec![self.b, self.h, self.n, self.n])
    }

    /// Checks the lengths of the inputs of a forward pass.
    pub(crate) fn check_inputs<F>(&self, x: &Inputs<'_, F>) -> Result<(), WkvError> {
        self.check_nonempty()?;
        self.check_seq("r", x.r.len())?;
        self.check_seq("k", x.k.len())?;
        self.check_seq("v", x.v.len())?;
        self.check_seq("w_raw", x.w_raw.len())?;
        self.check("u", x.u.len(), self.u_len(), vec![self.h, self.n])?;
        if let Some(s) = x.initial_state {
            self.check_state("initial_state", s.len())?;
        }
        Ok(())
    }
}

/// Borrowed inputs of the reference recurrence, all flat row-major slices (see the module docs).
#[derive(Clone, Copy, Debug)]
pub struct Inputs<'a, F> {
    /// Receptance `[B, T, H, N]`.
    pub r: &'a [F],
    /// Key `[B, T, H, N]`.
    pub k: &'a [F],
    /// Value `[B, T, H, N]`.
    pub v: &'a [F],
    /// Decay pre-activation `[B, T, H, N]`; the decay is `exp(-exp(w_raw))`.
    pub w_raw: &'a [F],
    /// Bonus `[H, N]`.
    pub u: &'a [F],
    /// Initial state `[B, H, N, N]`; `None` means zeros.
    pub initial_state: Option<&'a [F]>,
}

/// Output of the reference forward pass.
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
    /// d/dk `[B, T, H, N]`.
    pub k: Vec<F>,
    /// d/dv `[B, T, H, N]`.
    pub v: Vec<F>,
    /// d/dw_raw `[B, T, H, N]`.
    pub w_raw: Vec<F>,
    /// d/du `[H, N]` (summed over the batch).
    pub u: Vec<F>,
    /// d/d(initial state) `[B, H, N, N]`.
    pub initial_state: Vec<F>,
}

impl<F: Float> Gradients<F> {
    /// All-zero gradients for a problem of size `dims`.
    pub fn zeros(dims: Dims) -> Self {
        let zero = F::zero();
        Self {
            r: vec![zero; dims.seq_len()],
            k: vec![zero; dims.seq_len()],
            v: vec![zero; dims.seq_len()],
            w_raw: vec![zero; dims.seq_len()],
            u: vec![zero; dims.u_len()],
            initial_state: vec![zero; dims.state_len()],
        }
    }
}

impl Dims {
    /// Checks the inputs and the cotangents of a backward pass: `dy` `[B, T, H, N]` and, when
    /// given, `d_state` `[B, H, N, N]`.
    pub(crate) fn check_backward<F>(&self, x: &Inputs<'_, F>, dy: &[F], d_state: Option<&[F]>) -> Result<(), WkvError> {
        self.check_inputs(x)?;
        self.check_seq("dy", dy.len())?;
        if let Some(ds) = d_state {
            self.check_state("d_state", ds.len())?;
        }
        Ok(())
    }
}

/// The decay `exp(-exp(w_raw))` of one step.
#[inline]
pub fn decay<F: Float>(w_raw: F) -> F {
    (-w_raw.exp()).exp()
}

/// Runs the WKV6 recurrence step by step and returns the output and the final state.
///
/// Errors if a slice length does not match `dims` or a size is zero.
pub fn forward<F: Float>(dims: Dims, x: Inputs<'_, F>) -> Result<Output<F>, WkvError> {
    dims.check_inputs(&x)?;
    let Dims { b: nb, t: nt, h: nh, n } = dims;
    let mut y = vec![F::zero(); dims.seq_len()];
    let mut state = match x.initial_state {
        Some(s) => s.to_vec(),
        None => vec![F::zero(); dims.state_len()],
    };
    for b in 0..nb {
        for h in 0..nh {
            let s = &mut state[dims.state_offset(b, h)..][..n * n];
            let u = &x.u[h * n..][..n];
            for t in 0..nt {
                let o = dims.seq_index(b, t, h, 0);
                let (r, k, v, w) = (&x.r[o..o + n], &x.k[o..o + n], &x.v[o..o + n], &x.w_raw[o..o + n]);
                step_head(r, k, v, w, u, s, &mut y[o..o + n]);
            }
        }
    }
    Ok(Output { y, state })
}

/// The exact backward pass of [`forward`], written from the math.
///
/// `dy` is the gradient of the loss with respect to `y` (`[B, T, H, N]`), `d_state` the gradient
/// with respect to the final state (`[B, H, N, N]`, `None` = zeros). Returns the gradient of every
/// input, including `u` (summed over the batch) and the initial state.
///
/// The pass keeps every intermediate state (`T·N²` values per batch row and head), which is what an
/// oracle should do: no recomputation tricks that could hide an error.
pub fn backward<F: Float>(
    dims: Dims,
    x: Inputs<'_, F>,
    dy: &[F],
    d_state: Option<&[F]>,
) -> Result<Gradients<F>, WkvError> {
    dims.check_backward(&x, dy, d_state)?;
    let Dims { b: nb, t: nt, h: nh, n } = dims;
    let zero = F::zero();
    let mut g = Gradients::zeros(dims);
    let nn = n * n;
    // states[t] = S_{t-1}, the state before step t.
    let mut states = vec![zero; nt * nn];
    let mut ds = vec![zero; nn];
    for b in 0..nb {
        for h in 0..nh {
            let off = dims.state_offset(b, h);
            let u = &x.u[h * n..][..n];
            // Forward sweep, keeping the state before each step.
            let mut s: Vec<F> = match x.initial_state {
                Some(s0) => s0[off..off + nn].to_vec(),
                None => vec![zero; nn],
            };
            for t in 0..nt {
                states[t * nn..(t + 1) * nn].copy_from_slice(&s);
                let o = dims.seq_index(b, t, h, 0);
                for i in 0..n {
                    let (ki, wi) = (x.k[o + i], decay(x.w_raw[o + i]));
                    for j in 0..n {
                        s[i * n + j] = wi * s[i * n + j] + ki * x.v[o + j];
                    }
                }
            }
            // Reverse sweep: ds holds dL/dS_t.
            match d_state {
                Some(d) => ds.copy_from_slice(&d[off..off + nn]),
                None => ds.iter_mut().for_each(|d| *d = zero),
            }
            for t in (0..nt).rev() {
                let o = dims.seq_index(b, t, h, 0);
                let (r, k, v, wr) = (&x.r[o..o + n], &x.k[o..o + n], &x.v[o..o + n], &x.w_raw[o..o + n]);
                let dyt = &dy[o..o + n];
                let sp = &states[t * nn..(t + 1) * nn];
                let dyv = dyt.iter().zip(v).fold(zero, |a, (&d, &vv)| a + d * vv);
                for i in 0..n {
                    let (ri, ki, ui) = (r[i], k[i], u[i]);
                    let wi = decay(wr[i]);
                    let mut dr = zero;
                    let mut dk_state = zero;
                    let mut dw = zero;
                    for j in 0..n {
                        let sij = sp[i * n + j];
                        let dsij = ds[i * n + j];
                        dr = dr + dyt[j] * (sij + ui * ki * v[j]);
                        dk_state = dk_state + dsij * v[j];
                        dw = dw + dsij * sij;
                    }
                    g.r[o + i] = dr;
                    g.k[o + i] = ri * ui * dyv + dk_state;
                    g.u[h * n + i] = g.u[h * n + i] + ri * ki * dyv;
                    // d decay / d w_raw = decay * (-exp(w_raw)).
                    g.w_raw[o + i] = dw * wi * (-wr[i].exp());
                }
                let rukv = (0..n).fold(zero, |a, i| a + r[i] * u[i] * k[i]);
                for j in 0..n {
                    let mut dv = rukv * dyt[j];
                    for i in 0..n {
                        dv = dv + ds[i * n + j] * k[i];
                    }
                    g.v[o + j] = dv;
                }
                // dL/dS_{t-1} = w * dS_t + r ⊗ dy.
                for i in 0..n {
                    let wi = decay(wr[i]);
                    for j in 0..n {
                        ds[i * n + j] = wi * ds[i * n + j] + r[i] * dyt[j];
                    }
                }
            }
            g.initial_state[off..off + nn].copy_from_slice(&ds);
        }
    }
    Ok(g)
}

/// One decoding step of the recurrence for a single `(batch, head)`: reads `r, k, v, w_raw, u`
/// (each `[N]`), updates `state` (`[N, N]`, key-major) in place and writes `y` (`[N]`).
///
/// This is the inner loop of [`forward`], exposed for fast single-token paths and for tests.
pub fn step_head<F: Float>(r: &[F], k: &[F], v: &[F], w_raw: &[F], u: &[F], state: &mut [F], y: &mut [F]) {
    let n = r.len();
    y.iter_mut().for_each(|y| *y = F::zero());
    for i in 0..n {
        let (ri, ki, wi) = (r[i], k[i], decay(w_raw[i]));
        let rui = ri * u[i] * ki;
        let row = &mut state[i * n..(i + 1) * n];
        for j in 0..n {
            y[j] = y[j] + ri * row[j] + rui * v[j];
            row[j] = wi * row[j] + ki * v[j];
        }
    }
}
