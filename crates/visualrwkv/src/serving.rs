//! Serving many requests with one model: the image-state cache ([`ImageStateCache`]) and the
//! continuous-batching scheduler ([`Scheduler`]) behind `visualrwkv serve`, apart from any HTTP.
//!
//! * **Admission** ([`Scheduler::admit`]): a request's conversation is laid out by the prompt
//!   layout as `chat` lays it out, its image run through the tower and its prompt prefilled —
//!   from the cache where it can: the state after `[prefix | image]` is kept per (image,
//!   prefix tokens), and the image's projected rows per image. A request whose text before the
//!   image is one already seen with the same image (a follow-up turn of a conversation; any
//!   question with the `first` layout) continues from the cached state and prefills only its
//!   suffix; one whose prefix is new but whose image is known skips only the tower. Exact: the
//!   suffix comes after the whole image span in every layer's scan order (docs/model.md §5).
//! * **Steps** ([`Scheduler::step`]): every active sequence draws its next token from its
//!   logits ([`TokenSampler`]), then all sequences that go on are stepped together — on the
//!   fused decoder one GEMM per projection over the batch ([`Decoder::step_batch`]), on the
//!   burn model one forward over the concatenated states. Sequences join (admission) and leave
//!   (stop token, stop string, `max_tokens`, [`Scheduler::cancel`]) between steps.
//!
//! The scheduler is synchronous and single-threaded (the model's own work is parallel); a
//! server feeds it from its request queue and routes the [`Event`]s it returns.
//!
//! # Shapes
//!
//! Image `[H, W]` pixels → `pixel_values` `[1, 3, S, S]` → image rows `[n, C]` → prefill of
//! `[prefix + n]` rows (the cached state: per layer `[C]`, `[H, N, N]`, `[C]`) → suffix rows →
//! logits `[V]` per sequence; a step takes `[k]` tokens of `k` sequences to `k` × `[V]` logits.

use std::collections::HashMap;

use burn::tensor::{Int, Tensor, TensorData};
use image::DynamicImage;
use sha2::{Digest, Sha256};
use thiserror::Error;
use visualrwkv_prompt::{Conversation, PromptError, PromptStrategy};
use visualrwkv_rwkv::{HostState, RwkvBackend, RwkvError, State};
use visualrwkv_scan::Scan;
use visualrwkv_tokenizer::Tokenizer;
use visualrwkv_vision::{FusedTower, ImageProcessor};

use crate::generate::{Drawn, Engine, GenerateOptions, PromptState, TokenSampler};
use crate::vlm::{ImageRows, Sample, VisualRwkv, VlmError};

/// The identity of an image for the cache: SHA-256 of its decoded pixels (colour type, width,
/// height and sample bytes), so the same picture sent twice — in any file format or encoding
/// that decodes to the same pixels — is one entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ImageKey(pub [u8; 32]);

impl ImageKey {
    /// The key of a decoded image.
    pub fn of(image: &DynamicImage) -> Self {
        let mut h = Sha256::new();
        h.update(format!("{:?}", image.color()).as_bytes());
        h.update(image.width().to_le_bytes());
        h.update(image.height().to_le_bytes());
        h.update(image.as_bytes());
        Self(h.finalize().into())
    }
}

/// What a request's image got from the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheUse {
    /// The request has no image.
    NoImage,
    /// The image went through the tower and the prefix and image were prefilled.
    Miss,
    /// The image's rows came from the cache (the tower skipped); the prefix and image were
    /// prefilled (a prefix not seen with this image).
    Rows,
    /// The state after `[prefix | image]` came from the cache: only the suffix was prefilled.
    State,
}

/// Counters of the cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheCounters {
    /// Requests whose image skipped the tower (rows or state from the cache).
    pub hits: u64,
    /// Requests whose image went through the tower.
    pub misses: u64,
    /// Requests that continued from a cached state after the image.
    pub state_hits: u64,
    /// Entries evicted to stay within the budget.
    pub evictions: u64,
}

/// The key of a cache entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum EntryKey {
    /// An image's projected rows.
    Rows(ImageKey),
    /// The state after `[prefix | image]`: the image and the prefix's token ids.
    State(ImageKey, Vec<i64>),
}

/// A cached value.
#[derive(Clone, Debug)]
enum Value<B: RwkvBackend> {
    Rows(ImageRows<B>),
    /// The state and the number of image rows it went through.
    State(PromptState<B>, usize),
}

struct Entry<B: RwkvBackend> {
    value: Value<B>,
    bytes: usize,
    last_used: u64,
}

/// Image rows and image states, least recently used evicted first to stay within a byte budget
/// (see the module docs). An entry larger than the whole budget is not kept.
pub struct ImageStateCache<B: RwkvBackend> {
    budget: usize,
    used: usize,
    clock: u64,
    entries: HashMap<EntryKey, Entry<B>>,
    /// What the cache saved so far.
    pub counters: CacheCounters,
}

/// Bytes of an image's rows (`[n, C]` f32).
fn rows_bytes<B: RwkvBackend>(rows: &ImageRows<B>) -> usize {
    rows.rows.dims().iter().product::<usize>() * 4
}

/// Bytes of a state (f32 tensors of every layer).
fn state_bytes<B: RwkvBackend>(state: &PromptState<B>) -> usize {
    match state {
        PromptState::Host(h) => {
            h.layers.iter().map(|l| l.att_shift.len() + l.wkv.len() + l.ffn_shift.len()).sum::<usize>() * 4
        }
        PromptState::Model(s) => s
            .layers
            .iter()
            .map(|l| {
                l.att_shift.dims().iter().product::<usize>()
                    + l.wkv.dims().iter().product::<usize>()
                    + l.ffn_shift.dims().iter().product::<usize>()
            })
            .sum::<usize>()
            .saturating_mul(4),
    }
}

impl<B: RwkvBackend> ImageStateCache<B> {
    /// An empty cache holding at most `budget` bytes (0: nothing is cached).
    pub fn new(budget: usize) -> Self {
        Self { budget, used: 0, clock: 0, entries: HashMap::new(), counters: CacheCounters::default() }
    }

    /// Bytes held now.
    pub fn bytes(&self) -> usize {
        self.used
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn get(&mut self, key: &EntryKey) -> Option<Value<B>> {
        self.clock += 1;
        let entry = self.entries.get_mut(key)?;
        entry.last_used = self.clock;
        Some(entry.value.clone())
    }

    fn put(&mut self, key: EntryKey, value: Value<B>, bytes: usize) {
        if bytes > self.budget {
            return;
        }
        if let Some(old) = self.entries.remove(&key) {
            self.used -= old.bytes;
        }
        while self.used + bytes > self.budget {
            let Some(oldest) = self.entries.iter().min_by_key(|(_, e)| e.last_used).map(|(k, _)| k.clone()) else {
                break;
            };
            if let Some(e) = self.entries.remove(&oldest) {
                self.used -= e.bytes;
                self.counters.evictions += 1;
            }
        }
        self.clock += 1;
        self.used += bytes;
        self.entries.insert(key, Entry { value, bytes, last_used: self.clock });
    }

    /// The projected rows of `image`, if cached.
    pub fn rows(&mut self, image: &ImageKey) -> Option<ImageRows<B>> {
        match self.get(&EntryKey::Rows(*image))? {
            Value::Rows(rows) => Some(rows),
            Value::State(..) => None,
        }
    }

    /// Keeps the projected rows of `image`.
    pub fn put_rows(&mut self, image: ImageKey, rows: ImageRows<B>) {
        let bytes = rows_bytes(&rows);
        self.put(EntryKey::Rows(image), Value::Rows(rows), bytes);
    }

    /// The state after `prefix` (ending with the image placeholder) and `image`, with the number
    /// of image rows it went through, if cached.
    pub fn state(&mut self, image: &ImageKey, prefix: &[i64]) -> Option<(PromptState<B>, usize)> {
        match self.get(&EntryKey::State(*image, prefix.to_vec()))? {
            Value::State(state, rows) => Some((state, rows)),
            Value::Rows(_) => None,
        }
    }

    /// Keeps the state after `prefix` and `image` (`image_rows` rows).
    pub fn put_state(&mut self, image: ImageKey, prefix: Vec<i64>, state: PromptState<B>, image_rows: usize) {
        let bytes = state_bytes(&state) + prefix.len() * 8;
        self.put(EntryKey::State(image, prefix), Value::State(state, image_rows), bytes);
    }
}

/// What a request asks the model to continue.
#[derive(Clone, Debug)]
pub enum RequestInput {
    /// A chat: the conversation (one `<image>` in a user turn when `image` is given), laid out by
    /// the prompt layout, ending with the `"Assistant:"` cue.
    Chat {
        /// The turns.
        conversation: Conversation,
        /// The decoded image, if any.
        image: Option<DynamicImage>,
    },
    /// Raw text for the language model (no template, no image).
    Text(String),
}

/// One request to the scheduler.
#[derive(Clone, Debug)]
pub struct ServeRequest {
    /// The prompt.
    pub input: RequestInput,
    /// Sampling, `max_tokens` and stop tokens.
    pub options: GenerateOptions,
    /// Stop strings: the generation ends before the first occurrence of any (not emitted).
    pub stop: Vec<String>,
}

/// Why a sequence ended (OpenAI's `finish_reason`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// A stop token or stop string.
    Stop,
    /// `max_tokens` reached.
    Length,
}

impl FinishReason {
    /// The wire name: `"stop"` or `"length"`.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// Token counts of a finished request (OpenAI's `usage`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Rows of the prompt (text tokens and image rows).
    pub prompt_tokens: usize,
    /// Generated tokens (the stop token excluded).
    pub completion_tokens: usize,
}

/// What a step produced for one request.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// New text of request `id`.
    Text {
        /// The request.
        id: u64,
        /// The text, complete UTF-8, stop strings held back until they can be ruled out.
        text: String,
    },
    /// Request `id` ended (its last text came before).
    Finished {
        /// The request.
        id: u64,
        /// Why.
        reason: FinishReason,
        /// Its token counts.
        usage: Usage,
    },
}

/// A request accepted by [`Scheduler::admit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Admitted {
    /// Rows of the prompt (text tokens and image rows).
    pub prompt_tokens: usize,
    /// What the image got from the cache.
    pub cache: CacheUse,
}

/// Errors of the scheduler.
#[derive(Debug, Error)]
pub enum ServeError {
    /// The conversation cannot be laid out (roles, image placeholders, empty).
    #[error("{0}")]
    Prompt(#[from] PromptError),
    /// The prompt is empty.
    #[error("the prompt is empty")]
    EmptyPrompt,
    /// The assembled prompt is longer than the context limit.
    #[error("the prompt assembles to {rows} rows (text tokens and image rows), more than the limit of {limit}")]
    ContextTooLong {
        /// Rows of the prompt.
        rows: usize,
        /// The limit.
        limit: usize,
    },
    /// The sampling options are invalid.
    #[error("invalid sampling options: {0}")]
    Options(RwkvError),
    /// The image could not be preprocessed or encoded.
    #[error("the image cannot be used: {0}")]
    Image(VlmError),
    /// The model failed.
    #[error(transparent)]
    Model(#[from] VlmError),
    /// The batch is full.
    #[error("the batch is full ({0} sequences)")]
    Full(usize),
}

impl ServeError {
    /// Whether the request is at fault (a client error), not the server.
    pub fn is_client_error(&self) -> bool {
        !matches!(self, ServeError::Model(_))
    }
}

impl From<RwkvError> for ServeError {
    fn from(e: RwkvError) -> Self {
        ServeError::Model(VlmError::Rwkv(e))
    }
}

/// The limits of a [`Scheduler`].
#[derive(Clone, Copy, Debug)]
pub struct SchedulerConfig {
    /// Most sequences decoded together.
    pub max_batch: usize,
    /// Most rows of an assembled prompt (text tokens and image rows; 0 = no limit).
    pub max_context: usize,
    /// Byte budget of the image-state cache.
    pub cache_bytes: usize,
}

/// One active sequence.
struct Sequence<'a, B: RwkvBackend> {
    id: u64,
    state: PromptState<B>,
    logits: Vec<f32>,
    sampler: TokenSampler<'a>,
    max_tokens: usize,
    stop: Vec<String>,
    /// Bytes of the sampler's text already sent.
    sent: usize,
    prompt_tokens: usize,
}

/// The longest tail of `text` that begins some stop string (held back until more text decides).
fn held_back(text: &str, stops: &[String]) -> usize {
    let mut keep = 0;
    for s in stops {
        for k in (1..s.len()).rev().filter(|&k| s.is_char_boundary(k)) {
            if k > keep && text.ends_with(&s[..k]) {
                keep = k;
                break;
            }
        }
    }
    keep
}

impl<B: RwkvBackend> Sequence<'_, B> {
    /// The text to send after the last drawn token, and whether a stop string ended it.
    fn new_text(&mut self) -> (String, bool) {
        let text = &self.sampler.text;
        // A stop string may start up to its length before the text sent so far ends.
        let longest = self.stop.iter().map(String::len).max().unwrap_or(0);
        let mut from = self.sent.saturating_sub(longest);
        while !text.is_char_boundary(from) {
            from -= 1;
        }
        let hit = self.stop.iter().filter(|s| !s.is_empty()).filter_map(|s| text[from..].find(s.as_str())).min();
        if let Some(at) = hit {
            let end = from + at;
            let out = text[self.sent.min(end)..end].to_string();
            self.sent = end.max(self.sent);
            return (out, true);
        }
        let end = text.len() - held_back(text, &self.stop);
        let out = if end > self.sent { text[self.sent..end].to_string() } else { String::new() };
        self.sent = self.sent.max(end);
        (out, false)
    }
}

/// Admits requests and steps all active ones together (see the module docs).
pub struct Scheduler<'a, B: RwkvBackend> {
    model: &'a VisualRwkv<B>,
    scan: &'a dyn Scan,
    strategy: &'a dyn PromptStrategy,
    tokenizer: &'a Tokenizer,
    engine: Engine<'a>,
    tower: Option<&'a FusedTower>,
    processor: ImageProcessor,
    config: SchedulerConfig,
    active: Vec<Sequence<'a, B>>,
    /// The image-state cache.
    pub cache: ImageStateCache<B>,
    /// Tokens generated so far (all requests).
    pub tokens_generated: u64,
}

impl<'a, B: RwkvBackend> Scheduler<'a, B> {
    /// A scheduler running `model` with `scan` and the prompt layout `strategy` on `engine`
    /// (the fused decoder, or the model's tensor ops), the tower fused when `tower` is given.
    pub fn new(
        model: &'a VisualRwkv<B>,
        scan: &'a dyn Scan,
        strategy: &'a dyn PromptStrategy,
        tokenizer: &'a Tokenizer,
        engine: Engine<'a>,
        tower: Option<&'a FusedTower>,
        config: SchedulerConfig,
    ) -> Self {
        Self {
            model,
            scan,
            strategy,
            tokenizer,
            engine,
            tower,
            processor: ImageProcessor::for_tower(&model.vision.config),
            config,
            active: Vec::new(),
            cache: ImageStateCache::new(config.cache_bytes),
            tokens_generated: 0,
        }
    }

    /// Sequences being decoded.
    pub fn active(&self) -> usize {
        self.active.len()
    }

    /// Whether another request can be admitted now.
    pub fn has_room(&self) -> bool {
        self.active.len() < self.config.max_batch.max(1)
    }

    /// Ids of the sequences being decoded.
    pub fn active_ids(&self) -> Vec<u64> {
        self.active.iter().map(|s| s.id).collect()
    }

    /// Drops sequence `id` (a client gone); whether it was active.
    pub fn cancel(&mut self, id: u64) -> bool {
        let before = self.active.len();
        self.active.retain(|s| s.id != id);
        self.active.len() != before
    }

    fn check_context(&self, rows: usize) -> Result<(), ServeError> {
        if self.config.max_context > 0 && rows > self.config.max_context {
            return Err(ServeError::ContextTooLong { rows, limit: self.config.max_context });
        }
        Ok(())
    }

    fn encode(&self, image: &DynamicImage) -> Result<ImageRows<B>, ServeError> {
        let device = self.model.rwkv.device();
        let pixels =
            self.processor.batch(std::slice::from_ref(image), &device).map_err(|e| ServeError::Image(e.into()))?;
        let mut rows = match self.tower {
            Some(tower) => self.model.encode_images_fused(tower, pixels),
            None => self.model.encode_images(pixels),
        }
        .map_err(ServeError::Image)?;
        Ok(rows.remove(0))
    }

    /// The prompt's last logits and state for a chat with an image, through the cache.
    fn prefill_image(
        &mut self,
        tokens: &[i64],
        at: usize,
        image: &DynamicImage,
    ) -> Result<(Vec<f32>, PromptState<B>, usize, CacheUse), ServeError> {
        let key = ImageKey::of(image);
        let (prefix, suffix) = (&tokens[..=at], &tokens[at + 1..]);
        if let Some((state, n)) = self.cache.state(&key, prefix) {
            self.check_context(tokens.len() - 1 + n)?;
            self.cache.counters.hits += 1;
            self.cache.counters.state_hits += 1;
            let (logits, state) = self.model.extend_on(&state, suffix, self.engine)?;
            return Ok((logits, state, tokens.len() - 1 + n, CacheUse::State));
        }
        let (rows, use_) = match self.cache.rows(&key) {
            Some(rows) => (rows, CacheUse::Rows),
            None => (self.encode(image)?, CacheUse::Miss),
        };
        let n = rows.rows.dims()[0];
        self.check_context(tokens.len() - 1 + n)?;
        if use_ == CacheUse::Miss {
            self.cache.counters.misses += 1;
            self.cache.put_rows(key, rows.clone());
        } else {
            self.cache.counters.hits += 1;
        }
        let sample = Sample { tokens: prefix.to_vec(), image: Some(rows) };
        let (logits, state) = self.model.prefill_on(&sample, self.scan, self.engine)?;
        if suffix.is_empty() {
            return Ok((logits, state, tokens.len() - 1 + n, use_));
        }
        self.cache.put_state(key, prefix.to_vec(), state.clone(), n);
        let (logits, state) = self.model.extend_on(&state, suffix, self.engine)?;
        Ok((logits, state, tokens.len() - 1 + n, use_))
    }

    /// Lays out, encodes and prefills `request` (through the cache) and makes it an active
    /// sequence `id`; its tokens come from the following [`Scheduler::step`]s. Errors leave the
    /// scheduler as it was.
    pub fn admit(&mut self, id: u64, request: ServeRequest) -> Result<Admitted, ServeError> {
        if !self.has_room() {
            return Err(ServeError::Full(self.active.len()));
        }
        request.options.sampling.validate().map_err(|e| ServeError::Options(e.into()))?;
        let (logits, state, prompt_tokens, cache) = match &request.input {
            RequestInput::Chat { conversation, image } => {
                let prompt =
                    visualrwkv_prompt::build(conversation, self.strategy, self.tokenizer, image.is_some(), true)?;
                self.check_context(prompt.tokens.len())?;
                match (image, prompt.image_position()) {
                    (Some(image), Some(at)) => self.prefill_image(&prompt.tokens, at, image)?,
                    _ => {
                        let sample = Sample { tokens: prompt.tokens.clone(), image: None };
                        let (logits, state) = self.model.prefill_on(&sample, self.scan, self.engine)?;
                        (logits, state, prompt.tokens.len(), CacheUse::NoImage)
                    }
                }
            }
            RequestInput::Text(text) => {
                let tokens: Vec<i64> = self.tokenizer.encode(text).into_iter().map(i64::from).collect();
                if tokens.is_empty() {
                    return Err(ServeError::EmptyPrompt);
                }
                self.check_context(tokens.len())?;
                let sample = Sample { tokens: tokens.clone(), image: None };
                let (logits, state) = self.model.prefill_on(&sample, self.scan, self.engine)?;
                (logits, state, tokens.len(), CacheUse::NoImage)
            }
        };
        let sampler = TokenSampler::new(self.tokenizer, &request.options).map_err(ServeError::Options)?;
        self.active.push(Sequence {
            id,
            state,
            logits,
            sampler,
            max_tokens: request.options.max_tokens,
            stop: request.stop,
            sent: 0,
            prompt_tokens,
        });
        Ok(Admitted { prompt_tokens, cache })
    }

    /// One token for every active sequence: draws it, reports new text and finished sequences,
    /// then steps all that go on together (see the module docs). An error fails every active
    /// sequence (they are dropped).
    pub fn step(&mut self) -> Result<Vec<Event>, ServeError> {
        let mut events = Vec::new();
        let mut going = Vec::new();
        let mut i = 0;
        while i < self.active.len() {
            let seq = &mut self.active[i];
            let drawn = if seq.sampler.tokens.len() >= seq.max_tokens {
                None
            } else {
                match seq.sampler.next(&seq.logits) {
                    Ok(d) => Some(d),
                    Err(e) => {
                        self.active.clear();
                        return Err(e.into());
                    }
                }
            };
            let (mut reason, next) = match drawn {
                None => (Some(FinishReason::Length), None),
                Some(Drawn::Stop(_)) => (Some(FinishReason::Stop), None),
                Some(Drawn::Token { id, .. }) => {
                    self.tokens_generated += 1;
                    let full = seq.sampler.tokens.len() >= seq.max_tokens;
                    (full.then_some(FinishReason::Length), Some(id))
                }
            };
            if reason.is_some() {
                seq.sampler.finish();
            }
            let (text, stopped) = seq.new_text();
            if !text.is_empty() {
                events.push(Event::Text { id: seq.id, text });
            }
            if stopped {
                reason = Some(FinishReason::Stop);
            }
            match reason {
                Some(reason) => {
                    let usage = Usage { prompt_tokens: seq.prompt_tokens, completion_tokens: seq.sampler.tokens.len() };
                    events.push(Event::Finished { id: seq.id, reason, usage });
                    self.active.remove(i);
                }
                None => {
                    going.push((i, next.expect("a drawn token")));
                    i += 1;
                }
            }
        }
        if let Err(e) = self.step_sequences(&going) {
            self.active.clear();
            return Err(e);
        }
        Ok(events)
    }

    /// Steps the active sequences `going` (index, token) together.
    fn step_sequences(&mut self, going: &[(usize, u32)]) -> Result<(), ServeError> {
        if going.is_empty() {
            return Ok(());
        }
        let tokens: Vec<u32> = going.iter().map(|&(_, t)| t).collect();
        match self.engine {
            Engine::Fused(decoder) => {
                let mut hosts: Vec<HostState> = Vec::with_capacity(going.len());
                for &(i, _) in going {
                    let state = std::mem::replace(
                        &mut self.active[i].state,
                        PromptState::Host(HostState { layers: Vec::new() }),
                    );
                    hosts.push(match state {
                        PromptState::Host(h) => h,
                        other => other.to_host()?,
                    });
                }
                let mut refs: Vec<&mut HostState> = hosts.iter_mut().collect();
                let logits = decoder.step_batch(&tokens, &mut refs)?;
                for ((&(i, _), host), logits) in going.iter().zip(hosts).zip(logits) {
                    self.active[i].state = PromptState::Host(host);
                    self.active[i].logits = logits;
                }
            }
            Engine::Model => {
                let rwkv = &self.model.rwkv;
                let states = going
                    .iter()
                    .map(|&(i, _)| self.active[i].state.to_state(rwkv))
                    .collect::<Result<Vec<State<B>>, _>>()?;
                let state = State::cat(states)?;
                let ids: Vec<i64> = tokens.iter().map(|&t| i64::from(t)).collect();
                let n = ids.len();
                let input = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [n, 1]), &rwkv.device());
                let out = rwkv.forward(input, Some(&state))?;
                let v = out.logits.dims()[2];
                let all = out.logits.reshape([n, v]).into_data().convert::<f32>().into_vec::<f32>().map_err(|e| {
                    RwkvError::Shape {
                        what: format!("logits of a batched step ({e:?})"),
                        expected: vec![n, v],
                        found: vec![],
                    }
                })?;
                for (row, &(i, _)) in going.iter().enumerate() {
                    self.active[i].state = PromptState::Model(out.state.batch_rows(row..row + 1)?);
                    self.active[i].logits = all[row * v..(row + 1) * v].to_vec();
                }
            }
        }
        Ok(())
    }
}
