//! The official scorers on generic items.
//!
//! Every benchmark reduces to items — a prediction and what it is compared with — scored one by
//! one ([`Scored`]) and summarised as the official script prints it ([`score`]):
//!
//! | metric | item | per item | summary |
//! |---|---|---|---|
//! | `vqa` | `prediction`, ten human `answers` | mean over the answers of min(1, matches among the *other* answers / 3), both sides through [`normalize_answer`] (TextVQA's `m4c_evaluator.py`) | `accuracy` in % |
//! | `gqa` | `prediction`, `answers` | 1 when the prediction, trailing periods removed and lower-cased (`convert_gqa_for_eval.py`), is one of the answers | `accuracy` in %, and by `category` / question type |
//! | `pope` | `prediction`, `label` | the first sentence, commas removed, is "no" when a word is `No`, `no` or `not`, else "yes" (`eval_pope.py`); a label other than `no` is positive | `accuracy`, `precision`, `recall`, `f1`, `yes_ratio` (fractions), TP/FP/TN/FN, per `category` and `f1_mean` over categories |
//! | `scienceqa` | `prediction`, `label` (a letter, or an option's text with `choices`) | the letter when the prediction is a letter, starts with `"X. "`, or holds exactly one `"The answer is X."`; else FAILED (`eval_science_qa.py`) | `accuracy` in %, `img_accuracy` over questions with an image |
//! | `mme` | `prediction`, `label` (`yes`/`no`), `category`, the image | "yes"/"no" when the lower-cased prediction is that or its first 4 characters hold it, else "other" (`calculation.py`) | per category `acc`, `acc_plus` (both questions of an image right) and `score` = 100·(acc + acc+); `perception` (10 tasks) and `cognition` (4) sums |
//!
//! A division by zero (no positive prediction, an empty category) gives 0, as scikit-learn does.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Map, Value, json};

use crate::EvalError;
use crate::normalize::normalize_answer;

/// A benchmark metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// VQAv2 / TextVQA soft accuracy.
    Vqa,
    /// GQA exact match.
    Gqa,
    /// POPE yes/no.
    Pope,
    /// ScienceQA multiple choice.
    ScienceQa,
    /// MME yes/no with acc+.
    Mme,
}

impl Metric {
    /// Every metric's name.
    pub const NAMES: [&'static str; 5] = ["vqa", "gqa", "pope", "scienceqa", "mme"];

    /// The metric named `name`.
    pub fn from_name(name: &str) -> Result<Self, EvalError> {
        Ok(match name {
            "vqa" | "textvqa" => Metric::Vqa,
            "gqa" => Metric::Gqa,
            "pope" => Metric::Pope,
            "scienceqa" | "sqa" => Metric::ScienceQa,
            "mme" => Metric::Mme,
            other => {
                return Err(EvalError::UnknownMetric(other.to_string()));
            }
        })
    }

    /// The metric's name.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Vqa => "vqa",
            Metric::Gqa => "gqa",
            Metric::Pope => "pope",
            Metric::ScienceQa => "scienceqa",
            Metric::Mme => "mme",
        }
    }
}

/// One prediction and what it is compared with.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Item {
    /// The model's answer.
    pub prediction: String,
    /// Reference answers (vqa, gqa).
    pub answers: Vec<String>,
    /// The label (pope, scienceqa, mme).
    pub label: Option<String>,
    /// ScienceQA's options (their count bounds the valid letters; with
    /// [`Item::match_option_text`] a prediction equal to one option's text picks it).
    pub choices: Option<Vec<String>>,
    /// Whether a ScienceQA prediction may name an option by its text.
    pub match_option_text: bool,
    /// Groups the item is reported in, as (dimension, value): `("category", "random")`,
    /// `("structural", "query")`.
    pub groups: Vec<(String, String)>,
    /// MME: the image the item asks about (acc+ needs both of its questions right).
    pub image: Option<String>,
    /// ScienceQA: whether the question has an image (for `img_accuracy`).
    pub multimodal: Option<bool>,
}

impl Item {
    fn category(&self) -> Option<&str> {
        self.groups.iter().find(|(d, _)| d == "category").map(|(_, v)| v.as_str())
    }
}

/// The score of one item.
#[derive(Clone, Debug, PartialEq)]
pub struct Scored {
    /// 0..=1 (vqa: the soft accuracy; the others: 0 or 1).
    pub score: f64,
    /// What the prediction was read as (pope / mme: `yes`, `no`, `other`; scienceqa: the letter
    /// or `FAILED`; vqa / gqa: the normalised prediction).
    pub parsed: String,
}

/// VQA soft accuracy of a prediction against human answers (both normalised).
pub fn vqa_accuracy(prediction: &str, answers: &[String]) -> f64 {
    if answers.is_empty() {
        return 0.0;
    }
    let pred = normalize_answer(prediction);
    let gts: Vec<String> = answers.iter().map(|a| normalize_answer(a)).collect();
    let total: f64 = (0..gts.len())
        .map(|i| {
            let matches = gts.iter().enumerate().filter(|(j, g)| *j != i && **g == pred).count();
            (matches as f64 / 3.0).min(1.0)
        })
        .sum();
    total / gts.len() as f64
}

/// GQA's reading of a prediction: trailing periods removed, lower-cased.
pub fn gqa_prediction(prediction: &str) -> String {
    prediction.trim_end_matches('.').to_lowercase()
}

/// POPE's reading of free text as `yes` / `no`.
pub fn pope_answer(text: &str) -> &'static str {
    let first = text.split('.').next().unwrap_or("");
    let first = first.replace(',', "");
    if first.split(' ').any(|w| w == "No" || w == "not" || w == "no") { "no" } else { "yes" }
}

/// ScienceQA's reading of a prediction: a letter of `options`, or `None` (FAILED).
pub fn scienceqa_letter(prediction: &str) -> Option<char> {
    const OPTIONS: [char; 5] = ['A', 'B', 'C', 'D', 'E'];
    let chars: Vec<char> = prediction.chars().collect();
    if chars.len() == 1 && OPTIONS.contains(&chars[0]) {
        return Some(chars[0]);
    }
    if chars.len() >= 3 && OPTIONS.contains(&chars[0]) && chars[1] == '.' && chars[2] == ' ' {
        return Some(chars[0]);
    }
    // re.findall(r'The answer is ([A-Z]).') — `.` is any character but a newline.
    let needle: Vec<char> = "The answer is ".chars().collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i + needle.len() + 2 <= chars.len() {
        if chars[i..i + needle.len()] == needle[..] {
            let letter = chars[i + needle.len()];
            let next = chars[i + needle.len() + 1];
            if letter.is_ascii_uppercase() && next != '\n' {
                found.push(letter);
                i += needle.len() + 2;
                continue;
            }
        }
        i += 1;
    }
    match found.as_slice() {
        [one] => Some(*one),
        _ => None,
    }
}

/// MME's reading of a prediction: `yes`, `no` or `other`.
pub fn mme_answer(prediction: &str) -> &'static str {
    let p = prediction.to_lowercase();
    match p.as_str() {
        "yes" => "yes",
        "no" => "no",
        _ => {
            let prefix: String = p.chars().take(4).collect();
            if prefix.contains("yes") {
                "yes"
            } else if prefix.contains("no") {
                "no"
            } else {
                "other"
            }
        }
    }
}

/// MME's perception tasks.
pub const MME_PERCEPTION: [&str; 10] =
    ["existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark", "artwork", "OCR"];
/// MME's cognition tasks.
pub const MME_COGNITION: [&str; 4] =
    ["commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning"];

fn letter_index(letter: char) -> usize {
    (letter as u8 - b'A') as usize
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// Scores every item and summarises them as the official script does (see the module docs).
/// Errors name the item (0-based) whose fields the metric cannot use.
pub fn score(metric: Metric, items: &[Item]) -> Result<(Vec<Scored>, Value), EvalError> {
    let bad = |index: usize, why: &str| EvalError::Item { index, why: why.to_string() };
    let mut scored = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let s = match metric {
            Metric::Vqa => {
                if item.answers.is_empty() {
                    return Err(bad(i, "vqa needs reference `answers`"));
                }
                Scored {
                    score: vqa_accuracy(&item.prediction, &item.answers),
                    parsed: normalize_answer(&item.prediction),
                }
            }
            Metric::Gqa => {
                if item.answers.is_empty() {
                    return Err(bad(i, "gqa needs reference `answers`"));
                }
                let p = gqa_prediction(&item.prediction);
                Scored { score: f64::from(u8::from(item.answers.contains(&p))), parsed: p }
            }
            Metric::Pope => {
                let label = item.label.as_deref().ok_or_else(|| bad(i, "pope needs a `label`"))?;
                let p = pope_answer(&item.prediction);
                let positive = label != "no";
                Scored { score: f64::from(u8::from((p == "yes") == positive)), parsed: p.into() }
            }
            Metric::ScienceQa => {
                let label = item.label.as_deref().ok_or_else(|| bad(i, "scienceqa needs a `label`"))?;
                let n = item.choices.as_ref().map_or(5, Vec::len).min(5);
                let want = scienceqa_label(label, item.choices.as_deref())
                    .ok_or_else(|| bad(i, &format!("label {label:?} is not an option letter (A–E) or option text")))?;
                let mut got = scienceqa_letter(&item.prediction).map(letter_index).filter(|&k| k < n);
                if got.is_none()
                    && item.match_option_text
                    && let Some(choices) = &item.choices
                {
                    let p = item.prediction.trim().to_lowercase();
                    let hits: Vec<usize> = choices
                        .iter()
                        .enumerate()
                        .filter(|(_, c)| c.trim().to_lowercase() == p)
                        .map(|(k, _)| k)
                        .collect();
                    if let [k] = hits[..] {
                        got = Some(k);
                    }
                }
                let parsed = match scienceqa_letter(&item.prediction) {
                    Some(c) if got == Some(letter_index(c)) => c.to_string(),
                    _ => got.map_or("FAILED".to_string(), |k| ((b'A' + k as u8) as char).to_string()),
                };
                Scored { score: f64::from(u8::from(got == Some(want))), parsed }
            }
            Metric::Mme => {
                let label = item.label.as_deref().ok_or_else(|| bad(i, "mme needs a `label`"))?.to_lowercase();
                if label != "yes" && label != "no" {
                    return Err(bad(i, &format!("an MME label is yes or no, found {label:?}")));
                }
                if item.category().is_none() {
                    return Err(bad(i, "mme needs a `category` (the task)"));
                }
                let p = mme_answer(&item.prediction);
                Scored { score: f64::from(u8::from(p == label)), parsed: p.into() }
            }
        };
        scored.push(s);
    }
    let summary = match metric {
        Metric::Vqa | Metric::Gqa => accuracy_summary(metric, items, &scored),
        Metric::Pope => pope_summary(items, &scored),
        Metric::ScienceQa => scienceqa_summary(items, &scored),
        Metric::Mme => mme_summary(items, &scored),
    };
    Ok((scored, summary))
}

fn scienceqa_label(label: &str, choices: Option<&[String]>) -> Option<usize> {
    let t = label.trim();
    let mut chars = t.chars();
    if let (Some(c), None) = (chars.next(), chars.next())
        && ('A'..='E').contains(&c)
    {
        return Some(letter_index(c));
    }
    if let Ok(k) = t.parse::<usize>() {
        return Some(k);
    }
    choices?.iter().position(|c| c.trim() == t)
}

fn percent(sum: f64, n: usize) -> f64 {
    if n == 0 { 0.0 } else { 100.0 * sum / n as f64 }
}

fn accuracy_summary(metric: Metric, items: &[Item], scored: &[Scored]) -> Value {
    let total: f64 = scored.iter().map(|s| s.score).sum();
    let mut by: BTreeMap<&str, BTreeMap<&str, (f64, usize)>> = BTreeMap::new();
    for (item, s) in items.iter().zip(scored) {
        for (dim, value) in &item.groups {
            let e = by.entry(dim).or_default().entry(value).or_default();
            e.0 += s.score;
            e.1 += 1;
        }
    }
    let mut out = json!({"metric": metric.name(), "count": items.len(), "accuracy": percent(total, items.len())});
    if !by.is_empty() {
        let groups: Map<String, Value> = by
            .into_iter()
            .map(|(dim, values)| {
                let v: Map<String, Value> = values
                    .into_iter()
                    .map(|(k, (sum, n))| (k.to_string(), json!({"accuracy": percent(sum, n), "count": n})))
                    .collect();
                (dim.to_string(), Value::Object(v))
            })
            .collect();
        out["by"] = Value::Object(groups);
    }
    out
}

fn pope_counts(pairs: &[(&Item, &Scored)]) -> Value {
    let (mut tp, mut fp, mut tn, mut fneg) = (0, 0, 0, 0);
    for (item, s) in pairs {
        let positive = item.label.as_deref() != Some("no");
        match (s.parsed == "yes", positive) {
            (true, true) => tp += 1,
            (true, false) => fp += 1,
            (false, false) => tn += 1,
            (false, true) => fneg += 1,
        }
    }
    let precision = ratio(tp, tp + fp);
    let recall = ratio(tp, tp + fneg);
    let f1 = if precision + recall == 0.0 { 0.0 } else { 2.0 * precision * recall / (precision + recall) };
    json!({
        "count": pairs.len(), "tp": tp, "fp": fp, "tn": tn, "fn": fneg,
        "accuracy": ratio(tp + tn, pairs.len()), "precision": precision, "recall": recall, "f1": f1,
        "yes_ratio": ratio(tp + fp, pairs.len()),
    })
}

fn pope_summary(items: &[Item], scored: &[Scored]) -> Value {
    let pairs: Vec<(&Item, &Scored)> = items.iter().zip(scored).collect();
    let mut out = pope_counts(&pairs);
    out["metric"] = json!("pope");
    let mut cats: BTreeMap<&str, Vec<(&Item, &Scored)>> = BTreeMap::new();
    for p in &pairs {
        if let Some(c) = p.0.category() {
            cats.entry(c).or_default().push(*p);
        }
    }
    if !cats.is_empty() {
        let per: Map<String, Value> = cats.iter().map(|(c, ps)| (c.to_string(), pope_counts(ps))).collect();
        let f1s: Vec<f64> = per.values().filter_map(|v| v["f1"].as_f64()).collect();
        out["f1_mean"] = json!(f1s.iter().sum::<f64>() / f1s.len() as f64);
        out["categories"] = Value::Object(per);
    }
    out
}

fn scienceqa_summary(items: &[Item], scored: &[Scored]) -> Value {
    let correct = scored.iter().filter(|s| s.score > 0.0).count();
    let mut out = json!({"metric": "scienceqa", "count": items.len(), "correct": correct,
        "accuracy": percent(correct as f64, items.len())});
    let img: Vec<&Scored> =
        items.iter().zip(scored).filter(|(i, _)| i.multimodal == Some(true)).map(|(_, s)| s).collect();
    if items.iter().any(|i| i.multimodal.is_some()) {
        let c = img.iter().filter(|s| s.score > 0.0).count();
        out["img_count"] = json!(img.len());
        out["img_correct"] = json!(c);
        out["img_accuracy"] = json!(percent(c as f64, img.len()));
    }
    out
}

fn mme_summary(items: &[Item], scored: &[Scored]) -> Value {
    // category → (correct, count, image → (right, asked)), images in first-seen order.
    type Images = Vec<(String, usize, usize)>;
    let mut cats: BTreeMap<String, (usize, usize, Images)> = BTreeMap::new();
    for (item, s) in items.iter().zip(scored) {
        let cat = item.category().unwrap_or_default().to_string();
        let entry = cats.entry(cat).or_default();
        let right = usize::from(s.score > 0.0);
        entry.0 += right;
        entry.1 += 1;
        // Without an image name, consecutive pairs of a task's items share one (the official
        // reading of its answer files: two lines per image).
        let image = item.image.clone().unwrap_or_else(|| format!("#pair{}", (entry.1 - 1) / 2));
        match entry.2.iter_mut().find(|(name, _, _)| *name == image) {
            Some(e) => {
                e.1 += right;
                e.2 += 1;
            }
            None => entry.2.push((image, right, 1)),
        }
    }
    let mut per = Map::new();
    let (mut perception, mut cognition) = (0.0, 0.0);
    for (cat, (correct, count, images)) in &cats {
        let acc = ratio(*correct, *count);
        let plus = ratio(images.iter().filter(|(_, r, n)| r == n).count(), images.len());
        let score = 100.0 * acc + 100.0 * plus;
        if MME_PERCEPTION.contains(&cat.as_str()) {
            perception += score;
        } else if MME_COGNITION.contains(&cat.as_str()) {
            cognition += score;
        }
        per.insert(
            cat.clone(),
            json!({"count": count, "images": images.len(), "acc": acc, "acc_plus": plus, "score": score}),
        );
    }
    json!({"metric": "mme", "count": items.len(), "perception": perception, "cognition": cognition,
        "categories": per})
}

/// A generic input line: its object (copied to the scored output) and the item read from it.
pub type ReadItem = (Map<String, Value>, Item);

/// Reads generic items, one JSON object per line: `prediction` (string) and, by metric,
/// `answers` (list of strings: vqa, gqa) or `label` (string: pope, scienceqa, mme); optional
/// `category`, ScienceQA `choices` (list of strings) and MME `image` (or `question_id`). Errors
/// name the line and the field. Returns each line's object too (for the scored copy).
pub fn read_items(path: &Path, metric: Metric) -> Result<Vec<ReadItem>, EvalError> {
    let lines = crate::read_json_lines(path)?;
    let mut out = Vec::with_capacity(lines.len());
    for (line, map) in lines {
        let item = item_from_object(&map, metric, path, line)?;
        out.push((map, item));
    }
    Ok(out)
}

/// The item of one generic input object (see [`read_items`] for the fields); `path` and `line`
/// name it in errors.
pub fn item_from_object(map: &Map<String, Value>, metric: Metric, path: &Path, line: usize) -> Result<Item, EvalError> {
    let field = |name: &str, why: String| EvalError::Field { path: path.into(), line, field: name.into(), why };
    let string = |name: &str| -> Result<Option<String>, EvalError> {
        match map.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) if name != "prediction" => Ok(Some(n.to_string())),
            Some(other) => Err(field(name, format!("expected a string, found {other}"))),
        }
    };
    let strings = |name: &str| -> Result<Option<Vec<String>>, EvalError> {
        match map.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(v)) => v
                .iter()
                .enumerate()
                .map(|(k, a)| match a {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(field(&format!("{name}[{k}]"), format!("expected a string, found {other}"))),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(other) => Err(field(name, format!("expected a list of strings, found {other}"))),
        }
    };
    let prediction = string("prediction")?.ok_or_else(|| field("prediction", "missing".into()))?;
    let mut item = Item { prediction, ..Item::default() };
    match metric {
        Metric::Vqa | Metric::Gqa => {
            let answers = strings("answers")?.ok_or_else(|| field("answers", "missing".into()))?;
            if answers.is_empty() {
                return Err(field("answers", "empty".into()));
            }
            item.answers = answers;
        }
        Metric::Pope | Metric::ScienceQa | Metric::Mme => {
            item.label = Some(string("label")?.ok_or_else(|| field("label", "missing".into()))?);
        }
    }
    if let Some(c) = string("category")? {
        item.groups.push(("category".into(), c));
    }
    if metric == Metric::ScienceQa {
        item.choices = strings("choices")?;
        item.match_option_text = item.choices.is_some();
        let label = item.label.as_deref().unwrap_or_default();
        if scienceqa_label(label, item.choices.as_deref()).is_none() {
            return Err(field("label", format!("{label:?} is not an option letter (A–E) or one of `choices`")));
        }
    }
    if metric == Metric::Mme {
        item.image = match string("image")? {
            Some(i) => Some(i),
            None => map.get("question_id").map(crate::id_text),
        };
        if item.category().is_none() {
            return Err(field("category", "missing (the MME task)".into()));
        }
        let label = item.label.as_deref().unwrap_or_default().to_lowercase();
        if label != "yes" && label != "no" {
            return Err(field("label", format!("expected yes or no, found {label:?}")));
        }
    }
    Ok(item)
}
