//! Answering benchmark questions one after another, as the official `evaluate.py` does, with two
//! caches it lacks.
//!
//! For each question: the user turn (`<image>` where the file puts it) is placed by the prompt
//! layout and wrapped as `"User: …\n\nAssistant:"`, the image's rows are spliced in, the answer
//! is generated (greedy by default, stopping at `"\n\n"`), cut at its first `"\n\n"` and
//! stripped; `avg_logit` is the mean logit of the chosen tokens and `avg_prob` their geometric
//! mean probability, the stop token included.
//!
//! * **Image cache** — the tower and projector run once per image: questions on an image
//!   already seen reuse its projected rows.
//! * **Image-state cache** — the model state after `[prefix | image]` is kept per (image,
//!   prefix tokens): questions whose text before the image is the same (the `first` layout:
//!   `"User: "` + image) continue from it and only run their suffix. Exact: the suffix comes
//!   after the whole image span in every layer's scan order (docs/model.md §5), so its rows see the same
//!   states as in one full prefill.
//!
//! Both hold the `capacity` most recently used entries.
//!
//! # Shapes
//!
//! Pixels `[1, 3, S, S]` → image rows `[n, C]` → prefill over `[prefix + n]` rows → per-layer
//! states (the cached image state) → suffix `[s]` rows → logits `[V]` of the last row.

use burn::tensor::Tensor;
use image::DynamicImage;
use visualrwkv_prompt::{Conversation, IMAGE_TAG, IMAGE_TOKEN, PromptStrategy, Role, Turn};
use visualrwkv_rwkv::RwkvBackend;
use visualrwkv_scan::Scan;
use visualrwkv_tokenizer::Tokenizer;
use visualrwkv_vision::{FusedTower, ImageProcessor};

use crate::generate::{Engine, GenerateOptions, Generation, PromptState, decode_prompt_state};
use crate::vlm::{ImageRows, Sample, VisualRwkv, VlmError};

/// The picture a question's image loader returns.
pub enum Picture {
    /// A decoded image, preprocessed with the tower's recipe.
    Image(DynamicImage),
    /// All-zero `pixel_values` (what `evaluate.py` feeds a question with `<image>` but no image).
    Zeros,
}

/// A question's image: its cache key and a loader called on a cache miss.
pub type ImageSource<'s> = (&'s str, &'s mut dyn FnMut() -> Result<Picture, VlmError>);

/// One answered question.
#[derive(Clone, Debug, PartialEq)]
pub struct Answered {
    /// The prompt text (`<image>` where the image rows went).
    pub prompt: String,
    /// The answer: up to the first `"\n\n"`, stripped.
    pub text: String,
    /// The generated token ids (the stop token excluded).
    pub tokens: Vec<u32>,
    /// Mean logit of the chosen tokens, the stop token included.
    pub avg_logit: f64,
    /// Geometric mean of the chosen tokens' probabilities, the stop token included.
    pub avg_prob: f64,
    /// Whether the image's rows came from the cache.
    pub image_cached: bool,
    /// Whether the state after `[prefix | image]` came from the cache.
    pub state_cached: bool,
}

/// Cache counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Images run through the tower.
    pub images_encoded: usize,
    /// Questions that reused an image's rows.
    pub image_hits: usize,
    /// Questions that reused the state after the image.
    pub state_hits: usize,
}

/// A small most-recently-used cache.
struct Recent<K, V> {
    entries: Vec<(K, V)>,
    capacity: usize,
}

impl<K: PartialEq, V: Clone> Recent<K, V> {
    fn new(capacity: usize) -> Self {
        Self { entries: Vec::new(), capacity }
    }

    fn get(&mut self, key: &K) -> Option<V> {
        let i = self.entries.iter().position(|(k, _)| k == key)?;
        let e = self.entries.remove(i);
        let v = e.1.clone();
        self.entries.push(e);
        Some(v)
    }

    fn put(&mut self, key: K, value: V) {
        if self.capacity == 0 {
            return;
        }
        if self.entries.len() >= self.capacity {
            self.entries.remove(0);
        }
        self.entries.push((key, value));
    }
}

/// Answers questions with a model, a scan and a prompt layout (see the module docs).
pub struct Answerer<'a, B: RwkvBackend> {
    model: &'a VisualRwkv<B>,
    scan: &'a dyn Scan,
    strategy: &'a dyn PromptStrategy,
    tokenizer: &'a Tokenizer,
    options: GenerateOptions,
    engine: Engine<'a>,
    processor: ImageProcessor,
    tower: Option<&'a FusedTower>,
    images: Recent<String, ImageRows<B>>,
    states: Recent<(String, Vec<i64>), PromptState<B>>,
    v700_padding: bool,
    /// What the caches saved so far.
    pub stats: CacheStats,
}

impl<'a, B: RwkvBackend> Answerer<'a, B> {
    /// An answerer generating on `engine`, keeping the `capacity` most recent images and image
    /// states.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        model: &'a VisualRwkv<B>,
        scan: &'a dyn Scan,
        strategy: &'a dyn PromptStrategy,
        tokenizer: &'a Tokenizer,
        options: GenerateOptions,
        engine: Engine<'a>,
        capacity: usize,
    ) -> Self {
        let processor = ImageProcessor::for_tower(&model.vision.config);
        Self {
            model,
            scan,
            strategy,
            tokenizer,
            options,
            engine,
            processor,
            tower: None,
            images: Recent::new(capacity),
            states: Recent::new(capacity),
            v700_padding: false,
            stats: CacheStats::default(),
        }
    }

    /// Decodes as VisualRWKV-7 v7.00's `generate` does ([`VisualRwkv::generate_v700_padded`]:
    /// the sequence left-padded to a multiple of 16 rows at every step), on the model's tensor
    /// ops whatever the engine, without the image-state cache (images are still cached). About
    /// 16x the work of a plain answer: for reproducing v7.00's answers exactly.
    pub fn with_v700_padding(mut self, on: bool) -> Self {
        self.v700_padding = on;
        self
    }

    /// Runs the vision tower on `tower`, the fused CPU tower built from the model's tower
    /// ([`FusedTower::new`]), instead of the model's tensor ops.
    pub fn with_fused_tower(mut self, tower: &'a FusedTower) -> Self {
        self.tower = Some(tower);
        self
    }

    /// The image preprocessing recipe (the tower's).
    pub fn processor(&self) -> &ImageProcessor {
        &self.processor
    }

    fn encode(&self, picture: Picture) -> Result<ImageRows<B>, VlmError> {
        let device = self.model.rwkv.device();
        let pixels: Tensor<B, 4> = match picture {
            Picture::Image(img) => self.processor.batch(&[img], &device)?,
            Picture::Zeros => {
                let s = self.model.vision.config.image_size;
                Tensor::zeros([1, 3, s, s], &device)
            }
        };
        let mut rows = match self.tower {
            Some(tower) => self.model.encode_images_fused(tower, pixels)?,
            None => self.model.encode_images(pixels)?,
        };
        Ok(rows.remove(0))
    }

    /// Answers the user turn `text`. When it holds `<image>`, `image` names the picture (its
    /// cache key) and loads it on a cache miss; `None` there means all-zero pixels, as the
    /// official script does. A text without `<image>` is answered without an image.
    pub fn answer(&mut self, text: &str, image: Option<ImageSource<'_>>) -> Result<Answered, VlmError> {
        let with_image = text.contains(IMAGE_TAG);
        let conversation = Conversation { turns: vec![Turn { role: Role::User, text: text.to_string() }] };
        let prompt = visualrwkv_prompt::build(&conversation, self.strategy, self.tokenizer, with_image, true)?;
        let (mut image_cached, mut state_cached) = (false, false);
        let generation = if self.v700_padding {
            let rows = if with_image {
                let (rows, hit) = self.image_rows(image)?;
                image_cached = hit;
                Some(rows)
            } else {
                None
            };
            let sample = Sample { tokens: prompt.tokens.clone(), image: rows };
            self.model.generate_v700_padded(&sample, self.scan, self.tokenizer, &self.options, |_| {})?
        } else {
            self.answer_cached(&prompt, image, &mut image_cached, &mut state_cached)?
        };
        let n = generation.scores.len().max(1) as f64;
        let avg_logit = generation.scores.iter().map(|s| f64::from(s.logit)).sum::<f64>() / n;
        let avg_prob = (generation.scores.iter().map(|s| f64::from(s.prob).ln()).sum::<f64>() / n).exp();
        let text = generation.text.split("\n\n").next().unwrap_or_default().trim().to_string();
        Ok(Answered {
            prompt: prompt.text,
            text,
            tokens: generation.tokens,
            avg_logit,
            avg_prob,
            image_cached,
            state_cached,
        })
    }

    /// The image rows of `image` (all-zero pixels for `None`), from the cache when it holds
    /// them; whether it did.
    fn image_rows(&mut self, image: Option<ImageSource<'_>>) -> Result<(ImageRows<B>, bool), VlmError> {
        // All-zero pixels share one cache entry (a key no file name has).
        let key = image.as_ref().map_or_else(|| "\u{0}zeros".to_string(), |(k, _)| k.to_string());
        if let Some(rows) = self.images.get(&key) {
            self.stats.image_hits += 1;
            return Ok((rows, true));
        }
        let picture = match image {
            Some((_, load)) => load()?,
            None => Picture::Zeros,
        };
        let rows = self.encode(picture)?;
        self.images.put(key, rows.clone());
        self.stats.images_encoded += 1;
        Ok((rows, false))
    }

    /// The cached path of [`Answerer::answer`]: the state after `[prefix | image]` is kept per
    /// image and prefix, so later questions on the same image run only their own text.
    fn answer_cached(
        &mut self,
        prompt: &visualrwkv_prompt::Prompt,
        image: Option<ImageSource<'_>>,
        image_cached: &mut bool,
        state_cached: &mut bool,
    ) -> Result<Generation<B>, VlmError> {
        let (logits, state) = if let Some(at) = prompt.image_position() {
            let key = image.as_ref().map_or_else(|| "\u{0}zeros".to_string(), |(k, _)| k.to_string());
            let (rows, hit) = self.image_rows(image)?;
            *image_cached = hit;
            let prefix: Vec<i64> = prompt.tokens[..=at].to_vec();
            let state_key = (key, prefix.clone());
            let suffix = &prompt.tokens[at + 1..];
            if suffix.is_empty() {
                // Nothing after the image (no inference prompt ends so): the image's own logits.
                self.model.prefill_on(&Sample { tokens: prefix, image: Some(rows) }, self.scan, self.engine)?
            } else {
                let state = match self.states.get(&state_key) {
                    Some(hit) => {
                        *state_cached = true;
                        self.stats.state_hits += 1;
                        hit
                    }
                    None => {
                        let sample = Sample { tokens: prefix, image: Some(rows) };
                        let (_, state) = self.model.prefill_on(&sample, self.scan, self.engine)?;
                        self.states.put(state_key, state.clone());
                        state
                    }
                };
                self.model.extend_on(&state, suffix, self.engine)?
            }
        } else {
            debug_assert!(!prompt.tokens.contains(&IMAGE_TOKEN));
            self.model.prefill_on(&Sample { tokens: prompt.tokens.clone(), image: None }, self.scan, self.engine)?
        };
        Ok(decode_prompt_state(&self.model.rwkv, self.tokenizer, logits, state, &self.options, self.engine, |_| {})?)
    }
}
