//! Proving your own WKV6 implementation the way `visualrwkv-kernels` proves its kernels.
//!
//! ```text
//! cargo run --release -p visualrwkv-examples --example own_wkv_kernel [-- CASES]
//! ```
//!
//! `visualrwkv_examples::sequential_wkv6` stands for your kernel: any function from the inputs
//! (`CaseTensors`) to `(y, final state)`. The harness (feature `testing` of `visualrwkv-wkv`)
//! draws problems — odd `T`, `T = 1`, several heads, decays from ~1 to ~0, non-zero initial
//! states — and checks the output, the final state and the gradients of all six inputs against
//! the f64 reference, with the tolerance for the dtype. To check a GPU kernel, use its backend
//! (e.g. `Autodiff<burn::backend::Wgpu>`) and a dtype such as `DType::F16`.

use burn::backend::{Autodiff, NdArray};
use burn::tensor::DType;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use visualrwkv_examples::sequential_wkv6;
use visualrwkv_wkv::testing::{CaseConfig, cases, check_impl};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n_cases: u32 = match std::env::args().nth(1) {
        Some(a) => a.parse().map_err(|e| format!("CASES must be a positive integer ({a:?}: {e})"))?,
        None => 16,
    };
    let dev = Default::default();
    let config = CaseConfig { batch: 1..3, time: 1..24, heads: 1..3, head_sizes: vec![1, 4, 16], w_raw: (-20.0, 5.0) };
    TestRunner::new(Config::with_cases(n_cases))
        .run(&cases(config), |case| {
            check_impl::<Autodiff<NdArray>>(&sequential_wkv6, &case, &dev, DType::F32).map_err(TestCaseError::from)
        })
        .map_err(|e| format!("your implementation disagrees with the reference: {e}"))?;
    println!(
        "sequential_wkv6 matches the reference on {n_cases} random problems: y, final state and all six gradients"
    );
    Ok(())
}
