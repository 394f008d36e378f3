//! WKV7: the reference backward equals finite differences of the reference forward (f64); the
//! CPU kernel, the tensor-op formulation (forward, its autodiff and its written-out backward)
//! and the burn op (forward and gradients, through `Autodiff`) equal the reference over random
//! shapes, decays from ~1 to ~0 (w_raw ∈ [-20, 5]), the model's removal vectors (a = −κ̂,
//! b = κ̂·α) and random initial states; a sequence equals its steps one token at a time; bad
//! shapes are typed errors.

use burn::backend::{Autodiff, NdArray};
use burn::tensor::{DType, Tensor};
use proptest::prelude::*;
use visualrwkv_wkv::WkvError;
use visualrwkv_wkv::testing::wkv7::{self, Case, named};
use visualrwkv_wkv::wkv7::reference::{self, Dims, Inputs};
use visualrwkv_wkv::wkv7::{cpu, tensor_ops, wkv7, wkv7_step};

type B = NdArray;
type AB = Autodiff<NdArray>;

/// The case's inputs as f32 tensors on the CPU.
fn tensors_of<BB: burn::tensor::backend::Backend>(case: &Case) -> ([Tensor<BB, 4>; 6], Tensor<BB, 4>) {
    case.tensors::<BB>(&Default::default(), DType::F32, DType::F32)
}

fn values<BB: burn::tensor::backend::Backend, const D: usize>(t: Tensor<BB, D>) -> Vec<f64> {
    t.into_data().convert::<f32>().into_vec::<f32>().unwrap().into_iter().map(f64::from).collect()
}

/// `|got − want| <= abs + rel·|want|` everywhere, naming the first element that is not.
fn close(name: &str, got: &[f64], want: &[f64], abs: f64, rel: f64) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.len(), want.len(), "{}: lengths", name);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        prop_assert!((g - w).abs() <= abs + rel * w.abs(), "{}[{}]: got {} want {}", name, i, g, w);
    }
    Ok(())
}

fn dims() -> impl Strategy<Value = Dims> {
    (
        1usize..=2,
        prop_oneof![Just(1usize), 2usize..=40],
        1usize..=3,
        prop_oneof![Just(1usize), Just(4), Just(16), Just(64)],
    )
        .prop_map(|(b, t, h, n)| Dims::new(b, t, h, n))
}

fn cases() -> impl Strategy<Value = Case> {
    wkv7::cases(dims())
}

/// The reference backward equals central finite differences of the f64 reference forward.
#[test]
fn reference_backward_equals_finite_differences() {
    for (seed, dims) in [(1, Dims::new(1, 5, 2, 3)), (2, Dims::new(2, 3, 1, 4))] {
        let case = Case::random(dims, seed, (-3.0, 1.0));
        let g = case.reference_gradients();
        let loss = |x: &[Vec<f64>; 6], s: &[f64]| {
            let out = reference::forward(dims, Case::inputs(x, s)).unwrap();
            let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(a, b)| a * b).sum::<f64>();
            dot(&out.y, &case.dy) + dot(&out.state, &case.d_state)
        };
        let eps = 1e-6;
        for (q, name) in ["r", "w_raw", "k", "v", "a", "b", "state"].into_iter().enumerate() {
            let len = if q < 6 { dims.seq_len() } else { dims.state_len() };
            for i in 0..len {
                let bump = |d: f64| {
                    let (mut x, mut s) = (case.x.clone(), case.state.clone());
                    if q < 6 {
                        x[q][i] += d
                    } else {
                        s[i] += d
                    }
                    loss(&x, &s)
                };
                let numeric = (bump(eps) - bump(-eps)) / (2.0 * eps);
                let analytic = named(&g)[q].1[i];
                assert!(
                    (numeric - analytic).abs() <= 1e-6 * (1.0 + numeric.abs()),
                    "{name}[{i}]: {analytic} vs {numeric}"
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// The CPU kernel (f32 and f64) equals the reference, forward and backward.
    #[test]
    fn cpu_kernel_equals_reference(case in cases()) {
        let (want, wg) = (case.reference(), case.reference_gradients());
        let out = cpu::forward(case.dims, Case::inputs(&case.x, &case.state)).unwrap();
        close("y f64", &out.y, &want.y, 1e-10, 1e-10)?;
        close("state f64", &out.state, &want.state, 1e-10, 1e-10)?;
        let (x, s) = case.f32();
        let out = cpu::forward(case.dims, Case::inputs(&x, &s)).unwrap();
        close("y", &out.y.iter().map(|&v| f64::from(v)).collect::<Vec<_>>(), &want.y, 1e-4, 1e-4)?;
        let g = cpu::backward(case.dims, Case::inputs(&case.x, &case.state), &case.dy, Some(&case.d_state)).unwrap();
        for ((name, got), (_, want)) in named(&g).into_iter().zip(named(&wg)) {
            close(name, got, want, 1e-9, 1e-9)?;
        }
    }

    /// The tensor-op formulation equals the reference, and burn's autodiff through it equals the
    /// reference backward.
    #[test]
    fn tensor_ops_equal_reference(case in cases()) {
        let (want, wg) = (case.reference(), case.reference_gradients());
        let (x, s) = tensors_of::<AB>(&case);
        let x = x.map(|t| t.require_grad());
        let s = s.require_grad();
        let (y, state) = tensor_ops::forward(x.clone(), s.clone());
        close("y", &values(y.clone()), &want.y, 2e-4, 1e-4)?;
        close("state", &values(state.clone()), &want.state, 2e-4, 1e-4)?;
        let (dy, ds) = case_cotangents(&case);
        let grads = ((y * dy).sum() + (state * ds).sum()).backward();
        let got: Vec<Vec<f64>> = x.iter().chain([&s]).map(|t| values(t.grad(&grads).unwrap())).collect();
        for ((name, want), got) in named(&wg).into_iter().zip(&got) {
            close(name, got, want, 5e-4, 1e-3)?;
        }
    }

    /// The written-out tensor-op backward (the kernels' fallback, no autodiff) equals the
    /// reference backward.
    #[test]
    fn tensor_ops_backward_equals_reference(case in cases()) {
        let wg = case.reference_gradients();
        let (x, s) = tensors_of::<B>(&case);
        let (dy, ds) = case.cotangents::<B>(&Default::default(), DType::F32, DType::F32);
        let got = tensor_ops::backward(x, s, dy, ds);
        for ((name, want), got) in named(&wg).into_iter().zip(got) {
            close(name, &values(got), want, 5e-4, 1e-3)?;
        }
    }

    /// The burn op on `Autodiff<NdArray>` (the CPU kernel as one graph node) equals the
    /// reference, forward and gradients.
    #[test]
    fn op_equals_reference(case in cases()) {
        let (want, wg) = (case.reference(), case.reference_gradients());
        let (x, s) = tensors_of::<AB>(&case);
        let x = x.map(|t| t.require_grad());
        let s = s.require_grad();
        let [r, w, k, v, a, b] = x.clone();
        let out = wkv7(r, w, k, v, a, b, Some(s.clone())).unwrap();
        close("y", &values(out.y.clone()), &want.y, 2e-4, 1e-4)?;
        let (dy, ds) = case_cotangents(&case);
        let grads = ((out.y * dy).sum() + (out.state * ds).sum()).backward();
        let got: Vec<Vec<f64>> = x.iter().chain([&s]).map(|t| values(t.grad(&grads).unwrap())).collect();
        for ((name, want), got) in named(&wg).into_iter().zip(&got) {
            close(name, got, want, 5e-4, 1e-3)?;
        }
    }

    /// A sequence equals its steps one token at a time, carrying the state.
    #[test]
    fn sequence_equals_steps(case in cases()) {
        let Dims { b, t, h, n } = case.dims;
        let (x, s) = tensors_of::<B>(&case);
        let [r, w, k, v, a, bb] = x.clone();
        let seq = wkv7(r, w, k, v, a, bb, Some(s.clone())).unwrap();
        let mut state = s;
        let mut ys = Vec::new();
        for step in 0..t {
            let at = |x: &Tensor<B, 4>| x.clone().slice([0..b, step..step + 1, 0..h, 0..n]).reshape([b, h, n]);
            let [r, w, k, v, a, bb] = x.each_ref().map(at);
            let (y, s) = wkv7_step(r, w, k, v, a, bb, state).unwrap();
            ys.push(y.unsqueeze_dim::<4>(1));
            state = s;
        }
        close("y", &values(Tensor::cat(ys, 1)), &values(seq.y), 1e-5, 1e-5)?;
        close("state", &values(state), &values(seq.state), 1e-5, 1e-5)?;
    }
}

fn case_cotangents(case: &Case) -> (Tensor<AB, 4>, Tensor<AB, 4>) {
    case.cotangents::<AB>(&Default::default(), DType::F32, DType::F32)
}

/// Mismatched shapes and empty sizes are typed errors naming the tensor.
#[test]
fn bad_shapes_are_typed_errors() {
    let dev = Default::default();
    let x = |shape: [usize; 4]| Tensor::<B, 4>::zeros(shape, &dev);
    let s = [1, 4, 3, 2];
    let err = wkv7(x(s), x(s), x(s), x([1, 4, 3, 3]), x(s), x(s), None).unwrap_err();
    assert_eq!(err, WkvError::Shape { name: "v", expected: s.to_vec(), found: vec![1, 4, 3, 3] });
    let err = wkv7(x(s), x(s), x(s), x(s), x(s), x(s), Some(x([1, 3, 2, 3]))).unwrap_err();
    assert_eq!(err, WkvError::Shape { name: "initial_state", expected: vec![1, 3, 2, 2], found: vec![1, 3, 2, 3] });
    let e = [1, 0, 3, 2];
    assert!(matches!(wkv7(x(e), x(e), x(e), x(e), x(e), x(e), None), Err(WkvError::Empty { .. })));
    let short = vec![0f32; 5];
    let dims = Dims::new(1, 2, 1, 2);
    let inputs = Inputs { r: &short, w_raw: &short, k: &short, v: &short, a: &short, b: &short, initial_state: None };
    assert!(matches!(reference::forward(dims, inputs), Err(WkvError::Length { name: "r", .. })));
    assert!(matches!(cpu::forward(dims, inputs), Err(WkvError::Length { name: "r", .. })));
}
