//! # visualrwkv-efficiency: the measurements behind `visualrwkv bench-efficiency`
//!
//! RWKV-6 against a same-size transformer (the paper's Figure 1 claim: constant per-token cost
//! and memory for RWKV, growing ones for a transformer with a KV cache), on any burn backend.
//! Benchmark-only: no library crate depends on this one.
//!
//! One [`Point`] = one model at one context length, measured in its own process (so the peak
//! RSS belongs to that point alone): prefill time of the context, the per-token decode latency
//! right after it, the process's peak RSS, and the bytes of the recurrent state or KV cache.

pub mod metrics;

use std::time::{Duration, Instant};

use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Distribution, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};
use visualrwkv::{Sample, VisionOptions, VisualRwkv, VlmError};
use visualrwkv_projector::{Projector, ProjectorConfig, ProjectorKind};
use visualrwkv_prompt::IMAGE_TOKEN;
use visualrwkv_rwkv::{Decoder, HostState, Rwkv, RwkvBackend, RwkvConfig, RwkvError, State, WeightDtype};
use visualrwkv_scan::BiDirectional;
use visualrwkv_transformer::{KvCache, Transformer, TransformerConfig, TransformerError};
use visualrwkv_vision::{GridPooling, TowerKind, VisionConfig, VisionError, VisionTower, grid_pool};

pub use metrics::peak_rss_mib;

/// Why a point could not be measured.
#[derive(Debug, thiserror::Error)]
pub enum EfficiencyError {
    /// Sizes no model can have.
    #[error("width {width} must be a positive multiple of 64, layers {layers} positive, vocabulary {vocab} at least 2")]
    Sizes {
        /// Width asked for.
        width: usize,
        /// Layers asked for.
        layers: usize,
        /// Vocabulary asked for.
        vocab: usize,
    },
    /// A zero context (or one not longer than the image), or zero decode steps.
    #[error(
        "cannot measure context {context} with {decode_steps} decode steps (the context must be longer than the image's rows)"
    )]
    Empty {
        /// Context length asked for.
        context: usize,
        /// Decode steps asked for.
        decode_steps: usize,
    },
    /// The RWKV model failed.
    #[error(transparent)]
    Rwkv(#[from] RwkvError),
    /// The transformer failed.
    #[error(transparent)]
    Transformer(#[from] TransformerError),
    /// The vision-language model failed.
    #[error(transparent)]
    Vlm(#[from] VlmError),
    /// The vision tower failed.
    #[error(transparent)]
    Vision(#[from] VisionError),
    /// The projector failed.
    #[error(transparent)]
    Projector(#[from] visualrwkv_projector::ProjectorError),
    /// Training failed.
    #[error(transparent)]
    Train(#[from] visualrwkv::training::TrainError),
}

/// The two models compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// RWKV-6 (this project's model).
    Rwkv,
    /// The transformer baseline.
    Transformer,
}

/// What runs RWKV's points.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RwkvEngine {
    /// The burn model's tensor ops (any backend).
    #[default]
    Burn,
    /// The fused CPU decoder with f32 matrices: the prompt in its sequence mode (one GEMM per
    /// projection over all rows), the steps with its single-token path — RWKV's fastest CPU
    /// path. The burn model is dropped once the decoder is built (text-only points), so the peak
    /// memory counts one copy of the weights.
    Fused,
}

impl RwkvEngine {
    /// `burn` or `fused`.
    pub fn name(self) -> &'static str {
        match self {
            RwkvEngine::Burn => "burn",
            RwkvEngine::Fused => "fused",
        }
    }
}

/// Sizes shared by both models.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sizes {
    /// Width C.
    pub width: usize,
    /// Blocks.
    pub layers: usize,
    /// Vocabulary.
    pub vocab: usize,
}

impl Sizes {
    /// Checks the sizes: width a positive multiple of 64 (heads of 64), layers ≥ 1, vocabulary ≥ 2.
    pub fn validate(&self) -> Result<(), EfficiencyError> {
        if self.width == 0 || !self.width.is_multiple_of(64) || self.layers == 0 || self.vocab < 2 {
            return Err(EfficiencyError::Sizes { width: self.width, layers: self.layers, vocab: self.vocab });
        }
        Ok(())
    }

    /// The RWKV-6 configuration (official defaults for the width: heads of 64, FFN 3.5·C).
    pub fn rwkv(&self) -> RwkvConfig {
        RwkvConfig::official(self.layers, self.width, self.vocab)
    }

    /// The transformer with the same width, depth, vocabulary and FFN size (heads of 64).
    pub fn transformer(&self, max_len: usize) -> TransformerConfig {
        let r = self.rwkv();
        TransformerConfig::new(self.layers, self.width, (self.width / 64).max(1), r.dim_ffn, self.vocab, max_len)
    }
}

/// One measured point.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Point {
    /// Which model.
    pub model: ModelKind,
    /// Context length (tokens).
    pub context: usize,
    /// Median prefill time of the context, seconds.
    pub prefill_s: f64,
    /// Median per-token decode latency at that context, milliseconds.
    pub decode_ms: f64,
    /// Peak resident memory of the measuring process, MiB.
    pub peak_rss_mib: f64,
    /// Peak device memory of the measuring process, MiB, where the device reports it (CUDA,
    /// sampled by the caller from the driver); `None` on the CPU.
    #[serde(default)]
    pub device_peak_mib: Option<f64>,
    /// The device measured on (`cpu`, `wgpu`, `cuda:0`, ...).
    #[serde(default)]
    pub device: String,
    /// Rows of the image at the start of the context (0: text only).
    #[serde(default)]
    pub image_rows: usize,
    /// Bytes of the recurrent state (RWKV) or KV cache (transformer) after the context, MiB.
    pub cache_mib: f64,
    /// Timed prefill repetitions (after one warm-up at a short length).
    pub prefill_reps: usize,
    /// Timed decode steps.
    pub decode_steps: usize,
    /// What ran RWKV (`burn` for the transformer's points).
    #[serde(default)]
    pub engine: RwkvEngine,
}

impl Point {
    /// The memory figure to compare: peak device memory where measured, else peak RSS.
    pub fn peak_mib(&self) -> f64 {
        self.device_peak_mib.unwrap_or(self.peak_rss_mib)
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// `n` deterministic token ids in `1..vocab`.
fn token_ids(n: usize, vocab: usize) -> Vec<i64> {
    (0..n).map(|i| ((i * 7919 + 13) % (vocab - 1) + 1) as i64).collect()
}

fn tokens<B: burn::tensor::backend::Backend>(n: usize, vocab: usize, device: &B::Device) -> Tensor<B, 2, Int> {
    Tensor::from_data(TensorData::new(token_ids(n, vocab), [1, n]), device)
}

/// Prefill repetitions for a context: 3 up to 4096 tokens, then 1 (a 24K transformer prefill
/// takes minutes on a 2-core CPU); always after a warm-up at a short length.
pub fn prefill_reps(context: usize) -> usize {
    if context <= 4096 { 3 } else { 1 }
}

/// The image in front of a VLM point: a vision tower and a linear projector to the model's width.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VisionSizes {
    /// Name shown in the results (e.g. `clip-l-336`).
    pub name: String,
    /// The tower (random weights).
    pub config: VisionConfig,
}

impl VisionSizes {
    /// Image rows the tower gives with VisualRWKV's default pooling (all patches, then CLS).
    pub fn image_rows(&self) -> usize {
        let g = self.config.grid_side();
        g * g + usize::from(self.config.kind == TowerKind::Clip)
    }
}

/// A model under measurement: a whole context from scratch, then single-token steps.
trait Subject<B: RwkvBackend> {
    /// The recurrent state or KV cache.
    type Cache;
    /// Runs a context of `text` tokens (after the image, for a VLM) from scratch, the last
    /// logits read back.
    fn prefill(&self, text: usize) -> Result<Self::Cache, EfficiencyError>;
    /// One token after `cache`, the logits read back.
    fn step(&self, token: u32, cache: Self::Cache) -> Result<Self::Cache, EfficiencyError>;
    /// Bytes of the cache.
    fn cache_bytes(&self, cache: &Self::Cache) -> usize;
}

struct LmRwkv<'a, B: RwkvBackend>(Rwkv<B>, &'a B::Device, usize);

impl<B: RwkvBackend> Subject<B> for LmRwkv<'_, B> {
    type Cache = State<B>;
    fn prefill(&self, text: usize) -> Result<State<B>, EfficiencyError> {
        let out = self.0.forward_last(tokens::<B>(text, self.2, self.1), None)?;
        let _ = out.logits.into_data();
        Ok(out.state)
    }
    fn step(&self, token: u32, state: State<B>) -> Result<State<B>, EfficiencyError> {
        let out = self.0.forward(one_token::<B>(token, self.1), Some(&state))?;
        let _ = out.logits.into_data();
        Ok(out.state)
    }
    fn cache_bytes(&self, _: &State<B>) -> usize {
        rwkv_state_bytes(&self.0.config())
    }
}

/// Rows per sequence-mode call of the fused decoder in a long prefill.
const FUSED_CHUNK: usize = 2048;

struct LmFused(Decoder, usize);

impl<B: RwkvBackend> Subject<B> for LmFused {
    type Cache = HostState;
    fn prefill(&self, text: usize) -> Result<HostState, EfficiencyError> {
        let ids: Vec<u32> = token_ids(text, self.1).into_iter().map(|t| t as u32).collect();
        let mut state = self.0.zero_state();
        // In chunks with the state carried (exact): the buffers stay a chunk's size at any
        // context, as `generate` runs a prompt.
        for chunk in ids.chunks(FUSED_CHUNK) {
            self.0.prefill(chunk, &mut state)?;
        }
        Ok(state)
    }
    fn step(&self, token: u32, mut state: HostState) -> Result<HostState, EfficiencyError> {
        self.0.step(token, &mut state)?;
        Ok(state)
    }
    fn cache_bytes(&self, _: &HostState) -> usize {
        dims_state_bytes(&self.0.dims())
    }
}

struct LmTransformer<'a, B: RwkvBackend>(Transformer<B>, &'a B::Device, usize);

impl<B: RwkvBackend> Subject<B> for LmTransformer<'_, B> {
    type Cache = KvCache<B>;
    fn prefill(&self, text: usize) -> Result<KvCache<B>, EfficiencyError> {
        let (logits, cache) = self.0.forward_last(tokens::<B>(text, self.2, self.1), None)?;
        let _ = logits.into_data();
        Ok(cache)
    }
    fn step(&self, token: u32, cache: KvCache<B>) -> Result<KvCache<B>, EfficiencyError> {
        let (logits, cache) = self.0.forward_last(one_token::<B>(token, self.1), Some(cache))?;
        let _ = logits.into_data();
        Ok(cache)
    }
    fn cache_bytes(&self, cache: &KvCache<B>) -> usize {
        cache.bytes()
    }
}

struct VlmRwkv<B: RwkvBackend>(VisualRwkv<B>, Tensor<B, 4>, usize);

impl<B: RwkvBackend> Subject<B> for VlmRwkv<B> {
    type Cache = State<B>;
    fn prefill(&self, text: usize) -> Result<State<B>, EfficiencyError> {
        let image = self.0.encode_images(self.1.clone())?.remove(0);
        let mut ids = vec![IMAGE_TOKEN];
        ids.extend(token_ids(text, self.2));
        let sample = Sample { tokens: ids, image: Some(image) };
        Ok(self.0.prefill(&sample, &BiDirectional)?.1)
    }
    fn step(&self, token: u32, state: State<B>) -> Result<State<B>, EfficiencyError> {
        Ok(self.0.step(token, &state)?.1)
    }
    fn cache_bytes(&self, _: &State<B>) -> usize {
        {
            let d = self.0.rwkv.dims();
            state_bytes(d.n_layer, d.n_embd, d.n_head, d.head_size)
        }
    }
}

struct VlmFused<B: RwkvBackend>(VisualRwkv<B>, Decoder, Tensor<B, 4>, usize);

impl<B: RwkvBackend> Subject<B> for VlmFused<B> {
    type Cache = HostState;
    fn prefill(&self, text: usize) -> Result<HostState, EfficiencyError> {
        let image = self.0.encode_images(self.2.clone())?.remove(0);
        let mut ids = vec![IMAGE_TOKEN];
        ids.extend(token_ids(text, self.3));
        let sample = Sample { tokens: ids, image: Some(image) };
        Ok(self.0.prefill_fused(&self.1, &sample, &BiDirectional)?.1)
    }
    fn step(&self, token: u32, mut state: HostState) -> Result<HostState, EfficiencyError> {
        self.1.step(token, &mut state)?;
        Ok(state)
    }
    fn cache_bytes(&self, _: &HostState) -> usize {
        dims_state_bytes(&self.1.dims())
    }
}

struct VlmTransformer<'a, B: RwkvBackend> {
    lm: Transformer<B>,
    tower: VisionTower<B>,
    projector: Projector<B>,
    pixels: Tensor<B, 4>,
    device: &'a B::Device,
    vocab: usize,
}

impl<B: RwkvBackend> Subject<B> for VlmTransformer<'_, B> {
    type Cache = KvCache<B>;
    fn prefill(&self, text: usize) -> Result<KvCache<B>, EfficiencyError> {
        let (features, grid) = self.tower.features(self.pixels.clone(), -1)?;
        let has_cls = self.tower.config.kind == TowerKind::Clip;
        let pooled = grid_pool(features, grid, has_cls, GridPooling::All)?;
        let image = self.projector.project(pooled.features)?;
        let text = self.lm.embed(tokens::<B>(text, self.vocab, self.device))?;
        let (logits, cache) = self.lm.forward_embeddings_last(Tensor::cat(vec![image, text], 1), None)?;
        let _ = logits.into_data();
        Ok(cache)
    }
    fn step(&self, token: u32, cache: KvCache<B>) -> Result<KvCache<B>, EfficiencyError> {
        let (logits, cache) = self.lm.forward_last(one_token::<B>(token, self.device), Some(cache))?;
        let _ = logits.into_data();
        Ok(cache)
    }
    fn cache_bytes(&self, cache: &KvCache<B>) -> usize {
        cache.bytes()
    }
}

fn rwkv_state_bytes(cfg: &RwkvConfig) -> usize {
    state_bytes(cfg.n_layer, cfg.n_embd, cfg.n_head, cfg.head_size)
}

/// [`rwkv_state_bytes`] of a fused decoder's model (either architecture).
fn dims_state_bytes(d: &visualrwkv_rwkv::LmDims) -> usize {
    state_bytes(d.n_layer, d.n_embd, d.n_head, d.head_size)
}

/// Bytes of an f32 RWKV state: per layer two shift rows `[C]` and `H` matrices `[N, N]`.
fn state_bytes(n_layer: usize, n_embd: usize, n_head: usize, head_size: usize) -> usize {
    4 * n_layer * (2 * n_embd + n_head * head_size * head_size)
}

fn one_token<B: RwkvBackend>(token: u32, device: &B::Device) -> Tensor<B, 2, Int> {
    Tensor::from_data(TensorData::new(vec![token as i64], [1, 1]), device)
}

/// Times `reps` prefills of `text` tokens (after a warm-up of 64) and `decode_steps` steps
/// after the last one: (median prefill, median step, cache bytes).
fn time_subject<B: RwkvBackend, S: Subject<B>>(
    s: &S,
    text: usize,
    reps: usize,
    decode_steps: usize,
    vocab: usize,
) -> Result<(Duration, Duration, usize), EfficiencyError> {
    s.prefill(64.min(text))?;
    let mut times = Vec::with_capacity(reps);
    let mut cache = None;
    for _ in 0..reps {
        let t0 = Instant::now();
        cache = Some(s.prefill(text)?);
        times.push(t0.elapsed());
    }
    let mut cache = cache.ok_or(EfficiencyError::Empty { context: text, decode_steps })?;
    let mut steps = Vec::with_capacity(decode_steps);
    for id in token_ids(decode_steps, vocab) {
        let t0 = Instant::now();
        cache = s.step(id as u32, cache)?;
        steps.push(t0.elapsed());
    }
    let bytes = s.cache_bytes(&cache);
    Ok((median(times), median(steps), bytes))
}

/// Measures one point in this process: `model` on a `context` of rows — text tokens only, or,
/// with `vision`, the image's rows (through the tower and a linear projector, part of the timed
/// prefill) followed by text tokens up to `context`; RWKV runs on `engine` (the fused decoder
/// needs the CPU backend's device, as it reads the weights to the host). Errors on a zero
/// context, zero decode steps, a context not longer than the image, or sizes no model can have.
#[allow(clippy::too_many_arguments)]
pub fn measure<B: RwkvBackend>(
    model: ModelKind,
    context: usize,
    sizes: Sizes,
    vision: Option<&VisionSizes>,
    decode_steps: usize,
    engine: RwkvEngine,
    device: &B::Device,
) -> Result<Point, EfficiencyError> {
    sizes.validate()?;
    let image_rows = vision.map_or(0, VisionSizes::image_rows);
    if context <= image_rows || decode_steps == 0 {
        return Err(EfficiencyError::Empty { context, decode_steps });
    }
    let text = context - image_rows;
    let reps = prefill_reps(context);
    let vocab = sizes.vocab;
    let pixels = |v: &VisionSizes| {
        let side = v.config.image_size;
        Tensor::<B, 4>::random([1, 3, side, side], Distribution::Uniform(-1.0, 1.0), device)
    };
    let projector = |v: &VisionSizes| {
        ProjectorConfig::new(ProjectorKind::Linear, v.config.hidden_size, sizes.width).init::<B>(device)
    };
    let (prefill, decode, cache_bytes) = match (model, vision) {
        (ModelKind::Rwkv, None) if engine == RwkvEngine::Fused => {
            let decoder = Decoder::new(&sizes.rwkv().init::<B>(device), WeightDtype::F32)?;
            time_subject::<B, _>(&LmFused(decoder, vocab), text, reps, decode_steps, vocab)?
        }
        (ModelKind::Rwkv, None) => {
            let lm = sizes.rwkv().init::<B>(device);
            time_subject(&LmRwkv(lm, device, vocab), text, reps, decode_steps, vocab)?
        }
        (ModelKind::Transformer, None) => {
            let lm = sizes.transformer(context + decode_steps + 64).init::<B>(device);
            time_subject(&LmTransformer(lm, device, vocab), text, reps, decode_steps, vocab)?
        }
        (ModelKind::Rwkv, Some(v)) => {
            let vm = VisualRwkv::new(
                sizes.rwkv().init(device),
                v.config.init(device),
                projector(v),
                VisionOptions::default(),
            )?;
            if engine == RwkvEngine::Fused {
                let decoder = Decoder::of_model(&vm.rwkv, WeightDtype::F32)?;
                time_subject(&VlmFused(vm, decoder, pixels(v), vocab), text, reps, decode_steps, vocab)?
            } else {
                time_subject(&VlmRwkv(vm, pixels(v), vocab), text, reps, decode_steps, vocab)?
            }
        }
        (ModelKind::Transformer, Some(v)) => {
            let s = VlmTransformer {
                lm: sizes.transformer(context + decode_steps + 64).init::<B>(device),
                tower: v.config.init::<B>(device),
                projector: projector(v),
                pixels: pixels(v),
                device,
                vocab,
            };
            time_subject(&s, text, reps, decode_steps, vocab)?
        }
    };
    Ok(Point {
        model,
        context,
        prefill_s: prefill.as_secs_f64(),
        decode_ms: decode.as_secs_f64() * 1e3,
        peak_rss_mib: peak_rss_mib(),
        device_peak_mib: None,
        device: String::new(),
        image_rows,
        cache_mib: cache_bytes as f64 / (1024.0 * 1024.0),
        prefill_reps: reps,
        decode_steps,
        engine: if model == ModelKind::Rwkv { engine } else { RwkvEngine::Burn },
    })
}

/// Training speed of stage 2 (projector + RWKV, embeddings and tower frozen) at one size.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainPoint {
    /// RWKV sizes.
    pub sizes: Sizes,
    /// The vision tower's name.
    pub vision: String,
    /// Image rows per sample.
    pub image_rows: usize,
    /// Rows per sample (image + text).
    pub ctx_len: usize,
    /// Samples per step (over all devices).
    pub batch: usize,
    /// Devices training data-parallel.
    pub devices: usize,
    /// Steps timed (after one untimed warm-up step).
    pub timed_steps: usize,
    /// Median seconds per optimiser step.
    pub step_s: f64,
    /// Optimiser steps per second (1 / `step_s`).
    pub steps_per_s: f64,
    /// Sequence rows per second.
    pub tokens_per_s: f64,
    /// Peak resident memory of the process, MiB.
    pub peak_rss_mib: f64,
    /// Peak device memory, MiB, where the caller measured it.
    #[serde(default)]
    pub device_peak_mib: Option<f64>,
    /// The devices (`cpu`, `cuda:0,cuda:1`, ...).
    #[serde(default)]
    pub device: String,
}

/// Measures stage-2 training of a random VisualRWKV (`sizes` + the `vision` tower + a linear
/// projector) on samples of `ctx_len` rows (the image's rows, then random text with every text
/// row a target): `steps` optimiser steps of `batch` samples on `devices` (data-parallel when
/// several), the first one untimed (kernel compilation, allocation). The tower is frozen, so its
/// features are random `[1, n, D]` rows computed once, as training caches them.
pub fn measure_train<B>(
    sizes: Sizes,
    vision: &VisionSizes,
    ctx_len: usize,
    batch: usize,
    steps: usize,
    devices: &[B::Device],
) -> Result<TrainPoint, EfficiencyError>
where
    B: AutodiffBackend + RwkvBackend,
    B::InnerBackend: RwkvBackend,
{
    use visualrwkv::training::{Stage, StepStats, TaskData, TaskExample, TrainConfig};
    use visualrwkv_scan::ImageLayout;

    sizes.validate()?;
    let image_rows = vision.image_rows();
    let device = devices.first().ok_or(EfficiencyError::Empty { context: ctx_len, decode_steps: 0 })?;
    if ctx_len <= image_rows + 1 || steps < 2 || batch == 0 {
        return Err(EfficiencyError::Empty { context: ctx_len, decode_steps: steps });
    }
    let text = ctx_len - image_rows;
    let projector =
        ProjectorConfig::new(ProjectorKind::Linear, vision.config.hidden_size, sizes.width).init::<B>(device);
    let model =
        VisualRwkv::new(sizes.rwkv().init(device), vision.config.init(device), projector, VisionOptions::default())?;
    let examples = (0..batch.max(2) * 2)
        .map(|i| {
            let ids =
                token_ids(text + 1, sizes.vocab).into_iter().map(|t| (t + i as i64) % (sizes.vocab as i64 - 1) + 1);
            let ids: Vec<i64> = ids.collect();
            let mut tokens = vec![IMAGE_TOKEN];
            tokens.extend(&ids[..text - 1]);
            let mut labels = vec![visualrwkv_prompt::IGNORE_INDEX];
            labels.extend(&ids[1..text]);
            TaskExample {
                image: 0,
                tokens,
                labels,
                prompt: Vec::new(),
                question: String::new(),
                answer: String::new(),
                qtype: visualrwkv_train::data::QuestionType::ALL[0],
            }
        })
        .collect();
    let g = vision.config.grid_side();
    let layout = ImageLayout::new(g, g, image_rows - g * g);
    let features = Tensor::<B::InnerBackend, 3>::random(
        [1, image_rows, vision.config.hidden_size],
        Distribution::Normal(0.0, 1.0),
        device,
    );
    let data = TaskData { examples, features: vec![features], layout };
    let config = TrainConfig {
        stage: Stage::Full,
        steps,
        batch_size: batch,
        lr_init: 1e-4,
        lr_final: 1e-4,
        warmup: 0,
        ..TrainConfig::default()
    };
    let mut times = Vec::with_capacity(steps);
    let mut rows = 0;
    let mut last = Instant::now();
    let mut on_step = |s: &StepStats| {
        times.push(last.elapsed());
        last = Instant::now();
        rows = s.rows;
    };
    visualrwkv::parallel::train_parallel(model, config, &data, devices, &BiDirectional, &mut on_step)?;
    let timed = times.split_off(1);
    let step = median(timed.clone());
    Ok(TrainPoint {
        sizes,
        vision: vision.name.clone(),
        image_rows,
        ctx_len,
        batch,
        devices: devices.len(),
        timed_steps: timed.len(),
        step_s: step.as_secs_f64(),
        steps_per_s: 1.0 / step.as_secs_f64().max(1e-12),
        tokens_per_s: rows as f64 / step.as_secs_f64().max(1e-12),
        peak_rss_mib: peak_rss_mib(),
        device_peak_mib: None,
        device: String::new(),
    })
}
