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
    /// An argument is unusable (layer index out of range, empty batch, ...).
    #[error("{0}")]
    Input(String),
}
