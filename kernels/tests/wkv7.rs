//! The WKV7 kernels against the f64 reference, on every cubecl backend compiled in: `wgpu`
//! always (lavapipe on a machine without a GPU), `cuda` with `--features cuda`.
//!
//! Each suite checks the launchers directly on the bare `CubeBackend` (so a refused launch cannot
//! hide behind the tensor-op fallback), forward and all seven gradients, over random shapes,
//! decays from ~1 (`w_raw = -20`) to ~0 (`w_raw = 5`), non-zero states, small heads, a long
//! sequence (many backward checkpoints) and half precision; then the public op `wkv7` on the
//! fusion-wrapped default backend and `Autodiff` of it, through `visualrwkv_wkv::testing::wkv7`.

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorPrimitive};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use visualrwkv_kernels::KernelError;
use visualrwkv_wkv::reference::Dims;
use visualrwkv_wkv::testing::wkv7::{Case, cases, check_op, check_op_gradients, named};
use visualrwkv_wkv::testing::{CheckError, Tolerance, compare, tolerance_for};

fn f64s<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f64> {
    t.cast(DType::F64).into_data().convert::<f64>().into_vec::<f64>().expect("f64 values")
}

fn prim<B: Backend, const D: usize>(t: Tensor<B, D>) -> B::FloatTensorPrimitive {
    t.into_primitive().tensor()
}

fn wrap<B: Backend, const D: usize>(t: B::FloatTensorPrimitive) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

/// Sizes the property tests draw: odd and even `T` (including 1), several heads and batch rows,
/// the head sizes RWKV uses.
fn kernel_dims() -> impl Strategy<Value = Dims> {
    (1usize..3, prop_oneof![Just(1usize), 2usize..40], 1usize..4, prop_oneof![Just(16usize), Just(32), Just(64)])
        .prop_map(|(b, t, h, n)| Dims::new(b, t, h, n))
}

/// Gradients tolerate more than outputs: each sums `T` steps of products of two accumulations.
fn gradient_tolerance(dtype: DType) -> Tolerance {
    match dtype {
        DType::F32 => Tolerance { abs: 2e-4, rel: 1e-4 },
        other => tolerance_for(other),
    }
}

macro_rules! suite {
    ($name:ident, $runtime:ty, $fused:ty, $dtypes:expr) => {
        mod $name {
            use super::*;
            use burn::backend::Autodiff;
            use burn_cubecl::CubeBackend;
            use visualrwkv_kernels::wkv7::{Inputs, backward, forward};
            use visualrwkv_wkv::wkv7::Wkv7Backend;

            /// The bare backend: kernels, no fusion.
            type Raw = CubeBackend<$runtime, f32, i32, u32>;
            /// The type users write (`burn::backend::Wgpu` / `Cuda`): fusion-wrapped.
            type Fused = $fused;

            fn dev() -> burn::tensor::Device<Raw> {
                Default::default()
            }

            /// Forward and backward launchers on the bare backend against the reference on the
            /// rounded case: sequences in `dtype`, the state in `state_dtype`.
            fn check_launchers(case: &Case, dtype: DType, state_dtype: DType) -> Result<(), CheckError> {
                let ctx = format!("{:?} {dtype:?} state {state_dtype:?}", case.dims);
                let seen = case.rounded(dtype, state_dtype);
                let (x, s) = case.tensors::<Raw>(&dev(), dtype, state_dtype);
                let [r, w_raw, k, v, a, b] = x.map(prim);
                let initial_state = prim(s);
                let inputs = Inputs { r: &r, w_raw: &w_raw, k: &k, v: &v, a: &a, b: &b, initial_state: &initial_state };
                let failed = |e: KernelError| CheckError::Failed { case: ctx.clone(), source: e.into() };
                let (y, s) = forward(inputs).map_err(failed)?;
                let tol = tolerance_for(dtype);
                let want = seen.reference();
                compare(&format!("kernel y ({ctx})"), &f64s(wrap::<Raw, 4>(y)), &want.y, tol)?;
                compare(&format!("kernel state ({ctx})"), &f64s(wrap::<Raw, 4>(s)), &want.state, tol)?;

                let (dy, ds) = case.cotangents::<Raw>(&dev(), dtype, state_dtype);
                let g = backward(inputs, &prim(dy), &prim(ds)).map_err(failed)?;
                let got = [g.r, g.w_raw, g.k, g.v, g.a, g.b, g.initial_state].map(|t| f64s(wrap::<Raw, 4>(t)));
                let want = seen.reference_gradients();
                for ((name, want), got) in named(&want).into_iter().zip(&got) {
                    compare(&format!("kernel d{name} ({ctx})"), got, want, gradient_tolerance(dtype))?;
                }
                Ok(())
            }

            /// The public op on the fused backend (forward) and on `Autodiff` of it (gradients).
            fn check_public_op(case: &Case, dtype: DType) -> Result<(), CheckError> {
                check_op::<Fused>(case, &dev(), dtype, dtype, tolerance_for(dtype))?;
                check_op_gradients::<Autodiff<Fused>>(case, &dev(), dtype, gradient_tolerance(dtype))
            }

            #[test]
            fn backends_report_a_backward_kernel() {
                assert!(<Raw as Wkv7Backend>::wkv7_has_backward());
                assert!(<Fused as Wkv7Backend>::wkv7_has_backward());
            }

            #[test]
            fn wkv7_kernels_match_reference_in_f32() {
                TestRunner::new(Config::with_cases(10))
                    .run(&cases(kernel_dims()), |case| {
                        eprintln!("{}: {:?}", stringify!($name), case.dims);
                        check_launchers(&case, DType::F32, DType::F32).map_err(TestCaseError::from)?;
                        check_public_op(&case, DType::F32).map_err(TestCaseError::from)
                    })
                    .unwrap();
            }

            #[test]
            fn wkv7_kernels_match_reference_for_small_heads() {
                let dims = (1usize..3, 1usize..24, 1usize..3, prop_oneof![Just(1usize), Just(2), Just(4), Just(8)])
                    .prop_map(|(b, t, h, n)| Dims::new(b, t, h, n));
                TestRunner::new(Config::with_cases(6))
                    .run(&cases(dims), |case| {
                        check_launchers(&case, DType::F32, DType::F32).map_err(TestCaseError::from)
                    })
                    .unwrap();
            }

            #[test]
            fn wkv7_kernels_match_reference_at_extreme_decays() {
                for (seed, w) in [(1u64, (-20.0, -20.0)), (2, (5.0, 5.0)), (3, (-20.0, 5.0))] {
                    let case = Case::random(Dims::new(2, 33, 2, 64), seed, w);
                    check_launchers(&case, DType::F32, DType::F32).unwrap();
                    check_public_op(&case, DType::F32).unwrap();
                }
            }

            #[test]
            fn wkv7_kernels_match_reference_over_a_long_sequence() {
                // Many backward checkpoints (chunks of ceil(sqrt(T)) steps, the last one short).
                let case = Case::random(Dims::new(1, 400, 2, 64), 7, (-20.0, 5.0));
                check_launchers(&case, DType::F32, DType::F32).unwrap();
            }

            #[test]
            fn wkv7_kernels_match_reference_in_half_precision() {
                for dtype in $dtypes {
                    for (seed, dims) in [(11u64, Dims::new(2, 17, 2, 64)), (12, Dims::new(1, 40, 3, 32))] {
                        let case = Case::random(dims, seed, (-20.0, 5.0));
                        check_launchers(&case, dtype, dtype).unwrap();
                        // Half-precision sequences with an f32 state (how RWKV keeps its state).
                        check_launchers(&case, dtype, DType::F32).unwrap();
                        check_op::<Fused>(&case, &dev(), dtype, dtype, tolerance_for(dtype)).unwrap();
                    }
                }
            }

            #[test]
            fn wkv7_launchers_refuse_out_of_range_problems() {
                let t = |shape: [usize; 4]| prim(Tensor::<Raw, 4>::zeros(shape, &dev()));
                let run = |x: &[_; 7]| {
                    let [r, w_raw, k, v, a, b, initial_state] = x;
                    forward(Inputs { r, w_raw, k, v, a, b, initial_state }).map(|_| ())
                };
                let n = visualrwkv_kernels::MAX_HEAD_SIZE + 1;
                let x = t([1, 2, 1, n]);
                let err =
                    run(&[x.clone(), x.clone(), x.clone(), x.clone(), x.clone(), x, t([1, 1, n, n])]).unwrap_err();
                assert!(matches!(err, KernelError::HeadSize { n: 257, .. }), "{err}");
                let x = t([1, 2, 2, 4]);
                let s = t([1, 2, 4, 4]);
                let err = run(&[x.clone(), x.clone(), x.clone(), x.clone(), t([1, 3, 2, 4]), x.clone(), s.clone()])
                    .unwrap_err();
                assert_eq!(err, KernelError::Shape { name: "a", expected: vec![1, 2, 2, 4], found: vec![1, 3, 2, 4] });
                let err = run(&[x.clone(), x.clone(), x.clone(), x.clone(), x.clone(), x.clone(), t([1, 2, 4, 3])])
                    .unwrap_err();
                assert!(matches!(err, KernelError::Shape { name: "initial_state", .. }), "{err}");
                let err = run(&[t([1, 0, 2, 4]), x.clone(), x.clone(), x.clone(), x.clone(), x.clone(), s.clone()])
                    .unwrap_err();
                assert!(matches!(err, KernelError::Empty { .. }), "{err}");
                let inputs = Inputs { r: &x, w_raw: &x, k: &x, v: &x, a: &x, b: &x, initial_state: &s };
                let err = backward(inputs, &t([1, 2, 2, 5]), &s).unwrap_err();
                assert!(matches!(err, KernelError::Shape { name: "dy", .. }), "{err}");
                let err = backward(inputs, &x, &t([1, 2, 4, 5])).unwrap_err();
                assert!(matches!(err, KernelError::Shape { name: "d_state", .. }), "{err}");
            }

            #[test]
            fn wkv7_op_falls_back_for_problems_the_kernels_refuse() {
                // N above the kernels' limit: the op still runs (the tensor-op recurrence), and
                // its gradients too. Its matmuls round f32 to TF32 on CUDA, hence that tolerance.
                let case = Case::random(Dims::new(1, 3, 1, visualrwkv_kernels::MAX_HEAD_SIZE + 3), 5, (-3.0, 1.0));
                let tf32 = Tolerance { abs: 2e-2, rel: 2e-3 };
                check_op::<Raw>(&case, &dev(), DType::F32, DType::F32, tf32).unwrap();
                check_op::<Fused>(&case, &dev(), DType::F32, DType::F32, tf32).unwrap();
                check_op_gradients::<Autodiff<Raw>>(&case, &dev(), DType::F32, tf32).unwrap();
                check_op_gradients::<Autodiff<Fused>>(&case, &dev(), DType::F32, tf32).unwrap();
            }
        }
    };
}

suite!(wgpu, burn::backend::wgpu::WgpuRuntime, burn::backend::Wgpu, [DType::F16]);

#[cfg(feature = "cuda")]
suite!(cuda, burn_cubecl::cubecl::cuda::CudaRuntime, burn::backend::Cuda, [DType::F16, DType::BF16]);
