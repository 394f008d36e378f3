//! A property-test harness for WKV6 implementations (feature `testing`).
//!
//! Researchers who write their own WKV kernel prove it the way this crate proves its own: draw
//! cases with [`cases`] (odd `T`, `T = 1`, several heads, decays from ~1 to ~0 with `w_raw` in
//! `[-20, 5]`, non-zero initial states), then call [`check_forward`] and [`check_gradients`], which
//! compare any [`Wkv6Backend`] against the f64 [`crate::reference`] for the output, the final state
//! and the gradients of all six inputs.
//!
//! ```
//! use burn::backend::{Autodiff, NdArray};
//! use proptest::test_runner::{Config, TestCaseError, TestRunner};
//! use visualrwkv_wkv::testing::{CaseConfig, Tolerance, cases, check_forward, check_gradients};
//!
//! // In a test of your own: swap `NdArray` for your backend.
//! let dev = Default::default();
//! TestRunner::new(Config::with_cases(4))
//!     .run(&cases(CaseConfig::small()), |case| {
//!         check_forward::<NdArray>(&case, 16, &dev, Tolerance::F32).map_err(TestCaseError::fail)?;
//!         check_gradients::<Autodiff<NdArray>>(&case, 16, &dev, Tolerance::F32).map_err(TestCaseError::fail)
//!     })
//!     .unwrap();
//! ```

use std::ops::Range;

use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorData};
use proptest::prelude::*;

use crate::reference::{self, Dims, Inputs};
use crate::{Wkv6Backend, Wkv6Options, wkv6_with};

/// One WKV6 problem in f64: inputs plus the cotangents used for gradient checks.
#[derive(Clone, Debug)]
pub struct Case {
    /// Sizes `[B, T, H, N]`.
    pub dims: Dims,
    /// Receptance `[B, T, H, N]`.
    pub r: Vec<f64>,
    /// Key `[B, T, H, N]`.
    pub k: Vec<f64>,
    /// Value `[B, T, H, N]`.
    pub v: Vec<f64>,
    /// Decay pre-activation `[B, T, H, N]`.
    pub w_raw: Vec<f64>,
    /// Bonus `[H, N]`.
    pub u: Vec<f64>,
    /// Initial state `[B, H, N, N]`, or zeros.
    pub initial_state: Option<Vec<f64>>,
    /// Cotangent of `y` for gradient checks `[B, T, H, N]`.
    pub dy: Vec<f64>,
    /// Cotangent of the final state `[B, H, N, N]`.
    pub d_state: Vec<f64>,
}

/// A small deterministic generator (SplitMix64), so cases can also be built from a seed.
#[derive(Clone, Debug)]
pub struct SplitMix(u64);

impl SplitMix {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform value in `[lo, hi)`.
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64)
    }

    /// `len` uniform values in `[lo, hi)`.
    pub fn vec(&mut self, len: usize, lo: f64, hi: f64) -> Vec<f64> {
        (0..len).map(|_| self.uniform(lo, hi)).collect()
    }
}

impl Case {
    /// A random case: `r, k, v, u`, the state and the cotangents uniform in `[-1, 1)`, `w_raw`
    /// uniform in `w_raw`.
    pub fn random(dims: Dims, seed: u64, w_raw: (f64, f64), with_state: bool) -> Self {
        let mut g = SplitMix::new(seed);
        let seq = dims.seq_len();
        Self {
            dims,
            r: g.vec(seq, -1.0, 1.0),
            k: g.vec(seq, -1.0, 1.0),
            v: g.vec(seq, -1.0, 1.0),
            w_raw: g.vec(seq, w_raw.0, w_raw.1),
            u: g.vec(dims.u_len(), -1.0, 1.0),
            initial_state: with_state.then(|| g.vec(dims.state_len(), -1.0, 1.0)),
            dy: g.vec(seq, -1.0, 1.0),
            d_state: g.vec(dims.state_len(), -1.0, 1.0),
        }
    }

    /// The inputs as reference slices.
    pub fn inputs(&self) -> Inputs<'_, f64> {
        Inputs {
            r: &self.r,
            k: &self.k,
            v: &self.v,
            w_raw: &self.w_raw,
            u: &self.u,
            initial_state: self.initial_state.as_deref(),
        }
    }

    /// The reference output in f64.
    pub fn reference(&self) -> reference::Output<f64> {
        reference::forward(self.dims, self.inputs()).expect("a Case is consistent by construction")
    }

    /// The reference gradients in f64 for the loss `sum(y ⊙ dy) + sum(state ⊙ d_state)`.
    pub fn reference_gradients(&self) -> reference::Gradients<f64> {
        reference::backward(self.dims, self.inputs(), &self.dy, Some(&self.d_state))
            .expect("a Case is consistent by construction")
    }
}

/// The ranges [`cases`] draws from.
#[derive(Clone, Debug)]
pub struct CaseConfig {
    /// Batch sizes.
    pub batch: Range<usize>,
    /// Sequence lengths.
    pub time: Range<usize>,
    /// Head counts.
    pub heads: Range<usize>,
    /// Head sizes to pick from.
    pub head_sizes: Vec<usize>,
    /// Range of `w_raw` (the decay `exp(-exp(w_raw))`).
    pub w_raw: (f64, f64),
}

impl CaseConfig {
    /// B ∈ 1..3, T ∈ 1..200, H ∈ 1..4, N ∈ {1, 4, 16, 64}, `w_raw` ∈ [-20, 5].
    pub fn wide() -> Self {
        Self { batch: 1..3, time: 1..200, heads: 1..4, head_sizes: vec![1, 4, 16, 64], w_raw: (-20.0, 5.0) }
    }

    /// Small and fast: B ∈ 1..3, T ∈ 1..24, H ∈ 1..3, N ∈ {1, 2, 4, 8}, `w_raw` ∈ [-20, 5].
    pub fn small() -> Self {
        Self { batch: 1..3, time: 1..24, heads: 1..3, head_sizes: vec![1, 2, 4, 8], w_raw: (-20.0, 5.0) }
    }
}

/// A proptest strategy of [`Case`]s, with and without an initial state.
pub fn cases(config: CaseConfig) -> impl Strategy<Value = Case> {
    (
        config.batch,
        config.time,
        config.heads,
        proptest::sample::select(config.head_sizes),
        any::<u64>(),
        any::<bool>(),
        Just(config.w_raw),
    )
        .prop_map(|(b, t, h, n, seed, with_state, w)| Case::random(Dims::new(b, t, h, n), seed, w, with_state))
}

/// Tolerances of a comparison: `|got - want| <= abs + rel * |want|`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerance {
    /// Absolute part.
    pub abs: f64,
    /// Relative part.
    pub rel: f64,
}

impl Tolerance {
    /// f32 implementations: 1e-4 absolute (plus 1e-5 relative for large accumulated states).
    pub const F32: Tolerance = Tolerance { abs: 1e-4, rel: 1e-5 };
    /// f64 implementations.
    pub const F64: Tolerance = Tolerance { abs: 1e-9, rel: 1e-9 };
}

/// Compares two slices; the error names the tensor, the worst index and both values.
pub fn compare(name: &str, got: &[f64], want: &[f64], tol: Tolerance) -> Result<(), String> {
    if got.len() != want.len() {
        return Err(format!("{name}: {} values, expected {}", got.len(), want.len()));
    }
    let mut worst: Option<(usize, f64)> = None;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let excess = (g - w).abs() - (tol.abs + tol.rel * w.abs());
        if !g.is_finite() || excess > 0.0 {
            let excess = if g.is_finite() { excess } else { f64::INFINITY };
            if worst.is_none_or(|(_, e)| excess > e) {
                worst = Some((i, excess));
            }
        }
    }
    match worst {
        None => Ok(()),
        Some((i, _)) => Err(format!(
            "{name}[{i}]: got {}, expected {} (|diff| {:.3e}, tolerance {:?})",
            got[i],
            want[i],
            (got[i] - want[i]).abs(),
            tol
        )),
    }
}

fn tensor<B: burn::tensor::backend::Backend, const D: usize>(
    v: &[f64],
    shape: [usize; D],
    dev: &B::Device,
) -> Tensor<B, D> {
    // The dtype is explicit: burn's per-device default is shared by NdArray<f32> and NdArray<f64>.
    let dtype = <B::FloatElem as burn::tensor::Element>::dtype();
    Tensor::from_data(TensorData::new(v.to_vec(), shape).convert::<B::FloatElem>(), (dev, dtype))
}

fn values<B: burn::tensor::backend::Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f64> {
    t.into_data().convert::<f64>().into_vec::<f64>().expect("converted to f64")
}

type Inputs4<B> = (Tensor<B, 4>, Tensor<B, 4>, Tensor<B, 4>, Tensor<B, 4>, Tensor<B, 2>, Option<Tensor<B, 4>>);

fn case_tensors<B: burn::tensor::backend::Backend>(case: &Case, dev: &B::Device) -> Inputs4<B> {
    let Dims { b, t, h, n } = case.dims;
    let seq = [b, t, h, n];
    (
        tensor(&case.r, seq, dev),
        tensor(&case.k, seq, dev),
        tensor(&case.v, seq, dev),
        tensor(&case.w_raw, seq, dev),
        tensor(&case.u, [h, n], dev),
        case.initial_state.as_ref().map(|s| tensor(s, [b, h, n, n], dev)),
    )
}

/// Runs `wkv6` on backend `B` and compares `y` and the final state with the f64 reference.
pub fn check_forward<B: Wkv6Backend>(
    case: &Case,
    chunk_len: usize,
    dev: &B::Device,
    tol: Tolerance,
) -> Result<(), String> {
    let (r, k, v, w, u, s) = case_tensors::<B>(case, dev);
    let out = wkv6_with(r, k, v, w, u, s, Wkv6Options { chunk_len }).map_err(|e| e.to_string())?;
    let want = case.reference();
    let ctx = format!("{:?} chunk {chunk_len}", case.dims);
    compare(&format!("y ({ctx})"), &values(out.y), &want.y, tol)?;
    compare(&format!("state ({ctx})"), &values(out.state), &want.state, tol)
}

/// Differentiates `sum(y ⊙ dy) + sum(state ⊙ d_state)` through `wkv6` on the autodiff backend `B`
/// and compares the gradients of `r, k, v, w_raw, u` and the initial state with the reference
/// backward pass.
pub fn check_gradients<B>(case: &Case, chunk_len: usize, dev: &B::Device, tol: Tolerance) -> Result<(), String>
where
    B: AutodiffBackend + Wkv6Backend,
{
    let Dims { b, t, h, n } = case.dims;
    let (r, k, v, w, u, _) = case_tensors::<B>(case, dev);
    let zeros = vec![0.0; case.dims.state_len()];
    let s0 = tensor::<B, 4>(case.initial_state.as_deref().unwrap_or(&zeros), [b, h, n, n], dev);
    let [r, k, v, w, s0] = [r, k, v, w, s0].map(|x| x.require_grad());
    let u = u.require_grad();
    let out =
        wkv6_with(r.clone(), k.clone(), v.clone(), w.clone(), u.clone(), Some(s0.clone()), Wkv6Options { chunk_len })
            .map_err(|e| e.to_string())?;
    let dy = tensor::<B, 4>(&case.dy, [b, t, h, n], dev);
    let ds = tensor::<B, 4>(&case.d_state, [b, h, n, n], dev);
    let loss = (out.y * dy).sum() + (out.state * ds).sum();
    let grads = loss.backward();
    let want = case.reference_gradients();
    let ctx = format!("{:?} chunk {chunk_len}", case.dims);
    let grad = |x: &Tensor<B, 4>| x.grad(&grads).map(values).unwrap_or_else(|| vec![0.0; x.shape().num_elements()]);
    compare(&format!("dr ({ctx})"), &grad(&r), &want.r, tol)?;
    compare(&format!("dk ({ctx})"), &grad(&k), &want.k, tol)?;
    compare(&format!("dv ({ctx})"), &grad(&v), &want.v, tol)?;
    compare(&format!("dw_raw ({ctx})"), &grad(&w), &want.w_raw, tol)?;
    let du = u.grad(&grads).map(values).unwrap_or_else(|| vec![0.0; h * n]);
    compare(&format!("du ({ctx})"), &du, &want.u, tol)?;
    compare(&format!("d initial_state ({ctx})"), &grad(&s0), &want.initial_state, tol)
}
