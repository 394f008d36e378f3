//! Text generation with a cached state: the prompt is run once in sequence mode, then one token
//! per step from the carried state (O(1) work per token).

use burn::tensor::{Int, Tensor, TensorData};
use visualrwkv_rwkv::{
    Decoder, HostState, LanguageModel, Rwkv, Rwkv7, RwkvBackend, RwkvError, Sampler, SamplingOptions, State,
};
use visualrwkv_tokenizer::{DOUBLE_NEWLINE, END_OF_TEXT, StreamDecoder, Tokenizer};

/// Options of [`generate`].
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    /// Sampling (greedy by default).
    pub sampling: SamplingOptions,
    /// Stop after this many new tokens.
    pub max_tokens: usize,
    /// Token ids that stop generation (not emitted). Default: 0 (end of text) and 261 ("\n\n").
    pub stop_tokens: Vec<u32>,
    /// Prompt tokens per sequence-mode call (bounds memory on long prompts).
    pub prefill_chunk: usize,
}

/// Which code runs a generation's prompt and steps.
#[derive(Clone, Copy, Debug, Default)]
pub enum Engine<'a> {
    /// The model's tensor ops (any backend).
    #[default]
    Model,
    /// The fused CPU decoder built from the same model ([`Decoder::of_model`]): the prompt in its
    /// sequence mode ([`Decoder::prefill`]), the steps with [`Decoder::step`].
    Fused(&'a Decoder),
}

/// A prompt's state where its engine keeps it: burn tensors for [`Engine::Model`], host buffers
/// for [`Engine::Fused`] (either converts to the other).
#[derive(Clone, Debug)]
pub enum PromptState<B: RwkvBackend> {
    /// On the model's backend.
    Model(State<B>),
    /// On the host, as the fused decoder runs it.
    Host(HostState),
}

impl<B: RwkvBackend> PromptState<B> {
    /// As a burn state of `model` (converted from the host when needed).
    pub fn to_state(&self, model: &impl TokenModel<B>) -> Result<State<B>, RwkvError> {
        match self {
            PromptState::Model(s) => Ok(s.clone()),
            PromptState::Host(h) => model.host_to_state(h),
        }
    }

    /// As a host state (copied from the backend when needed).
    pub fn to_host(&self) -> Result<HostState, RwkvError> {
        match self {
            PromptState::Model(s) => HostState::from_state(s, 0),
            PromptState::Host(h) => Ok(h.clone()),
        }
    }
}

impl<'a> From<Option<&'a Decoder>> for Engine<'a> {
    fn from(decoder: Option<&'a Decoder>) -> Self {
        decoder.map_or(Engine::Model, Engine::Fused)
    }
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            sampling: SamplingOptions::default(),
            max_tokens: 128,
            stop_tokens: vec![END_OF_TEXT, DOUBLE_NEWLINE],
            prefill_chunk: 256,
        }
    }
}

/// The result of [`generate`].
#[derive(Clone, Debug)]
pub struct Generation<B: RwkvBackend> {
    /// Generated token ids (without the stop token).
    pub tokens: Vec<u32>,
    /// The generated text.
    pub text: String,
    /// The state after the last consumed token (prompt and generated tokens).
    pub state: State<B>,
    /// The stop token that ended generation, if any.
    pub stopped_by: Option<u32>,
    /// The raw logit and softmax probability of every chosen token, the stop token included
    /// (what the official `evaluate.py` averages into `avg_logit` / `avg_prob`).
    pub scores: Vec<TokenScore>,
}

/// How likely the model found a chosen token (before temperature and penalties).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TokenScore {
    /// The token.
    pub token: u32,
    /// Its logit.
    pub logit: f32,
    /// Its probability under the softmax of the logits.
    pub prob: f32,
}

impl TokenScore {
    /// The score of `token` among `logits`.
    pub fn of(token: u32, logits: &[f32]) -> Self {
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let sum: f64 = logits.iter().map(|&l| f64::from(l - max).exp()).sum();
        let logit = logits.get(token as usize).copied().unwrap_or(f32::NAN);
        Self { token, logit, prob: (f64::from(logit - max).exp() / sum) as f32 }
    }
}

/// What the sampling loop produced.
struct Sampled {
    tokens: Vec<u32>,
    text: String,
    stopped_by: Option<u32>,
    scores: Vec<TokenScore>,
}

pub(crate) fn ids_tensor<B: RwkvBackend>(ids: &[u32], device: &B::Device) -> Tensor<B, 2, Int> {
    let v: Vec<i64> = ids.iter().map(|&i| i as i64).collect();
    Tensor::from_data(TensorData::new(v, [1, ids.len()]), device)
}

pub(crate) fn last_logits<B: RwkvBackend>(logits: Tensor<B, 3>) -> Vec<f32> {
    let [_, t, v] = logits.dims();
    logits.slice([0..1, t - 1..t, 0..v]).into_data().convert::<f32>().into_vec::<f32>().expect("f32 logits")
}

/// A language model that runs token ids from a state on its backend: RWKV-6 ([`Rwkv`]) and
/// RWKV-7 ([`Rwkv7`]). [`generate_tokens`] generates with any of them.
pub trait TokenModel<B: RwkvBackend> {
    /// The logits of the last row `[V]` and the state after `ids` (not empty) from `state`
    /// (zeros when `None`).
    fn run_tokens(&self, ids: &[u32], state: Option<&State<B>>) -> Result<(Vec<f32>, State<B>), RwkvError>;

    /// A fused decoder's host state as a state on the model's backend.
    fn host_to_state(&self, host: &HostState) -> Result<State<B>, RwkvError>;
}

impl<B: RwkvBackend> TokenModel<B> for Rwkv<B> {
    fn run_tokens(&self, ids: &[u32], state: Option<&State<B>>) -> Result<(Vec<f32>, State<B>), RwkvError> {
        let out = self.forward_last(ids_tensor::<B>(ids, &self.device()), state)?;
        Ok((last_logits(out.logits), out.state))
    }

    fn host_to_state(&self, host: &HostState) -> Result<State<B>, RwkvError> {
        host.to_state(&self.config(), &self.device())
    }
}

impl<B: RwkvBackend> TokenModel<B> for Rwkv7<B> {
    fn run_tokens(&self, ids: &[u32], state: Option<&State<B>>) -> Result<(Vec<f32>, State<B>), RwkvError> {
        let out = self.forward_last(ids_tensor::<B>(ids, &self.device()), state)?;
        Ok((last_logits(out.logits), out.state))
    }

    fn host_to_state(&self, host: &HostState) -> Result<State<B>, RwkvError> {
        host.to_state_for(&visualrwkv_rwkv::LmConfig::X070(self.config()).dims(), &self.device())
    }
}

impl<B: RwkvBackend> TokenModel<B> for LanguageModel<B> {
    fn run_tokens(&self, ids: &[u32], state: Option<&State<B>>) -> Result<(Vec<f32>, State<B>), RwkvError> {
        let out = self.forward_last(ids_tensor::<B>(ids, &self.device()), state)?;
        Ok((last_logits(out.logits), out.state))
    }

    fn host_to_state(&self, host: &HostState) -> Result<State<B>, RwkvError> {
        host.to_state_for(&self.dims(), &self.device())
    }
}

/// Generates text after `prompt` with `model`'s tensor ops: the prompt in sequence mode in
/// chunks of `options.prefill_chunk`, then one step per token from the carried state. Streams
/// text to `on_text` as it completes. Errors on an empty prompt or invalid options.
pub fn generate_tokens<B: RwkvBackend>(
    model: &impl TokenModel<B>,
    tokenizer: &Tokenizer,
    prompt: &str,
    options: &GenerateOptions,
    on_text: impl FnMut(&str),
) -> Result<Generation<B>, RwkvError> {
    options.sampling.validate()?;
    let prompt_ids = tokenizer.encode(prompt);
    if prompt_ids.is_empty() {
        return Err(RwkvError::EmptyInput { what: "the prompt", shape: vec![0] });
    }
    let mut state: Option<State<B>> = None;
    let mut logits = Vec::new();
    for chunk in prompt_ids.chunks(options.prefill_chunk.max(1)) {
        let (l, s) = model.run_tokens(chunk, state.as_ref())?;
        logits = l;
        state = Some(s);
    }
    decode(model, tokenizer, logits, state.expect("the prompt is not empty"), options, Engine::Model, on_text)
}

/// Generates text after `prompt`, calling `on_text` with each piece of text as soon as it is
/// complete UTF-8. Errors on an empty prompt or invalid options.
pub fn generate<B: RwkvBackend>(
    model: &impl TokenModel<B>,
    tokenizer: &Tokenizer,
    prompt: &str,
    options: &GenerateOptions,
    engine: Engine<'_>,
    on_text: impl FnMut(&str),
) -> Result<Generation<B>, RwkvError> {
    let Engine::Fused(decoder) = engine else {
        return generate_tokens(model, tokenizer, prompt, options, on_text);
    };
    options.sampling.validate()?;
    let prompt_ids = tokenizer.encode(prompt);
    if prompt_ids.is_empty() {
        return Err(RwkvError::EmptyInput { what: "the prompt", shape: vec![0] });
    }
    let mut host = decoder.zero_state();
    let mut logits = Vec::new();
    for chunk in prompt_ids.chunks(options.prefill_chunk.max(1)) {
        logits = decoder.prefill(chunk, &mut host)?;
    }
    decode_host(model, decoder, tokenizer, logits, host, options, on_text)
}

/// Continues generation from a cached state: samples from `logits` (the last prompt row's),
/// then feeds each sampled token through one single-step pass from the carried `state`, until a
/// stop token or `max_tokens`. Streams decoded text to `on_text` (complete UTF-8 only). The
/// steps run on `engine`; with [`Engine::Fused`] from the host copy of the cached state, and
/// the returned generation carries the final state converted back to `B`.
pub fn decode<B: RwkvBackend>(
    model: &impl TokenModel<B>,
    tokenizer: &Tokenizer,
    logits: Vec<f32>,
    mut state: State<B>,
    options: &GenerateOptions,
    engine: Engine<'_>,
    on_text: impl FnMut(&str),
) -> Result<Generation<B>, RwkvError> {
    if let Engine::Fused(decoder) = engine {
        let host = HostState::from_state(&state, 0)?;
        return decode_host(model, decoder, tokenizer, logits, host, options, on_text);
    }
    let s = sample_loop(tokenizer, logits, options, on_text, |id| {
        let (logits, next) = model.run_tokens(&[id], Some(&state))?;
        state = next;
        Ok(logits)
    })?;
    Ok(Generation { tokens: s.tokens, text: s.text, state, stopped_by: s.stopped_by, scores: s.scores })
}

/// [`decode`] from a state of either kind: a host state decodes on the fused decoder without
/// a round trip through the backend (and on the model after conversion when `engine` is
/// [`Engine::Model`]).
pub fn decode_prompt_state<B: RwkvBackend>(
    model: &impl TokenModel<B>,
    tokenizer: &Tokenizer,
    logits: Vec<f32>,
    state: PromptState<B>,
    options: &GenerateOptions,
    engine: Engine<'_>,
    on_text: impl FnMut(&str),
) -> Result<Generation<B>, RwkvError> {
    match (state, engine) {
        (PromptState::Host(host), Engine::Fused(decoder)) => {
            decode_host(model, decoder, tokenizer, logits, host, options, on_text)
        }
        (state, engine) => decode(model, tokenizer, logits, state.to_state(model)?, options, engine, on_text),
    }
}

/// [`decode`] on the fused decoder from a host state.
fn decode_host<B: RwkvBackend>(
    model: &impl TokenModel<B>,
    decoder: &Decoder,
    tokenizer: &Tokenizer,
    logits: Vec<f32>,
    mut host: HostState,
    options: &GenerateOptions,
    on_text: impl FnMut(&str),
) -> Result<Generation<B>, RwkvError> {
    let s = sample_loop(tokenizer, logits, options, on_text, |id| decoder.step(id, &mut host))?;
    let state = model.host_to_state(&host)?;
    Ok(Generation { tokens: s.tokens, text: s.text, state, stopped_by: s.stopped_by, scores: s.scores })
}

/// What [`TokenSampler::next`] drew.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Drawn {
    /// A stop token (not emitted): the generation ends.
    Stop(u32),
    /// A generated token and the text it completes (empty while a UTF-8 character is split
    /// over tokens).
    Token {
        /// The token id.
        id: u32,
        /// The newly complete text.
        text: String,
    },
}

/// The per-token half of generation, apart from the model: draws each next token from the
/// logits under the sampling options (only ids the tokenizer spells, or stop tokens), applies
/// the penalties' bookkeeping and decodes the text as it completes. [`generate`] and
/// [`decode`] run it in a loop; a server runs one per request and steps the model for all of
/// them at once.
pub struct TokenSampler<'t> {
    tokenizer: &'t Tokenizer,
    sampler: Sampler,
    text_decoder: StreamDecoder<'t>,
    stop_tokens: Vec<u32>,
    /// Generated token ids (the stop token excluded).
    pub tokens: Vec<u32>,
    /// The generated text so far.
    pub text: String,
    /// The score of every drawn token, the stop token included.
    pub scores: Vec<TokenScore>,
    /// The stop token that ended generation, if one did.
    pub stopped_by: Option<u32>,
}

impl<'t> TokenSampler<'t> {
    /// A sampler for one generation; errors on invalid sampling options.
    pub fn new(tokenizer: &'t Tokenizer, options: &GenerateOptions) -> Result<Self, RwkvError> {
        options.sampling.validate()?;
        Ok(Self {
            tokenizer,
            sampler: Sampler::new(options.sampling.clone()),
            text_decoder: StreamDecoder::new(tokenizer),
            stop_tokens: options.stop_tokens.clone(),
            tokens: Vec::new(),
            text: String::new(),
            scores: Vec::new(),
            stopped_by: None,
        })
    }

    /// Draws the next token from `logits` `[V]` (see the type's docs).
    pub fn next(&mut self, logits: &[f32]) -> Result<Drawn, RwkvError> {
        let tokenizer = self.tokenizer;
        // Ids the tokenizer spells (1..=its size) and the stop tokens: a head row beyond the
        // tokenizer (RWKV World has 65 536 rows for 65 529 tokens) is never drawn. (The logits'
        // length bounds the draw from the other side: ids past the model's rows.)
        let spelt = tokenizer.vocab_size();
        let stops = &self.stop_tokens;
        let allowed = |i: usize| (1..=spelt).contains(&i) || stops.contains(&(i as u32));
        let id = self.sampler.sample_allowed(logits, allowed) as u32;
        self.scores.push(TokenScore::of(id, logits));
        if self.stop_tokens.contains(&id) {
            self.stopped_by = Some(id);
            return Ok(Drawn::Stop(id));
        }
        // Only reachable when no allowed id exists (the argmax is taken then).
        let piece = self
            .text_decoder
            .push(id)
            .map_err(|_| RwkvError::TokenOutOfVocabulary { id: id.into(), vocab: tokenizer.vocab_size() })?;
        // The pipeline counts a token 0 times when its text is a substring of " \t0123456789".
        let token_text = String::from_utf8_lossy(tokenizer.token_bytes(id).unwrap_or(&[])).into_owned();
        let weight = if " \t0123456789".contains(token_text.as_str()) { 0.0 } else { 1.0 };
        self.sampler.record(id as usize, weight);
        self.text.push_str(&piece);
        self.tokens.push(id);
        Ok(Drawn::Token { id, text: piece })
    }

    /// The text of a character left incomplete by the last token (replacement characters), at
    /// the end of a generation.
    pub fn finish(&mut self) -> String {
        let rest = self.text_decoder.finish();
        self.text.push_str(&rest);
        rest
    }
}

/// The sampling loop of both engines: `step(id)` feeds a sampled token
/// and returns the next logits.
fn sample_loop(
    tokenizer: &Tokenizer,
    mut logits: Vec<f32>,
    options: &GenerateOptions,
    mut on_text: impl FnMut(&str),
    mut step: impl FnMut(u32) -> Result<Vec<f32>, RwkvError>,
) -> Result<Sampled, RwkvError> {
    let mut sampler = TokenSampler::new(tokenizer, options)?;
    for _ in 0..options.max_tokens {
        match sampler.next(&logits)? {
            Drawn::Stop(_) => break,
            Drawn::Token { id, text } => {
                if !text.is_empty() {
                    on_text(&text);
                }
                logits = step(id)?;
            }
        }
    }
    let rest = sampler.finish();
    if !rest.is_empty() {
        on_text(&rest);
    }
    let TokenSampler { tokens, text, stopped_by, scores, .. } = sampler;
    Ok(Sampled { tokens, text, stopped_by, scores })
}

/// VisualRWKV-7 v7.00 runs its language model on sequences whose length is a multiple of this
/// (its WKV7 kernel's chunk), left-padding with [`V700_PAD_TOKEN`].
pub const V700_CHUNK_LEN: usize = 16;

/// The token v7.00 left-pads with (its `STOP_TOKEN_INDEX`, "\n\n").
pub const V700_PAD_TOKEN: u32 = DOUBLE_NEWLINE;

/// How many [`V700_PAD_TOKEN`]s v7.00 puts before a sequence of `len` rows:
/// `(16 − len mod 16) mod 16`.
pub fn v700_pad_len(len: usize) -> usize {
    (V700_CHUNK_LEN - len % V700_CHUNK_LEN) % V700_CHUNK_LEN
}

/// Greedy or sampled decoding as VisualRWKV-7 v7.00's `generate` computes it: that code runs the
/// whole sequence again for every new token, left-padded to a multiple of 16 rows, so the
/// number of pad tokens before the sequence changes with its length. Equivalently (and in
/// O(1) per token), this keeps one state per pad count: `prompts[k]` is the last row's logits
/// and the state after `k` pad tokens and then the `len`-row prompt, for `k` in `0..16`. Each
/// new token advances all 16 states (16 single steps per token) and reads the logits of the
/// state whose pad count matches the new length. Exact while the sequence stays within
/// v7.00's `ctx_len` (beyond it, v7.00 also drops the oldest rows).
///
/// The returned state is the one the last logits came from.
pub fn decode_v700_padded<B: RwkvBackend>(
    model: &impl TokenModel<B>,
    tokenizer: &Tokenizer,
    prompts: Vec<PaddedPrompt<B>>,
    len: usize,
    options: &GenerateOptions,
    on_text: impl FnMut(&str),
) -> Result<Generation<B>, RwkvError> {
    if prompts.len() != V700_CHUNK_LEN {
        return Err(RwkvError::Shape {
            what: "v7.00-padded prompt states (one per pad count)".into(),
            expected: vec![V700_CHUNK_LEN],
            found: vec![prompts.len()],
        });
    }
    let (mut logits, mut states): (Vec<Vec<f32>>, Vec<State<B>>) = prompts.into_iter().unzip();
    let mut len = len;
    let first = std::mem::take(&mut logits[v700_pad_len(len)]);
    let s = sample_loop(tokenizer, first, options, on_text, |id| {
        len += 1;
        let mut chosen = Vec::new();
        for (k, state) in states.iter_mut().enumerate() {
            let (l, next) = model.run_tokens(&[id], Some(state))?;
            *state = next;
            if k == v700_pad_len(len) {
                chosen = l;
            }
        }
        Ok(chosen)
    })?;
    let state = states.swap_remove(v700_pad_len(len));
    Ok(Generation { tokens: s.tokens, text: s.text, state, stopped_by: s.stopped_by, scores: s.scores })
}

/// One padded prompt of [`v700_padded_prompts`]: its last logits and the state after it.
pub type PaddedPrompt<B> = (Vec<f32>, State<B>);

/// The 16 prompt states of [`decode_v700_padded`] for a text prompt: the pad tokens are run one
/// at a time from zero (state after `k` pads), then `ids` in sequence mode from each.
pub fn v700_padded_prompts<B: RwkvBackend>(
    model: &impl TokenModel<B>,
    ids: &[u32],
    prefill_chunk: usize,
) -> Result<Vec<PaddedPrompt<B>>, RwkvError> {
    if ids.is_empty() {
        return Err(RwkvError::EmptyInput { what: "the prompt", shape: vec![0] });
    }
    let mut pads: Option<State<B>> = None;
    let mut out = Vec::with_capacity(V700_CHUNK_LEN);
    for k in 0..V700_CHUNK_LEN {
        if k > 0 {
            pads = Some(model.run_tokens(&[V700_PAD_TOKEN], pads.as_ref())?.1);
        }
        let mut state = pads.clone();
        let mut logits = Vec::new();
        for chunk in ids.chunks(prefill_chunk.max(1)) {
            let (l, s) = model.run_tokens(chunk, state.as_ref())?;
            logits = l;
            state = Some(s);
        }
        out.push((logits, state.expect("the prompt is not empty")));
    }
    Ok(out)
}

/// [`generate_tokens`] as VisualRWKV-7 v7.00's `generate` computes it (left padding that
/// follows the sequence's length; [`decode_v700_padded`]).
pub fn generate_tokens_v700_padded<B: RwkvBackend>(
    model: &impl TokenModel<B>,
    tokenizer: &Tokenizer,
    prompt: &str,
    options: &GenerateOptions,
    on_text: impl FnMut(&str),
) -> Result<Generation<B>, RwkvError> {
    options.sampling.validate()?;
    let ids = tokenizer.encode(prompt);
    let prompts = v700_padded_prompts(model, &ids, options.prefill_chunk)?;
    decode_v700_padded(model, tokenizer, prompts, ids.len(), options, on_text)
}
