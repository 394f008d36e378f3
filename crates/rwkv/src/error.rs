use thiserror::Error;
pub use visualrwkv_checkpoint::KeyProblem;

/// Errors of the RWKV-6 model: checkpoints, shapes and inputs.
#[derive(Debug, Error)]
pub enum RwkvError {
    /// Reading or checking a checkpoint failed: I/O, format, dtype, or keys (every missing,
    /// unexpected or mis-shaped key is listed).
    #[error(transparent)]
    Checkpoint(#[from] visualrwkv_checkpoint::CheckpointError),
    /// The configuration cannot be inferred from the tensors.
    #[error("{path}: cannot infer the model configuration: {why}")]
    Config {
        /// The file.
        path: String,
        /// Why.
        why: String,
    },
    /// A state or input does not fit the model.
    #[error("{what}: expected shape {expected:?}, found {found:?}")]
    Shape {
        /// The tensor.
        what: String,
        /// Expected shape.
        expected: Vec<usize>,
        /// Found shape.
        found: Vec<usize>,
    },
    /// An input is unusable (empty sequence, token id out of range, ...).
    #[error("{0}")]
    Input(String),
    /// The WKV operator rejected its inputs.
    #[error(transparent)]
    Wkv(#[from] visualrwkv_wkv::WkvError),
}
