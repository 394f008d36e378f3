//! Benchmark question files, read as the official `evaluate.py` reads them.
//!
//! * `.jsonl` — LLaVA-1.5's loader format: one object per line with `question_id` (or `id`, or
//!   `index`), `image` (a file under the image folder; optional) and `text` (the question; the
//!   prompt is `"<image>\n" + text`) or `conversations` (the first turn's `value` is the
//!   prompt), and an optional `category`.
//! * `.json` — a list of such objects (ScienceQA's `llava_test_CQM-A.json`: `id`, optional
//!   `image`, `conversations`).
//! * `.tsv` — MMBench: `index`, `question`, `hint`, options `A`–`D`, a base64 `image`; the prompt
//!   is `"<image>\n" + [hint + "\n"] + question + "\nA. …"` and the instruction to answer with the
//!   letter (English or Chinese). Empty cells and pandas' missing-value markers (`nan`, `None`,
//!   `N/A`, …) count as absent, as `pandas.read_table` reads them.
//!
//! Questions are identified by `question_id` together with their prompt text: some official
//! files (TextVQA, MME) give several questions on one image the image's id.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::{EvalError, read_text};

/// The `<image>` tag of LLaVA-format prompts.
pub const IMAGE_TAG: &str = "<image>";
/// MMBench's instruction (English).
pub const MMBENCH_EN: &str = "Answer with the option's letter from the given choices directly.";
/// MMBench-CN's instruction.
pub const MMBENCH_CN: &str = "请直接回答选项字母。";

/// Where a question's image comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageRef {
    /// A file, relative to the image folder.
    File(String),
    /// The image itself, base64-encoded (MMBench).
    Inline(String),
}

impl ImageRef {
    /// The file name (`None` for an inline image).
    pub fn file(&self) -> Option<&str> {
        match self {
            ImageRef::File(f) => Some(f),
            ImageRef::Inline(_) => None,
        }
    }

    /// The decoded bytes of an inline image.
    pub fn inline_bytes(&self) -> Option<Result<Vec<u8>, base64::DecodeError>> {
        use base64::Engine;
        match self {
            ImageRef::File(_) => None,
            ImageRef::Inline(b64) => Some(base64::engine::general_purpose::STANDARD.decode(b64.trim().as_bytes())),
        }
    }
}

/// One benchmark question.
#[derive(Clone, Debug, PartialEq)]
pub struct Question {
    /// 1-based line (JSONL), list entry (JSON) or data row (TSV) it came from.
    pub line: usize,
    /// The id as the file gives it (number or string), copied to the answer.
    pub question_id: Value,
    /// The image, if any.
    pub image: Option<ImageRef>,
    /// The user turn, with `<image>` where the file puts it.
    pub text: String,
    /// The benchmark's category (POPE's split, MME's task, MMBench's category).
    pub category: Option<String>,
}

impl Question {
    /// The id as text (strings as they are, numbers as written).
    pub fn id_text(&self) -> String {
        crate::id_text(&self.question_id)
    }
}

/// How to read a question file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuestionFormat {
    /// By the file's extension: `.jsonl`, `.json`, `.tsv` (MMBench in English).
    Auto,
    /// JSON lines.
    JsonLines,
    /// A JSON list.
    Json,
    /// MMBench TSV, English instruction.
    Mmbench,
    /// MMBench TSV, Chinese instruction.
    MmbenchCn,
}

/// Reads a question file (see the module docs). Errors name the file, the line and the field;
/// a question repeated with the same id and text is an error.
pub fn read_questions(path: impl AsRef<Path>, format: QuestionFormat) -> Result<Vec<Question>, EvalError> {
    let path = path.as_ref();
    let format = match format {
        QuestionFormat::Auto => match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref()
        {
            Some("jsonl") => QuestionFormat::JsonLines,
            Some("json") => QuestionFormat::Json,
            Some("tsv") => QuestionFormat::Mmbench,
            _ => {
                return Err(EvalError::QuestionFileType(path.to_path_buf()));
            }
        },
        f => f,
    };
    let questions = match format {
        QuestionFormat::JsonLines => crate::read_json_lines(path)?
            .into_iter()
            .map(|(line, map)| from_object(&map, path, line))
            .collect::<Result<Vec<_>, _>>()?,
        QuestionFormat::Json => {
            let text = read_text(path)?;
            let root: Value = serde_json::from_str(&text).map_err(|e| EvalError::Parse {
                path: path.to_path_buf(),
                line: e.line(),
                why: format!("column {}: {e}", e.column()),
            })?;
            let Value::Array(items) = root else {
                return Err(EvalError::Parse { path: path.to_path_buf(), line: 1, why: "expected a JSON list".into() });
            };
            items
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::Object(map) => from_object(map, path, i + 1),
                    _ => Err(field(path, i + 1, "[]", "expected an object")),
                })
                .collect::<Result<Vec<_>, _>>()?
        }
        QuestionFormat::Mmbench => read_mmbench(path, MMBENCH_EN)?,
        QuestionFormat::MmbenchCn => read_mmbench(path, MMBENCH_CN)?,
        QuestionFormat::Auto => unreachable!("resolved above"),
    };
    check_duplicates(&questions, path)?;
    Ok(questions)
}

fn field(path: &Path, line: usize, name: &str, why: impl Into<String>) -> EvalError {
    EvalError::Field { path: path.to_path_buf(), line, field: name.into(), why: why.into() }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn from_object(map: &Map<String, Value>, path: &Path, line: usize) -> Result<Question, EvalError> {
    let (key, id) = ["question_id", "id", "index"]
        .iter()
        .find_map(|k| map.get(*k).map(|v| (*k, v)))
        .ok_or_else(|| field(path, line, "question_id", "missing (also looked for `id` and `index`)"))?;
    if !matches!(id, Value::String(_) | Value::Number(_)) {
        return Err(field(path, line, key, format!("expected a string or a number, found {}", kind(id))));
    }
    let text = match (map.get("text"), map.get("conversations")) {
        (Some(Value::String(t)), _) => format!("{IMAGE_TAG}\n{t}"),
        (Some(other), _) => return Err(field(path, line, "text", format!("expected a string, found {}", kind(other)))),
        (None, Some(Value::Array(turns))) => match turns.first() {
            Some(Value::Object(turn)) => match turn.get("value") {
                Some(Value::String(v)) => v.clone(),
                Some(other) => {
                    return Err(field(
                        path,
                        line,
                        "conversations[0].value",
                        format!("expected a string, found {}", kind(other)),
                    ));
                }
                None => return Err(field(path, line, "conversations[0].value", "missing")),
            },
            Some(other) => {
                return Err(field(
                    path,
                    line,
                    "conversations[0]",
                    format!("expected an object, found {}", kind(other)),
                ));
            }
            None => return Err(field(path, line, "conversations", "empty")),
        },
        (None, Some(other)) => {
            return Err(field(path, line, "conversations", format!("expected a list, found {}", kind(other))));
        }
        (None, None) => return Err(field(path, line, "text", "missing (and no `conversations`)")),
    };
    let image = match map.get("image") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => return Err(field(path, line, "image", "empty")),
        Some(Value::String(s)) => Some(ImageRef::File(s.clone())),
        Some(other) => return Err(field(path, line, "image", format!("expected a string, found {}", kind(other)))),
    };
    let category = match map.get("category") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => return Err(field(path, line, "category", format!("expected a string, found {}", kind(other)))),
    };
    Ok(Question { line, question_id: id.clone(), image, text, category })
}

/// pandas' default missing-value markers (`read_table` turns these cells into NaN), plus
/// `none` in any case, which the official `is_none` also treats as absent.
fn is_missing(cell: &str) -> bool {
    const NA: [&str; 19] = [
        "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>", "N/A", "NA",
        "NULL", "NaN", "None", "n/a", "nan", "null",
    ];
    NA.contains(&cell) || cell.eq_ignore_ascii_case("nan") || cell.eq_ignore_ascii_case("none")
}

fn read_mmbench(path: &Path, instruction: &str) -> Result<Vec<Question>, EvalError> {
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(b'\t')
        .flexible(false)
        .from_path(path)
        .map_err(|e| crate::io_error(path, e))?;
    let headers = reader.headers().map_err(|e| EvalError::Parse { path: path.into(), line: 1, why: e.to_string() })?;
    let col: HashMap<String, usize> = headers.iter().enumerate().map(|(i, h)| (h.to_string(), i)).collect();
    for need in ["index", "question"] {
        if !col.contains_key(need) {
            return Err(field(path, 1, need, "missing column"));
        }
    }
    let mut out = Vec::new();
    for (row, record) in reader.records().enumerate() {
        let line = row + 2;
        let record = record.map_err(|e| EvalError::Parse { path: path.into(), line, why: e.to_string() })?;
        let cell = |name: &str| -> Option<String> {
            let v = col.get(name).and_then(|&i| record.get(i))?;
            (!is_missing(v)).then(|| v.to_string())
        };
        let index = cell("index").ok_or_else(|| field(path, line, "index", "empty"))?;
        let question_id = match index.parse::<i64>() {
            Ok(n) => Value::from(n),
            Err(_) => Value::String(index),
        };
        let mut question = cell("question").ok_or_else(|| field(path, line, "question", "empty"))?;
        if let Some(hint) = cell("hint") {
            question = format!("{hint}\n{question}");
        }
        for letter in ["A", "B", "C", "D"] {
            let Some(option) = cell(letter) else { break };
            question = format!("{question}\n{letter}. {option}");
        }
        let text = format!("{IMAGE_TAG}\n{question}\n{instruction}");
        let image = cell("image").map(ImageRef::Inline);
        out.push(Question { line, question_id, image, text, category: cell("category") });
    }
    Ok(out)
}

/// Rejects a question whose id and text both repeat an earlier one.
fn check_duplicates(questions: &[Question], path: &Path) -> Result<(), EvalError> {
    let mut seen: HashMap<(String, &str), usize> = HashMap::new();
    for q in questions {
        let key = (q.question_id.to_string(), q.text.as_str());
        if let Some(&first) = seen.get(&key) {
            return Err(EvalError::Duplicate {
                path: PathBuf::from(path),
                line: q.line,
                first,
                id: q.question_id.to_string(),
            });
        }
        seen.insert(key, q.line);
    }
    Ok(())
}

/// The questions of chunk `index` of `chunks`, as the official scripts split a file across
/// processes: chunks of `ceil(n / chunks)` consecutive questions (the last ones shorter or
/// empty), so the chunks in order concatenate to the whole file.
pub fn chunk_range(n: usize, chunks: usize, index: usize) -> Result<Range<usize>, EvalError> {
    if chunks == 0 || index >= chunks {
        return Err(EvalError::ChunkIndex { index, chunks });
    }
    let size = n.div_ceil(chunks);
    let start = (index * size).min(n);
    Ok(start..(start + size).min(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_the_file_in_order() {
        for n in 0..30 {
            for chunks in 1..8 {
                let all: Vec<usize> = (0..chunks).flat_map(|k| chunk_range(n, chunks, k).unwrap()).collect();
                assert_eq!(all, (0..n).collect::<Vec<_>>(), "n {n} chunks {chunks}");
            }
        }
        // The official split: ceil(10 / 4) = 3 → 3, 3, 3, 1.
        assert_eq!(chunk_range(10, 4, 3).unwrap(), 9..10);
        assert!(chunk_range(10, 4, 4).is_err());
    }

    #[test]
    fn missing_markers_follow_pandas() {
        for m in ["", "nan", "NaN", "None", "none", "N/A", "NULL"] {
            assert!(is_missing(m), "{m:?}");
        }
        for v in ["0", "no", "Nonetheless", "A"] {
            assert!(!is_missing(v), "{v:?}");
        }
    }
}
