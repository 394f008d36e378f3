//! The WKV6 kernels against the f64 reference, on every cubecl backend compiled in: `wgpu`
//! always (on a machine without a GPU, through Mesa's software Vulkan driver, lavapipe — `.ci/run`
//! installs it), `cuda` with `--features cuda` (scripts/gpu-check.sh).
//!
//! Each backend's suite checks the launchers directly on the bare `CubeBackend` (so a refused
//! launch cannot hide behind the chunked fallback) and the public op on the types users write:
//! the fusion-wrapped default backend and `Autodiff` of it, through `visualrwkv_wkv::testing`.

use burn::tensor::DType;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorPrimitive};
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use visualrwkv_kernels::KernelError;
use visualrwkv_wkv::reference::Dims;
use visualrwkv_wkv::testing::{Case, CaseConfig, CaseTensors, CheckError, Tolerance, compare, op, tolerance_for};
use visualrwkv_wkv::{Wkv6Backend, wkv6_step};

/// Problems the suites draw: odd and even `T` (including 1), several heads and batch rows, the
/// head sizes RWKV uses, decays from ~1 (`w_raw = -20`) to ~0 (`w_raw = 5`).
fn kernel_cases() -> CaseConfig {
    CaseConfig { batch: 1..3, time: 1..40, heads: 1..4, head_sizes: vec![16, 32, 64], w_raw: (-20.0, 5.0) }
}

fn f64s<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f64> {
    t.cast(DType::F64).into_data().convert::<f64>().into_vec::<f64>().expect("f64 values")
}

fn prim<B: Backend, const D: usize>(t: Tensor<B, D>) -> B::FloatTensorPrimitive {
    t.into_primitive().tensor()
}

fn wrap<B: Backend, const D: usize>(t: B::FloatTensorPrimitive) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

macro_rules! suite {
    ($name:ident, $runtime:ty, $fused:ty, $dtypes:expr) => {
        mod $name {
            use super::*;
            use burn::backend::Autodiff;
            use burn_cubecl::CubeBackend;

            /// The bare backend: kernels, no fusion.
            type Raw = CubeBackend<$runtime, f32, i32, u32>;
            /// The type users write (`burn::backend::Wgpu` / `Cuda`): fusion-wrapped.
            type Fused = $fused;

            fn dev() -> burn::tensor::Device<Raw> {
                Default::default()
            }

            /// Forward and backward launchers on the bare backend against the reference: sequences in
            /// `dtype`, the state in `state_dtype`, with the tolerance for `dtype`.
            fn check_launchers(case: &Case, dtype: DType, state_dtype: DType) -> Result<(), CheckError> {
                let d = case.on_device::<Raw>(&dev(), dtype, state_dtype);
                let x: CaseTensors<Raw> = d.x;
                let [r, k, v, w, s0] = [x.r, x.k, x.v, x.w_raw, x.initial_state].map(prim);
                let u = prim(x.u);
                let ctx = format!("{:?} {dtype:?} state {state_dtype:?}", case.dims);
                let failed = |e: KernelError| CheckError::Failed { case: ctx.clone(), source: e.into() };
                let (y, s) = visualrwkv_kernels::forward(&r, &k, &v, &w, &u, &s0).map_err(failed)?;
                let tol = tolerance_for(dtype);
                let want = d.seen.reference();
                compare(&format!("kernel y ({ctx})"), &f64s(wrap::<Raw, 4>(y)), &want.y, tol)?;
                compare(&format!("kernel state ({ctx})"), &f64s(wrap::<Raw, 4>(s)), &want.state, tol)?;

                let (dy, ds) = (prim(d.dy), prim(d.d_state));
                let g = visualrwkv_kernels::backward(&r, &k, &v, &w, &u, &s0, &dy, &ds).map_err(failed)?;
                let want = d.seen.reference_gradients();
                compare(&format!("kernel dr ({ctx})"), &f64s(wrap::<Raw, 4>(g.r)), &want.r, tol)?;
                compare(&format!("kernel dk ({ctx})"), &f64s(wrap::<Raw, 4>(g.k)), &want.k, tol)?;
                compare(&format!("kernel dv ({ctx})"), &f64s(wrap::<Raw, 4>(g.v)), &want.v, tol)?;
                compare(&format!("kernel dw_raw ({ctx})"), &f64s(wrap::<Raw, 4>(g.w_raw)), &want.w_raw, tol)?;
                compare(&format!("kernel du ({ctx})"), &f64s(wrap::<Raw, 2>(g.u)), &want.u, tol)?;
                compare(
                    &format!("kernel d initial_state ({ctx})"),
                    &f64s(wrap::<Raw, 4>(g.initial_state)),
                    &want.initial_state,
                    tol,
                )
            }

            /// The public op on the fused backend (forward) and on `Autodiff` of it (forward and
            /// all gradients), through the harness users get with the `testing` feature.
            fn check_op(case: &Case, dtype: DType) -> Result<(), CheckError> {
                visualrwkv_wkv::testing::check_forward_impl(
                    &op::<Fused>(16),
                    case,
                    &dev(),
                    dtype,
                    tolerance_for(dtype),
                )?;
                visualrwkv_wkv::testing::check_impl(&op::<Autodiff<Fused>>(16), case, &dev(), dtype)
            }

            #[test]
            fn backends_report_a_backward_kernel() {
                assert!(<Raw as Wkv6Backend>::wkv6_has_backward());
                assert!(<Fused as Wkv6Backend>::wkv6_has_backward());
            }

            #[test]
            fn kernels_match_reference_in_f32() {
                let mut runner = TestRunner::new(Config::with_cases(10));
                runner
                    .run(&visualrwkv_wkv::testing::cases(kernel_cases()), |case| {
                        eprintln!("{}: {:?} state {}", stringify!($name), case.dims, case.initial_state.is_some());
                        check_launchers(&case, DType::F32, DType::F32).map_err(TestCaseError::from)?;
                        check_op(&case, DType::F32).map_err(TestCaseError::from)
                    })
                    .unwrap();
            }

            #[test]
            fn kernels_match_reference_for_small_heads() {
                let config = CaseConfig {
                    batch: 1..3,
                    time: 1..24,
                    heads: 1..3,
                    head_sizes: vec![1, 2, 4, 8],
                    w_raw: (-20.0, 5.0),
                };
                TestRunner::new(Config::with_cases(6))
                    .run(&visualrwkv_wkv::testing::cases(config), |case| {
                        check_launchers(&case, DType::F32, DType::F32).map_err(TestCaseError::from)
                    })
                    .unwrap();
            }

            #[test]
            fn kernels_match_reference_at_extreme_decays() {
                for (seed, w) in [(1u64, (-20.0, -20.0)), (2, (5.0, 5.0)), (3, (-20.0, 5.0))] {
                    for with_state in [false, true] {
                        let case = Case::random(Dims::new(2, 33, 2, 64), seed, w, with_state);
                        check_launchers(&case, DType::F32, DType::F32).unwrap();
                        check_op(&case, DType::F32).unwrap();
                    }
                }
            }

            #[test]
            fn kernels_match_reference_over_a_long_sequence() {
                // T > 1000: many backward checkpoints, and a sum of 1100 steps in every state.
                let case = Case::random(Dims::new(1, 1100, 2, 64), 7, (-20.0, 5.0), true);
                check_launchers(&case, DType::F32, DType::F32).unwrap();
                check_op(&case, DType::F32).unwrap();
            }

            #[test]
            fn kernels_match_reference_in_half_precision() {
                for dtype in $dtypes {
                    for (seed, dims) in [(11u64, Dims::new(2, 17, 2, 64)), (12, Dims::new(1, 64, 3, 32))] {
                        let case = Case::random(dims, seed, (-20.0, 5.0), true);
                        check_launchers(&case, dtype, dtype).unwrap();
                        // Half-precision sequences with an f32 state (how RWKV keeps its state).
                        check_launchers(&case, dtype, DType::F32).unwrap();
                        check_op(&case, dtype).unwrap();
                    }
                }
            }

            #[test]
            fn step_matches_reference() {
                let case = Case::random(Dims::new(2, 1, 3, 64), 21, (-20.0, 5.0), true);
                let x: CaseTensors<Fused> = case.tensors(&dev(), DType::F32);
                let [b, h, n] = [2, 3, 64];
                let step = |t: Tensor<Fused, 4>| t.reshape([b, h, n]);
                let out = wkv6_step(step(x.r), step(x.k), step(x.v), step(x.w_raw), x.u, x.initial_state).unwrap();
                let want = case.on_device::<Fused>(&dev(), DType::F32, DType::F32).seen.reference();
                let tol = tolerance_for(DType::F32);
                compare("step y", &f64s(out.y), &want.y, tol).unwrap();
                compare("step state", &f64s(out.state), &want.state, tol).unwrap();
            }

            #[test]
            fn launchers_refuse_out_of_range_problems() {
                let t = |shape: [usize; 4]| prim(Tensor::<Raw, 4>::zeros(shape, &dev()));
                let u = |shape: [usize; 2]| prim(Tensor::<Raw, 2>::zeros(shape, &dev()));
                let n = visualrwkv_kernels::MAX_HEAD_SIZE + 1;
                let x = t([1, 2, 1, n]);
                let err = visualrwkv_kernels::forward(&x, &x, &x, &x, &u([1, n]), &t([1, 1, n, n])).unwrap_err();
                assert!(matches!(err, KernelError::HeadSize { n: 257, .. }), "{err}");
                let x = t([1, 2, 2, 4]);
                let err = visualrwkv_kernels::forward(&x, &x, &t([1, 3, 2, 4]), &x, &u([2, 4]), &t([1, 2, 4, 4]))
                    .unwrap_err();
                assert_eq!(err, KernelError::Shape { name: "v", expected: vec![1, 2, 2, 4], found: vec![1, 3, 2, 4] });
                let err = visualrwkv_kernels::forward(&x, &x, &x, &x, &u([2, 5]), &t([1, 2, 4, 4])).unwrap_err();
                assert!(matches!(err, KernelError::Shape { name: "u", .. }), "{err}");
                let err = visualrwkv_kernels::forward(&x, &x, &x, &x, &u([2, 4]), &t([1, 2, 4, 3])).unwrap_err();
                assert!(matches!(err, KernelError::Shape { name: "initial_state", .. }), "{err}");
                let f64x = prim(Tensor::<Raw, 4>::zeros([1, 2, 2, 4], (&dev(), DType::F64)));
                if let Err(err) = visualrwkv_kernels::forward(&x, &f64x, &x, &x, &u([2, 4]), &t([1, 2, 4, 4])) {
                    assert!(
                        matches!(
                            err,
                            KernelError::DTypeMismatch { name: "k", .. } | KernelError::DTypeUnsupported { .. }
                        ),
                        "{err}"
                    );
                } else {
                    panic!("mixed dtypes must be refused");
                }
                let dy = t([1, 2, 2, 5]);
                let err =
                    visualrwkv_kernels::backward(&x, &x, &x, &x, &u([2, 4]), &t([1, 2, 4, 4]), &dy, &t([1, 2, 4, 4]))
                        .unwrap_err();
                assert!(matches!(err, KernelError::Shape { name: "dy", .. }), "{err}");
            }

            #[test]
            fn op_falls_back_for_problems_the_kernels_refuse() {
                // N above the kernels' limit: the op still runs (chunked tensor ops forward, the
                // written-out backward: a second autodiff pass inside the first would deadlock). Those use the
                // backend's matmul, which on CUDA rounds f32 operands to TF32 (10-bit mantissa),
                // hence that format's tolerance rather than f32's.
                let case =
                    Case::random(Dims::new(1, 3, 1, visualrwkv_kernels::MAX_HEAD_SIZE + 3), 5, (-3.0, 1.0), true);
                let tf32 = Tolerance { abs: 2e-2, rel: 2e-3 };
                visualrwkv_wkv::testing::check_forward_impl(&op::<Fused>(4), &case, &dev(), DType::F32, tf32).unwrap();
                visualrwkv_wkv::testing::check_impl(&op::<Autodiff<Fused>>(4), &case, &dev(), DType::F32).unwrap();
            }
        }
    };
}

suite!(wgpu, burn::backend::wgpu::WgpuRuntime, burn::backend::Wgpu, [DType::F16]);

#[cfg(feature = "cuda")]
suite!(cuda, burn_cubecl::cubecl::cuda::CudaRuntime, burn::backend::Cuda, [DType::F16, DType::BF16]);
