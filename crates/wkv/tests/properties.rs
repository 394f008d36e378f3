//! Property tests: every fast path equals the f64 reference over random shapes (odd T, T = 1,
//! several heads, N ∈ {1, 4, 16, 64}), decays from ~1 to ~0 (w_raw ∈ [-20, 5]) and random initial
//! states; splitting a sequence anywhere and carrying the state equals one pass.

mod common;

use burn::backend::NdArray;
use burn::tensor::Tensor;
use common::*;
use proptest::prelude::*;
use visualrwkv_wkv::reference::Dims;
use visualrwkv_wkv::testing::{Case, CaseConfig, Tolerance, cases, check_forward, compare};
use visualrwkv_wkv::{chunked, cpu, wkv6};

type B = NdArray;

fn case_tensors(case: &Case) -> ([Tensor<B, 4>; 4], Tensor<B, 2>, Tensor<B, 4>) {
    let dev = Default::default();
    let Dims { b, t, h, n } = case.dims;
    let seq = |v: &[f64]| tensor::<B, 4>(&to_f32(v), [b, t, h, n], &dev);
    let zeros = vec![0.0; case.dims.state_len()];
    (
        [seq(&case.r), seq(&case.k), seq(&case.v), seq(&case.w_raw)],
        tensor::<B, 2>(&to_f32(&case.u), [h, n], &dev),
        tensor::<B, 4>(&to_f32(case.initial_state.as_deref().unwrap_or(&zeros)), [b, h, n, n], &dev),
    )
}

fn chunk_lengths(t: usize) -> [usize; 4] {
    [1, 16, 64, t]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// The chunked tensor-op formulation equals the reference for chunk lengths {1, 16, 64, T}.
    #[test]
    fn chunked_equals_reference(case in cases(CaseConfig::wide())) {
        let want = case.reference();
        for chunk in chunk_lengths(case.dims.t) {
            let ([r, k, v, w], u, s) = case_tensors(&case);
            let (y, s) = chunked::forward(r, k, v, w, u, s, chunk);
            let ctx = format!("{:?} chunk {chunk}", case.dims);
            compare(&format!("y {ctx}"), &to_f64(&values(y)), &want.y, Tolerance::F32).map_err(TestCaseError::from)?;
            compare(&format!("state {ctx}"), &to_f64(&values(s)), &want.state, Tolerance::F32).map_err(TestCaseError::from)?;
        }
    }

    /// The NdArray op (the multi-threaded CPU kernel) and the f32 reference equal the f64 reference.
    #[test]
    fn cpu_and_reference_f32_equal_reference_f64(case in cases(CaseConfig::wide())) {
        check_forward::<B>(&case, 16, &Default::default(), Tolerance::F32).map_err(TestCaseError::from)?;
        let (r, k, v, w, u) = (to_f32(&case.r), to_f32(&case.k), to_f32(&case.v), to_f32(&case.w_raw), to_f32(&case.u));
        let s = case.initial_state.as_deref().map(to_f32);
        let x = visualrwkv_wkv::reference::Inputs { r: &r, k: &k, v: &v, w_raw: &w, u: &u, initial_state: s.as_deref() };
        let want = case.reference();
        for (what, out) in [
            ("reference f32", visualrwkv_wkv::reference::forward(case.dims, x).unwrap()),
            ("cpu f32", cpu::forward(case.dims, x).unwrap()),
        ] {
            compare(&format!("{what} y"), &to_f64(&out.y), &want.y, Tolerance::F32).map_err(TestCaseError::from)?;
            compare(&format!("{what} state"), &to_f64(&out.state), &want.state, Tolerance::F32).map_err(TestCaseError::from)?;
        }
    }

    /// Running [0, split) then [split, T) from the carried state equals one pass.
    #[test]
    fn split_with_carried_state_equals_one_pass(case in cases(CaseConfig::wide()), frac in 0.0f64..1.0, chunk in 1usize..40) {
        let Dims { b, t, h, n } = case.dims;
        let split = ((t as f64 * frac) as usize).clamp(1, t);
        let ([r, k, v, w], u, s) = case_tensors(&case);
        let whole = wkv6(r.clone(), k.clone(), v.clone(), w.clone(), u.clone(), Some(s.clone())).unwrap();
        let part = |x: &Tensor<B, 4>, a: usize, z: usize| x.clone().slice([0..b, a..z, 0..h, 0..n]);
        let (y1, s1) = chunked::forward(part(&r, 0, split), part(&k, 0, split), part(&v, 0, split), part(&w, 0, split), u.clone(), s, chunk);
        let (ys, ss) = if split < t {
            let (y2, s2) = chunked::forward(part(&r, split, t), part(&k, split, t), part(&v, split, t), part(&w, split, t), u, s1, chunk);
            (Tensor::cat(vec![y1, y2], 1), s2)
        } else {
            (y1, s1)
        };
        let tol = Tolerance::F32;
        compare("y split", &to_f64(&values(ys)), &to_f64(&values(whole.y)), tol).map_err(TestCaseError::from)?;
        compare("state split", &to_f64(&values(ss)), &to_f64(&values(whole.state)), tol).map_err(TestCaseError::from)?;
    }
}

/// Every output stays finite at the extremes: all decays ~1 (w_raw = -20) over a long sequence, all
/// decays 0 (w_raw = 5), and beyond the documented range (w_raw = 30 and 100: exp(w_raw) overflows
/// f32), where the reference itself would produce infinities in intermediate products.
#[test]
fn extreme_decays_stay_finite_and_exact() {
    for (w, t) in [(-20.0, 300), (5.0, 70), (1.5, 129)] {
        let dims = Dims::new(1, t, 2, 16);
        let mut case = Case::random(dims, 7, (w, w), true);
        case.w_raw.iter_mut().for_each(|x| *x = w);
        let want = case.reference();
        for chunk in [1, 16, 64] {
            let ([r, k, v, wr], u, s) = case_tensors(&case);
            let (y, s) = chunked::forward(r, k, v, wr, u, s, chunk);
            let (y, s) = (to_f64(&values(y)), to_f64(&values(s)));
            compare(&format!("y w_raw={w} chunk {chunk}"), &y, &want.y, Tolerance::F32).unwrap();
            compare(&format!("state w_raw={w} chunk {chunk}"), &s, &want.state, Tolerance::F32).unwrap();
        }
    }
    for w in [30.0f32, 100.0] {
        let dims = Dims::new(1, 40, 1, 8);
        let case = Case::random(dims, 3, (0.0, 1.0), true);
        let ([r, k, v, _], u, s) = case_tensors(&case);
        let wr = Tensor::<B, 4>::full([1, 40, 1, 8], w, &Default::default());
        let (y, s) = chunked::forward(r, k, v, wr, u, s, 16);
        assert!(values(y).iter().chain(values(s).iter()).all(|x| x.is_finite()), "w_raw = {w}");
    }
}

/// Cases large enough that the CPU kernel splits the heads over several threads (sequence and
/// single-step shapes), against the f64 reference.
#[test]
fn cpu_kernel_multithreaded_equals_reference() {
    for (dims, seed) in [(Dims::new(2, 300, 4, 64), 5), (Dims::new(64, 1, 8, 64), 6), (Dims::new(3, 257, 5, 24), 7)] {
        let case = Case::random(dims, seed, (-20.0, 5.0), true);
        check_forward::<B>(&case, 16, &Default::default(), Tolerance::F32).unwrap();
    }
}
