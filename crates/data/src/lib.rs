//! # visualrwkv-data: LLaVA-format training data
//!
//! - [`read_llava`] / [`parse_llava`]: a JSON list of `{id, image?, conversations}` samples,
//!   checked field by field (errors name the file, the sample id and the field; malformed JSON
//!   its line and column).
//! - [`tokenize`]: one sample to `input_ids` / `labels` exactly as VisualRWKV v6.0's
//!   `src/dataset.py` does (the template and placement rules live in `visualrwkv-prompt`):
//!   the image as one [`IMAGE_TOKEN`] (−200), labels [`IGNORE_INDEX`] (−100) on user turns and on
//!   the three `Assistant:` tokens, no padding.
//! - [`fit`]: truncation to a context length counted in **rows** (the image placeholder counts
//!   as the image's rows). The reference cuts tokens without looking at the image; here a sample
//!   whose image does not fit whole is skipped, and one left with nothing to train is skipped.
//! - [`prepare`]: all of the above over a dataset, with a [`Report`] (counts, skips by reason, a
//!   row-length histogram).
//! - [`v700`]: VisualRWKV-7 v7.00's multi-image format ([`v700::parse_v700`],
//!   [`v700::tokenize_v700`]), exact to its `src/dataset.py`.
//! - [`loader::Loader`]: worker threads that decode and preprocess the images of an ordered
//!   list of samples a bounded window ahead of the consumer.
//!
//! # Shapes
//!
//! A prepared sample is `T` token ids (one of them −200 when it has an image) and `T` labels;
//! its assembled sequence has `T − 1 + n` rows for an image of `n` rows (`T` without one). The
//! loader's pixels are `[3, H, W]` f32, channel-major.

pub mod loader;
pub mod v700;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;
use visualrwkv_prompt::{Conversation, PromptError, PromptStrategy, Role, Turn};
pub use visualrwkv_prompt::{IGNORE_INDEX, IMAGE_TAG, IMAGE_TOKEN};
use visualrwkv_tokenizer::Tokenizer;

/// Errors reading or preparing a dataset.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file could not be read or written.
    #[error("{path}: {why}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        why: String,
    },
    /// The file is not valid JSON.
    #[error("{path}:{line}:{column}: malformed JSON: {why}")]
    Json {
        /// The file.
        path: PathBuf,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// The parser's message.
        why: String,
    },
    /// A sample is unusable.
    #[error("{path}: sample {id}: `{field}`: {why}")]
    Sample {
        /// The file.
        path: PathBuf,
        /// The sample's id (`#N` for the N-th element when it has none).
        id: String,
        /// The field, e.g. `conversations[2].from`.
        field: String,
        /// What is wrong with it.
        why: String,
    },
    /// A sample's image is missing or cannot be decoded.
    #[error("{path}: sample {id}: image {image}: {why}")]
    Image {
        /// The dataset file.
        path: PathBuf,
        /// The sample's id.
        id: String,
        /// The image file.
        image: PathBuf,
        /// What went wrong.
        why: String,
    },
    /// A loader order entry beyond the samples.
    #[error("loader order holds index {index} of {samples} samples")]
    OrderIndex {
        /// The entry.
        index: usize,
        /// The number of samples.
        samples: usize,
    },
    /// The loader's worker threads ended before the order did.
    #[error("the loader's workers stopped")]
    WorkersStopped,
}

/// One sample of a LLaVA-format dataset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The sample's id (numbers are written as text).
    pub id: String,
    /// The image file, relative to the image folder (`None`: a text-only sample).
    pub image: Option<String>,
    /// The turns.
    pub conversation: Conversation,
    /// The file the sample came from (for errors).
    pub origin: PathBuf,
}

impl Record {
    fn error(&self, field: impl Into<String>, why: impl Into<String>) -> DataError {
        DataError::Sample { path: self.origin.clone(), id: self.id.clone(), field: field.into(), why: why.into() }
    }
}

/// Reads a LLaVA-format JSON file (see [`parse_llava`]).
pub fn read_llava(path: impl AsRef<Path>) -> Result<Vec<Record>, DataError> {
    let path = path.as_ref();
    let text =
        std::fs::read_to_string(path).map_err(|e| DataError::Io { path: path.to_path_buf(), why: e.to_string() })?;
    parse_llava(&text, path)
}

fn field_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Parses a LLaVA-format dataset: a JSON list of objects with `id` (string or integer),
/// optional `image` (a path relative to the image folder) and `conversations` (a non-empty list
/// of `{from: "human"|"gpt", value}`, case-insensitive roles, alternating from the human). Any
/// other field, a missing one, another role, `<image>` without an `image` field, an `image`
/// without `<image>`, several `<image>` or an `<image>` in an answer is an error naming the
/// sample and the field.
pub fn parse_llava(text: &str, origin: &Path) -> Result<Vec<Record>, DataError> {
    sample_list(text, origin)?.iter().enumerate().map(|(i, v)| parse_sample(i, v, origin)).collect()
}

/// The JSON list of samples of a dataset file.
fn sample_list(text: &str, origin: &Path) -> Result<Vec<Value>, DataError> {
    let root: Value = serde_json::from_str(text).map_err(|e| DataError::Json {
        path: origin.to_path_buf(),
        line: e.line(),
        column: e.column(),
        why: e.to_string(),
    })?;
    let list = match root {
        Value::Array(list) => list,
        other => {
            return Err(DataError::Sample {
                path: origin.to_path_buf(),
                id: "(file)".into(),
                field: "(root)".into(),
                why: format!("expected a list of samples, found {}", field_type(&other)),
            });
        }
    };
    Ok(list)
}

/// The error of a field of a sample.
fn sample_error(origin: &Path, id: &str, field: &str, why: String) -> DataError {
    DataError::Sample { path: origin.to_path_buf(), id: id.to_string(), field: field.to_string(), why }
}

/// A sample's id from `key` (a string or a number); `None` when absent.
fn parse_id(
    obj: &serde_json::Map<String, Value>,
    key: &str,
    fallback: &str,
    origin: &Path,
) -> Result<Option<String>, DataError> {
    match obj.get(key) {
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(other) => Err(sample_error(
            origin,
            fallback,
            key,
            format!("expected a string or a number, found {}", field_type(other)),
        )),
        None => Ok(None),
    }
}

/// A sample's object, or the error naming element `index`.
fn sample_object<'v>(
    index: usize,
    v: &'v Value,
    origin: &Path,
) -> Result<&'v serde_json::Map<String, Value>, DataError> {
    v.as_object().ok_or_else(|| {
        sample_error(origin, &format!("#{index}"), "(sample)", format!("expected an object, found {}", field_type(v)))
    })
}

/// The `conversations` of a sample: a non-empty list of `{from, value}` turns alternating from
/// the human, not all empty.
fn parse_conversation(id: &str, turns: Option<&Value>, origin: &Path) -> Result<Conversation, DataError> {
    let err = |field: &str, why: String| sample_error(origin, id, field, why);
    let turns = match turns {
        Some(Value::Array(t)) => t,
        Some(other) => return Err(err("conversations", format!("expected a list, found {}", field_type(other)))),
        None => return Err(err("conversations", "missing".into())),
    };
    if turns.is_empty() {
        return Err(err("conversations", "empty conversation".into()));
    }
    let mut conversation = Conversation::default();
    for (t, turn) in turns.iter().enumerate() {
        let at = |f: &str| format!("conversations[{t}]{f}");
        let o =
            turn.as_object().ok_or_else(|| err(&at(""), format!("expected an object, found {}", field_type(turn))))?;
        if let Some(key) = o.keys().find(|k| !["from", "value"].contains(&k.as_str())) {
            return Err(err(&at(&format!(".{key}")), "unknown field (a turn has `from` and `value`)".into()));
        }
        let role = match o.get("from") {
            Some(Value::String(s)) => match s.to_lowercase().as_str() {
                "human" => Role::User,
                "gpt" => Role::Assistant,
                _ => return Err(err(&at(".from"), format!("unknown role `{s}` (human or gpt)"))),
            },
            Some(other) => return Err(err(&at(".from"), format!("expected a string, found {}", field_type(other)))),
            None => return Err(err(&at(".from"), "missing".into())),
        };
        let text = match o.get("value") {
            Some(Value::String(s)) => s.clone(),
            Some(other) => return Err(err(&at(".value"), format!("expected a string, found {}", field_type(other)))),
            None => return Err(err(&at(".value"), "missing".into())),
        };
        let want = if t.is_multiple_of(2) { Role::User } else { Role::Assistant };
        if role != want {
            return Err(err(&at(".from"), "turns alternate human, gpt, … starting with human".into()));
        }
        conversation.turns.push(Turn { role, text });
    }
    if conversation.turns.iter().all(|t| t.text.trim().is_empty()) {
        return Err(err("conversations", "every turn is empty".into()));
    }
    Ok(conversation)
}

fn parse_sample(index: usize, v: &Value, origin: &Path) -> Result<Record, DataError> {
    let err = |id: &str, field: &str, why: String| sample_error(origin, id, field, why);
    let fallback = format!("#{index}");
    let obj = sample_object(index, v, origin)?;
    let id = parse_id(obj, "id", &fallback, origin)?.ok_or_else(|| err(&fallback, "id", "missing".into()))?;
    if let Some(key) = obj.keys().find(|k| !["id", "image", "conversations"].contains(&k.as_str())) {
        return Err(err(&id, key, "unknown field (a sample has `id`, `image` and `conversations`)".into()));
    }
    let image = match obj.get("image") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.clone()),
        Some(Value::String(_)) => return Err(err(&id, "image", "empty path".into())),
        Some(other) => return Err(err(&id, "image", format!("expected a path, found {}", field_type(other)))),
    };
    let conversation = parse_conversation(&id, obj.get("conversations"), origin)?;
    let tags: Vec<usize> = conversation
        .turns
        .iter()
        .enumerate()
        .flat_map(|(t, turn)| std::iter::repeat_n(t, turn.text.matches(IMAGE_TAG).count()))
        .collect();
    match (&image, tags.as_slice()) {
        (None, [t, ..]) => {
            return Err(err(
                &id,
                &format!("conversations[{t}].value"),
                "`<image>` but the sample has no `image`".into(),
            ));
        }
        (Some(_), []) => return Err(err(&id, "image", "an image but no `<image>` in the conversation".into())),
        (Some(_), [_, second, ..]) => {
            return Err(err(
                &id,
                &format!("conversations[{second}].value"),
                format!("{} `<image>` tags: a v6.0 sample has one image", tags.len()),
            ));
        }
        (Some(_), [t]) if conversation.turns[*t].role == Role::Assistant => {
            return Err(err(&id, &format!("conversations[{t}].value"), "`<image>` in a gpt turn".into()));
        }
        _ => {}
    }
    Ok(Record { id, image, conversation, origin: origin.to_path_buf() })
}

/// One sample as training sees it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Tokenized {
    /// The sample's id.
    pub id: String,
    /// Token ids, [`IMAGE_TOKEN`] once where the image goes (when there is one).
    pub input_ids: Vec<i64>,
    /// Labels aligned with `input_ids` ([`IGNORE_INDEX`] where nothing is trained; the shift by
    /// one happens in the loss).
    pub labels: Vec<i64>,
    /// The image file relative to the image folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

impl Tokenized {
    /// Rows of the assembled sequence for an image of `image_rows` rows.
    pub fn rows(&self, image_rows: usize) -> usize {
        match self.image_position() {
            Some(_) => self.input_ids.len() - 1 + image_rows,
            None => self.input_ids.len(),
        }
    }

    /// Position of the image placeholder.
    pub fn image_position(&self) -> Option<usize> {
        self.input_ids.iter().position(|&t| t == IMAGE_TOKEN)
    }

    /// Whether any position after the first is trained (the first row predicts nothing).
    pub fn has_target(&self) -> bool {
        self.labels.iter().skip(1).any(|&l| l != IGNORE_INDEX)
    }
}

/// Tokenises one sample with the image placed by `strategy` (the official `image_position`:
/// `first`, `last`, `sandwich` = `middle`).
pub fn tokenize(record: &Record, strategy: &dyn PromptStrategy, tokenizer: &Tokenizer) -> Result<Tokenized, DataError> {
    let prompt = visualrwkv_prompt::build(&record.conversation, strategy, tokenizer, record.image.is_some(), false)
        .map_err(|e| match e {
            PromptError::Roles(t) => record.error(format!("conversations[{t}].from"), e.to_string()),
            other => record.error("conversations", other.to_string()),
        })?;
    Ok(Tokenized {
        id: record.id.clone(),
        input_ids: prompt.tokens,
        labels: prompt.labels,
        image: record.image.clone(),
    })
}

/// Why a sample was left out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub enum SkipReason {
    /// Its image file is missing or cannot be decoded (with [`MissingImage::Skip`]).
    MissingImage,
    /// The context ends inside (or before the end of) the image span.
    ImageDoesNotFit,
    /// Nothing is trained in what remains (no answer token within the context).
    NoTarget,
}

impl SkipReason {
    /// A short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            SkipReason::MissingImage => "missing-image",
            SkipReason::ImageDoesNotFit => "image-does-not-fit",
            SkipReason::NoTarget => "no-target",
        }
    }
}

/// What [`fit`] did to a sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fit {
    /// It fits as it is.
    Whole,
    /// Its tail was cut; this many rows were dropped.
    Truncated(usize),
    /// It cannot be used.
    Skipped(SkipReason),
}

/// Fits a sample into `ctx_len` rows (0: no limit), an image counting `image_rows` rows: the
/// tail is cut, never inside the image span (then the sample is skipped), and a sample left
/// with no trained position is skipped.
pub fn fit(sample: &mut Tokenized, ctx_len: usize, image_rows: usize) -> Fit {
    let rows = sample.rows(image_rows);
    let mut fit = Fit::Whole;
    if ctx_len > 0 && rows > ctx_len {
        let keep = match sample.image_position() {
            Some(p) if p + image_rows > ctx_len => return Fit::Skipped(SkipReason::ImageDoesNotFit),
            Some(_) => ctx_len + 1 - image_rows,
            None => ctx_len,
        };
        sample.input_ids.truncate(keep);
        sample.labels.truncate(keep);
        fit = Fit::Truncated(rows - ctx_len);
    }
    if !sample.has_target() {
        return Fit::Skipped(SkipReason::NoTarget);
    }
    fit
}

/// What to do with a sample whose image is missing or undecodable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MissingImage {
    /// Stop with an error naming the sample and the file.
    #[default]
    Error,
    /// Leave the sample out and count it.
    Skip,
}

/// How a dataset is prepared.
#[derive(Debug)]
pub struct DatasetOptions {
    /// The folder image paths are relative to.
    pub image_folder: PathBuf,
    /// Where the image goes in the prompt.
    pub strategy: Box<dyn PromptStrategy>,
    /// Context length in rows (0: no limit).
    pub ctx_len: usize,
    /// Rows one image occupies (577 for CLIP-L/14-336 with CLS).
    pub image_rows: usize,
    /// Missing or undecodable images.
    pub on_missing_image: MissingImage,
    /// Whether to check that every image file exists.
    pub check_files: bool,
}

impl DatasetOptions {
    /// Options with no context limit, errors on missing images and file checks on.
    pub fn new(image_folder: impl Into<PathBuf>, strategy: Box<dyn PromptStrategy>, image_rows: usize) -> Self {
        Self {
            image_folder: image_folder.into(),
            strategy,
            ctx_len: 0,
            image_rows,
            on_missing_image: MissingImage::Error,
            check_files: true,
        }
    }
}

/// Counts of a prepared dataset.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Report {
    /// Samples read.
    pub samples: usize,
    /// Samples kept that have an image.
    pub with_image: usize,
    /// Samples kept without an image.
    pub text_only: usize,
    /// Samples kept with their tail cut.
    pub truncated: usize,
    /// Samples left out.
    pub skipped: usize,
    /// Samples left out, by reason.
    pub skipped_by_reason: BTreeMap<String, usize>,
    /// Rows of every kept sample (after truncation), in dataset order.
    pub rows: Vec<usize>,
}

impl Report {
    /// Counts one skipped sample.
    pub fn skip(&mut self, reason: SkipReason) {
        self.skipped += 1;
        *self.skipped_by_reason.entry(reason.name().to_string()).or_default() += 1;
    }

    /// A histogram of the kept samples' row lengths: `(low, high, count)` per power-of-two
    /// bucket `[low, high)`, from the shortest to the longest bucket that has a sample.
    pub fn histogram(&self) -> Vec<(usize, usize, usize)> {
        let mut buckets: BTreeMap<u32, usize> = BTreeMap::new();
        for &r in &self.rows {
            *buckets.entry(usize::BITS - r.max(1).leading_zeros() - 1).or_default() += 1;
        }
        let (Some(&first), Some(&last)) = (buckets.keys().next(), buckets.keys().last()) else { return Vec::new() };
        (first..=last).map(|b| (1usize << b, 1usize << (b + 1), buckets.get(&b).copied().unwrap_or(0))).collect()
    }
}

/// A dataset ready to train on.
#[derive(Clone, Debug)]
pub struct Prepared {
    /// The kept samples, in dataset order.
    pub samples: Vec<Tokenized>,
    /// What happened to every sample.
    pub report: Report,
}

/// Tokenises and fits every record (see [`tokenize`], [`fit`]); with `check_files`, a sample
/// whose image file does not exist is an error or skipped ([`MissingImage`]).
pub fn prepare(records: &[Record], tokenizer: &Tokenizer, options: &DatasetOptions) -> Result<Prepared, DataError> {
    let mut report = Report { samples: records.len(), ..Report::default() };
    let mut samples = Vec::with_capacity(records.len());
    for record in records {
        let mut sample = tokenize(record, options.strategy.as_ref(), tokenizer)?;
        if let (true, Some(image)) = (options.check_files, &record.image) {
            let path = options.image_folder.join(image);
            if !path.is_file() {
                match options.on_missing_image {
                    MissingImage::Error => {
                        return Err(DataError::Image {
                            path: record.origin.clone(),
                            id: record.id.clone(),
                            image: path,
                            why: "no such file".into(),
                        });
                    }
                    MissingImage::Skip => {
                        report.skip(SkipReason::MissingImage);
                        continue;
                    }
                }
            }
        }
        match fit(&mut sample, options.ctx_len, options.image_rows) {
            Fit::Skipped(reason) => {
                report.skip(reason);
                continue;
            }
            Fit::Truncated(_) => report.truncated += 1,
            Fit::Whole => {}
        }
        if sample.image.is_some() {
            report.with_image += 1;
        } else {
            report.text_only += 1;
        }
        report.rows.push(sample.rows(options.image_rows));
        samples.push(sample);
    }
    Ok(Prepared { samples, report })
}

/// The visiting order of epoch `epoch` over `n` samples: a permutation drawn from `seed` and the
/// epoch (SplitMix64 + Fisher–Yates), the same on every run and after a resume.
pub fn epoch_order(n: usize, epoch: usize, seed: u64) -> Vec<usize> {
    let mut state = seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xDA7A_5EED;
    let mut next = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(ids: &[i64], labels: &[i64]) -> Tokenized {
        Tokenized { id: "s".into(), input_ids: ids.to_vec(), labels: labels.to_vec(), image: Some("x.png".into()) }
    }

    #[test]
    fn fit_counts_image_rows_and_never_cuts_the_image() {
        // 3 prefix tokens, the image (10 rows), 4 answer tokens: 17 rows.
        let s = sample(&[1, 2, 3, IMAGE_TOKEN, 5, 6, 7, 8], &[-100, -100, -100, -100, -100, 6, 7, 8]);
        assert_eq!(s.rows(10), 17);
        let mut whole = s.clone();
        assert_eq!(fit(&mut whole, 17, 10), Fit::Whole);
        let mut cut = s.clone();
        assert_eq!(fit(&mut cut, 15, 10), Fit::Truncated(2));
        assert_eq!(cut.input_ids, vec![1, 2, 3, IMAGE_TOKEN, 5, 6]);
        assert_eq!(cut.rows(10), 15);
        let mut inside = s.clone();
        assert_eq!(fit(&mut inside, 12, 10), Fit::Skipped(SkipReason::ImageDoesNotFit));
        let mut no_target = s.clone();
        assert_eq!(fit(&mut no_target, 14, 10), Fit::Skipped(SkipReason::NoTarget));
    }

    #[test]
    fn histogram_buckets_by_powers_of_two() {
        let report = Report { rows: vec![1, 3, 3, 9], ..Report::default() };
        assert_eq!(report.histogram(), vec![(1, 2, 1), (2, 4, 2), (4, 8, 0), (8, 16, 1)]);
    }

    #[test]
    fn epoch_order_is_a_permutation_that_changes_per_epoch() {
        let a = epoch_order(50, 0, 7);
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        assert_ne!(a, epoch_order(50, 1, 7));
        assert_eq!(a, epoch_order(50, 0, 7));
    }
}
