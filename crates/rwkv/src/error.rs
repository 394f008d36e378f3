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
        /// What is wrong with its tensors.
        why: ConfigError,
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
    /// An input with no rows (a prompt without tokens, a batch without sequences).
    #[error("{what} is empty (shape {shape:?})")]
    EmptyInput {
        /// The input.
        what: &'static str,
        /// Its shape.
        shape: Vec<usize>,
    },
    /// A token id outside the vocabulary.
    #[error("token id {id} is outside the vocabulary 0..{vocab}")]
    TokenOutOfVocabulary {
        /// The id.
        id: i64,
        /// The vocabulary size.
        vocab: usize,
    },
    /// A layer index beyond the model's blocks.
    #[error("layer {layer} out of range (the model has {layers})")]
    LayerOutOfRange {
        /// The index asked for.
        layer: usize,
        /// The number of blocks.
        layers: usize,
    },
    /// Batch rows outside a state.
    #[error("batch rows {rows:?} out of range for a state of {batch} rows")]
    BatchRows {
        /// The rows asked for.
        rows: std::ops::Range<usize>,
        /// The state's batch size.
        batch: usize,
    },
    /// A layer's row order that is not a permutation of the sequence's rows.
    #[error("row order over {len} rows reads row {row} at position {position}: not a permutation of 0..{len}")]
    RowOrder {
        /// Rows of the sequence.
        len: usize,
        /// The position whose row is out of range or repeated.
        position: usize,
        /// That row.
        row: usize,
    },
    /// Sampling options out of range.
    #[error(transparent)]
    Sampling(#[from] crate::sampling::SamplingError),
    /// A path that exists for one architecture only (e.g. x060 trainer initialisation).
    #[error("{what} runs RWKV-6 (x060) models only; this model is {arch}")]
    Unsupported {
        /// What was asked for.
        what: String,
        /// The model's architecture.
        arch: &'static str,
    },
    /// The WKV operator rejected its inputs.
    #[error(transparent)]
    Wkv(#[from] visualrwkv_wkv::WkvError),
}

/// Why a model configuration cannot be read off checkpoint tensors.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// A key the configuration is read from is absent.
    #[error("missing key `{0}`")]
    MissingKey(String),
    /// A key has the wrong number of dimensions.
    #[error("key `{key}` has shape {shape:?}, expected rank {rank}")]
    Rank {
        /// The key.
        key: String,
        /// Its shape.
        shape: Vec<usize>,
        /// The rank expected.
        rank: usize,
    },
    /// No `blocks.{l}.*` key.
    #[error("no `blocks.{{l}}.*` keys")]
    NoBlocks,
    /// `time_maa_w1` does not stack five LoRA blocks.
    #[error("`blocks.0.att.time_maa_w1` has {0} columns, not a multiple of 5")]
    MixColumns(usize),
}
