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
//!
//! The user-defined pieces live here (not in the example files) so that the crate's tests run
//! them.

use visualrwkv_prompt::{IMAGE_TAG, PlacementContext, PromptStrategy};
use visualrwkv_scan::{ImageLayout, Scan, ScanError, with_extra};

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

#[cfg(test)]
mod tests {
    use super::*;
    use visualrwkv_scan::checked_permutation;

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
