//! Runnable examples of the VisualRWKV crates, using only their public APIs as a user's crate
//! would. Each example is a file beside this one:
//!
//! - `wkv6_demo`: the WKV6 op end to end on the CPU (prefill against the reference, decoding from
//!   the carried state, gradients through autodiff):
//!   `cargo run --release -p visualrwkv-examples --example wkv6_demo`.
//! - `scans`: two user-defined image scans, [`Snake`] and [`Spiral`], plugged into VisualRWKV
//!   without touching the library: `cargo run --release -p visualrwkv-examples --example scans`.
//! - `prompts`: a user-defined prompt strategy, [`Hint`], next to the built-in ones:
//!   `cargo run --release -p visualrwkv-examples --example prompts`.
//! - `ablate_custom`: a prompt × scan ablation on the synthetic task that includes [`Snake`] and
//!   [`Hint`] next to built-in layouts:
//!   `cargo run --release -p visualrwkv-examples --example ablate_custom`.
//! - `own_wkv_kernel`: a user's own WKV6 implementation, [`sequential_wkv6`], proven against the
//!   reference with the property-test harness of `visualrwkv_wkv::testing` (outputs, final state
//!   and all six gradients): `cargo run --release -p visualrwkv-examples --example own_wkv_kernel`.
//!
//! The user-defined pieces live here (not in the example files) so that the crate's tests run
//! them.

use std::convert::Infallible;

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use visualrwkv_prompt::{IMAGE_TAG, PlacementContext, PromptStrategy};
use visualrwkv_scan::{ImageLayout, Scan, ScanError, with_extra};
use visualrwkv_wkv::testing::CaseTensors;

/// A WKV6 written the way a researcher might start a new variant: one step per token with plain
/// tensor ops (differentiable on any `Autodiff<B>`). Its signature is the harness's
/// `Wkv6Impl`: inputs in, `(y [B, T, H, N], final state [B, H, N, N])` out; it cannot fail
/// (your own may return any error type).
pub fn sequential_wkv6<B: Backend>(x: CaseTensors<B>) -> Result<(Tensor<B, 4>, Tensor<B, 4>), Infallible> {
    let [b, t, h, n] = x.r.dims();
    let decay = x.w_raw.exp().neg().exp();
    let u = x.u.reshape([1, h, n, 1]);
    let mut state = x.initial_state;
    let mut ys = Vec::with_capacity(t);
    for i in 0..t {
        let at = |z: &Tensor<B, 4>| z.clone().slice([0..b, i..i + 1, 0..h, 0..n]).reshape([b, h, n]);
        let kv = at(&x.k).reshape([b, h, n, 1]) * at(&x.v).reshape([b, h, 1, n]);
        // y[j] = sum_i r[i] (S[i, j] + u[i] k[i] v[j])
        let y = at(&x.r).reshape([b, h, 1, n]).matmul(state.clone() + u.clone() * kv.clone());
        ys.push(y.reshape([b, 1, h, n]));
        state = at(&decay).reshape([b, h, n, 1]) * state + kv;
    }
    Ok((Tensor::cat(ys, 1), state))
}

/// Boustrophedon ("snake") order in odd layers: left to right on even grid rows, right to left
/// on odd ones, so consecutive patches are always neighbours. Even layers read row-major.
#[derive(Clone, Copy, Debug, Default)]
pub struct Snake;

impl Scan for Snake {
    fn name(&self) -> String {
        "snake".into()
    }

    fn permutation(&self, layer: usize, _: usize, l: &ImageLayout) -> Result<Option<Vec<usize>>, ScanError> {
        if layer.is_multiple_of(2) {
            return Ok(None);
        }
        let order = (0..l.grid_h)
            .flat_map(|r| {
                let row: Vec<usize> = (0..l.grid_w).map(|c| r * l.grid_w + c).collect();
                if r % 2 == 1 { row.into_iter().rev().collect::<Vec<_>>() } else { row }
            })
            .collect();
        Ok(Some(with_extra(order, l)))
    }
}

/// Clockwise spiral from the top-left corner inwards in odd layers (the centre of the image is
/// read last, right before the text); even layers read row-major.
#[derive(Clone, Copy, Debug, Default)]
pub struct Spiral;

impl Scan for Spiral {
    fn name(&self) -> String {
        "spiral".into()
    }

    fn permutation(&self, layer: usize, _: usize, l: &ImageLayout) -> Result<Option<Vec<usize>>, ScanError> {
        if layer.is_multiple_of(2) {
            return Ok(None);
        }
        let (h, w) = (l.grid_h as i64, l.grid_w as i64);
        let (mut top, mut bottom, mut left, mut right) = (0, h - 1, 0, w - 1);
        let mut order = Vec::with_capacity(l.grid_len());
        while top <= bottom && left <= right {
            order.extend((left..=right).map(|c| top * w + c));
            order.extend((top + 1..=bottom).map(|r| r * w + right));
            if top < bottom {
                order.extend((left..right).rev().map(|c| bottom * w + c));
            }
            if left < right {
                order.extend((top + 1..bottom).rev().map(|r| r * w + left));
            }
            (top, bottom, left, right) = (top + 1, bottom - 1, left + 1, right - 1);
        }
        Ok(Some(with_extra(order.into_iter().map(|i| i as usize).collect(), l)))
    }
}

/// A prompt layout that puts a fixed hint before the image and the question after it:
/// `"Look at the image carefully.\n<image>\n" + Q`.
#[derive(Clone, Debug)]
pub struct Hint(pub String);

impl Default for Hint {
    fn default() -> Self {
        Self("Look at the image carefully.".into())
    }
}

impl PromptStrategy for Hint {
    fn name(&self) -> String {
        "hint".into()
    }

    fn place(&self, q: &str, _: &PlacementContext<'_>) -> String {
        format!("{}\n{IMAGE_TAG}\n{q}", self.0)
    }
}

/// The Rust blocks of the README and of `docs/` as doctests of this crate: `cargo test
/// --workspace` (CI) compiles each and runs those not marked `no_run`, so the documentation's
/// code cannot drift from the API. Blocks in other languages (`sh`, `text`, `json`) are not run.
#[cfg(doctest)]
pub mod docs {
    #[doc = include_str!("../README.md")]
    pub struct Readme;
    #[doc = include_str!("../docs/architecture.md")]
    pub struct Architecture;
    #[doc = include_str!("../docs/model.md")]
    pub struct Model;
    #[doc = include_str!("../docs/training.md")]
    pub struct Training;
    #[doc = include_str!("../docs/evaluation.md")]
    pub struct Evaluation;
    #[doc = include_str!("../docs/extending.md")]
    pub struct Extending;
    #[doc = include_str!("../docs/gpu.md")]
    pub struct Gpu;
    #[doc = include_str!("../docs/performance.md")]
    pub struct Performance;
    #[doc = include_str!("../docs/ablations.md")]
    pub struct Ablations;
    #[doc = include_str!("../docs/reliability.md")]
    pub struct Reliability;
    #[doc = include_str!("../docs/serving.md")]
    pub struct Serving;
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};
    use burn::tensor::DType;
    use proptest::test_runner::{Config, TestCaseError, TestRunner};
    use visualrwkv_scan::checked_permutation;
    use visualrwkv_wkv::testing::{CaseConfig, cases, check_impl};

    #[test]
    fn a_user_wkv6_passes_the_harness() {
        let dev = Default::default();
        let config =
            CaseConfig { batch: 1..3, time: 1..12, heads: 1..3, head_sizes: vec![1, 4, 16], w_raw: (-20.0, 5.0) };
        TestRunner::new(Config::with_cases(8))
            .run(&cases(config), |case| {
                check_impl::<Autodiff<NdArray>>(&sequential_wkv6, &case, &dev, DType::F32).map_err(TestCaseError::from)
            })
            .unwrap();
    }

    #[test]
    fn the_harness_catches_a_wrong_wkv6() {
        // The same implementation with the bonus term dropped must fail.
        let wrong = |mut x: CaseTensors<Autodiff<NdArray>>| {
            x.u = x.u.zeros_like();
            sequential_wkv6(x)
        };
        let case = visualrwkv_wkv::testing::Case::random(
            visualrwkv_wkv::reference::Dims::new(1, 5, 2, 4),
            9,
            (-3.0, 1.0),
            false,
        );
        let err = check_impl::<Autodiff<NdArray>>(&wrong, &case, &Default::default(), DType::F32).unwrap_err();
        assert!(
            matches!(&err, visualrwkv_wkv::testing::CheckError::Value { tensor, .. } if tensor.starts_with("y (")),
            "{err}"
        );
    }

    #[test]
    fn snake_and_spiral_are_valid_scans() {
        let l = ImageLayout::new(3, 4, 1);
        let snake = checked_permutation(&Snake, 1, 2, &l).unwrap().unwrap();
        assert_eq!(snake, vec![0, 1, 2, 3, 7, 6, 5, 4, 8, 9, 10, 11, 12]);
        let spiral = checked_permutation(&Spiral, 1, 2, &l).unwrap().unwrap();
        assert_eq!(spiral, vec![0, 1, 2, 3, 7, 11, 10, 9, 8, 4, 5, 6, 12]);
        for (h, w) in [(1, 1), (1, 5), (5, 1), (4, 4), (5, 7)] {
            let l = ImageLayout::new(h, w, 0);
            assert!(checked_permutation(&Spiral, 1, 2, &l).is_ok(), "{h}x{w}");
            assert!(checked_permutation(&Snake, 3, 4, &l).is_ok(), "{h}x{w}");
        }
    }
}
