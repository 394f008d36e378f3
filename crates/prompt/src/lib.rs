//! # visualrwkv-prompt: where the image goes in the conversation
//!
//! Builds VisualRWKV's token sequences (docs/model.md §3): the conversation template
//! (`"User: …\n\n"`, `"Assistant: …\n\n"`, inference ends in `"Assistant:"`), each turn
//! tokenised on its own, the text split at `<image>` with the placeholder id
//! [`IMAGE_TOKEN`] (−200) between the chunks, and training labels ([`IGNORE_INDEX`] for user
//! turns and the three `"Assistant:"` tokens; the answer and its closing `"\n\n"` are trained).
//!
//! Where the image goes is a [`PromptStrategy`]: [`ImageFirst`], [`ImageLast`], [`Sandwich`]
//! (v6.0: every question of the conversation, the image, then the current question) and
//! [`SandwichRepeat`] (v5: the same question on both sides). A new layout is a type implementing
//! the trait (see `examples/prompts.rs`).
//!
//! Text normalisation (as the reference's dataset code): every turn is stripped, runs of
//! newlines (with any whitespace between them) collapse to one `"\n"`, and `<image>` is removed
//! from the turn that held it before the strategy places it again.

use thiserror::Error;
use visualrwkv_tokenizer::Tokenizer;

/// Placeholder id of the image rows in token sequences.
pub const IMAGE_TOKEN: i64 = -200;
/// Label of positions that are not trained.
pub const IGNORE_INDEX: i64 = -100;
/// The image tag in conversation text.
pub const IMAGE_TAG: &str = "<image>";
/// The short-answer instruction the sandwich removes from its prefix copy of the image turn.
pub const SHORT_ANSWER: &str = "Answer the question using a single word or phrase.";
/// Tokens of `"Assistant:"` with the World tokenizer (never trained). [`build`] masks however
/// many tokens the given tokenizer makes of it (10 with `Tokenizer::world_bytes`).
pub const ASSISTANT_PREFIX_TOKENS: usize = 3;

/// Errors building a prompt.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PromptError {
    /// The conversation has no turns, or only empty text.
    #[error("empty conversation")]
    Empty,
    /// Turns do not alternate user / assistant starting with the user.
    #[error("turn {0} has the wrong role: turns alternate User, Assistant, … starting with User")]
    Roles(usize),
    /// An image is required (the strategy places one) but no user turn holds `<image>`.
    #[error("the conversation has no `<image>` placeholder, but an image is given")]
    NoPlaceholder,
    /// More than one `<image>` (VisualRWKV takes exactly one image).
    #[error("{0} `<image>` placeholders: VisualRWKV takes one image per conversation")]
    TooManyImages(usize),
    /// `<image>` sits in an assistant turn.
    #[error("turn {0} is an assistant turn holding `<image>`")]
    ImageInAnswer(usize),
}

/// Who speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The human ("User").
    User,
    /// The model ("Assistant").
    Assistant,
}

impl Role {
    /// The speaker tag of the template.
    pub fn tag(self) -> &'static str {
        match self {
            Role::User => "User",
            Role::Assistant => "Assistant",
        }
    }
}

/// One turn.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Turn {
    /// The speaker.
    pub role: Role,
    /// The raw text (may contain `<image>`).
    pub text: String,
}

/// A conversation in LLaVA's format: user and assistant turns alternating, one `<image>` in a
/// user turn.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Conversation {
    /// The turns.
    pub turns: Vec<Turn>,
}

impl Conversation {
    /// A single question about an image: one user turn `"<image>\n" + question` (the benchmark
    /// prompt of evaluate.py), ready for inference.
    pub fn question(question: &str) -> Self {
        Self { turns: vec![Turn { role: Role::User, text: format!("{IMAGE_TAG}\n{question}") }] }
    }

    /// Appends a turn.
    pub fn push(mut self, role: Role, text: &str) -> Self {
        self.turns.push(Turn { role, text: text.to_string() });
        self
    }

    /// The index of the user turn holding `<image>`, if any; errors for several or misplaced tags.
    pub fn image_turn(&self) -> Result<Option<usize>, PromptError> {
        let count: usize = self.turns.iter().map(|t| t.text.matches(IMAGE_TAG).count()).sum();
        if count > 1 {
            return Err(PromptError::TooManyImages(count));
        }
        match self.turns.iter().position(|t| t.text.contains(IMAGE_TAG)) {
            Some(i) if self.turns[i].role == Role::Assistant => Err(PromptError::ImageInAnswer(i)),
            other => Ok(other),
        }
    }

    fn check(&self) -> Result<(), PromptError> {
        if self.turns.iter().all(|t| t.text.trim().is_empty()) {
            return Err(PromptError::Empty);
        }
        for (i, t) in self.turns.iter().enumerate() {
            let want = if i % 2 == 0 { Role::User } else { Role::Assistant };
            if t.role != want {
                return Err(PromptError::Roles(i));
            }
        }
        Ok(())
    }
}

/// Collapses runs of newlines (with whitespace between them) to one `"\n"`.
pub fn collapse_newlines(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        out.push(chars[i]);
        if chars[i] == '\n' {
            // Skip whitespace up to and including the last newline of the run.
            let mut j = i + 1;
            let mut last_newline = None;
            while j < chars.len() && chars[j].is_whitespace() {
                if chars[j] == '\n' {
                    last_newline = Some(j);
                }
                j += 1;
            }
            if let Some(k) = last_newline {
                i = k;
            }
        }
        i += 1;
    }
    out
}

/// A turn's text as the template uses it: `<image>` removed, newlines collapsed, stripped.
pub fn clean(text: &str) -> String {
    collapse_newlines(&text.replace(IMAGE_TAG, "")).trim().to_string()
}

/// What a strategy sees when it places the image.
#[derive(Debug)]
pub struct PlacementContext<'a> {
    /// The whole conversation (raw texts).
    pub conversation: &'a Conversation,
    /// Index of the turn that held `<image>`.
    pub image_turn: usize,
}

/// Where the image goes: returns the new text of the image turn from its cleaned text `q`,
/// with exactly one `<image>` in it.
pub trait PromptStrategy: std::fmt::Debug + Send + Sync {
    /// A short name for messages and reports.
    fn name(&self) -> String;
    /// The image turn's text with `<image>` placed.
    fn place(&self, q: &str, context: &PlacementContext<'_>) -> String;
}

/// `"<image>\n" + Q` (stage-1 pretraining).
#[derive(Clone, Copy, Debug, Default)]
pub struct ImageFirst;

impl PromptStrategy for ImageFirst {
    fn name(&self) -> String {
        "first".into()
    }
    fn place(&self, q: &str, _: &PlacementContext<'_>) -> String {
        format!("{IMAGE_TAG}\n{q}")
    }
}

/// `Q + "\n<image>"`.
#[derive(Clone, Copy, Debug, Default)]
pub struct ImageLast;

impl PromptStrategy for ImageLast {
    fn name(&self) -> String {
        "last".into()
    }
    fn place(&self, q: &str, _: &PlacementContext<'_>) -> String {
        format!("{q}\n{IMAGE_TAG}")
    }
}

/// VisualRWKV v6.0's sandwich: `ALLQ + "\n<image>\n" + Q`, where ALLQ joins every user turn of
/// the conversation with `"\n"` — the image turn cleaned and without the short-answer
/// instruction, the others only stripped.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sandwich;

impl PromptStrategy for Sandwich {
    fn name(&self) -> String {
        "sandwich".into()
    }
    fn place(&self, q: &str, ctx: &PlacementContext<'_>) -> String {
        let all: Vec<String> = ctx
            .conversation
            .turns
            .iter()
            .enumerate()
            .filter(|(_, t)| t.role == Role::User)
            .map(|(i, t)| {
                if i == ctx.image_turn {
                    collapse_newlines(q.replace(SHORT_ANSWER, "").trim())
                } else {
                    t.text.trim().to_string()
                }
            })
            .collect();
        format!("{}\n{IMAGE_TAG}\n{q}", all.join("\n"))
    }
}

/// VisualRWKV v5's "middle" (the paper's Table 3): `Q + "\n<image>\n" + Q`.
#[derive(Clone, Copy, Debug, Default)]
pub struct SandwichRepeat;

impl PromptStrategy for SandwichRepeat {
    fn name(&self) -> String {
        "sandwich-repeat".into()
    }
    fn place(&self, q: &str, _: &PlacementContext<'_>) -> String {
        format!("{q}\n{IMAGE_TAG}\n{q}")
    }
}

/// The built-in strategy named `name`: `first`, `last`, `sandwich` (alias `middle`) or
/// `sandwich-repeat`.
pub fn by_name(name: &str) -> Option<Box<dyn PromptStrategy>> {
    match name {
        "first" => Some(Box::new(ImageFirst)),
        "last" => Some(Box::new(ImageLast)),
        "sandwich" | "middle" => Some(Box::new(Sandwich)),
        "sandwich-repeat" => Some(Box::new(SandwichRepeat)),
        _ => None,
    }
}

/// A tokenised prompt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prompt {
    /// Token ids with [`IMAGE_TOKEN`] where the image rows go (at most once).
    pub tokens: Vec<i64>,
    /// Training labels aligned with `tokens` (the shift by one happens in the loss).
    pub labels: Vec<i64>,
    /// Number of tokens of each turn (the final `"Assistant:"` included for inference).
    pub turn_lengths: Vec<usize>,
    /// The text the tokens encode, `<image>` where the placeholder is (the official
    /// `input_text`, written as an answer's `prompt`).
    pub text: String,
}

impl Prompt {
    /// Position of the placeholder, if any.
    pub fn image_position(&self) -> Option<usize> {
        self.tokens.iter().position(|&t| t == IMAGE_TOKEN)
    }

    /// The ids before and after the placeholder (all ids as `before` when there is none).
    pub fn split(&self) -> (Vec<u32>, Vec<u32>) {
        let at = self.image_position().unwrap_or(self.tokens.len());
        let ids = |s: &[i64]| s.iter().map(|&t| t as u32).collect();
        (ids(&self.tokens[..at]), ids(&self.tokens[(at + 1).min(self.tokens.len())..]))
    }
}

/// Tokenises `text` chunk by chunk around `<image>`, joining the chunks with [`IMAGE_TOKEN`].
pub fn tokenize_with_image(tokenizer: &Tokenizer, text: &str) -> Vec<i64> {
    let mut out = Vec::new();
    for (i, chunk) in text.split(IMAGE_TAG).enumerate() {
        if i > 0 {
            out.push(IMAGE_TOKEN);
        }
        out.extend(tokenizer.encode(chunk).into_iter().map(i64::from));
    }
    out
}

/// Builds the token sequence and labels of `conversation` with the image placed by `strategy`.
///
/// Each turn's text is cleaned ([`clean`]), the image turn's then placed by the strategy and
/// stripped; a turn left empty renders as its bare tag (`"Assistant:"`, never trained), as the
/// reference does. `with_image`: whether an image is given (then a user turn must hold `<image>`; without one
/// any `<image>` tag is an error too). `for_inference`: when the conversation ends with a user
/// turn, appends the `"Assistant:"` cue (untrained).
pub fn build(
    conversation: &Conversation,
    strategy: &dyn PromptStrategy,
    tokenizer: &Tokenizer,
    with_image: bool,
    for_inference: bool,
) -> Result<Prompt, PromptError> {
    conversation.check()?;
    let image_turn = conversation.image_turn()?;
    match (with_image, image_turn) {
        (true, None) => return Err(PromptError::NoPlaceholder),
        (false, Some(_)) => return Err(PromptError::TooManyImages(1)),
        _ => {}
    }
    let (mut tokens, mut labels, mut turn_lengths) = (Vec::new(), Vec::new(), Vec::new());
    let mut full_text = String::new();
    let assistant_prefix = tokenizer.encode("Assistant:").len();
    for (i, turn) in conversation.turns.iter().enumerate() {
        let mut value = clean(&turn.text);
        if Some(i) == image_turn {
            let ctx = PlacementContext { conversation, image_turn: i };
            value = strategy.place(&value, &ctx).trim().to_string();
        }
        // An empty turn is the bare speaker tag, as the reference renders it (all masked).
        let text = if value.is_empty() {
            format!("{}:", turn.role.tag())
        } else {
            format!("{}: {value}\n\n", turn.role.tag())
        };
        let ids = tokenize_with_image(tokenizer, &text);
        full_text.push_str(&text);
        let lab: Vec<i64> = match turn.role {
            Role::User => vec![IGNORE_INDEX; ids.len()],
            Role::Assistant => {
                ids.iter().enumerate().map(|(j, &t)| if j < assistant_prefix { IGNORE_INDEX } else { t }).collect()
            }
        };
        turn_lengths.push(ids.len());
        tokens.extend(ids);
        labels.extend(lab);
    }
    let ends_with_user = conversation.turns.last().is_some_and(|t| t.role == Role::User);
    if for_inference && ends_with_user {
        let ids: Vec<i64> = tokenizer.encode("Assistant:").into_iter().map(i64::from).collect();
        turn_lengths.push(ids.len());
        labels.extend(std::iter::repeat_n(IGNORE_INDEX, ids.len()));
        tokens.extend(ids);
        full_text.push_str("Assistant:");
    }
    Ok(Prompt { tokens, labels, turn_lengths, text: full_text })
}
