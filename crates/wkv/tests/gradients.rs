//! Gradients: the CPU backward kernel == burn autodiff through the chunked formulation == the
//! written-out stepwise backward == the reference backward == central finite differences of the
//! reference forward in f64, for r, k, v, w_raw, u and the initial state.

mod common;

use burn::backend::{Autodiff, NdArray};
use burn::tensor::backend::AutodiffBackend;
use proptest::prelude::*;
use visualrwkv_wkv::reference::{self, Dims, Inputs};
use visualrwkv_wkv::testing::{
    Case, CaseConfig, CaseTensors, CheckError, Tolerance, cases, check_gradients, check_gradients_impl, compare,
};
use visualrwkv_wkv::{chunked, cpu};

/// Gradients through burn's autodiff of the chunked tensor-op formulation (not the backend's
/// backward kernel), compared with the reference backward.
fn check_chunked<B: AutodiffBackend>(case: &Case, chunk: usize, tol: Tolerance) -> Result<(), CheckError> {
    let imp = move |x: CaseTensors<B>| {
        Ok::<_, std::convert::Infallible>(chunked::forward(x.r, x.k, x.v, x.w_raw, x.u, x.initial_state, chunk))
    };
    let dtype = <B::FloatElem as burn::tensor::Element>::dtype();
    check_gradients_impl(&imp, case, &Default::default(), dtype, tol).map_err(|e| e.context(&format!("chunk {chunk}")))
}

/// The CPU backward kernel on slices against the reference backward, both in f64.
fn check_cpu_f64(case: &Case) -> Result<(), CheckError> {
    let got = cpu::backward(case.dims, case.inputs(), &case.dy, Some(&case.d_state))
        .map_err(|e| CheckError::Failed { case: format!("{:?}", case.dims), source: e.into() })?;
    let want = case.reference_gradients();
    let tol = Tolerance { abs: 1e-10, rel: 1e-10 };
    let pairs = [
        (&got.r, &want.r),
        (&got.k, &want.k),
        (&got.v, &want.v),
        (&got.w_raw, &want.w_raw),
        (&got.u, &want.u),
        (&got.initial_state, &want.initial_state),
    ];
    for (name, (g, w)) in NAMES.iter().zip(pairs) {
        compare(&format!("{:?} d{name}", case.dims), g, w, tol)?;
    }
    Ok(())
}

/// Loss of the reference forward in f64: sum(y ⊙ dy) + sum(S ⊙ dS).
fn loss(case: &Case, x: Inputs<'_, f64>) -> f64 {
    let out = reference::forward(case.dims, x).unwrap();
    let a: f64 = out.y.iter().zip(&case.dy).map(|(y, d)| y * d).sum();
    a + out.state.iter().zip(&case.d_state).map(|(s, d)| s * d).sum::<f64>()
}

/// Central finite differences of [`loss`] with respect to every input (initial state included).
fn finite_differences(case: &Case) -> [Vec<f64>; 6] {
    let eps = 1e-6;
    let zeros = vec![0.0; case.dims.state_len()];
    let base: [Vec<f64>; 6] = [
        case.r.clone(),
        case.k.clone(),
        case.v.clone(),
        case.w_raw.clone(),
        case.u.clone(),
        case.initial_state.clone().unwrap_or(zeros),
    ];
    std::array::from_fn(|which| {
        (0..base[which].len())
            .map(|i| {
                let eval = |delta: f64| {
                    let mut x = base.clone();
                    x[which][i] += delta;
                    let inputs =
                        Inputs { r: &x[0], k: &x[1], v: &x[2], w_raw: &x[3], u: &x[4], initial_state: Some(&x[5]) };
                    loss(case, inputs)
                };
                (eval(eps) - eval(-eps)) / (2.0 * eps)
            })
            .collect()
    })
}

const NAMES: [&str; 6] = ["r", "k", "v", "w_raw", "u", "initial_state"];

fn reference_grads(case: &Case) -> [Vec<f64>; 6] {
    let g = case.reference_gradients();
    [g.r, g.k, g.v, g.w_raw, g.u, g.initial_state]
}

#[test]
fn reference_backward_equals_finite_differences() {
    // Moderate decays (w_raw in [-3, 1]) so that finite differences are well conditioned.
    for (seed, dims, state) in [
        (1, Dims::new(1, 1, 1, 1), false),
        (2, Dims::new(1, 5, 2, 3), true),
        (3, Dims::new(2, 7, 1, 4), true),
        (4, Dims::new(2, 4, 3, 2), false),
    ] {
        let case = Case::random(dims, seed, (-3.0, 1.0), state);
        let fd = finite_differences(&case);
        let an = reference_grads(&case);
        for i in 0..6 {
            let tol = Tolerance { abs: 1e-7, rel: 1e-6 };
            compare(&format!("{:?} d{}", dims, NAMES[i]), &an[i], &fd[i], tol).unwrap();
        }
    }
}

#[test]
fn autodiff_f64_equals_finite_differences() {
    type B = Autodiff<NdArray<f64>>;
    let case = Case::random(Dims::new(2, 6, 2, 3), 11, (-3.0, 1.0), true);
    let fd = finite_differences(&case);
    // check_gradients compares against the reference backward; the reference backward is itself
    // compared with the finite differences here, closing the triangle.
    check_gradients::<B>(&case, 4, &Default::default(), Tolerance::F64).unwrap();
    let an = reference_grads(&case);
    for i in 0..6 {
        compare(&format!("d{}", NAMES[i]), &an[i], &fd[i], Tolerance { abs: 1e-7, rel: 1e-6 }).unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    /// Autodiff through the chunked formulation (f64) equals the reference backward, for every
    /// chunk length, with extreme decays and initial states.
    #[test]
    fn chunked_autodiff_f64_equals_reference_backward(case in cases(CaseConfig::small()), chunk in 1usize..12) {
        check_chunked::<Autodiff<NdArray<f64>>>(&case, chunk, Tolerance { abs: 1e-8, rel: 1e-8 })
            .map_err(TestCaseError::from)?;
    }

    /// The same in f32, to the f32 tolerance.
    #[test]
    fn chunked_autodiff_f32_equals_reference_backward(case in cases(CaseConfig { head_sizes: vec![1, 4, 16], time: 1..48, ..CaseConfig::small() }), chunk in 1usize..24) {
        check_chunked::<Autodiff<NdArray>>(&case, chunk, Tolerance { abs: 2e-4, rel: 1e-4 })
            .map_err(TestCaseError::from)?;
    }

    /// The CPU backward kernel (f64, slices) equals the reference backward: odd T and T = 1,
    /// several heads, `w_raw` ∈ [-20, 5], with and without initial states.
    #[test]
    fn cpu_backward_f64_equals_reference(case in cases(CaseConfig { time: 1..90, ..CaseConfig::wide() })) {
        check_cpu_f64(&case).map_err(TestCaseError::from)?;
    }

    /// `Autodiff<NdArray>` (f32) runs WKV6 as one node with the CPU backward kernel; its
    /// gradients equal the reference backward's to the f32 tolerance.
    #[test]
    fn cpu_backward_f32_through_autodiff_equals_reference(case in cases(CaseConfig { time: 1..120, ..CaseConfig::wide() })) {
        check_gradients::<Autodiff<NdArray>>(&case, 16, &Default::default(), Tolerance::F32)
            .map_err(TestCaseError::from)?;
    }
}

/// The written-out backward (the GPU kernels' fallback, no autodiff) in f64 against the
/// reference backward.
fn check_stepwise_f64(case: &Case) -> Result<(), CheckError> {
    use burn::tensor::{DType, Tensor, TensorPrimitive};
    use visualrwkv_wkv::backend::{Wkv6Inputs, stepwise_backward};
    type F = NdArray<f64>;
    fn prim<const D: usize>(t: Tensor<F, D>) -> burn::tensor::ops::FloatTensor<F> {
        t.into_primitive().tensor()
    }
    fn values<const D: usize>(t: burn::tensor::ops::FloatTensor<F>) -> Vec<f64> {
        Tensor::<F, D>::from_primitive(TensorPrimitive::Float(t)).into_data().convert::<f64>().into_vec().unwrap()
    }
    let d = case.on_device::<F>(&Default::default(), DType::F64, DType::F64);
    let x = d.x;
    let inputs = Wkv6Inputs {
        r: prim(x.r),
        k: prim(x.k),
        v: prim(x.v),
        w_raw: prim(x.w_raw),
        u: prim(x.u),
        initial_state: prim(x.initial_state),
    };
    let got = stepwise_backward::<F>(inputs, prim(d.dy), prim(d.d_state));
    let want = d.seen.reference_gradients();
    let tol = Tolerance { abs: 1e-9, rel: 1e-9 };
    let pairs = [
        (values::<4>(got.r), &want.r),
        (values::<4>(got.k), &want.k),
        (values::<4>(got.v), &want.v),
        (values::<4>(got.w_raw), &want.w_raw),
        (values::<2>(got.u), &want.u),
        (values::<4>(got.initial_state), &want.initial_state),
    ];
    for (name, (g, w)) in NAMES.iter().zip(pairs) {
        compare(&format!("stepwise {:?} d{name}", case.dims), &g, w, tol)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    /// The written-out tensor-op backward equals the reference backward (f64): odd T and T = 1,
    /// several heads and batch rows, `w_raw` ∈ [-20, 5], with and without initial states.
    #[test]
    fn stepwise_backward_f64_equals_reference(case in cases(CaseConfig { time: 1..40, ..CaseConfig::wide() })) {
        check_stepwise_f64(&case).map_err(TestCaseError::from)?;
    }
}

/// Long sequences exercise several checkpoint chunks (L = ⌈√T⌉, last chunk partial).
#[test]
fn cpu_backward_long_sequences() {
    for (seed, t) in [(1, 1100), (2, 257)] {
        let case = Case::random(Dims::new(2, t, 2, 16), seed, (-20.0, 5.0), true);
        check_cpu_f64(&case).unwrap();
        check_gradients::<Autodiff<NdArray>>(&case, 16, &Default::default(), Tolerance::F32).unwrap();
    }
}

/// Bad lengths are errors naming the tensor, not panics.
#[test]
fn cpu_backward_rejects_bad_lengths() {
    let case = Case::random(Dims::new(1, 3, 1, 2), 3, (-1.0, 1.0), false);
    let err = cpu::backward(case.dims, case.inputs(), &case.dy[1..], None).unwrap_err();
    assert!(err.to_string().contains("dy"), "{err}");
    let err = cpu::backward(case.dims, case.inputs(), &case.dy, Some(&case.d_state[1..])).unwrap_err();
    assert!(err.to_string().contains("d_state"), "{err}");
}
