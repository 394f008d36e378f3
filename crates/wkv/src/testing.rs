//! A property-test harness for WKV6 and WKV7 implementations (feature `testing`).
//!
//! Researchers who write their own WKV kernel prove it the way this crate proves its own: draw
//! cases with [`cases`] (odd `T`, `T = 1`, several heads, decays from ~1 to ~0 with `w_raw` in
//! `[-20, 5]`, non-zero initial states), then call [`check_forward`] and [`check_gradients`], which
//! compare any [`Wkv6Backend`] against the f64 [`crate::reference`] for the output, the final state
//! and the gradients of all six inputs.
//!
//! WKV7 implementations have the same in [`wkv7`].
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
//!         // A `CheckError` is a `std::error::Error`, so `?` turns it into proptest's failure.
//!         check_forward::<NdArray>(&case, 16, &dev, Tolerance::F32)?;
//!         check_gradients::<Autodiff<NdArray>>(&case, 16, &dev, Tolerance::F32)?;
//!         Ok(())
//!     })
//!     .unwrap();
//! ```

use std::ops::Range;

use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{DType, Tensor, TensorData};
use proptest::prelude::*;
use thiserror::Error;

use crate::reference::{self, Dims, Inputs};
use crate::{Wkv6Backend, Wkv6Options, wkv6_with};

pub mod wkv7;

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
    /// f16 inputs and outputs with f32 state and accumulation.
    pub const F16: Tolerance = Tolerance { abs: 1e-3, rel: 2e-3 };
    /// bf16 inputs and outputs with f32 state and accumulation.
    pub const BF16: Tolerance = Tolerance { abs: 1e-2, rel: 1e-2 };
}

/// The error an implementation under test may return from [`Wkv6Impl::run`]: any error type
/// (a `String` too) converts into it.
pub type ImplError = Box<dyn std::error::Error + Send + Sync>;

/// Why a check failed: which tensor differs from the reference, where and by how much, or that
/// the implementation under test returned an error.
///
/// `tensor` is the label of the compared values, e.g. `dk (Dims { b: 1, .. } F32) chunk 16`:
/// the tensor's name followed by the case's sizes, the dtype and the chunk length where they
/// apply.
#[derive(Debug, Error)]
pub enum CheckError {
    /// The implementation returned a different number of values than the reference.
    #[error("{tensor}: {found} values, expected {expected}")]
    Length {
        /// Which values.
        tensor: String,
        /// The reference's count.
        expected: usize,
        /// The implementation's count.
        found: usize,
    },
    /// A value is outside the tolerance (or not finite); the worst one is reported.
    #[error("{tensor}[{index}]: got {got}, expected {want} (|diff| {diff:.3e}, tolerance {tolerance:?})")]
    Value {
        /// Which values.
        tensor: String,
        /// The flat index of the worst value.
        index: usize,
        /// The implementation's value there.
        got: f64,
        /// The reference's value there.
        want: f64,
        /// `|got - want|`.
        diff: f64,
        /// The tolerance it exceeds.
        tolerance: Tolerance,
    },
    /// The implementation under test returned an error instead of outputs.
    #[error("the implementation failed on {case}: {source}")]
    Failed {
        /// The case's sizes, dtype and chunk length.
        case: String,
        /// Its error.
        source: ImplError,
    },
}

impl CheckError {
    /// The same error with ` {context}` appended to the label of what failed.
    pub fn context(self, context: &str) -> Self {
        match self {
            CheckError::Length { tensor, expected, found } => {
                CheckError::Length { tensor: format!("{tensor} {context}"), expected, found }
            }
            CheckError::Value { tensor, index, got, want, diff, tolerance } => {
                CheckError::Value { tensor: format!("{tensor} {context}"), index, got, want, diff, tolerance }
            }
            CheckError::Failed { case, source } => CheckError::Failed { case: format!("{case} {context}"), source },
        }
    }
}

/// Compares two slices; the error names the tensor, the worst index and both values.
pub fn compare(name: &str, got: &[f64], want: &[f64], tol: Tolerance) -> Result<(), CheckError> {
    if got.len() != want.len() {
        return Err(CheckError::Length { tensor: name.to_string(), expected: want.len(), found: got.len() });
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
        Some((i, _)) => Err(CheckError::Value {
            tensor: name.to_string(),
            index: i,
            got: got[i],
            want: want[i],
            diff: (got[i] - want[i]).abs(),
            tolerance: tol,
        }),
    }
}

fn tensor<B: burn::tensor::backend::Backend, const D: usize>(
    v: &[f64],
    shape: [usize; D],
    dev: &B::Device,
    dtype: DType,
) -> Tensor<B, D> {
    // The dtype is explicit: burn's per-device default is shared by NdArray<f32> and NdArray<f64>.
    Tensor::from_data(TensorData::new(v.to_vec(), shape), (dev, dtype))
}

fn values<B: burn::tensor::backend::Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f64> {
    t.cast(DType::F64).into_data().convert::<f64>().into_vec::<f64>().expect("converted to f64")
}

/// The inputs of a [`Case`] as tensors: `r, k, v, w_raw` `[B, T, H, N]`, `u` `[H, N]` and the
/// initial state `[B, H, N, N]` (zeros when the case has none).
#[derive(Clone, Debug)]
pub struct CaseTensors<B: burn::tensor::backend::Backend> {
    /// Receptance.
    pub r: Tensor<B, 4>,
    /// Key.
    pub k: Tensor<B, 4>,
    /// Value.
    pub v: Tensor<B, 4>,
    /// Decay pre-activation.
    pub w_raw: Tensor<B, 4>,
    /// Bonus.
    pub u: Tensor<B, 2>,
    /// Initial state.
    pub initial_state: Tensor<B, 4>,
}

/// `x` rounded to `dtype` (f16, bf16, f32; other dtypes leave it unchanged).
pub fn round_to(dtype: DType, x: f64) -> f64 {
    match dtype {
        DType::F32 => x as f32 as f64,
        DType::F16 => burn::tensor::f16::from_f64(x).to_f64(),
        DType::BF16 => burn::tensor::bf16::from_f64(x).to_f64(),
        _ => x,
    }
}

impl Case {
    /// The same case with every input and cotangent rounded to `dtype`, so the f64 reference
    /// sees exactly the values an implementation in `dtype` receives.
    pub fn rounded(&self, dtype: DType) -> Case {
        let round = |v: &Vec<f64>| v.iter().map(|&x| round_to(dtype, x)).collect::<Vec<_>>();
        Case {
            dims: self.dims,
            r: round(&self.r),
            k: round(&self.k),
            v: round(&self.v),
            w_raw: round(&self.w_raw),
            u: round(&self.u),
            initial_state: self.initial_state.as_ref().map(round),
            dy: round(&self.dy),
            d_state: round(&self.d_state),
        }
    }

    /// The case's inputs on `dev` in `dtype` (the state too).
    pub fn tensors<B: burn::tensor::backend::Backend>(&self, dev: &B::Device, dtype: DType) -> CaseTensors<B> {
        let Dims { b, t, h, n } = self.dims;
        let seq = [b, t, h, n];
        let zeros = vec![0.0; self.dims.state_len()];
        CaseTensors {
            r: tensor(&self.r, seq, dev, dtype),
            k: tensor(&self.k, seq, dev, dtype),
            v: tensor(&self.v, seq, dev, dtype),
            w_raw: tensor(&self.w_raw, seq, dev, dtype),
            u: tensor(&self.u, [h, n], dev, dtype),
            initial_state: tensor(self.initial_state.as_deref().unwrap_or(&zeros), [b, h, n, n], dev, dtype),
        }
    }
}

/// A case's tensors on a device plus the case as the implementation sees it.
#[derive(Clone, Debug)]
pub struct OnDevice<B: burn::tensor::backend::Backend> {
    /// The inputs.
    pub x: CaseTensors<B>,
    /// Cotangent of `y` `[B, T, H, N]` (dtype of the sequences).
    pub dy: Tensor<B, 4>,
    /// Cotangent of the final state `[B, H, N, N]` (dtype of the state).
    pub d_state: Tensor<B, 4>,
    /// The case rebuilt from the values read back from those tensors: exactly what the
    /// implementation receives, whatever rounding the conversion to the dtype did.
    pub seen: Case,
}

impl Case {
    /// Creates the inputs and cotangents on `dev` (sequences and `u` in `dtype`, the state and its
    /// cotangent in `state_dtype`) and reads them back, so the reference can run on exactly the
    /// values the implementation gets.
    pub fn on_device<B: burn::tensor::backend::Backend>(
        &self,
        dev: &B::Device,
        dtype: DType,
        state_dtype: DType,
    ) -> OnDevice<B> {
        let Dims { b, t, h, n } = self.dims;
        let seq = [b, t, h, n];
        let st = [b, h, n, n];
        let zeros = vec![0.0; self.dims.state_len()];
        let x = CaseTensors {
            r: tensor(&self.r, seq, dev, dtype),
            k: tensor(&self.k, seq, dev, dtype),
            v: tensor(&self.v, seq, dev, dtype),
            w_raw: tensor(&self.w_raw, seq, dev, dtype),
            u: tensor(&self.u, [h, n], dev, dtype),
            initial_state: tensor(self.initial_state.as_deref().unwrap_or(&zeros), st, dev, state_dtype),
        };
        let dy = tensor(&self.dy, seq, dev, dtype);
        let d_state = tensor(&self.d_state, st, dev, state_dtype);
        let seen = Case {
            dims: self.dims,
            r: values(x.r.clone()),
            k: values(x.k.clone()),
            v: values(x.v.clone()),
            w_raw: values(x.w_raw.clone()),
            u: values(x.u.clone()),
            initial_state: Some(values(x.initial_state.clone())),
            dy: values(dy.clone()),
            d_state: values(d_state.clone()),
        };
        OnDevice { x, dy, d_state, seen }
    }
}

/// Tolerances for an implementation whose inputs and outputs are in `dtype` (state and
/// accumulation in f32), against the f64 reference run on exactly the inputs it receives
/// ([`Case::on_device`]), so what remains is the implementation's own error: f64 1e-9; f32 1e-4
/// absolute + 1e-5 relative; f16 and bf16 dominated by the final rounding of each output to the
/// format (unit roundoff 2^-11 and 2^-8), as measured on the kernels of `visualrwkv-kernels`
/// (docs/gpu.md).
pub fn tolerance_for(dtype: DType) -> Tolerance {
    match dtype {
        DType::F64 => Tolerance::F64,
        DType::F16 => Tolerance::F16,
        DType::BF16 => Tolerance::BF16,
        _ => Tolerance::F32,
    }
}

/// A WKV6 implementation under test: the inputs, returning `y` `[B, T, H, N]` and the final state
/// `[B, H, N, N]`, or its own error.
///
/// Any `Fn(CaseTensors<B>) -> Result<(y, state), E>` is one, for every error type `E` that
/// converts into [`ImplError`] (every `std::error::Error`, `String`, `&str`).
pub trait Wkv6Impl<B: burn::tensor::backend::Backend> {
    /// Runs the implementation.
    fn run(&self, x: CaseTensors<B>) -> Result<(Tensor<B, 4>, Tensor<B, 4>), ImplError>;
}

impl<B, F, E> Wkv6Impl<B> for F
where
    B: burn::tensor::backend::Backend,
    F: Fn(CaseTensors<B>) -> Result<(Tensor<B, 4>, Tensor<B, 4>), E>,
    E: Into<ImplError>,
{
    fn run(&self, x: CaseTensors<B>) -> Result<(Tensor<B, 4>, Tensor<B, 4>), ImplError> {
        self(x).map_err(Into::into)
    }
}

/// This crate's op, [`wkv6_with`] with the given chunk length, as a [`Wkv6Impl`].
pub fn op<B: Wkv6Backend>(chunk_len: usize) -> impl Wkv6Impl<B> {
    move |x: CaseTensors<B>| {
        let out = wkv6_with(x.r, x.k, x.v, x.w_raw, x.u, Some(x.initial_state), Wkv6Options { chunk_len })?;
        Ok::<_, crate::WkvError>((out.y, out.state))
    }
}

/// Runs `imp` on backend `B` with inputs in `dtype` and compares `y` and the final state with the
/// f64 reference.
pub fn check_forward_impl<B: burn::tensor::backend::Backend>(
    imp: &impl Wkv6Impl<B>,
    case: &Case,
    dev: &B::Device,
    dtype: DType,
    tol: Tolerance,
) -> Result<(), CheckError> {
    let d = case.on_device::<B>(dev, dtype, dtype);
    let ctx = format!("{:?} {dtype:?}", case.dims);
    let (y, state) = imp.run(d.x).map_err(|source| CheckError::Failed { case: ctx.clone(), source })?;
    let want = d.seen.reference();
    compare(&format!("y ({ctx})"), &values(y), &want.y, tol)?;
    compare(&format!("state ({ctx})"), &values(state), &want.state, tol)
}

/// Differentiates `sum(y ⊙ dy) + sum(state ⊙ d_state)` through `imp` on the autodiff backend `B`
/// (inputs in `dtype`) and compares the gradients of `r, k, v, w_raw, u` and the initial state
/// with the reference backward pass.
pub fn check_gradients_impl<B: AutodiffBackend>(
    imp: &impl Wkv6Impl<B>,
    case: &Case,
    dev: &B::Device,
    dtype: DType,
    tol: Tolerance,
) -> Result<(), CheckError> {
    let d = case.on_device::<B>(dev, dtype, dtype);
    let n_u = case.dims.u_len();
    let x = CaseTensors {
        r: d.x.r.require_grad(),
        k: d.x.k.require_grad(),
        v: d.x.v.require_grad(),
        w_raw: d.x.w_raw.require_grad(),
        u: d.x.u.require_grad(),
        initial_state: d.x.initial_state.require_grad(),
    };
    let ctx = format!("{:?} {dtype:?}", case.dims);
    let (y, state) = imp.run(x.clone()).map_err(|source| CheckError::Failed { case: ctx.clone(), source })?;
    let loss = (y * d.dy).sum() + (state * d.d_state).sum();
    let grads = loss.backward();
    let want = d.seen.reference_gradients();
    let grad = |x: &Tensor<B, 4>| x.grad(&grads).map(values).unwrap_or_else(|| vec![0.0; x.shape().num_elements()]);
    compare(&format!("dr ({ctx})"), &grad(&x.r), &want.r, tol)?;
    compare(&format!("dk ({ctx})"), &grad(&x.k), &want.k, tol)?;
    compare(&format!("dv ({ctx})"), &grad(&x.v), &want.v, tol)?;
    compare(&format!("dw_raw ({ctx})"), &grad(&x.w_raw), &want.w_raw, tol)?;
    let du = x.u.grad(&grads).map(values).unwrap_or_else(|| vec![0.0; n_u]);
    compare(&format!("du ({ctx})"), &du, &want.u, tol)?;
    compare(&format!("d initial_state ({ctx})"), &grad(&x.initial_state), &want.initial_state, tol)
}

/// The one assertion for an implementation: output, final state and all six gradients against
/// the reference, inputs in `dtype`, with [`tolerance_for`]`(dtype)`.
pub fn check_impl<B: AutodiffBackend>(
    imp: &impl Wkv6Impl<B>,
    case: &Case,
    dev: &B::Device,
    dtype: DType,
) -> Result<(), CheckError> {
    let tol = tolerance_for(dtype);
    check_forward_impl(imp, case, dev, dtype, tol)?;
    check_gradients_impl(imp, case, dev, dtype, tol)
}

/// Runs `wkv6` on backend `B` and compares `y` and the final state with the f64 reference.
pub fn check_forward<B: Wkv6Backend>(
    case: &Case,
    chunk_len: usize,
    dev: &B::Device,
    tol: Tolerance,
) -> Result<(), CheckError> {
    check_forward_impl(&op::<B>(chunk_len), case, dev, <B::FloatElem as burn::tensor::Element>::dtype(), tol)
        .map_err(|e| e.context(&format!("chunk {chunk_len}")))
}

/// Differentiates `sum(y ⊙ dy) + sum(state ⊙ d_state)` through `wkv6` on the autodiff backend `B`
/// and compares the gradients of `r, k, v, w_raw, u` and the initial state with the reference
/// backward pass.
pub fn check_gradients<B>(case: &Case, chunk_len: usize, dev: &B::Device, tol: Tolerance) -> Result<(), CheckError>
where
    B: AutodiffBackend + Wkv6Backend,
{
    check_gradients_impl(&op::<B>(chunk_len), case, dev, <B::FloatElem as burn::tensor::Element>::dtype(), tol)
        .map_err(|e| e.context(&format!("chunk {chunk_len}")))
}

#[cfg(test)]
mod tests {
    use burn::backend::NdArray;

    use super::*;

    #[test]
    fn compare_names_the_worst_value_and_counts() {
        let tol = Tolerance { abs: 0.1, rel: 0.0 };
        assert!(compare("y", &[1.0, 2.0], &[1.05, 2.0], tol).is_ok());
        match compare("y", &[1.0, 2.5, 9.0], &[1.0, 2.0, 3.0], tol) {
            Err(CheckError::Value { tensor, index: 2, got, want, .. }) => {
                assert_eq!((tensor.as_str(), got, want), ("y", 9.0, 3.0));
            }
            other => panic!("{other:?}"),
        }
        let nan = compare("s", &[f64::NAN], &[0.0], tol).unwrap_err();
        assert!(matches!(nan, CheckError::Value { index: 0, .. }), "{nan}");
        let len = compare("s", &[0.0], &[0.0, 1.0], tol).unwrap_err().context("chunk 4");
        assert!(matches!(&len, CheckError::Length { tensor, expected: 2, found: 1 } if tensor == "s chunk 4"), "{len}");
    }

    #[test]
    fn an_implementations_error_is_kept_as_its_source() {
        let failing = |_: CaseTensors<NdArray>| Err::<(Tensor<NdArray, 4>, Tensor<NdArray, 4>), _>("out of memory");
        let case = Case::random(Dims::new(1, 2, 1, 2), 1, (-1.0, 1.0), false);
        let err = check_forward_impl(&failing, &case, &Default::default(), DType::F32, Tolerance::F32).unwrap_err();
        match &err {
            CheckError::Failed { case, source } => {
                assert!(case.contains("F32"), "{case}");
                assert_eq!(source.to_string(), "out of memory");
            }
            other => panic!("{other:?}"),
        }
        // A shape error of the op itself reaches the caller as the op's typed error.
        let bad = |x: CaseTensors<NdArray>| {
            let u = Tensor::<NdArray, 2>::zeros([3, 3], &Default::default());
            wkv6_with(x.r, x.k, x.v, x.w_raw, u, None, Wkv6Options::default()).map(|o| (o.y, o.state))
        };
        let err = check_forward_impl(&bad, &case, &Default::default(), DType::F32, Tolerance::F32).unwrap_err();
        let CheckError::Failed { source, .. } = err else { panic!("{err:?}") };
        assert!(matches!(source.downcast_ref::<crate::WkvError>(), Some(crate::WkvError::Shape { name: "u", .. })));
    }
}
