//! Training VisualRWKV: the two-stage recipe of the paper (docs/model.md §6) on any autodiff backend
//! (`Autodiff<NdArray>` on the CPU, `Autodiff<Wgpu>`, `Autodiff<Cuda>`), on one device or
//! data-parallel over several ([`crate::parallel`], feature `collective`).
//!
//! - [`Stage::Projector`] (stage 1) trains the projector only; [`Stage::Full`] (stage 2) trains
//!   the projector and RWKV with the embeddings frozen. The vision tower is always frozen, so its
//!   pooled features are computed once per image ([`TaskData::prepare`]).
//! - Loss: per-sample cross-entropy with ignore index −100, averaged over the batch, plus L2Wrap
//!   (`visualrwkv_train::loss`).
//! - AdamW with β = (0.9, 0.99), ε = 1e-8, weight decay only on parameters of squeezed rank ≥ 2
//!   (the reference's groups), the warmup + cosine rate applied to **both** groups
//!   (`visualrwkv_train::schedule`), global gradient-norm clipping.
//! - [`Trainer::save`] / [`Trainer::resume`]: model, both optimizers, step and RNG, so a resumed
//!   run continues bit for bit.
//!
//! # Shapes
//!
//! Cached image features `[1, n, D]` per image (`n` = pooled rows, CLS included); the projector
//! maps them to `[1, n, C]` rows spliced into the sequence; logits `[T_i, V]` per sample.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::module::{AutodiffModule, Module, ModuleVisitor, Param, ParamId};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamW, AdamWConfig, GradientsParams, Optimizer};
use burn::record::{FullPrecisionSettings, Recorder};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use visualrwkv_projector::{ProjectorConfig, ProjectorKind};
use visualrwkv_prompt::{Conversation, IGNORE_INDEX, IMAGE_TOKEN, PromptStrategy, Role, build};
use visualrwkv_rwkv::{Arch, LanguageModel, Rwkv7Config, RwkvBackend, RwkvConfig};
use visualrwkv_scan::{ImageLayout, Scan};
use visualrwkv_tokenizer::Tokenizer;
use visualrwkv_train::data::{DataConfig, QuestionType, Rng, Split, word_pieces};
use visualrwkv_train::loss::{padded_batch_loss, padded_l2wrap};
use visualrwkv_train::schedule::LrSchedule;
use visualrwkv_vision::{Activation, GridPooling, ImageProcessor, TowerKind, VisionConfig, grid_pool};

use crate::generate::{Engine, GenerateOptions};
use crate::vlm::{ImageRows, Sample, VisionOptions, VisualRwkv, VlmError};

/// Errors of training.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The model failed.
    #[error(transparent)]
    Model(#[from] VlmError),
    /// The loss could not be computed.
    #[error(transparent)]
    Loss(#[from] visualrwkv_train::loss::LossError),
    /// Reading or writing a checkpoint or metrics failed.
    #[error("{path}: {message}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The synthetic task could not be generated.
    #[error(transparent)]
    Task(#[from] visualrwkv_train::data::DataError),
    /// The dataset or its loader failed.
    #[error(transparent)]
    Dataset(#[from] visualrwkv_data::DataError),
    /// No device to train on.
    #[error("training needs at least one device")]
    NoDevice,
    /// Several devices without the `collective` feature.
    #[error("training on several devices needs visualrwkv's `collective` feature")]
    NoCollective,
    /// A batch that does not split evenly over the devices.
    #[error("a batch of {batch} samples cannot be split over {devices} devices")]
    BatchSplit {
        /// Samples per (micro-)batch.
        batch: usize,
        /// Devices.
        devices: usize,
    },
    /// Statistics over runs that do not line up.
    #[error(transparent)]
    Stats(#[from] visualrwkv_train::stats::StatsError),
    /// An ablation combination with another number of seeds than the others.
    #[error("ablation: {combination} has {found} seeds, {expected} expected")]
    AblationSeeds {
        /// `prompt × scan`.
        combination: String,
        /// Seeds of the first combination.
        expected: usize,
        /// Seeds of this one.
        found: usize,
    },
    /// An ablation whose runs did not all finish (a job failed or panicked).
    #[error("ablation: {finished} of {total} runs finished")]
    AblationIncomplete {
        /// Runs with a result.
        finished: usize,
        /// Runs planned.
        total: usize,
    },
    /// A width that is not a whole number of heads.
    #[error("the width ({width}) must be a multiple of the head size ({head_size})")]
    HeadSize {
        /// The model width.
        width: usize,
        /// The head size asked for.
        head_size: usize,
    },
    /// A count that must be at least 1.
    #[error("{0} must be at least 1")]
    AtLeastOne(&'static str),
    /// Nothing to train or evaluate on.
    #[error("{0} is empty")]
    Empty(&'static str),
    /// An example index beyond the split.
    #[error("no example {0}")]
    MissingExample(usize),
    /// An example whose image is not in the split.
    #[error("no image {0}")]
    MissingImage(String),
    /// Images of one batch with different sizes.
    #[error("sample {sample}: image preprocesses to {found:?}, others to {expected:?} (use a cropping processor)")]
    ImageSizes {
        /// The sample (id, or its position in the batch).
        sample: String,
        /// The batch's first size.
        expected: (usize, usize),
        /// This image's.
        found: (usize, usize),
    },
    /// A run to resume that does not match what it is resumed with.
    #[error("{path}: {why}")]
    Resume {
        /// The run folder or weights file.
        path: PathBuf,
        /// What differs.
        why: String,
    },
    /// A step whose samples were all skipped (unreadable images).
    #[error("step {0}: no sample left to train (unreadable images were skipped)")]
    NoSampleLeft(usize),
    /// The loader ended before the planned steps.
    #[error("the loader ended early")]
    LoaderEnded,
    /// A loss that is not finite.
    #[error("non-finite loss {value} at step {step}")]
    NonFiniteLoss {
        /// The loss.
        value: f64,
        /// The 1-based step.
        step: usize,
    },
    /// Moving a module between devices through its record failed.
    #[error("transfer: {0}")]
    Transfer(String),
    /// A collective operation between data-parallel replicas failed.
    #[error("data-parallel training: {0}")]
    Collective(String),
}

/// Appends `line` and a newline to `file` (at `path`) in one write, so that a writer killed
/// at any moment leaves whole lines behind (a torn last line at worst, never an interleaving).
pub(crate) fn append_line(file: &mut std::fs::File, path: &Path, line: &str) -> Result<(), TrainError> {
    use std::io::Write;
    file.write_all(format!("{line}\n").as_bytes()).map_err(|e| io_error(path, e))
}

/// A [`TrainError::Io`] for `path`.
pub(crate) fn io_error(path: &Path, e: impl std::fmt::Display) -> TrainError {
    TrainError::Io { path: path.to_path_buf(), message: e.to_string() }
}

/// Which parameters train.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Stage {
    /// Stage 1 (alignment): the projector only.
    Projector,
    /// Stage 2 (instruction tuning): the projector and RWKV, embeddings frozen.
    Full,
}

/// Sizes of a model trained from scratch.
#[derive(Clone, Debug)]
pub struct ModelConfig {
    /// The language model's sizes (an RWKV-6 configuration; an RWKV-7 model of `arch` x070 takes
    /// its layers, width, heads and vocabulary, [`ModelConfig::rwkv7`]).
    pub rwkv: RwkvConfig,
    /// The language model's architecture.
    pub arch: Arch,
    /// The vision tower (frozen).
    pub vision: VisionConfig,
    /// The projector kind.
    pub projector: ProjectorKind,
    /// Feature layer and pooling.
    pub options: VisionOptions,
    /// Standard deviation of the tower's (frozen) position embeddings at initialisation; CLIP
    /// uses 0.02, which leaves the cell positions at a few percent of the patch contents.
    pub position_std: f64,
    /// How the language model's first weights are drawn.
    pub init: LmInit,
}

/// How the language model of a model trained from scratch draws its first weights.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum LmInit {
    /// Every parameter random in the trainer's ranges ([`visualrwkv_rwkv::RwkvConfig::init`]):
    /// every gradient is non-zero from the first step (what tests comparing gradients want).
    #[default]
    Random,
    /// The official trainer's initialisation ([`visualrwkv_rwkv::RwkvConfig::init_from_scratch`],
    /// for RWKV-7 [`visualrwkv_rwkv::Rwkv7Config::init_from_scratch`]): every block starts as the
    /// identity, the LoRAs inactive. Made for pretraining, where the
    /// embeddings train: with them frozen (both stages here) its ±1e-4 embeddings leave `ln0`
    /// about 30× weaker than the image rows, and on the synthetic task the model stays at the
    /// answer prior (docs/training.md).
    Trainer,
}

/// How the text of the synthetic task becomes ids in a model trained from scratch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Vocab {
    /// Byte-level ids of the World vocabulary (`Tokenizer::world_bytes`, 256 ids).
    Bytes,
    /// The 256 bytes plus the task's word pieces ([`task_tokenizer`]): one token per word, so
    /// sequences are about 3× shorter and each answer is a single decision token.
    #[default]
    Words,
}

impl Vocab {
    /// The tokenizer of this vocabulary for a training split.
    pub fn tokenizer(self, train: &Split) -> Tokenizer {
        match self {
            Vocab::Bytes => Tokenizer::world_bytes().clone(),
            Vocab::Words => task_tokenizer(train),
        }
    }
}

/// Template pieces of the prompt (`"User: …\n\nAssistant: …\n\n"`) given their own tokens.
const TEMPLATE_PIECES: [&str; 5] = ["User", "Assistant", ":", "\n", "\n\n"];

/// A tokenizer for the synthetic task: ids `1..=256` are the bytes (as in
/// `Tokenizer::world_bytes`, so any text still encodes), followed by the prompt template's
/// pieces and the word pieces ([`word_pieces`]) of `train`'s questions and answers. Greedy
/// longest match then encodes each word, each punctuation mark and `"\n\n"` as one token.
pub fn task_tokenizer(train: &Split) -> Tokenizer {
    let mut tokens: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
    let pieces = TEMPLATE_PIECES.iter().map(|s| s.to_string()).chain(word_pieces(train.texts()));
    for piece in pieces {
        let bytes = piece.into_bytes();
        if !tokens.contains(&bytes) {
            tokens.push(bytes);
        }
    }
    Tokenizer::from_tokens(tokens)
}

impl ModelConfig {
    /// The RWKV-7 configuration of the same layers, width, heads and vocabulary: channel mix
    /// 4·C wide, LoRA ranks 16 (decay, learning rate, gate) and 8 (value residual).
    pub fn rwkv7(&self) -> Rwkv7Config {
        let c = &self.rwkv;
        Rwkv7Config {
            n_layer: c.n_layer,
            n_embd: c.n_embd,
            n_head: c.n_head,
            head_size: c.head_size,
            dim_ffn: 4 * c.n_embd,
            vocab_size: c.vocab_size,
            d_decay: 16,
            d_aaa: 16,
            d_mv: 8,
            d_gate: 16,
        }
    }

    /// A tiny VisualRWKV for the synthetic task of `data`: a CLIP-style tower reduced to its
    /// embeddings (patch projection with one patch per grid cell, class token, positions,
    /// pre-layernorm; no encoder layer), so with the frozen tower and the trained `mlp2x_gelu`
    /// projector the image path is a patch projector; and an RWKV-6 of `layers` × `width` over
    /// the ids of `tokenizer` (vocabulary `tokenizer.vocab_size() + 1`, id 0 included).
    pub fn tiny(data: &DataConfig, width: usize, layers: usize, tokenizer: &Tokenizer) -> Self {
        let head_size = 16;
        Self {
            rwkv: RwkvConfig {
                n_layer: layers,
                n_embd: width,
                n_head: (width / head_size).max(1),
                head_size,
                dim_ffn: (width * 7 / 2) / 32 * 32,
                vocab_size: tokenizer.vocab_size() + 1,
                d_mix: 8,
                d_decay: 16,
            },
            arch: Arch::X060,
            vision: VisionConfig {
                kind: TowerKind::Clip,
                image_size: data.grid * data.cell_px,
                patch_size: data.cell_px,
                hidden_size: 64,
                intermediate_size: 128,
                num_hidden_layers: 0,
                num_attention_heads: 4,
                num_channels: 3,
                layer_norm_eps: 1e-5,
                hidden_act: Activation::QuickGelu,
                use_head: false,
            },
            projector: ProjectorKind::Mlp2xGelu,
            options: VisionOptions { layer: -1, pooling: GridPooling::All },
            // The demo's scale; 0.6 trains worse on every question type in the same budget.
            position_std: 0.02,
            init: LmInit::Random,
        }
    }

    /// A randomly initialised model (seed the backend first for a reproducible one), every
    /// parameter materialised (clones of it are equal).
    pub fn init<B: RwkvBackend>(&self, device: &B::Device) -> Result<VisualRwkv<B>, VlmError> {
        let rwkv: LanguageModel<B> = match (self.arch, self.init) {
            (Arch::X060, LmInit::Trainer) => self.rwkv.init_from_scratch::<B>(device).into(),
            (Arch::X060, LmInit::Random) => self.rwkv.init::<B>(device).into(),
            (Arch::X070, LmInit::Random) => self.rwkv7().init::<B>(device).into(),
            (Arch::X070, LmInit::Trainer) => self.rwkv7().init_from_scratch::<B>(device).into(),
        };
        let mut vision = self.vision.init::<B>(device);
        let scale = self.position_std / 0.02;
        vision.position_embedding = vision.position_embedding.map(|p| p.mul_scalar(scale));
        let projector =
            ProjectorConfig { kind: self.projector, in_dim: self.vision.hidden_size, out_dim: self.rwkv.n_embd }
                .init::<B>(device);
        let model = VisualRwkv::new(rwkv, vision, projector, self.options)?;
        materialize(&model);
        Ok(model)
    }
}

/// One question ready to train on and to evaluate.
#[derive(Clone, Debug)]
pub struct TaskExample {
    /// Index of the image in [`TaskData::features`].
    pub image: usize,
    /// Training tokens (question and answer) with [`IMAGE_TOKEN`] once.
    pub tokens: Vec<i64>,
    /// Labels aligned with `tokens` (−100 except the answer).
    pub labels: Vec<i64>,
    /// Inference tokens: the question, ending with `"Assistant:"`.
    pub prompt: Vec<i64>,
    /// The question.
    pub question: String,
    /// The expected answer.
    pub answer: String,
    /// Its type.
    pub qtype: QuestionType,
}

impl TaskExample {
    /// Labels of every row of the assembled sequence: the image placeholder becomes `n` ignored
    /// rows.
    pub fn row_labels(&self, image_rows: usize) -> Vec<i64> {
        self.tokens
            .iter()
            .zip(&self.labels)
            .flat_map(|(&t, &l)| if t == IMAGE_TOKEN { vec![IGNORE_INDEX; image_rows] } else { vec![l] })
            .collect()
    }
}

/// A split prepared for one prompt strategy: tokenised questions and the frozen tower's pooled
/// features of every image.
#[derive(Clone, Debug)]
pub struct TaskData<B: Backend> {
    /// The questions.
    pub examples: Vec<TaskExample>,
    /// Pooled tower features `[1, n, D]` per image.
    pub features: Vec<Tensor<B, 3>>,
    /// Layout of the pooled rows.
    pub layout: ImageLayout,
}

/// Pixels of rendered images normalised as `processor` does (the tower's Hugging Face
/// processor, so `chat` on a saved image sees exactly what training saw): `[N, 3, H, W]`.
pub fn pixels<B: Backend>(
    images: &[image::RgbImage],
    processor: &ImageProcessor,
    device: &B::Device,
) -> Result<Tensor<B, 4>, TrainError> {
    let first = images.first().ok_or(TrainError::Empty("the image batch"))?;
    let (w, h) = first.dimensions();
    let (w, h) = (w as usize, h as usize);
    let mut data = Vec::with_capacity(images.len() * 3 * h * w);
    for (i, img) in images.iter().enumerate() {
        if img.dimensions() != first.dimensions() {
            let (iw, ih) = img.dimensions();
            return Err(TrainError::ImageSizes {
                sample: i.to_string(),
                expected: (h, w),
                found: (ih as usize, iw as usize),
            });
        }
        data.extend(processor.normalize(img));
    }
    Ok(Tensor::from_data(TensorData::new(data, [images.len(), 3, h, w]), device))
}

impl<B: RwkvBackend> TaskData<B> {
    /// Tokenises every question of `split` with `strategy` and runs the (frozen) tower of `model`
    /// over its images, `cell_px` pixels per grid cell.
    pub fn prepare(
        split: &Split,
        cell_px: usize,
        model: &VisualRwkv<B>,
        strategy: &dyn PromptStrategy,
        tokenizer: &Tokenizer,
    ) -> Result<Self, TrainError> {
        let device = model.rwkv.device();
        let has_cls = model.vision.config.kind == TowerKind::Clip;
        let processor = ImageProcessor::for_tower(&model.vision.config);
        let mut features = Vec::with_capacity(split.scenes.len());
        let mut layout = None;
        for chunk in split.scenes.chunks(256) {
            let images: Vec<_> = chunk.iter().map(|s| s.render(cell_px)).collect();
            let (f, grid) = model
                .vision
                .features(pixels::<B>(&images, &processor, &device)?, model.options.layer)
                .map_err(VlmError::from)?;
            let pooled = grid_pool(f, grid, has_cls, model.options.pooling).map_err(VlmError::from)?;
            layout = Some(ImageLayout::new(pooled.grid_h, pooled.grid_w, pooled.extra));
            let [b, n, d] = pooled.features.dims();
            features.extend((0..b).map(|i| pooled.features.clone().slice([i..i + 1, 0..n, 0..d])));
        }
        let layout = layout.ok_or(TrainError::Empty("the split's images"))?;
        let examples = split
            .examples
            .iter()
            .map(|e| {
                let conv = Conversation::question(&e.question);
                let prompt = build(&conv, strategy, tokenizer, true, true).map_err(VlmError::from)?;
                let train = build(&conv.push(Role::Assistant, &e.answer), strategy, tokenizer, true, false)
                    .map_err(VlmError::from)?;
                Ok(TaskExample {
                    image: e.scene,
                    tokens: train.tokens,
                    labels: train.labels,
                    prompt: prompt.tokens,
                    question: e.question.clone(),
                    answer: e.answer.clone(),
                    qtype: e.qtype,
                })
            })
            .collect::<Result<Vec<_>, TrainError>>()?;
        Ok(Self { examples, features, layout })
    }

    /// The same data with the features on `device`.
    pub fn to_device(&self, device: &B::Device) -> Self {
        Self {
            examples: self.examples.clone(),
            features: self.features.iter().map(|f| f.clone().to_device(device)).collect(),
            layout: self.layout,
        }
    }

    /// The same data on the autodiff backend `A` (whose inner backend is `B`).
    pub fn lift<A: AutodiffBackend<InnerBackend = B>>(&self) -> TaskData<A> {
        TaskData {
            examples: self.examples.clone(),
            features: self.features.iter().map(|f| Tensor::from_inner(f.clone())).collect(),
            layout: self.layout,
        }
    }
}

fn image_rows<B: RwkvBackend>(
    model: &VisualRwkv<B>,
    data: &TaskData<B>,
    image: usize,
) -> Result<ImageRows<B>, TrainError> {
    let features = data.features.get(image).ok_or_else(|| TrainError::MissingImage(image.to_string()))?;
    project(model, features, data.layout)
}

/// Optimisation settings.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainConfig {
    /// Which parameters train.
    pub stage: Stage,
    /// Total optimiser steps.
    pub steps: usize,
    /// Samples per step.
    pub batch_size: usize,
    /// Rate after warmup.
    pub lr_init: f64,
    /// Rate at the last step.
    pub lr_final: f64,
    /// Warmup steps.
    pub warmup: usize,
    /// AdamW weight decay of parameters of squeezed rank ≥ 2 (others: 0).
    pub weight_decay: f64,
    /// Global gradient-norm clip (0 = none).
    pub grad_clip: f64,
    /// Whether to add L2Wrap.
    pub l2wrap: bool,
    /// Seed of the batch order.
    pub seed: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            stage: Stage::Full,
            steps: 1000,
            batch_size: 16,
            lr_init: 3e-3,
            lr_final: 1e-4,
            warmup: 50,
            weight_decay: 0.0,
            grad_clip: 1.0,
            l2wrap: true,
            seed: 0,
        }
    }
}

impl TrainConfig {
    /// How far the rate decays by the last step: `lr_final = lr_init / FINAL_LR_DIVISOR` in
    /// [`TrainConfig::with_peak_lr`] (the default's 3e-3 → 1e-4).
    pub const FINAL_LR_DIVISOR: f64 = 30.0;

    /// These settings with peak rate `lr` and final rate `lr / FINAL_LR_DIVISOR`.
    pub fn with_peak_lr(self, lr: f64) -> Self {
        Self { lr_init: lr, lr_final: lr / Self::FINAL_LR_DIVISOR, ..self }
    }

    /// The learning-rate schedule.
    pub fn schedule(&self) -> LrSchedule {
        LrSchedule { lr_init: self.lr_init, lr_final: self.lr_final, warmup: self.warmup, total: self.steps }
    }
}

/// What one step did.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct StepStats {
    /// Step number (1-based: steps done after this one).
    pub step: usize,
    /// Batch loss (cross-entropy, without L2Wrap).
    pub loss: f64,
    /// Rate used.
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Sequence rows processed.
    pub rows: usize,
}

/// Parameter ids of a module with their squeezed rank (number of dimensions larger than 1).
struct ParamRanks(Vec<(ParamId, usize)>);

impl<B: Backend> ModuleVisitor<B> for ParamRanks {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let rank = param.val().dims().iter().filter(|&&d| d > 1).count();
        self.0.push((param.id, rank));
    }
}

/// Gives a module's float parameters the ids of an iterator, in visiting order.
struct SetIds(std::vec::IntoIter<ParamId>);

impl<B: Backend> burn::module::ModuleMapper<B> for SetIds {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        Param::from_mapped_value(self.0.next().unwrap_or(id), tensor, mapper)
    }
}

fn ranks<B: Backend, M: Module<B>>(module: &M) -> Vec<(ParamId, usize)> {
    let mut v = ParamRanks(Vec::new());
    module.visit(&mut v);
    v.0
}

/// Sum of squares of the gradients held for a module's parameters, and scaling them.
struct GradNorm<'a, B: AutodiffBackend> {
    grads: &'a mut GradientsParams,
    scale: Option<f64>,
    sum_sq: f64,
    _b: core::marker::PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for GradNorm<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        match self.scale {
            None => {
                if let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) {
                    self.sum_sq += g.powi_scalar(2).sum().into_scalar().elem::<f64>();
                }
            }
            Some(s) => {
                if let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) {
                    self.grads.register(param.id, g.mul_scalar(s));
                }
            }
        }
    }
}

use burn::tensor::ElementConversion;

type Adam<B> = OptimizerAdaptor<AdamW, VisualRwkv<B>, B>;

/// The training loop's state: model, the two AdamW groups, step and RNG.
pub struct Trainer<B: AutodiffBackend + RwkvBackend>
where
    B::InnerBackend: RwkvBackend,
{
    /// The model being trained.
    pub model: VisualRwkv<B>,
    /// Optimiser of the parameters with weight decay (squeezed rank ≥ 2).
    decayed: Adam<B>,
    /// Optimiser of the others.
    plain: Adam<B>,
    /// Trainable parameters with weight decay.
    decayed_ids: Vec<ParamId>,
    /// Trainable parameters without.
    plain_ids: Vec<ParamId>,
    /// Steps done.
    pub step: usize,
    /// Batch-order RNG.
    pub rng: Rng,
    /// Settings.
    pub config: TrainConfig,
    /// This trainer's place among data-parallel replicas (`None`: it trains alone).
    pub(crate) replica: Option<Replica>,
    /// What the caller saves with a checkpoint and gets back on resume (e.g. a data position).
    pub meta: serde_json::Value,
}

/// A trainer's place among `count` data-parallel replicas: it computes part `rank` of every
/// batch and its gradients are summed with the others' (burn-collective all-reduce, peer id =
/// rank) before the optimiser step, so every replica applies the same update.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Replica {
    /// This replica's index, `0..count`.
    pub rank: usize,
    /// Number of replicas.
    pub count: usize,
}

impl Replica {
    /// The positions of `batch_len` samples this replica computes (contiguous, sizes differing
    /// by at most one; empty for a replica outside `0..count`).
    pub fn part(&self, batch_len: usize) -> std::ops::Range<usize> {
        if self.rank >= self.count {
            return 0..0;
        }
        (self.rank * batch_len / self.count)..((self.rank + 1) * batch_len / self.count)
    }
}

fn adam(weight_decay: f64) -> AdamWConfig {
    AdamWConfig::new().with_beta_1(0.9).with_beta_2(0.99).with_epsilon(1e-8).with_weight_decay(weight_decay as f32)
}

impl<B: AutodiffBackend + RwkvBackend> Trainer<B>
where
    B::InnerBackend: RwkvBackend,
{
    /// A trainer at step 0 for `model`.
    pub fn new(model: VisualRwkv<B>, config: TrainConfig) -> Result<Self, TrainError> {
        if config.steps == 0 || config.batch_size == 0 {
            return Err(TrainError::AtLeastOne("steps and batch size"));
        }
        let mut trainable = ranks::<B, _>(&model.projector);
        if config.stage == Stage::Full {
            let emb = model.rwkv.emb().weight.id;
            trainable.extend(ranks::<B, _>(&model.rwkv).into_iter().filter(|(id, _)| *id != emb));
        }
        let decayed_ids = trainable.iter().filter(|(_, r)| *r >= 2).map(|(id, _)| *id).collect();
        let plain_ids = trainable.iter().filter(|(_, r)| *r < 2).map(|(id, _)| *id).collect();
        Ok(Self {
            model,
            decayed: adam(config.weight_decay).init(),
            plain: adam(0.0).init(),
            decayed_ids,
            plain_ids,
            step: 0,
            rng: Rng(config.seed ^ 0xBA7C_4000),
            config,
            replica: None,
            meta: serde_json::Value::Null,
        })
    }

    /// Ids of the parameters this trainer updates.
    pub fn trainable(&self) -> Vec<ParamId> {
        self.decayed_ids.iter().chain(&self.plain_ids).copied().collect()
    }

    /// One optimiser step on a batch drawn with the trainer's RNG.
    pub fn train_step(&mut self, data: &TaskData<B>, scan: &dyn Scan) -> Result<StepStats, TrainError> {
        if data.examples.is_empty() {
            return Err(TrainError::Empty("the training split"));
        }
        let batch: Vec<usize> = (0..self.config.batch_size).map(|_| self.rng.below(data.examples.len())).collect();
        self.step_on(data, &batch, scan)
    }

    /// One optimiser step on the given examples of the synthetic task (see
    /// [`Trainer::step_examples`]).
    pub fn step_on(&mut self, data: &TaskData<B>, batch: &[usize], scan: &dyn Scan) -> Result<StepStats, TrainError> {
        let mut examples = Vec::with_capacity(batch.len());
        for &i in batch {
            let e = data.examples.get(i).ok_or(TrainError::MissingExample(i))?;
            examples.push(TrainExample {
                tokens: e.tokens.clone(),
                labels: e.labels.clone(),
                image: Some((
                    data.features.get(e.image).ok_or_else(|| TrainError::MissingImage(e.image.to_string()))?.clone(),
                    data.layout,
                )),
            });
        }
        self.step_examples(&[examples], scan)
    }

    /// One optimiser step over `micro_batches` (gradient accumulation: the gradients of every
    /// micro-batch are summed before the update, each batch's loss weighted `1 / count`). Alone,
    /// the trainer computes every sample; as a data-parallel replica it computes its
    /// [`Replica::part`] of each micro-batch and sums gradients (and the reported loss) with the
    /// other replicas, which step on the same batches. Each micro-batch's loss is normalised by
    /// the whole micro-batch (cross-entropy: mean over its samples; L2Wrap: `1e-4 / (B · T_max)`),
    /// so the update is the same on any number of devices.
    pub fn step_examples(
        &mut self,
        micro_batches: &[Vec<TrainExample<B>>],
        scan: &dyn Scan,
    ) -> Result<StepStats, TrainError> {
        if micro_batches.is_empty() || micro_batches.iter().any(Vec::is_empty) {
            return Err(TrainError::Empty("the batch"));
        }
        let weight = 1.0 / micro_batches.len() as f64;
        let mut decayed_acc = burn::optim::GradientsAccumulator::<VisualRwkv<B>>::new();
        let mut plain_acc = burn::optim::GradientsAccumulator::<VisualRwkv<B>>::new();
        let (mut local, mut rows) = (0.0, 0);
        for batch in micro_batches {
            let all_labels: Vec<Vec<i64>> = batch.iter().map(TrainExample::row_labels).collect();
            rows += all_labels.iter().map(Vec::len).sum::<usize>();
            let t_max = all_labels.iter().map(Vec::len).max().unwrap_or(1).max(1);
            let part = match self.replica {
                Some(r) => r.part(batch.len()),
                None => 0..batch.len(),
            };
            if part.is_empty() {
                return Err(TrainError::BatchSplit {
                    batch: batch.len(),
                    devices: self.replica.map_or(1, |r| r.count),
                });
            }
            let mut samples = Vec::with_capacity(part.len());
            for e in &batch[part.clone()] {
                let image = match &e.image {
                    Some((features, layout)) => Some(project(&self.model, features, *layout)?),
                    None => None,
                };
                samples.push(Sample { tokens: e.tokens.clone(), image });
            }
            let out = self.model.forward_padded(&samples, scan)?;
            let share = weight * part.len() as f64 / batch.len() as f64;
            let mut loss = padded_batch_loss(out.logits.clone(), &all_labels[part.clone()])?.mul_scalar(share);
            local += loss.clone().into_scalar().elem::<f64>();
            if self.config.l2wrap {
                loss = loss + padded_l2wrap(out.logits, &out.lengths, weight * 1e-4 / (batch.len() * t_max) as f64)?;
            }
            let mut grads = loss.backward();
            decayed_acc
                .accumulate(&self.model, GradientsParams::from_params(&mut grads, &self.model, &self.decayed_ids));
            plain_acc.accumulate(&self.model, GradientsParams::from_params(&mut grads, &self.model, &self.plain_ids));
        }
        let (mut decayed, mut plain) = (decayed_acc.grads(), plain_acc.grads());
        let value = match self.replica {
            Some(r) => {
                decayed = crate::parallel::sum_gradients::<B>(decayed, r)?;
                plain = crate::parallel::sum_gradients::<B>(plain, r)?;
                crate::parallel::sum_scalar::<B>(local, &self.model.rwkv.device(), r)?
            }
            None => local,
        };
        if !value.is_finite() {
            return Err(TrainError::NonFiniteLoss { value, step: self.step + 1 });
        }
        let norm = self.clip(&mut [&mut decayed, &mut plain]);
        let lr = self.config.schedule().lr(self.step);
        let model = self.model.clone();
        let model = self.decayed.step(lr, model, decayed);
        self.model = self.plain.step(lr, model, plain);
        self.step += 1;
        Ok(StepStats { step: self.step, loss: value, lr, grad_norm: norm, rows })
    }

    /// Global gradient-norm clipping over all groups; returns the norm before clipping.
    fn clip(&self, groups: &mut [&mut GradientsParams]) -> f64 {
        let mut sum_sq = 0.0;
        for g in groups.iter_mut() {
            let mut v = GradNorm::<B> { grads: g, scale: None, sum_sq: 0.0, _b: core::marker::PhantomData };
            self.model.visit(&mut v);
            sum_sq += v.sum_sq;
        }
        let norm = sum_sq.sqrt();
        if self.config.grad_clip > 0.0 && norm > self.config.grad_clip {
            let scale = self.config.grad_clip / norm;
            for g in groups.iter_mut() {
                let mut v = GradNorm::<B> { grads: g, scale: Some(scale), sum_sq: 0.0, _b: core::marker::PhantomData };
                self.model.visit(&mut v);
            }
        }
        norm
    }

    /// Saves a checkpoint into `dir`: `dir/model.safetensors` in the official VisualRWKV layout
    /// with `dir/vision_config.json` (what `chat --checkpoint` loads), and under `dir/trainer/`
    /// what [`Trainer::resume`] needs (the weights of this step, both optimisers, step, RNG,
    /// settings and [`Trainer::meta`]). Every file is written under a temporary name and renamed;
    /// `trainer/trainer.json`, which names the step, is written last, so a process killed at any
    /// point leaves the previous checkpoint or the new one, complete.
    pub fn save(&self, dir: &Path) -> Result<(), TrainError> {
        use burn::record::BinBytesRecorder;
        let state = dir.join(TRAINER_DIR);
        std::fs::create_dir_all(&state).map_err(|e| io_error(&state, e))?;
        let step = self.step;
        let weights = state.join(format!("model-{step}.safetensors"));
        self.model.save_checkpoint(&weights)?;
        let rec = BinBytesRecorder::<FullPrecisionSettings>::default();
        for (name, optim) in [("decayed", &self.decayed), ("plain", &self.plain)] {
            let path = state.join(format!("optim-{name}-{step}.bin"));
            let bytes = rec.record(optim.to_record(), ()).map_err(|e| io_error(&path, e))?;
            visualrwkv_checkpoint::write_atomic(&path, &bytes).map_err(|e| io_error(&path, e))?;
        }
        // The user-facing checkpoint: the same bytes, linked (or copied) in, then renamed.
        let model = dir.join(MODEL_FILE);
        let tmp = dir.join(format!(".{MODEL_FILE}.tmp-{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        std::fs::hard_link(&weights, &tmp)
            .or_else(|_| std::fs::copy(&weights, &tmp).map(|_| ()))
            .and_then(|_| std::fs::rename(&tmp, &model))
            .map_err(|e| io_error(&model, e))?;
        let config = serde_json::to_string_pretty(&self.model.vision.config.to_hf_json()).unwrap_or_default();
        let path = dir.join(crate::vlm::VISION_CONFIG_FILE);
        visualrwkv_checkpoint::write_atomic(&path, config.as_bytes()).map_err(|e| io_error(&path, e))?;
        // The optimisers' state is keyed by parameter id; a model read back from safetensors gets
        // new ids, so the ids are saved in visiting order and given back on resume.
        let ids: Vec<u64> = ranks::<B, _>(&self.model).iter().map(|(id, _)| id.val()).collect();
        let meta = serde_json::json!({
            "step": step, "rng": self.rng.0, "config": self.config, "meta": self.meta, "param_ids": ids,
        });
        let path = state.join("trainer.json");
        let text = serde_json::to_string_pretty(&meta).unwrap_or_default();
        visualrwkv_checkpoint::write_atomic(&path, text.as_bytes()).map_err(|e| io_error(&path, e))?;
        // Temporaries of a save that was killed (other process ids) are garbage.
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                if entry.file_name().to_string_lossy().starts_with(&format!(".{MODEL_FILE}.tmp-")) {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        // Files of earlier steps are no longer named by trainer.json.
        let current = [
            format!("model-{step}.safetensors"),
            format!("optim-decayed-{step}.bin"),
            format!("optim-plain-{step}.bin"),
        ];
        let current_config = crate::vlm::VISION_CONFIG_FILE.to_string();
        if let Ok(entries) = std::fs::read_dir(&state) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name != "trainer.json" && name != current_config && !current.contains(&name) {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        Ok(())
    }

    /// Restores a trainer saved by [`Trainer::save`]; `model` is a model of the same
    /// configuration (e.g. freshly initialised): its vision options are kept and its
    /// architecture must match the saved one.
    pub fn resume(dir: &Path, model: VisualRwkv<B>) -> Result<Self, TrainError> {
        use burn::record::BinBytesRecorder;
        let state = dir.join(TRAINER_DIR);
        let path = state.join("trainer.json");
        let text = std::fs::read_to_string(&path).map_err(|e| io_error(&path, e))?;
        let meta: serde_json::Value = serde_json::from_str(&text).map_err(|e| io_error(&path, e))?;
        let config: TrainConfig =
            serde_json::from_value(meta["config"].clone()).map_err(|e| io_error(&path, format!("config: {e}")))?;
        let step = meta["step"].as_u64().ok_or_else(|| io_error(&path, "missing step"))? as usize;
        let rng = meta["rng"].as_u64().ok_or_else(|| io_error(&path, "missing rng"))?;
        let device = model.rwkv.device();
        let weights = state.join(format!("model-{step}.safetensors"));
        let loaded = VisualRwkv::<B>::load_checkpoint(&weights, None, model.options, &device)?;
        if loaded.rwkv.config() != model.rwkv.config()
            || loaded.vision.config != model.vision.config
            || loaded.projector.kind() != model.projector.kind()
        {
            return Err(TrainError::Resume {
                path: weights.to_path_buf(),
                why: "the saved model's architecture differs from the one to resume".into(),
            });
        }
        let ids: Vec<ParamId> = meta["param_ids"]
            .as_array()
            .ok_or_else(|| io_error(&path, "missing param_ids"))?
            .iter()
            .map(|v| v.as_u64().map(ParamId::from).ok_or_else(|| io_error(&path, "a param id is not a number")))
            .collect::<Result<_, _>>()?;
        let count = ranks::<B, _>(&loaded).len();
        if ids.len() != count {
            return Err(io_error(&path, format!("{} parameter ids for a model of {count} parameters", ids.len())));
        }
        let loaded = loaded.map(&mut SetIds(ids.into_iter()));
        let mut trainer = Self::new(loaded, config)?;
        let rec = BinBytesRecorder::<FullPrecisionSettings>::default();
        let read = |name: &str| {
            let path = state.join(format!("optim-{name}-{step}.bin"));
            std::fs::read(&path)
                .map_err(|e| io_error(&path, e))
                .and_then(|bytes| rec.load(bytes, &device).map_err(|e| io_error(&path, e)))
        };
        trainer.decayed = trainer.decayed.load_record(read("decayed")?);
        trainer.plain = trainer.plain.load_record(read("plain")?);
        trainer.step = step;
        trainer.rng = Rng(rng);
        trainer.meta = meta["meta"].clone();
        Ok(trainer)
    }
}

/// The sub-directory of a checkpoint holding the resume state.
pub const TRAINER_DIR: &str = "trainer";
/// The file name of the official-layout weights in a checkpoint directory.
pub const MODEL_FILE: &str = "model.safetensors";

/// An image's frozen tower features `[1, n, D]` (pooled, before the projector) and their layout.
pub type ImageFeatures<B> = (Tensor<B, 3>, ImageLayout);

/// One sample of a training batch: ids with at most one [`IMAGE_TOKEN`], labels aligned with
/// them, and the image's frozen tower features `[1, n, D]` (pooled, before the projector) with
/// their layout.
#[derive(Clone, Debug)]
pub struct TrainExample<B: Backend> {
    /// Token ids.
    pub tokens: Vec<i64>,
    /// Labels aligned with `tokens`.
    pub labels: Vec<i64>,
    /// Tower features and layout of the image (`None`: a text-only sample).
    pub image: Option<ImageFeatures<B>>,
}

impl<B: Backend> TrainExample<B> {
    /// Labels of every row of the assembled sequence: the placeholder becomes the image's
    /// ignored rows.
    pub fn row_labels(&self) -> Vec<i64> {
        let n = self.image.as_ref().map_or(0, |(_, layout)| layout.len());
        self.tokens
            .iter()
            .zip(&self.labels)
            .flat_map(|(&t, &l)| if t == IMAGE_TOKEN { vec![IGNORE_INDEX; n] } else { vec![l] })
            .collect()
    }
}

fn project<B: RwkvBackend>(
    model: &VisualRwkv<B>,
    features: &Tensor<B, 3>,
    layout: ImageLayout,
) -> Result<ImageRows<B>, TrainError> {
    let rows = model.projector.project(features.clone()).map_err(VlmError::from)?;
    let [_, n, c] = rows.dims();
    Ok(ImageRows { rows: rows.reshape([n, c]), layout })
}

/// Accuracy per question type.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Accuracy {
    /// (correct, total) per question type name.
    pub per_type: BTreeMap<String, (usize, usize)>,
    /// Per evaluated question, in the split's order: its type name and 1.0 (right) or 0.0
    /// (wrong); what paired comparisons between models read (`visualrwkv_train::stats`).
    pub items: Vec<(String, f64)>,
}

impl Accuracy {
    /// Accuracy over all questions.
    pub fn overall(&self) -> f64 {
        let (c, t) = self.per_type.values().fold((0, 0), |(c, t), (a, b)| (c + a, t + b));
        if t == 0 { 0.0 } else { c as f64 / t as f64 }
    }

    /// Accuracy of one question type.
    pub fn of(&self, qtype: QuestionType) -> f64 {
        self.per_type.get(qtype.name()).map_or(0.0, |&(c, t)| if t == 0 { 0.0 } else { c as f64 / t as f64 })
    }
}

/// The greedy answer of `model` to example `i` of `data` (up to 12 tokens, stopping at id 0 or a
/// newline piece), trimmed.
pub fn answer<B: RwkvBackend>(
    model: &VisualRwkv<B>,
    data: &TaskData<B>,
    i: usize,
    scan: &dyn Scan,
    tokenizer: &Tokenizer,
) -> Result<String, TrainError> {
    let e = data.examples.get(i).ok_or(TrainError::MissingExample(i))?;
    let sample = Sample { tokens: e.prompt.clone(), image: Some(image_rows(model, data, e.image)?) };
    // Stop at end-of-text and at any single-token newline piece of this tokenizer.
    let mut stop_tokens = vec![0];
    for piece in ["\n", "\n\n"] {
        if let [id] = tokenizer.encode(piece)[..] {
            stop_tokens.push(id);
        }
    }
    let options = GenerateOptions { max_tokens: 12, stop_tokens, ..GenerateOptions::default() };
    let g = model.generate(&sample, scan, tokenizer, &options, Engine::Model, |_| {})?;
    Ok(g.text.trim().to_string())
}

/// Held-out accuracy of greedy answers (exact match after trimming) on the first `limit`
/// examples of `data` (all when `None`).
pub fn evaluate<B: RwkvBackend>(
    model: &VisualRwkv<B>,
    data: &TaskData<B>,
    scan: &dyn Scan,
    tokenizer: &Tokenizer,
    limit: Option<usize>,
) -> Result<Accuracy, TrainError> {
    let mut acc = Accuracy::default();
    let n = limit.unwrap_or(data.examples.len()).min(data.examples.len());
    for i in 0..n {
        let e = &data.examples[i];
        let got = answer(model, data, i, scan, tokenizer)?;
        let right = got == e.answer;
        let entry = acc.per_type.entry(e.qtype.name().to_string()).or_default();
        entry.0 += usize::from(right);
        entry.1 += 1;
        acc.items.push((e.qtype.name().to_string(), if right { 1.0 } else { 0.0 }));
    }
    Ok(acc)
}

pub use visualrwkv_rwkv::materialize;

/// Copies the parameters of `from` (a module on backend `A`) into `into` (the same architecture
/// on backend `C`, e.g. freshly initialised there) through burn's full-precision record: a model
/// initialised on the CPU moved to a GPU, or a GPU-trained one brought back. Errors when the two
/// modules' parameters do not match.
pub fn transfer<A: Backend, C: Backend, MA: Module<A>, MC: Module<C>>(
    from: &MA,
    into: MC,
    device: &C::Device,
) -> Result<MC, TrainError> {
    use burn::record::BinBytesRecorder;
    materialize(from);
    let rec = BinBytesRecorder::<FullPrecisionSettings>::default();
    let bytes = rec.record(from.clone().into_record(), ()).map_err(|e| TrainError::Transfer(e.to_string()))?;
    let record = rec.load(bytes, device).map_err(|e| TrainError::Transfer(e.to_string()))?;
    Ok(into.load_record(record))
}

/// The model's inner (non-autodiff) copy, for evaluation.
pub fn for_eval<B: AutodiffBackend + RwkvBackend>(model: &VisualRwkv<B>) -> VisualRwkv<B::InnerBackend>
where
    B::InnerBackend: RwkvBackend,
{
    model.valid()
}
