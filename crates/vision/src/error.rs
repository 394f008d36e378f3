use thiserror::Error;
use visualrwkv_checkpoint::CheckpointError;

/// Errors of the vision side: checkpoints, configurations, images and inputs.
#[derive(Debug, Error)]
pub enum VisionError {
    /// Reading or checking checkpoint tensors failed (names the file and every bad key).
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// A configuration cannot be read or inferred.
    #[error("{origin}: {why}")]
    Config {
        /// The file (or "configuration").
        origin: String,
        /// What is wrong.
        why: String,
    },
    /// An image cannot be read or decoded (missing, truncated, not an image, unsupported).
    #[error("{origin}: cannot decode image: {why}")]
    Image {
        /// The file (or "bytes").
        origin: String,
        /// What the decoder said.
        why: String,
    },
    /// An image exceeds the dimension limit (decompression-bomb guard).
    #[error("{origin}: image of {width}x{height} exceeds the limit of {limit} pixels per side")]
    ImageTooLarge {
        /// The file (or "bytes").
        origin: String,
        /// Width in the header.
        width: u32,
        /// Height in the header.
        height: u32,
        /// The limit.
        limit: u32,
    },
    /// A tensor has the wrong shape.
    #[error("{what}: expected shape {expected}, found {found:?}")]
    Shape {
        /// The tensor.
        what: String,
        /// The expected shape (in words where a dimension is free).
        expected: String,
        /// The shape found.
        found: Vec<usize>,
    },
    /// A `grid_size` that is not −1, 0, 1 or ≥ 2.
    #[error("grid size {0} is not -1, 0, 1 or ≥ 2")]
    GridSize(i64),
    /// A v7.00 `num_token_per_image` that is not a positive square number.
    #[error("{0} tokens per image: must be a square number (1, 4, 9, 16, ...)")]
    TokensPerImage(usize),
    /// CLS-only pooling of a tower without a class token.
    #[error("grid size 0 (CLS only) needs a tower with a class token")]
    NoClassToken,
    /// A pooling grid larger than the patch grid.
    #[error("grid size {grid} exceeds the {height}x{width} patch grid")]
    GridTooLarge {
        /// The pooling grid.
        grid: usize,
        /// Patch rows.
        height: usize,
        /// Patch columns.
        width: usize,
    },
    /// A resize to zero pixels.
    #[error("resize to {height}x{width} is empty")]
    EmptyResize {
        /// Target height.
        height: u32,
        /// Target width.
        width: u32,
    },
    /// An image batch with no images.
    #[error("empty image batch")]
    EmptyBatch,
    /// Images of one batch that preprocess to different sizes.
    #[error("image {index} preprocesses to {found:?}, image 0 to {expected:?}: use a crop or an exact resize to batch")]
    BatchSizes {
        /// The image that differs.
        index: usize,
        /// Image 0's `(height, width)`.
        expected: (usize, usize),
        /// This image's.
        found: (usize, usize),
    },
    /// A hidden layer the tower does not have.
    #[error("hidden layer {layer} out of range for a tower with {layers} layers (valid: -{layers}-1 ..= {layers})")]
    Layer {
        /// The layer asked for (Python-style index).
        layer: i64,
        /// The tower's layer count.
        layers: usize,
    },
}
