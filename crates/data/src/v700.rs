//! VisualRWKV-7 v7.00's data format: any number of images per sample, each a run of
//! `num_token_per_image` placeholder tokens, exactly as v7.00's `src/dataset.py` makes
//! `input_ids` and `labels` (checked against goldens executed from that file,
//! `tests/fixtures/v700/`).
//!
//! - [`parse_v700`] / [`read_v700`]: a JSON list of `{id | sample_id, image?, conversations}`;
//!   `image` is one path or a list of paths, and the conversation holds exactly one `<image>` per
//!   path (the official assertion), none in a gpt turn.
//! - [`tokenize_v700`]: the official rendering. Per turn: with images, every `<image>` is removed,
//!   the text stripped and runs of blank lines (`\n(\s*\n)+`) collapsed to one `\n`, and a human
//!   turn then starts with its images, one `<image>` per line; without images the text is
//!   stripped and collapsed. Each turn becomes `User: …\n\n` / `Assistant: …\n\n` (`User:` when
//!   empty), is tokenised on its own with each `<image>` replaced by [`V700_IMAGE_TOKEN`] ×
//!   `num_token_per_image`, and labelled: human turns all [`IGNORE_INDEX`], the first three
//!   tokens (`Assistant:`) of a gpt turn too.
//! - [`V700Tokenized::padded`]: the official `pad_to_max_len`: the first `ctx_len` tokens, then
//!   token 0 with label [`IGNORE_INDEX`] up to `ctx_len`.
//!
//! One official bug is not copied: `mask_targets` compares the raw `from` with `"human"` / `"gpt"`
//! case-sensitively, so a `"Human"` turn is trained on (image placeholders included) and a
//! `"GPT"` turn's `Assistant:` is not masked, although roles are matched case-insensitively
//! everywhere else. Here roles are case-insensitive throughout; for lowercase roles (all released
//! data) the labels are the official ones.
//!
//! # Shapes
//!
//! A sample with `n` images is `T` ids holding `n · num_token_per_image` placeholders, and `T`
//! labels; its images are `n` entries of [`V700Tokenized::images`] in placeholder order.

use std::path::{Path, PathBuf};

use serde_json::Value;
use visualrwkv_prompt::{Conversation, Role};
use visualrwkv_tokenizer::Tokenizer;

use crate::{
    DataError, IGNORE_INDEX, IMAGE_TAG, field_type, parse_conversation, parse_id, sample_error, sample_list,
    sample_object,
};

/// v7.00's image placeholder id (`IMAGE_TOKEN_INDEX`, the last id of the World vocabulary).
pub const V700_IMAGE_TOKEN: i64 = 65535;
/// v7.00's `STOP_TOKEN_INDEX`: the World id of `"\n\n"`, the end of every turn.
pub const V700_STOP_TOKEN: i64 = 261;
/// The padding id of `pad_to_max_len`.
pub const V700_PAD_TOKEN: i64 = 0;
/// Tokens masked at the start of a gpt turn (`Assistant:`).
const ASSISTANT_SIGNAL_TOKENS: usize = 3;

/// One sample of a v7.00 dataset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct V700Record {
    /// `sample_id` when present, else `id` (numbers written as text).
    pub id: String,
    /// The image files relative to the image folder, in `<image>` order.
    pub images: Vec<String>,
    /// The turns.
    pub conversation: Conversation,
    /// The file the sample came from (for errors).
    pub origin: PathBuf,
}

/// One v7.00 sample as training sees it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct V700Tokenized {
    /// The sample's id.
    pub id: String,
    /// The rendered text (`<image>` where each image's placeholders go).
    pub input_text: String,
    /// Token ids with [`V700_IMAGE_TOKEN`] runs, unpadded.
    pub input_ids: Vec<i64>,
    /// Labels aligned with `input_ids` (the shift by one happens in the loss).
    pub labels: Vec<i64>,
    /// The image files, in placeholder order.
    pub images: Vec<String>,
}

impl V700Tokenized {
    /// `input_ids` and `labels` cut to their first `ctx_len` tokens, or padded to `ctx_len` with
    /// [`V700_PAD_TOKEN`] / [`IGNORE_INDEX`] (the official `pad_to_max_len`).
    pub fn padded(&self, ctx_len: usize) -> (Vec<i64>, Vec<i64>) {
        let fit = |v: &[i64], fill: i64| {
            let mut v = v[..v.len().min(ctx_len)].to_vec();
            v.resize(ctx_len, fill);
            v
        };
        (fit(&self.input_ids, V700_PAD_TOKEN), fit(&self.labels, IGNORE_INDEX))
    }

    /// The number of placeholder tokens.
    pub fn image_tokens(&self) -> usize {
        self.input_ids.iter().filter(|&&t| t == V700_IMAGE_TOKEN).count()
    }
}

/// Reads a v7.00 dataset file (see [`parse_v700`]).
pub fn read_v700(path: impl AsRef<Path>) -> Result<Vec<V700Record>, DataError> {
    let path = path.as_ref();
    let text =
        std::fs::read_to_string(path).map_err(|e| DataError::Io { path: path.to_path_buf(), why: e.to_string() })?;
    parse_v700(&text, path)
}

/// Parses a v7.00 dataset: a JSON list of objects with `sample_id` or `id` (string or number),
/// optional `image` (a path or a list of paths) and `conversations` (as [`crate::parse_llava`]).
/// The number of `<image>` tags must equal the number of paths; an `<image>` in a gpt turn, an
/// empty path or an unknown field is an error naming the sample and the field.
pub fn parse_v700(text: &str, origin: &Path) -> Result<Vec<V700Record>, DataError> {
    sample_list(text, origin)?.iter().enumerate().map(|(i, v)| parse_sample(i, v, origin)).collect()
}

fn parse_sample(index: usize, v: &Value, origin: &Path) -> Result<V700Record, DataError> {
    let fallback = format!("#{index}");
    let obj = sample_object(index, v, origin)?;
    let id = match parse_id(obj, "sample_id", &fallback, origin)? {
        Some(id) => id,
        None => parse_id(obj, "id", &fallback, origin)?
            .ok_or_else(|| sample_error(origin, &fallback, "id", "missing (`id` or `sample_id`)".into()))?,
    };
    let err = |field: &str, why: String| sample_error(origin, &id, field, why);
    if let Some(key) = obj.keys().find(|k| !["id", "sample_id", "image", "conversations"].contains(&k.as_str())) {
        return Err(err(key, "unknown field (a sample has `id` or `sample_id`, `image` and `conversations`)".into()));
    }
    let path = |v: &Value, field: &str| match v {
        Value::String(s) if !s.trim().is_empty() => Ok(s.clone()),
        Value::String(_) => Err(err(field, "empty path".into())),
        other => Err(err(field, format!("expected a path, found {}", field_type(other)))),
    };
    let images = match obj.get("image") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(list)) => {
            list.iter().enumerate().map(|(i, v)| path(v, &format!("image[{i}]"))).collect::<Result<_, _>>()?
        }
        Some(v) => vec![path(v, "image")?],
    };
    let conversation = parse_conversation(&id, obj.get("conversations"), origin)?;
    let mut tags = 0;
    for (t, turn) in conversation.turns.iter().enumerate() {
        let n = turn.text.matches(IMAGE_TAG).count();
        if n > 0 && turn.role == Role::Assistant {
            return Err(err(&format!("conversations[{t}].value"), "`<image>` in a gpt turn".into()));
        }
        tags += n;
    }
    if tags != images.len() {
        return Err(err(
            "image",
            format!("{} image path(s) but {tags} `<image>` tag(s) in the conversation", images.len()),
        ));
    }
    Ok(V700Record { id, images, conversation, origin: origin.to_path_buf() })
}

/// Python's `str.isspace` (also what `\s` and `strip()` use): Unicode whitespace plus the
/// separators U+001C..U+001F.
fn py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

fn py_strip(s: &str) -> &str {
    s.trim_matches(py_space)
}

/// `re.sub(r"\n(\s*\n)+", "\n", s)`: each newline followed by whitespace holding further
/// newlines becomes one newline (whitespace after the last of them stays).
fn collapse_blank_lines(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < chars.len() {
        if chars[i] != '\n' {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        let mut last = i;
        let mut j = i + 1;
        while j < chars.len() && py_space(chars[j]) {
            if chars[j] == '\n' {
                last = j;
            }
            j += 1;
        }
        out.push('\n');
        i = last + 1;
    }
    out
}

/// A turn's text after v7.00's image and blank-line processing (before the speaker tag).
fn turn_text(text: &str, role: Role, has_images: bool) -> String {
    let images = text.matches(IMAGE_TAG).count();
    if !has_images || images == 0 {
        return collapse_blank_lines(py_strip(text));
    }
    let body = collapse_blank_lines(py_strip(&text.replace(IMAGE_TAG, "")));
    let body = if role == Role::User { format!("{}\n{body}", vec![IMAGE_TAG; images].join("\n")) } else { body };
    py_strip(&body).to_string()
}

/// Renders and tokenises one sample as v7.00's `src/dataset.py` does, with `num_token_per_image`
/// placeholders per image (v7.00's default is 16).
pub fn tokenize_v700(record: &V700Record, tokenizer: &Tokenizer, num_token_per_image: usize) -> V700Tokenized {
    let has_images = !record.images.is_empty();
    let (mut input_text, mut input_ids, mut labels) = (String::new(), Vec::new(), Vec::new());
    for turn in &record.conversation.turns {
        let body = turn_text(&turn.text, turn.role, has_images);
        let speaker = turn.role.tag();
        let value = if body.is_empty() { format!("{speaker}:") } else { format!("{speaker}: {body}\n\n") };
        let mut ids: Vec<i64> = Vec::new();
        for (k, chunk) in value.split(IMAGE_TAG).enumerate() {
            if k > 0 {
                ids.extend(std::iter::repeat_n(V700_IMAGE_TOKEN, num_token_per_image));
            }
            ids.extend(tokenizer.encode(chunk).into_iter().map(i64::from));
        }
        let masked = match turn.role {
            Role::User => ids.len(),
            Role::Assistant => ASSISTANT_SIGNAL_TOKENS.min(ids.len()),
        };
        labels.extend(std::iter::repeat_n(IGNORE_INDEX, masked).chain(ids[masked..].iter().copied()));
        input_ids.extend(ids);
        input_text.push_str(&value);
    }
    V700Tokenized { id: record.id.clone(), input_text, input_ids, labels, images: record.images.clone() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_lines_collapse_like_python_re() {
        assert_eq!(collapse_blank_lines("a\n\nb"), "a\nb");
        assert_eq!(collapse_blank_lines("a\n \t\n  b"), "a\n  b");
        assert_eq!(collapse_blank_lines("a\n  b"), "a\n  b");
        assert_eq!(collapse_blank_lines("a\n\n\n"), "a\n");
        assert_eq!(collapse_blank_lines("a\n\u{1f}\nb\n\u{a0}\n\nc"), "a\nb\nc");
        assert_eq!(py_strip("\u{1c} x \u{3000}"), "x");
    }
}
