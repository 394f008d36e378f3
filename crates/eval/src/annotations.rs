//! The benchmarks' own annotation files joined with an answer file into scorer items.
//!
//! | metric | annotations | joined by |
//! |---|---|---|
//! | `vqa` | TextVQA `TextVQA_0.5.1_val.json` (`data[]`: `image_id`, `question`, ten `answers`) | (`question_id` = `image_id`, the question read back from the prompt, lower-cased) — `eval_textvqa.py` |
//! | `gqa` | `testdev_balanced_questions.json` (id → `answer` or a list `answers`, `isBalanced`, `types`) | `question_id`; only balanced questions count, and each needs an answer — `eval_gqa.py` |
//! | `pope` | a folder of `coco_pope_{category}.json` (JSON lines with `label`) or one such file | per category, in file order (the official script pairs them by position); the category from the answer's `metadata.category` or from `--questions` |
//! | `scienceqa` | `problems.json` with `pid_splits.json` beside it | `question_id` over the split's problems; a missing answer is FAILED — `eval_science_qa.py` |
//! | `mme` | the `MME_Benchmark_release_version` folder (per task `*.txt`: `question\tanswer`) | (task, image file, question) from `question_id` = `task/image` and the prompt — `convert_answer_to_mme.py` |
//!
//! Answers that match nothing (or, where the official script requires it, questions left
//! without an answer) are an error with their count and the first ids.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::metrics::{Item, Metric};
use crate::questions::{IMAGE_TAG, QuestionFormat, read_questions};
use crate::{EvalError, id_text, io_error, read_text};

/// One line of an answer file, as the joins read it.
#[derive(Clone, Debug)]
pub struct AnswerRow {
    /// 1-based line.
    pub line: usize,
    /// The whole object (copied to the scored output).
    pub object: Map<String, Value>,
    /// `question_id` as text.
    pub id: String,
    /// `prompt` (empty when absent).
    pub prompt: String,
    /// `text`.
    pub text: String,
    /// `metadata.image_file`.
    pub image: Option<String>,
    /// `metadata.category` (or a top-level `category`).
    pub category: Option<String>,
}

/// Reads an answer file (ours or the official `evaluate.py`'s): JSON lines with `question_id`
/// and `text`; errors name the line and the field.
pub fn read_answer_rows(path: &Path) -> Result<Vec<AnswerRow>, EvalError> {
    let mut out = Vec::new();
    for (line, object) in crate::read_json_lines(path)? {
        let field =
            |name: &str, why: &str| EvalError::Field { path: path.into(), line, field: name.into(), why: why.into() };
        let id = match object.get("question_id") {
            Some(v @ (Value::String(_) | Value::Number(_))) => id_text(v),
            Some(_) => return Err(field("question_id", "expected a string or a number")),
            None => return Err(field("question_id", "missing")),
        };
        let text = match object.get("text") {
            Some(Value::String(s)) => s.clone(),
            Some(_) => return Err(field("text", "expected a string")),
            None => return Err(field("text", "missing")),
        };
        let prompt = object.get("prompt").and_then(Value::as_str).unwrap_or_default().to_string();
        let meta = object.get("metadata").and_then(Value::as_object);
        let image = meta.and_then(|m| m.get("image_file")).and_then(Value::as_str).map(str::to_string);
        let category = meta
            .and_then(|m| m.get("category"))
            .or_else(|| object.get("category"))
            .and_then(Value::as_str)
            .map(str::to_string);
        out.push(AnswerRow { line, object, id, prompt, text, image, category });
    }
    Ok(out)
}

/// Answers joined with annotations: the items to score, the answer rows they came from (same
/// order) and notes for the summary (`missing`, `dropped`).
#[derive(Debug, Default)]
pub struct Joined {
    /// One item per scored question.
    pub items: Vec<Item>,
    /// The answer line of each item (`None`: a question without an answer, scored as FAILED).
    pub rows: Vec<Option<AnswerRow>>,
    /// Counts to report beside the score.
    pub notes: Map<String, Value>,
}

/// Options of [`join`].
#[derive(Clone, Debug, Default)]
pub struct JoinOptions {
    /// The question file (POPE: the category of each question, when answers lack it).
    pub questions: Option<PathBuf>,
    /// ScienceQA's split in `pid_splits.json` (default `test`).
    pub split: Option<String>,
}

/// The question text inside a prompt, as the official `eval_textvqa.py` reads it back: the line
/// after `"User: <image>\n"` (image first), the first line without `"User: "` (image last), the
/// line after `"\n<image>\n"` (sandwich), BLIP's `"Question: … Short answer:"`; anything else
/// (a bare question, as LLaVA writes it) gives its first line.
pub fn question_from_prompt(prompt: &str) -> String {
    let tagged = format!("\n{IMAGE_TAG}\n");
    if let Some(rest) = prompt.strip_prefix("OCR tokens: ")
        && let Some(start) = rest.find("Question: ")
    {
        let after = &rest[start + "Question: ".len()..];
        if let Some(end) = after.find(" Short answer:") {
            return after[..end].to_string();
        }
    }
    if prompt.starts_with(&format!("User: {IMAGE_TAG}\n")) {
        return prompt.split('\n').nth(1).unwrap_or_default().to_string();
    }
    if prompt.contains(&tagged) {
        if prompt.ends_with(&format!("\n{IMAGE_TAG}\n\nAssistant:")) {
            let first = prompt.split('\n').next().unwrap_or_default();
            return first.rsplit("User: ").next().unwrap_or_default().to_string();
        }
        let after = prompt.rsplit(tagged.as_str()).next().unwrap_or_default();
        return after.split('\n').next().unwrap_or_default().to_string();
    }
    prompt.split('\n').next().unwrap_or_default().to_string()
}

fn read_json(path: &Path) -> Result<Value, EvalError> {
    serde_json::from_str(&read_text(path)?).map_err(|e| EvalError::Parse {
        path: path.into(),
        line: e.line(),
        why: format!("column {}: {e}", e.column()),
    })
}

fn unmatched(path: &Path, what: &str, ids: &[String]) -> EvalError {
    let shown: Vec<&String> = ids.iter().take(5).collect();
    EvalError::Unmatched { path: path.into(), why: format!("{} {what}, e.g. {shown:?}", ids.len()) }
}

/// The answers by id; an id `known` lacks is an error (`what`, with the count and first ids).
fn index_by_id(
    answers: Vec<AnswerRow>,
    known: &Map<String, Value>,
    path: &Path,
    what: &str,
) -> Result<HashMap<String, AnswerRow>, EvalError> {
    let (mut by_id, mut extra) = (HashMap::new(), Vec::new());
    for row in answers {
        if known.contains_key(&row.id) {
            by_id.insert(row.id.clone(), row);
        } else {
            extra.push(row.id);
        }
    }
    if extra.is_empty() { Ok(by_id) } else { Err(unmatched(path, what, &extra)) }
}

fn strings(v: &Value) -> Option<Vec<String>> {
    v.as_array()?.iter().map(|a| a.as_str().map(str::to_string)).collect()
}

/// Joins `answers` with the annotation file(s) at `annotations` for `metric`.
pub fn join(
    metric: Metric,
    annotations: &Path,
    answers: Vec<AnswerRow>,
    options: &JoinOptions,
) -> Result<Joined, EvalError> {
    match metric {
        Metric::Vqa => join_textvqa(annotations, answers),
        Metric::Gqa => join_gqa(annotations, answers),
        Metric::Pope => join_pope(annotations, answers, options),
        Metric::ScienceQa => join_scienceqa(annotations, answers, options),
        Metric::Mme => join_mme(annotations, answers),
    }
}

fn join_textvqa(path: &Path, answers: Vec<AnswerRow>) -> Result<Joined, EvalError> {
    let root = read_json(path)?;
    let data = root.get("data").and_then(Value::as_array).ok_or_else(|| EvalError::Field {
        path: path.into(),
        line: 1,
        field: "data".into(),
        why: "expected TextVQA's list of questions".into(),
    })?;
    let mut index: HashMap<(String, String), Vec<String>> = HashMap::new();
    for (k, a) in data.iter().enumerate() {
        let field = |name: &str| EvalError::Field {
            path: path.into(),
            line: 1,
            field: format!("data[{k}].{name}"),
            why: "missing or of the wrong type".into(),
        };
        let image = a.get("image_id").map(id_text).ok_or_else(|| field("image_id"))?;
        let question = a.get("question").and_then(Value::as_str).ok_or_else(|| field("question"))?;
        let gts = a.get("answers").and_then(strings).ok_or_else(|| field("answers"))?;
        index.insert((image, question.to_lowercase()), gts);
    }
    let mut joined = Joined::default();
    let mut missing = Vec::new();
    for row in answers {
        let key = (row.id.clone(), question_from_prompt(&row.prompt).to_lowercase());
        match index.get(&key) {
            Some(gts) => {
                joined.items.push(Item { prediction: row.text.clone(), answers: gts.clone(), ..Item::default() });
                joined.rows.push(Some(row));
            }
            None => missing.push(format!("{} / {:?}", key.0, key.1)),
        }
    }
    if !missing.is_empty() {
        return Err(unmatched(path, "answers match no (image_id, question) of the annotations", &missing));
    }
    Ok(joined)
}

fn join_gqa(path: &Path, answers: Vec<AnswerRow>) -> Result<Joined, EvalError> {
    let root = read_json(path)?;
    let questions = root.as_object().ok_or_else(|| EvalError::Field {
        path: path.into(),
        line: 1,
        field: "(root)".into(),
        why: "expected GQA's object of question id → question".into(),
    })?;
    let mut by_id = index_by_id(answers, questions, path, "answered question ids are not in the annotations")?;
    let mut joined = Joined::default();
    let (mut missing, mut unbalanced) = (Vec::new(), 0usize);
    for (qid, q) in questions {
        if !q.get("isBalanced").and_then(Value::as_bool).unwrap_or(false) {
            unbalanced += usize::from(by_id.contains_key(qid));
            continue;
        }
        let Some(row) = by_id.remove(qid) else {
            missing.push(qid.clone());
            continue;
        };
        let answers = match (q.get("answers").and_then(strings), q.get("answer").and_then(Value::as_str)) {
            (Some(list), _) => list,
            (None, Some(a)) => vec![a.to_string()],
            (None, None) => {
                return Err(EvalError::Field {
                    path: path.into(),
                    line: 1,
                    field: format!("{qid}.answer"),
                    why: "missing".into(),
                });
            }
        };
        let mut groups = Vec::new();
        if let Some(types) = q.get("types") {
            let structural = types.get("structural").and_then(Value::as_str).unwrap_or_default();
            groups.push(("type".into(), if structural == "query" { "open" } else { "binary" }.into()));
            groups.push(("structural".into(), structural.into()));
            if let Some(s) = types.get("semantic").and_then(Value::as_str) {
                groups.push(("semantic".into(), s.into()));
            }
        }
        joined.items.push(Item { prediction: row.text.clone(), answers, groups, ..Item::default() });
        joined.rows.push(Some(row));
    }
    if !missing.is_empty() {
        return Err(unmatched(path, "balanced questions have no answer (the official scorer requires all)", &missing));
    }
    joined.notes.insert("unbalanced_answers_ignored".into(), unbalanced.into());
    Ok(joined)
}

fn join_pope(path: &Path, answers: Vec<AnswerRow>, options: &JoinOptions) -> Result<Joined, EvalError> {
    let files: Vec<PathBuf> = if path.is_dir() {
        let mut f: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| io_error(path, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("coco_pope_") && n.ends_with(".json"))
            })
            .collect();
        f.sort();
        if f.is_empty() {
            return Err(EvalError::NoPopeFiles(path.to_path_buf()));
        }
        f
    } else {
        vec![path.to_path_buf()]
    };
    let categories: Option<HashMap<String, String>> = match &options.questions {
        Some(q) => Some(
            read_questions(q, QuestionFormat::Auto)?
                .into_iter()
                .filter_map(|q| q.category.clone().map(|c| (q.id_text(), c)))
                .collect(),
        ),
        None => None,
    };
    let category_of = |row: &AnswerRow| -> Option<String> {
        row.category.clone().or_else(|| categories.as_ref().and_then(|c| c.get(&row.id).cloned()))
    };
    let single = files.len() == 1 && !path.is_dir();
    let mut rows: Vec<Option<AnswerRow>> = answers.into_iter().map(Some).collect();
    let mut joined = Joined::default();
    for file in &files {
        let name = file.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let category =
            name.strip_prefix("coco_pope_").and_then(|n| n.strip_suffix(".json")).unwrap_or(name).to_string();
        let labels = crate::read_json_lines(file)?;
        let mine: Vec<usize> = (0..rows.len())
            .filter(|&i| {
                rows[i].as_ref().is_some_and(|r| match category_of(r) {
                    Some(c) => c == category,
                    None => single,
                })
            })
            .collect();
        if mine.len() != labels.len() {
            return Err(EvalError::Unmatched {
                path: file.clone(),
                why: format!(
                    "{} labels but {} answers of category `{category}` (categories come from metadata.category or --questions)",
                    labels.len(),
                    mine.len()
                ),
            });
        }
        let mut misordered = Vec::new();
        for (k, (line, label)) in mine.iter().zip(&labels).enumerate() {
            let row = rows[*line].take().expect("each answer is used once");
            let l = label.1.get("label").and_then(Value::as_str).ok_or_else(|| EvalError::Field {
                path: file.clone(),
                line: label.0,
                field: "label".into(),
                why: "missing or not a string".into(),
            })?;
            if let (Some(a), Some(b)) = (row.image.as_deref(), label.1.get("image").and_then(Value::as_str))
                && a != b
            {
                misordered.push(format!("#{k}: answer {} is on {a}, label on {b}", row.id));
            }
            joined.items.push(Item {
                prediction: row.text.clone(),
                label: Some(l.to_string()),
                groups: vec![("category".into(), category.clone())],
                ..Item::default()
            });
            joined.rows.push(Some(row));
        }
        if !misordered.is_empty() {
            return Err(unmatched(file, "answers are not in the label file's order", &misordered));
        }
    }
    let left: Vec<String> = rows.iter().flatten().map(|r| r.id.clone()).collect();
    if !left.is_empty() {
        return Err(unmatched(path, "answers belong to no coco_pope_*.json category", &left));
    }
    Ok(joined)
}

fn join_scienceqa(path: &Path, answers: Vec<AnswerRow>, options: &JoinOptions) -> Result<Joined, EvalError> {
    let problems = read_json(path)?;
    let problems = problems.as_object().ok_or_else(|| EvalError::Field {
        path: path.into(),
        line: 1,
        field: "(root)".into(),
        why: "expected ScienceQA's object of problem id → problem".into(),
    })?;
    let splits_path = path.with_file_name("pid_splits.json");
    let split = options.split.clone().unwrap_or_else(|| "test".into());
    let splits = read_json(&splits_path)?;
    let ids = splits.get(&split).and_then(strings).ok_or_else(|| EvalError::Field {
        path: splits_path.clone(),
        line: 1,
        field: split.clone(),
        why: "missing or not a list of problem ids".into(),
    })?;
    let mut by_id = index_by_id(answers, problems, path, "answered ids are not ScienceQA problems")?;
    let mut joined = Joined::default();
    let mut missing = 0usize;
    for pid in &ids {
        let prob = problems.get(pid).ok_or_else(|| EvalError::Unmatched {
            path: splits_path.clone(),
            why: format!("split `{split}` lists problem {pid}, which problems.json lacks"),
        })?;
        let field = |name: &str| EvalError::Field {
            path: path.into(),
            line: 1,
            field: format!("{pid}.{name}"),
            why: "missing or of the wrong type".into(),
        };
        let choices = prob.get("choices").and_then(strings).ok_or_else(|| field("choices"))?;
        let answer = prob.get("answer").and_then(Value::as_u64).ok_or_else(|| field("answer"))? as u8;
        let row = by_id.remove(pid);
        missing += usize::from(row.is_none());
        let (prediction, multimodal) = match &row {
            Some(r) => (r.text.clone(), r.prompt.contains(IMAGE_TAG)),
            None => ("FAILED".to_string(), false),
        };
        joined.items.push(Item {
            prediction,
            label: Some(((b'A' + answer) as char).to_string()),
            choices: Some(choices),
            multimodal: Some(multimodal),
            ..Item::default()
        });
        joined.rows.push(row);
    }
    joined.notes.insert("missing".into(), missing.into());
    Ok(joined)
}

/// MME's ground truth: (task, question file, question) → `yes` / `no`.
fn mme_ground_truth(root: &Path) -> Result<HashMap<(String, String, String), String>, EvalError> {
    let mut gt = HashMap::new();
    let mut tasks: Vec<PathBuf> = std::fs::read_dir(root)
        .map_err(|e| io_error(root, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    tasks.sort();
    for dir in tasks {
        let task = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        let qa = if dir.join("images").is_dir() { dir.join("questions_answers_YN") } else { dir.clone() };
        let mut files: Vec<PathBuf> = std::fs::read_dir(&qa)
            .map_err(|e| io_error(&qa, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "txt"))
            .collect();
        files.sort();
        for file in files {
            let name = file.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
            for (i, line) in read_text(&file)?.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() {
                    continue;
                }
                let Some((q, a)) = line.split_once('\t') else {
                    return Err(EvalError::Parse {
                        path: file.clone(),
                        line: i + 1,
                        why: "expected `question<TAB>answer`".into(),
                    });
                };
                gt.insert((task.clone(), name.clone(), q.to_string()), a.to_string());
            }
        }
    }
    Ok(gt)
}

fn join_mme(root: &Path, answers: Vec<AnswerRow>) -> Result<Joined, EvalError> {
    const SHORT: &str = "Answer the question using a single word or phrase.";
    const YES_NO: &str = "Please answer yes or no.";
    let gt = mme_ground_truth(root)?;
    let mut joined = Joined::default();
    let mut missing = Vec::new();
    for row in answers {
        let task = row.id.split('/').next().unwrap_or_default().to_string();
        let image = row.id.rsplit('/').next().unwrap_or_default();
        let file = format!("{}.txt", image.split('.').next().unwrap_or_default());
        let mut q = question_from_prompt(&row.prompt);
        if q.contains(SHORT) {
            q = q.replace(SHORT, "").trim().to_string();
        }
        if !q.contains(YES_NO) {
            q = format!("{q} {YES_NO}");
            if !gt.contains_key(&(task.clone(), file.clone(), q.clone())) {
                q = q.replace(&format!(" {YES_NO}"), &format!("  {YES_NO}"));
            }
        }
        match gt.get(&(task.clone(), file.clone(), q.clone())) {
            Some(label) => {
                joined.items.push(Item {
                    prediction: row.text.clone(),
                    label: Some(label.to_lowercase()),
                    groups: vec![("category".into(), task.clone())],
                    image: Some(format!("{task}/{file}")),
                    ..Item::default()
                });
                joined.rows.push(Some(row));
            }
            None => missing.push(format!("{} / {q:?}", row.id)),
        }
    }
    if !missing.is_empty() {
        return Err(unmatched(root, "answers match no (task, image, question) of MME", &missing));
    }
    Ok(joined)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn questions_come_back_out_of_every_placement() {
        let q = "what is written?";
        let first = format!("User: <image>\n{q}\nReference OCR token: a, b\nAnswer briefly.\n\nAssistant:");
        let last = format!("User: {q}\nAnswer briefly.\n<image>\n\nAssistant:");
        let sandwich = format!("User: {q}\n<image>\n{q}\nAnswer briefly.\n\nAssistant:");
        let blip = format!("OCR tokens: a, b. Question: {q} Short answer:");
        for p in [first, last, sandwich, blip, q.to_string()] {
            assert_eq!(question_from_prompt(&p), q, "{p:?}");
        }
    }
}
