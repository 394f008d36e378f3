//! # visualrwkv-eval: benchmark questions in, official scores out
//!
//! The model-free half of evaluating VisualRWKV on a benchmark:
//!
//! * [`questions`]: question files as the official `evaluate.py` and LLaVA-1.5 read them — JSONL
//!   lines `{question_id, image, text[, category]}`, a JSON list with `conversations`, MMBench's
//!   TSV (base64 images, options `A`–`D`, hint) — and the official chunking across processes.
//! * [`answers`]: the answer file, one JSON line per question with the fields `evaluate.py`
//!   writes (`question_id`, `prompt`, `text`, `avg_logit`, `avg_prob`, `model_id`,
//!   `metadata.image_file`, plus LLaVA's `answer_id`), each line written whole and a run resumable.
//! * [`normalize`]: the EvalAI answer processor (punctuation, number words, articles,
//!   contractions) used by the VQA / TextVQA accuracy.
//! * [`metrics`]: the official scorers on generic items — VQA soft accuracy, GQA exact match,
//!   POPE accuracy / precision / recall / F1 / yes-ratio, ScienceQA option accuracy, MME
//!   perception and cognition scores.
//! * [`annotations`]: the benchmarks' own annotation files (TextVQA, GQA, POPE, ScienceQA, MME)
//!   joined with an answer file into those items.
//!
//! Running the model over the questions lives in `visualrwkv::answering`; the command-line
//! tool's `eval` and `score` put the two together.

pub mod annotations;
pub mod answers;
pub mod metrics;
pub mod normalize;
pub mod questions;

use std::path::{Path, PathBuf};

pub use answers::{Answer, AnswerFile, AnswerMetadata};
pub use metrics::{Item, Metric, Scored};
pub use questions::{ImageRef, Question, QuestionFormat, chunk_range, read_questions};

/// Errors of reading question, answer and annotation files and of scoring.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// A file could not be read or written.
    #[error("{path}: {why}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        why: String,
    },
    /// A line or file is not valid JSON / TSV.
    #[error("{path}:{line}: {why}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line (or row) number.
        line: usize,
        /// The parser's message.
        why: String,
    },
    /// A field is missing or has the wrong type.
    #[error("{path}:{line}: field `{field}`: {why}")]
    Field {
        /// The file.
        path: PathBuf,
        /// 1-based line (or row / list entry) number.
        line: usize,
        /// The field.
        field: String,
        /// What is wrong with it.
        why: String,
    },
    /// The same question appears twice.
    #[error("{path}:{line}: duplicate question_id {id} with the same question (first at line {first})")]
    Duplicate {
        /// The file.
        path: PathBuf,
        /// The repeated line.
        line: usize,
        /// The first line with it.
        first: usize,
        /// The id as JSON.
        id: String,
    },
    /// Answers and annotations do not match.
    #[error("{path}: {why}")]
    Unmatched {
        /// The annotation (or answer) file.
        path: PathBuf,
        /// Counts and the first unmatched ids.
        why: String,
    },
    /// A question file whose type the extension does not tell.
    #[error("{0}: unknown question file type (.jsonl, .json or .tsv)")]
    QuestionFileType(PathBuf),
    /// A metric name that is not one of [`crate::Metric::NAMES`].
    #[error("unknown metric `{0}` (one of {names})", names = crate::Metric::NAMES.join(", "))]
    UnknownMetric(String),
    /// An item (0-based) whose fields the metric cannot use.
    #[error("item {index}: {why}")]
    Item {
        /// The item.
        index: usize,
        /// What the metric needs or found.
        why: String,
    },
    /// A POPE annotation folder without `coco_pope_*.json` files.
    #[error("{0}: no coco_pope_*.json files")]
    NoPopeFiles(PathBuf),
    /// A chunk index not below the chunk count.
    #[error("--chunk-index {index} is not below --chunks {chunks}")]
    ChunkIndex {
        /// The index.
        index: usize,
        /// The number of chunks.
        chunks: usize,
    },
}

/// A JSON object as read from a line, and its 1-based line number.
pub type JsonLine = (usize, serde_json::Map<String, serde_json::Value>);

pub(crate) fn io_error(path: &Path, e: impl std::fmt::Display) -> EvalError {
    EvalError::Io { path: path.to_path_buf(), why: e.to_string() }
}

pub(crate) fn read_text(path: &Path) -> Result<String, EvalError> {
    std::fs::read_to_string(path).map_err(|e| io_error(path, e))
}

/// A JSON value as an id string: strings as they are, anything else as its JSON text.
pub fn id_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Parses a JSON-lines file: one object per non-empty line, each with its 1-based line number.
/// A line that is not a JSON object is an error naming the line.
pub fn read_json_lines(path: &Path) -> Result<Vec<JsonLine>, EvalError> {
    parse_json_lines(&read_text(path)?, path)
}

/// [`read_json_lines`] of text already read (`path` names it in errors).
pub fn parse_json_lines(text: &str, path: &Path) -> Result<Vec<JsonLine>, EvalError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let parse = |why: String| EvalError::Parse { path: path.to_path_buf(), line: i + 1, why };
        match serde_json::from_str::<serde_json::Value>(line) {
            Ok(serde_json::Value::Object(map)) => out.push((i + 1, map)),
            Ok(_) => return Err(parse("not a JSON object".into())),
            Err(e) => return Err(parse(format!("column {}: {e}", e.column()))),
        }
    }
    Ok(out)
}
