use thiserror::Error;
pub use visualrwkv_checkpoint::KeyProblem;
use visualrwkv_checkpoint::format_problems;

/// Errors of the RWKV-6 model: checkpoints, shapes and inputs.
#[derive(Debug, Error)]
pub enum RwkvError {
    /// The checkpoint file could not be read.
    #[error("{path}: {why}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        why: String,
    },
    /// The file is not a valid safetensors file (bad header, truncated data, ...).
    #[error("{path}: not a valid checkpoint file: {why}")]
    Format {
        /// The file.
        path: String,
        /// What the parser said.
        why: String,
    },
    /// A tensor is stored in a dtype other than F32, F16 or BF16.
    #[error("{path}: tensor `{key}` has dtype {dtype}, expected F32, F16 or BF16")]
    Dtype {
        /// The file.
        path: String,
        /// The tensor.
        key: String,
        /// Its dtype.
        dtype: String,
    },
    /// Keys are missing, unexpected or have the wrong shape; every offending key is listed.
    #[error("{path}: checkpoint does not match an RWKV-6 x060 model:{}", format_problems(.problems))]
    Keys {
        /// The file.
        path: String,
        /// One entry per offending key.
        problems: Vec<KeyProblem>,
    },
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

impl From<visualrwkv_checkpoint::CheckpointError> for RwkvError {
    fn from(e: visualrwkv_checkpoint::CheckpointError) -> Self {
        use visualrwkv_checkpoint::CheckpointError as C;
        match e {
            C::Io { path, why } => RwkvError::Io { path, why },
            C::Format { path, why } => RwkvError::Format { path, why },
            C::Dtype { path, key, dtype } => RwkvError::Dtype { path, key, dtype },
            C::Keys { path, problems, .. } => RwkvError::Keys { path, problems },
        }
    }
}
