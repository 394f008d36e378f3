//! The property-test harness for WKV7 implementations: random problems in f64 in the form the
//! model produces, on any device in any dtype, and checks of the burn op's forward and gradients
//! against [`crate::wkv7::reference`].
//!
//! ```
//! use burn::backend::{Autodiff, NdArray};
//! use burn::tensor::DType;
//! use visualrwkv_wkv::reference::Dims;
//! use visualrwkv_wkv::testing::Tolerance;
//! use visualrwkv_wkv::testing::wkv7::{Case, check_op, check_op_gradients};
//!
//! let case = Case::random(Dims::new(1, 9, 2, 4), 7, (-20.0, 5.0));
//! let dev = Default::default();
//! check_op::<NdArray>(&case, &dev, DType::F32, DType::F32, Tolerance::F32).unwrap();
//! check_op_gradients::<Autodiff<NdArray>>(&case, &dev, DType::F32, Tolerance { abs: 5e-4, rel: 1e-3 }).unwrap();
//! ```
//!
//! # Shapes
//!
//! `x` = `[r, w_raw, k, v, a, b]`, each `[B, T, H, N]`; `state`, `d_state` `[B, H, N, N]`;
//! `dy` `[B, T, H, N]`.

use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{DType, Tensor};
use proptest::prelude::*;

use super::{CheckError, SplitMix, Tolerance, compare, round_to, tensor, values};
use crate::reference::Dims;
use crate::wkv7::reference::{self, Inputs};
use crate::wkv7::{Wkv7Backend, wkv7};

/// Names of the six sequence inputs, in the order of [`Case::x`].
pub const NAMES: [&str; 6] = ["r", "w_raw", "k", "v", "a", "b"];

/// One WKV7 problem in f64: inputs, initial state and the cotangents of gradient checks.
#[derive(Clone, Debug)]
pub struct Case {
    /// Sizes `[B, T, H, N]`.
    pub dims: Dims,
    /// `r, w_raw, k, v, a, b`, each `[B, T, H, N]`.
    pub x: [Vec<f64>; 6],
    /// Initial state `[B, H, N, N]`.
    pub state: Vec<f64>,
    /// Cotangent of `y` `[B, T, H, N]`.
    pub dy: Vec<f64>,
    /// Cotangent of the final state `[B, H, N, N]`.
    pub d_state: Vec<f64>,
}

impl Case {
    /// A random problem: `r, k, v` in `[-1, 1)`, `w_raw` in the given range, the removal vectors
    /// in the model's form (`a = −κ̂`, `b = κ̂·α` with κ̂ a unit vector per `(b, t, h)` and
    /// α ∈ [0, 1), for which the state stays bounded), a random initial state and cotangents.
    pub fn random(dims: Dims, seed: u64, w_raw: (f64, f64)) -> Self {
        let mut g = SplitMix::new(seed);
        let seq = dims.seq_len();
        let (r, w, k, v) =
            (g.vec(seq, -1.0, 1.0), g.vec(seq, w_raw.0, w_raw.1), g.vec(seq, -1.0, 1.0), g.vec(seq, -1.0, 1.0));
        let mut a = g.vec(seq, -1.0, 1.0);
        let alpha = g.vec(seq, 0.0, 1.0);
        for head in a.chunks_mut(dims.n) {
            let norm = head.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-12);
            head.iter_mut().for_each(|x| *x /= -norm);
        }
        let b = a.iter().zip(&alpha).map(|(a, al)| -a * al).collect();
        Self {
            dims,
            x: [r, w, k, v, a, b],
            state: g.vec(dims.state_len(), -1.0, 1.0),
            dy: g.vec(seq, -1.0, 1.0),
            d_state: g.vec(dims.state_len(), -1.0, 1.0),
        }
    }

    /// The reference's view of inputs `x` and initial state `state`.
    pub fn inputs<'a, F>(x: &'a [Vec<F>; 6], state: &'a [F]) -> Inputs<'a, F> {
        Inputs { r: &x[0], w_raw: &x[1], k: &x[2], v: &x[3], a: &x[4], b: &x[5], initial_state: Some(state) }
    }

    /// Inputs and state rounded to f32.
    pub fn f32(&self) -> ([Vec<f32>; 6], Vec<f32>) {
        let f = |v: &Vec<f64>| v.iter().map(|&x| x as f32).collect::<Vec<_>>();
        (self.x.each_ref().map(f), f(&self.state))
    }

    /// The same case with the sequences and `dy` rounded to `dtype` and the state and `d_state`
    /// to `state_dtype`: exactly the values an implementation in those dtypes receives.
    pub fn rounded(&self, dtype: DType, state_dtype: DType) -> Case {
        let round = |d: DType| move |v: &Vec<f64>| v.iter().map(|&x| round_to(d, x)).collect::<Vec<_>>();
        Case {
            dims: self.dims,
            x: self.x.each_ref().map(round(dtype)),
            state: round(state_dtype)(&self.state),
            dy: round(dtype)(&self.dy),
            d_state: round(state_dtype)(&self.d_state),
        }
    }

    /// The f64 reference output and final state.
    pub fn reference(&self) -> reference::Output<f64> {
        reference::forward(self.dims, Self::inputs(&self.x, &self.state)).expect("a case's lengths match its dims")
    }

    /// The f64 reference gradients for the case's cotangents.
    pub fn reference_gradients(&self) -> reference::Gradients<f64> {
        reference::backward(self.dims, Self::inputs(&self.x, &self.state), &self.dy, Some(&self.d_state))
            .expect("a case's lengths match its dims")
    }

    /// The inputs on `dev`: the sequences in `dtype`, the initial state in `state_dtype`.
    pub fn tensors<B: Backend>(
        &self,
        dev: &B::Device,
        dtype: DType,
        state_dtype: DType,
    ) -> ([Tensor<B, 4>; 6], Tensor<B, 4>) {
        let Dims { b, t, h, n } = self.dims;
        (
            self.x.each_ref().map(|v| tensor(v, [b, t, h, n], dev, dtype)),
            tensor(&self.state, [b, h, n, n], dev, state_dtype),
        )
    }

    /// The cotangents on `dev`: `dy` in `dtype`, `d_state` in `state_dtype`.
    pub fn cotangents<B: Backend>(
        &self,
        dev: &B::Device,
        dtype: DType,
        state_dtype: DType,
    ) -> (Tensor<B, 4>, Tensor<B, 4>) {
        let Dims { b, t, h, n } = self.dims;
        (tensor(&self.dy, [b, t, h, n], dev, dtype), tensor(&self.d_state, [b, h, n, n], dev, state_dtype))
    }
}

/// The seven gradients of `g` with their names, in the order of [`Case::x`] then the state.
pub fn named(g: &reference::Gradients<f64>) -> [(&'static str, &Vec<f64>); 7] {
    [("r", &g.r), ("w_raw", &g.w_raw), ("k", &g.k), ("v", &g.v), ("a", &g.a), ("b", &g.b), ("state", &g.initial_state)]
}

/// Problems of the given sizes with seeds and decay ranges drawn: `w_raw` in `[-20, 5]` (decays
/// from ~1 to ~0), `[-6, 1]` or `[-0.6, -0.5]`.
pub fn cases(dims: impl Strategy<Value = Dims>) -> impl Strategy<Value = Case> {
    (dims, any::<u64>(), prop_oneof![Just((-20.0, 5.0)), Just((-6.0, 1.0)), Just((-0.6, -0.5))])
        .prop_map(|(d, seed, w)| Case::random(d, seed, w))
}

/// The burn op [`wkv7`] on `B` (sequences in `dtype`, state in `state_dtype`) against the f64
/// reference run on the rounded inputs: output and final state within `tol`.
pub fn check_op<B: Wkv7Backend>(
    case: &Case,
    dev: &B::Device,
    dtype: DType,
    state_dtype: DType,
    tol: Tolerance,
) -> Result<(), CheckError> {
    let ctx = format!("({:?} {dtype:?} state {state_dtype:?})", case.dims);
    let want = case.rounded(dtype, state_dtype).reference();
    let ([r, w, k, v, a, b], s) = case.tensors::<B>(dev, dtype, state_dtype);
    let out =
        wkv7(r, w, k, v, a, b, Some(s)).map_err(|e| CheckError::Failed { case: ctx.clone(), source: e.into() })?;
    compare(&format!("y {ctx}"), &values(out.y), &want.y, tol)?;
    compare(&format!("state {ctx}"), &values(out.state), &want.state, tol)
}

/// The gradients of `sum(y·dy) + sum(state·d_state)` through [`wkv7`] on the autodiff backend
/// `B` (everything in `dtype`) against the reference backward on the rounded case.
pub fn check_op_gradients<B: AutodiffBackend + Wkv7Backend>(
    case: &Case,
    dev: &B::Device,
    dtype: DType,
    tol: Tolerance,
) -> Result<(), CheckError> {
    let ctx = format!("({:?} {dtype:?})", case.dims);
    let want = case.rounded(dtype, dtype).reference_gradients();
    let (x, s) = case.tensors::<B>(dev, dtype, dtype);
    let x = x.map(|t| t.require_grad());
    let s = s.require_grad();
    let [r, w, k, v, a, b] = x.clone();
    let out = wkv7(r, w, k, v, a, b, Some(s.clone()))
        .map_err(|e| CheckError::Failed { case: ctx.clone(), source: e.into() })?;
    let (dy, ds) = case.cotangents::<B>(dev, dtype, dtype);
    let grads = ((out.y * dy).sum() + (out.state * ds).sum()).backward();
    for ((name, want), t) in named(&want).into_iter().zip(x.iter().chain([&s])) {
        let got = t.grad(&grads).map(values).unwrap_or_else(|| vec![0.0; want.len()]);
        compare(&format!("d{name} {ctx}"), &got, want, tol)?;
    }
    Ok(())
}
