//! # visualrwkv-scan: the order in which each layer reads the image
//!
//! VisualRWKV runs every block causally over `[prefix | image span | suffix]`, but lets each
//! layer read the image span in its own order (docs/model.md §4): before block `l` the rows of the
//! span are permuted, after it the permutation is undone. Text rows never move, so a state cached
//! after the prompt stays exact for generation (docs/model.md §5).
//!
//! A [`Scan`] returns, for layer `l` of `L` and an [`ImageLayout`] (an `h × w` grid of patch rows
//! in row-major order, then `extra` non-grid rows such as CLIP's class token), a permutation of
//! the span in *gather* form: row `q` of the permuted span is row `perm[q]` of the original.
//! Built in: [`UniDirectional`], [`BiDirectional`] (odd layers reversed, VisualRWKV v6.0),
//! [`MultiDirectional`] (row-forward, row-backward, column-forward, column-backward by `l mod 4`,
//! v6.01 @99f93e2). The built-in scans move grid rows only; trailing rows keep their place.
//! `examples/scans.rs` adds snake and spiral orders without touching this crate.
//!
//! # Shapes
//!
//! A permutation has length `layout.len() = h·w + extra`; `None` means identity (no work).

use thiserror::Error;

/// Errors of scan strategies.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ScanError {
    /// The permutation is not a bijection of `0..len`.
    #[error("scan `{scan}` layer {layer}: not a permutation of 0..{len}: {why}")]
    NotAPermutation {
        /// The scan's name.
        scan: String,
        /// The layer.
        layer: usize,
        /// The span length.
        len: usize,
        /// What is wrong.
        why: String,
    },
    /// The layout does not suit the scan (e.g. a transposing scan over a non-square grid).
    #[error("scan `{scan}`: {why}")]
    Layout {
        /// The scan's name.
        scan: String,
        /// What is wrong.
        why: String,
    },
}

/// How the image rows of the span are laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ImageLayout {
    /// Grid height (rows of patches).
    pub grid_h: usize,
    /// Grid width (patches per row).
    pub grid_w: usize,
    /// Non-grid rows after the grid (1 for a class token, else 0).
    pub extra: usize,
}

impl ImageLayout {
    /// A layout of `grid_h × grid_w` patches followed by `extra` rows.
    pub fn new(grid_h: usize, grid_w: usize, extra: usize) -> Self {
        Self { grid_h, grid_w, extra }
    }

    /// Rows in the span: `h·w + extra`.
    pub fn len(&self) -> usize {
        self.grid_h * self.grid_w + self.extra
    }

    /// Whether the span is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Rows of the grid part: `h·w`.
    pub fn grid_len(&self) -> usize {
        self.grid_h * self.grid_w
    }
}

/// A scan strategy. Implement it to try a new order; the model validates what it returns.
pub trait Scan: std::fmt::Debug + Send + Sync {
    /// A short name for messages and reports.
    fn name(&self) -> String;

    /// The gather permutation of the span before block `layer` of `n_layers` (`None` =
    /// identity): permuted row `q` is original row `perm[q]`.
    fn permutation(&self, layer: usize, n_layers: usize, layout: &ImageLayout)
    -> Result<Option<Vec<usize>>, ScanError>;
}

/// Checks that `perm` is a bijection of `0..len`.
pub fn validate(perm: &[usize], len: usize, scan: &str, layer: usize) -> Result<(), ScanError> {
    let err = |why: String| ScanError::NotAPermutation { scan: scan.to_string(), layer, len, why };
    if perm.len() != len {
        return Err(err(format!("it has {} entries", perm.len())));
    }
    let mut seen = vec![false; len];
    for (q, &p) in perm.iter().enumerate() {
        if p >= len {
            return Err(err(format!("entry {q} is {p}")));
        }
        if std::mem::replace(&mut seen[p], true) {
            return Err(err(format!("row {p} appears twice")));
        }
    }
    Ok(())
}

/// The inverse of a gather permutation: `inverse[perm[q]] = q` (scatter back after the block).
pub fn inverse(perm: &[usize]) -> Vec<usize> {
    let mut inv = vec![0; perm.len()];
    for (q, &p) in perm.iter().enumerate() {
        inv[p] = q;
    }
    inv
}

/// [`Scan::permutation`], validated: `Ok(None)` for identity (including an identity vector).
pub fn checked_permutation(
    scan: &dyn Scan,
    layer: usize,
    n_layers: usize,
    layout: &ImageLayout,
) -> Result<Option<Vec<usize>>, ScanError> {
    match scan.permutation(layer, n_layers, layout)? {
        None => Ok(None),
        Some(perm) => {
            validate(&perm, layout.len(), &scan.name(), layer)?;
            Ok(if perm.iter().enumerate().all(|(q, &p)| q == p) { None } else { Some(perm) })
        }
    }
}

/// Builds a span permutation from an order of the grid rows (`grid_order[q]` = grid row read at
/// position `q`), keeping the trailing non-grid rows in place.
pub fn with_extra(grid_order: Vec<usize>, layout: &ImageLayout) -> Vec<usize> {
    let mut perm = grid_order;
    perm.extend(layout.grid_len()..layout.len());
    perm
}

/// Every layer reads the image in row-major order (no permutation).
#[derive(Clone, Copy, Debug, Default)]
pub struct UniDirectional;

impl Scan for UniDirectional {
    fn name(&self) -> String {
        "uni".into()
    }
    fn permutation(&self, _: usize, _: usize, _: &ImageLayout) -> Result<Option<Vec<usize>>, ScanError> {
        Ok(None)
    }
}

/// VisualRWKV v6.0: odd layers read the grid backwards (bottom-right to top-left).
#[derive(Clone, Copy, Debug, Default)]
pub struct BiDirectional;

impl Scan for BiDirectional {
    fn name(&self) -> String {
        "bi".into()
    }
    fn permutation(&self, layer: usize, _: usize, layout: &ImageLayout) -> Result<Option<Vec<usize>>, ScanError> {
        Ok((layer % 2 == 1).then(|| with_extra((0..layout.grid_len()).rev().collect(), layout)))
    }
}

/// v6.01 @99f93e2: by `layer mod 4`, row-major forward, row-major backward, column-major
/// forward (each column top to bottom), column-major backward. The grid must be square, as in
/// the reference (it takes `H = W = √n`).
#[derive(Clone, Copy, Debug, Default)]
pub struct MultiDirectional;

impl Scan for MultiDirectional {
    fn name(&self) -> String {
        "multi".into()
    }
    fn permutation(&self, layer: usize, _: usize, layout: &ImageLayout) -> Result<Option<Vec<usize>>, ScanError> {
        let (h, w) = (layout.grid_h, layout.grid_w);
        if h != w {
            return Err(ScanError::Layout {
                scan: self.name(),
                why: format!("the multi-directional scan transposes the grid and needs it square, got {h}x{w}"),
            });
        }
        let n = h * w;
        let order: Vec<usize> = match layer % 4 {
            0 => return Ok(None),
            1 => (0..n).rev().collect(),
            // Position q holds patch (row = q mod h, col = q div h).
            2 => (0..n).map(|q| (q % h) * w + q / h).collect(),
            _ => (0..n).rev().map(|q| (q % h) * w + q / h).collect(),
        };
        Ok(Some(with_extra(order, layout)))
    }
}

/// The built-in scan named `name` (`uni`, `bi` or `multi`).
pub fn by_name(name: &str) -> Option<Box<dyn Scan>> {
    match name {
        "uni" | "unidirectional" => Some(Box::new(UniDirectional)),
        "bi" | "bidirectional" => Some(Box::new(BiDirectional)),
        "multi" | "multidirectional" => Some(Box::new(MultiDirectional)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(perm: &[usize], rows: &[usize]) -> Vec<usize> {
        perm.iter().map(|&p| rows[p]).collect()
    }

    #[test]
    fn bidirectional_reverses_odd_layers_and_keeps_cls_last() {
        let layout = ImageLayout::new(2, 3, 1);
        assert_eq!(checked_permutation(&BiDirectional, 0, 4, &layout).unwrap(), None);
        assert_eq!(checked_permutation(&BiDirectional, 1, 4, &layout).unwrap(), Some(vec![5, 4, 3, 2, 1, 0, 6]));
    }

    #[test]
    fn multidirectional_matches_the_reference_view_transpose_flip() {
        // The reference: x.view(B, H, W, C).transpose(1, 2) then .flip(1) for l mod 4 = 3.
        let layout = ImageLayout::new(3, 3, 1);
        let rows: Vec<usize> = (0..10).collect();
        let transposed = vec![0, 3, 6, 1, 4, 7, 2, 5, 8, 9];
        let p2 = checked_permutation(&MultiDirectional, 2, 8, &layout).unwrap().unwrap();
        assert_eq!(apply(&p2, &rows), transposed);
        let p3 = checked_permutation(&MultiDirectional, 7, 8, &layout).unwrap().unwrap();
        assert_eq!(apply(&p3, &rows), vec![8, 5, 2, 7, 4, 1, 6, 3, 0, 9]);
        assert_eq!(checked_permutation(&MultiDirectional, 4, 8, &layout).unwrap(), None);
        let p5 = checked_permutation(&MultiDirectional, 5, 8, &layout).unwrap().unwrap();
        assert_eq!(apply(&p5, &rows), vec![8, 7, 6, 5, 4, 3, 2, 1, 0, 9]);
        // Undo = inverse.
        assert_eq!(apply(&inverse(&p3), &apply(&p3, &rows)), rows);
    }

    #[test]
    fn non_square_multidirectional_and_bad_permutations_are_errors() {
        let e = MultiDirectional.permutation(1, 4, &ImageLayout::new(2, 3, 0)).unwrap_err();
        assert!(matches!(e, ScanError::Layout { .. }));
        #[derive(Debug)]
        struct Broken(Vec<usize>);
        impl Scan for Broken {
            fn name(&self) -> String {
                "broken".into()
            }
            fn permutation(&self, _: usize, _: usize, _: &ImageLayout) -> Result<Option<Vec<usize>>, ScanError> {
                Ok(Some(self.0.clone()))
            }
        }
        let layout = ImageLayout::new(1, 3, 0);
        for bad in [vec![0, 1], vec![0, 1, 3], vec![0, 0, 1]] {
            assert!(matches!(checked_permutation(&Broken(bad), 0, 1, &layout), Err(ScanError::NotAPermutation { .. })));
        }
        assert_eq!(checked_permutation(&Broken(vec![0, 1, 2]), 0, 1, &layout).unwrap(), None);
    }

    proptest::proptest! {
        #[test]
        fn built_in_scans_are_bijections_fixing_extra_rows(
            side in 1usize..9, extra in 0usize..3, layer in 0usize..12,
        ) {
            let layout = ImageLayout::new(side, side, extra);
            for scan in ["uni", "bi", "multi"] {
                let scan = by_name(scan).unwrap();
                if let Some(p) = checked_permutation(scan.as_ref(), layer, 12, &layout).unwrap() {
                    proptest::prop_assert_eq!(p.len(), layout.len());
                    proptest::prop_assert!((layout.grid_len()..layout.len()).all(|q| p[q] == q));
                }
            }
        }
    }
}
