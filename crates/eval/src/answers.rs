//! The answer file: one JSON object per line, as the official `evaluate.py` writes it, plus
//! LLaVA's `answer_id`.
//!
//! Each line is serialised in full and handed to the file in one `write` call, so a line is never
//! interleaved or half-written by this process; a run killed from outside can at worst leave a
//! torn last line, which [`AnswerFile::resume`] cuts off before continuing.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{EvalError, io_error};

/// Where the answer's image came from.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AnswerMetadata {
    /// The question's `image` (a file name; `null` for none or an inline MMBench image).
    #[serde(default)]
    pub image_file: Option<String>,
    /// The question's `category`, when it has one (POPE's split, MME's task).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
}

/// One answer line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    /// The question's id, as the question file gives it.
    pub question_id: Value,
    /// The full prompt text (`"User: …\n\nAssistant:"`, `<image>` where the image rows go).
    pub prompt: String,
    /// The answer: generated text up to the first `"\n\n"`, stripped.
    pub text: String,
    /// An id of this answer (22 characters of the shortuuid alphabet, derived from the model,
    /// the question and the answer, so a resumed run writes the same ids as one run).
    #[serde(default)]
    pub answer_id: String,
    /// The checkpoint's folder name (as `evaluate.py`) or `--model-id`.
    pub model_id: String,
    /// The image and category.
    #[serde(default)]
    pub metadata: AnswerMetadata,
    /// Mean logit of the chosen tokens (the stop token included), rounded to 3 decimals, as text.
    pub avg_logit: String,
    /// Geometric mean of the chosen tokens' probabilities, rounded to 3 decimals, as text.
    pub avg_prob: String,
}

impl Answer {
    /// The id as text.
    pub fn id_text(&self) -> String {
        crate::id_text(&self.question_id)
    }
}

/// Python's `str(round(x, 3))`: three decimals, trailing zeros dropped, at least one decimal.
pub fn round3(x: f64) -> String {
    if !x.is_finite() {
        return if x.is_nan() {
            "nan".into()
        } else if x > 0.0 {
            "inf".into()
        } else {
            "-inf".into()
        };
    }
    let r: f64 = format!("{x:.3}").parse().unwrap_or(x);
    format!("{r:?}")
}

/// A deterministic answer id: 22 characters of the shortuuid alphabet from a 128-bit FNV-1a
/// hash of the parts.
pub fn answer_id(parts: &[&str]) -> String {
    const ALPHABET: &[u8] = b"23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
    let mut h: u128 = 0x6c62272e07bb014262b821756295c58d;
    for part in parts {
        for &b in part.as_bytes().iter().chain(std::iter::once(&0xff)) {
            h ^= u128::from(b);
            h = h.wrapping_mul(0x0000000001000000000000000000013B);
        }
    }
    (0..22)
        .map(|_| {
            let c = ALPHABET[(h % 57) as usize] as char;
            h /= 57;
            c
        })
        .collect()
}

/// An answer file open for appending.
pub struct AnswerFile {
    file: File,
    path: PathBuf,
}

/// What [`AnswerFile::resume`] found.
#[derive(Debug, Default)]
pub struct Resumed {
    /// The complete answers already in the file, in order.
    pub answers: Vec<Answer>,
    /// Bytes of a torn last line that were cut off.
    pub torn_bytes: usize,
}

impl AnswerFile {
    /// Creates (or empties) the file, making its folder.
    pub fn create(path: impl AsRef<Path>) -> Result<Self, EvalError> {
        let path = path.as_ref().to_path_buf();
        make_parent(&path)?;
        let file = File::create(&path).map_err(|e| io_error(&path, e))?;
        Ok(Self { file, path })
    }

    /// Opens the file to continue an interrupted run: reads its complete lines (each must be an
    /// answer; errors name the line), cuts off a torn last line, and appends after them. A file
    /// that does not exist yet starts empty.
    pub fn resume(path: impl AsRef<Path>) -> Result<(Self, Resumed), EvalError> {
        let path = path.as_ref().to_path_buf();
        if !path.exists() {
            return Ok((Self::create(&path)?, Resumed::default()));
        }
        let bytes = std::fs::read(&path).map_err(|e| io_error(&path, e))?;
        let keep = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let text = std::str::from_utf8(&bytes[..keep]).map_err(|e| io_error(&path, format!("not UTF-8: {e}")))?;
        let mut answers = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let answer: Answer = serde_json::from_str(line).map_err(|e| EvalError::Parse {
                path: path.clone(),
                line: i + 1,
                why: format!("not an answer line: {e}"),
            })?;
            answers.push(answer);
        }
        let file = OpenOptions::new().write(true).open(&path).map_err(|e| io_error(&path, e))?;
        file.set_len(keep as u64).map_err(|e| io_error(&path, e))?;
        let mut out = Self { file, path };
        out.file.sync_data().map_err(|e| io_error(&out.path, e))?;
        drop(out.file);
        out.file = OpenOptions::new().append(true).open(&out.path).map_err(|e| io_error(&out.path, e))?;
        Ok((out, Resumed { answers, torn_bytes: bytes.len() - keep }))
    }

    /// Appends one answer as one line, in a single write.
    pub fn write(&mut self, answer: &Answer) -> Result<(), EvalError> {
        let mut line = serde_json::to_string(answer).map_err(|e| io_error(&self.path, e))?;
        line.push('\n');
        self.file.write_all(line.as_bytes()).map_err(|e| io_error(&self.path, e))
    }

    /// Flushes the file to disk.
    pub fn sync(&mut self) -> Result<(), EvalError> {
        self.file.sync_data().map_err(|e| io_error(&self.path, e))
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn make_parent(path: &Path) -> Result<(), EvalError> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e)),
        _ => Ok(()),
    }
}

/// Which of `questions` (ids in file order) an earlier run already answered: answers are
/// written in question order, so the first `k` questions with an id are done when the file
/// holds `k` answers with it. Errors (naming `path`) when the file holds an id the questions do
/// not, or more answers for an id than there are questions with it.
pub fn answered(question_ids: &[String], answers: &[Answer], path: &Path) -> Result<Vec<bool>, EvalError> {
    let mut left: HashMap<String, usize> = HashMap::new();
    for a in answers {
        *left.entry(a.id_text()).or_default() += 1;
    }
    let mut available: HashMap<&str, usize> = HashMap::new();
    for id in question_ids {
        *available.entry(id).or_default() += 1;
    }
    let extra: Vec<&String> = left
        .iter()
        .filter(|(id, n)| available.get(id.as_str()).copied().unwrap_or(0) < **n)
        .map(|(id, _)| id)
        .collect();
    if !extra.is_empty() {
        let mut shown: Vec<&String> = extra.clone();
        shown.sort();
        shown.truncate(5);
        return Err(EvalError::Unmatched {
            path: path.to_path_buf(),
            why: format!(
                "{} question_id(s) answered here are not (or not that often) in these questions, e.g. {shown:?} — another question file, or another --chunks / --chunk-index?",
                extra.len()
            ),
        });
    }
    Ok(question_ids
        .iter()
        .map(|id| match left.get_mut(id) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round3_prints_as_python() {
        assert_eq!(round3(12.34567), "12.346");
        assert_eq!(round3(0.5), "0.5");
        assert_eq!(round3(1.0), "1.0");
        assert_eq!(round3(-3.0004), "-3.0");
        assert_eq!(round3(0.1234), "0.123");
    }

    #[test]
    fn answer_ids_are_stable_and_distinct() {
        let a = answer_id(&["m", "1", "yes"]);
        assert_eq!(a.len(), 22);
        assert_eq!(a, answer_id(&["m", "1", "yes"]));
        assert_ne!(a, answer_id(&["m", "1", "no"]));
        assert_ne!(answer_id(&["m1", ""]), answer_id(&["m", "1"]));
    }
}
