//! Grid pooling of patch features (docs/model.md §2, VisualRWKV's `grid_pooling`).
//!
//! # Shapes
//!
//! Input: tower features `[B, T, D]` whose rows are an optional class token (row 0) followed by
//! a `gh × gw` patch grid in row-major order. Output: `[B, T', D]` = the pooled grid rows
//! (row-major) followed by the trailing non-grid rows (the class token), with the pooled grid's
//! height and width so scans know the layout.

use burn::tensor::{Tensor, backend::Backend, module::adaptive_avg_pool2d, module::avg_pool2d};

use crate::VisionError;

/// How the patch grid is reduced before projection (`--grid_size` of VisualRWKV).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GridPooling {
    /// `-1`: every patch, then the class token (577 tokens for CLIP-L/336; all released models).
    All,
    /// `0`: the class token only.
    ClsOnly,
    /// `1`: the mean of all patches, then the class token.
    Mean,
    /// `g ≥ 2`: average pooling with kernel = stride = ⌊side/g⌋ per axis, no padding, then the
    /// class token (for 24×24: g = 12 → 145 tokens, 8 → 65, 6 → 37, 4 → 17, 3 → 10, 2 → 5).
    Grid(usize),
    /// Every patch and no class token (towers without one, such as SigLIP; or LLaVA's way of
    /// dropping CLIP's).
    PatchesOnly,
    /// `s ≥ 1`: VisualRWKV-7 v7.00's token pooling to `num_token_per_image = s²` rows:
    /// PyTorch's `AdaptiveAvgPool2d(s)` over the patch grid, so output cell `(i, j)` averages
    /// patch rows `⌊i·gh/s⌋ .. ⌈(i+1)·gh/s⌉` and the same columns (windows overlap when s does
    /// not divide the side). Patches only: v7.00's towers have no class token, and a CLIP class
    /// token is dropped.
    Adaptive(usize),
}

impl GridPooling {
    /// From VisualRWKV's integer `grid_size`: −1, 0, 1 or g ≥ 2.
    pub fn from_grid_size(g: i64) -> Result<Self, VisionError> {
        match g {
            -1 => Ok(Self::All),
            0 => Ok(Self::ClsOnly),
            1 => Ok(Self::Mean),
            g if g >= 2 => Ok(Self::Grid(g as usize)),
            g => Err(VisionError::GridSize(g)),
        }
    }

    /// VisualRWKV-7 v7.00's `num_token_per_image` (a positive square number s²):
    /// [`GridPooling::Adaptive`]`(s)`.
    pub fn from_tokens_per_image(n: usize) -> Result<Self, VisionError> {
        let side = (n as f64).sqrt().round() as usize;
        if n == 0 || side * side != n {
            return Err(VisionError::TokensPerImage(n));
        }
        Ok(Self::Adaptive(side))
    }

    /// Rows [`grid_pool`] makes of a `gh × gw` patch grid (plus the class token when
    /// `has_cls`), without running it: what one image occupies in the sequence.
    pub fn rows(self, (gh, gw): (usize, usize), has_cls: bool) -> Result<usize, VisionError> {
        let cls = usize::from(has_cls);
        match self {
            Self::All => Ok(gh * gw + cls),
            Self::PatchesOnly => Ok(gh * gw),
            Self::ClsOnly if has_cls => Ok(1),
            Self::ClsOnly => Err(VisionError::NoClassToken),
            Self::Mean => Ok(1 + cls),
            Self::Grid(g) if g > gh || g > gw || g == 0 => {
                Err(VisionError::GridTooLarge { grid: g, height: gh, width: gw })
            }
            Self::Adaptive(s) if s == 0 || s > gh || s > gw => {
                Err(VisionError::GridTooLarge { grid: s, height: gh, width: gw })
            }
            Self::Adaptive(s) => Ok(s * s),
            // avg_pool2d with kernel = stride = ⌊side/g⌋ and no padding keeps ⌊side/stride⌋.
            Self::Grid(g) => Ok((gh / (gh / g)) * (gw / (gw / g)) + cls),
        }
    }
}

/// Pooled image features ready for the projector.
#[derive(Debug, Clone)]
pub struct PooledFeatures<B: Backend> {
    /// `[B, grid_h·grid_w + extra, D]`: grid rows (row-major), then `extra` non-grid rows.
    pub features: Tensor<B, 3>,
    /// Height of the (pooled) grid part.
    pub grid_h: usize,
    /// Width of the (pooled) grid part.
    pub grid_w: usize,
    /// Non-grid rows after the grid (1 for the class token, else 0).
    pub extra: usize,
}

impl<B: Backend> PooledFeatures<B> {
    /// Total number of rows `grid_h·grid_w + extra`.
    pub fn len(&self) -> usize {
        self.grid_h * self.grid_w + self.extra
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Pools `features` `[B, T, D]` laid out as an optional class token (row 0, when `has_cls`)
/// followed by a `gh × gw` patch grid.
pub fn grid_pool<B: Backend>(
    features: Tensor<B, 3>,
    (gh, gw): (usize, usize),
    has_cls: bool,
    pooling: GridPooling,
) -> Result<PooledFeatures<B>, VisionError> {
    let [b, t, d] = features.dims();
    let offset = usize::from(has_cls);
    if t != gh * gw + offset || gh == 0 || gw == 0 {
        return Err(VisionError::Shape {
            what: "features to pool".into(),
            expected: format!(
                "[B, {}, D] ({gh}x{gw} patches{})",
                gh * gw + offset,
                if has_cls { " + CLS" } else { "" }
            ),
            found: vec![b, t, d],
        });
    }
    let patches = features.clone().slice([0..b, offset..t, 0..d]);
    let cls = has_cls.then(|| features.slice([0..b, 0..1, 0..d]));
    let with_cls = |grid: Tensor<B, 3>, grid_h: usize, grid_w: usize| {
        let (features, extra) = match &cls {
            Some(c) => (Tensor::cat(vec![grid, c.clone()], 1), 1),
            None => (grid, 0),
        };
        PooledFeatures { features, grid_h, grid_w, extra }
    };
    Ok(match pooling {
        GridPooling::All => with_cls(patches, gh, gw),
        GridPooling::PatchesOnly => PooledFeatures { features: patches, grid_h: gh, grid_w: gw, extra: 0 },
        GridPooling::ClsOnly => {
            let c = cls.ok_or(VisionError::NoClassToken)?;
            PooledFeatures { features: c, grid_h: 0, grid_w: 0, extra: 1 }
        }
        GridPooling::Mean => with_cls(patches.mean_dim(1), 1, 1),
        GridPooling::Grid(g) => {
            if g > gh || g > gw {
                return Err(VisionError::GridTooLarge { grid: g, height: gh, width: gw });
            }
            let (sh, sw) = (gh / g, gw / g);
            let grid = patches.reshape([b, gh, gw, d]).permute([0, 3, 1, 2]);
            let pooled = avg_pool2d(grid, [sh, sw], [sh, sw], [0, 0], true, false);
            let [_, _, ph, pw] = pooled.dims();
            with_cls(pooled.permute([0, 2, 3, 1]).reshape([b, ph * pw, d]), ph, pw)
        }
        GridPooling::Adaptive(s) => {
            GridPooling::Adaptive(s).rows((gh, gw), false)?;
            let grid = patches.reshape([b, gh, gw, d]).permute([0, 3, 1, 2]);
            let pooled = adaptive_avg_pool2d(grid, [s, s]).permute([0, 2, 3, 1]).reshape([b, s * s, d]);
            PooledFeatures { features: pooled, grid_h: s, grid_w: s, extra: 0 }
        }
    })
}
