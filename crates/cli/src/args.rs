//! Flags shared by several subcommands and the small parsers behind them.

use std::path::Path;

use burn::tensor::{Tensor, TensorData};
use clap::{Args, ValueEnum};
use visualrwkv::GenerateOptions;
use visualrwkv_checkpoint::TensorMap;
use visualrwkv_rwkv::{Decoder, LanguageModel, RwkvBackend, SamplingOptions, WeightDtype};
use visualrwkv_scan::Scan;
use visualrwkv_tokenizer::Tokenizer;

use crate::Res;
use crate::device::DeviceSpec;

/// How single-token steps (and, on the CPU, the prompt) run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DecoderKind {
    /// `f32` on the CPU, `burn` on a GPU.
    Auto,
    /// The fused CPU decoder with f32 matrices (equal to the model's tensor ops to 1e-4).
    F32,
    /// The fused CPU decoder with bf16 matrices (half the bytes read per token).
    Bf16,
    /// The fused CPU decoder with f16 matrices.
    F16,
    /// The fused CPU decoder with int8 matrices (blocks of 32 with a scale each).
    I8,
    /// The fused CPU decoder with 4-bit matrices (blocks of 32 with a scale each).
    Q4,
    /// The model's tensor ops on the chosen device.
    Burn,
}

/// Sampling flags shared by the generating commands.
#[derive(Args, Clone, Debug)]
pub struct SamplingArgs {
    /// How single-token steps run: auto (f32 on the CPU, burn elsewhere), f32 / bf16 / f16 / i8 / q4 =
    /// the fused CPU decoder with its matrices in that type, burn = the model's tensor ops.
    #[arg(long, value_enum, default_value_t = DecoderKind::Auto)]
    pub decoder: DecoderKind,
    /// 0 = greedy.
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f32,
    /// Nucleus threshold in (0, 1].
    #[arg(long, default_value_t = 0.85)]
    pub top_p: f32,
    /// Keep only the k most likely tokens (0 = off).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Presence penalty.
    #[arg(long, default_value_t = 0.0)]
    pub presence_penalty: f32,
    /// Frequency penalty.
    #[arg(long, default_value_t = 0.0)]
    pub frequency_penalty: f32,
    /// Decay of the penalty counts per token.
    #[arg(long, default_value_t = 0.996)]
    pub penalty_decay: f32,
    /// Maximum number of new tokens.
    #[arg(long, default_value_t = 128)]
    pub max_tokens: usize,
    /// Comma-separated stop token ids.
    #[arg(long, default_value = "0,261")]
    pub stop: String,
    /// RNG seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl SamplingArgs {
    /// The settings of a benchmark answer (the official evaluate.py): greedy at `temperature` 0,
    /// no penalties, stopping at the end of the turn.
    pub fn evaluation(decoder: DecoderKind, temperature: f32, top_p: f32, max_tokens: usize, seed: u64) -> Self {
        Self {
            decoder,
            temperature,
            top_p,
            top_k: 0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            penalty_decay: 0.996,
            max_tokens,
            stop: "0,261".into(),
            seed,
        }
    }

    /// The generation options of these flags.
    pub fn options(&self) -> Res<GenerateOptions> {
        Ok(GenerateOptions {
            sampling: SamplingOptions {
                temperature: self.temperature,
                top_p: self.top_p,
                top_k: self.top_k,
                presence_penalty: self.presence_penalty,
                frequency_penalty: self.frequency_penalty,
                penalty_decay: self.penalty_decay,
                seed: self.seed,
            },
            max_tokens: self.max_tokens,
            stop_tokens: parse_ids(&self.stop)?,
            ..Default::default()
        })
    }

    /// The fused decoder of `--decoder`, built from `model` when it runs on the CPU (`None`: the
    /// model's tensor ops generate; see [`visualrwkv::Engine`]).
    pub fn decoder_for<B: RwkvBackend>(&self, model: &LanguageModel<B>, device: &DeviceSpec) -> Res<Option<Decoder>> {
        self.decoder.build(model, device)
    }
}

impl DecoderKind {
    /// The matrix type of the fused decoder this kind names on `device` (`None`: the model's
    /// tensor ops run); an error for a fused kind on another device than the CPU.
    pub fn dtype(self, device: &DeviceSpec) -> Res<Option<WeightDtype>> {
        Ok(Some(match (self, device.is_cpu()) {
            (DecoderKind::Auto, true) | (DecoderKind::F32, true) => WeightDtype::F32,
            (DecoderKind::Bf16, true) => WeightDtype::Bf16,
            (DecoderKind::F16, true) => WeightDtype::F16,
            (DecoderKind::I8, true) => WeightDtype::I8,
            (DecoderKind::Q4, true) => WeightDtype::Q4,
            (DecoderKind::Auto | DecoderKind::Burn, _) => return Ok(None),
            (other, false) => {
                return Err(format!(
                    "--decoder {} is the fused CPU decoder; on --device {device} use --decoder burn (the default there)",
                    other.to_possible_value().map(|v| v.get_name().to_string()).unwrap_or_default()
                )
                .into());
            }
        }))
    }

    /// The fused decoder this kind names, built from `model` (either architecture) when it runs
    /// on the CPU (`None`: the model's tensor ops run); an error for a fused kind on another
    /// device.
    pub fn build<B: RwkvBackend>(self, model: &LanguageModel<B>, device: &DeviceSpec) -> Res<Option<Decoder>> {
        Ok(match self.dtype(device)? {
            Some(dtype) => Some(Decoder::of_model(model, dtype)?),
            None => None,
        })
    }
}

/// A callback that writes generated text to stdout as it comes.
pub fn print_stream() -> impl FnMut(&str) {
    use std::io::Write;
    let mut stdout = std::io::stdout();
    move |piece| {
        let _ = write!(stdout, "{piece}");
        let _ = stdout.flush();
    }
}

/// Parses a comma-separated list of token ids.
pub fn parse_ids(s: &str) -> Res<Vec<u32>> {
    let ids: Result<Vec<u32>, _> =
        s.split(',').map(str::trim).filter(|x| !x.is_empty()).map(str::parse::<u32>).collect();
    let ids = ids.map_err(|e| format!("bad token id list {s:?}: {e}"))?;
    if ids.is_empty() {
        return Err("the token id list is empty".into());
    }
    Ok(ids)
}

/// The values of a float tensor as f32 (any float dtype of the backend).
pub fn values<B: burn::tensor::backend::Backend, const D: usize>(t: Tensor<B, D>) -> Res<Vec<f32>> {
    t.into_data().convert::<f32>().into_vec::<f32>().map_err(|e| format!("reading a tensor back: {e:?}").into())
}

/// Reads `pixel_values` [B, 3, H, W] from a safetensors file onto `device`.
pub fn read_pixels<B: burn::tensor::backend::Backend>(path: &Path, device: &B::Device) -> Res<Tensor<B, 4>> {
    let map = TensorMap::read_safetensors(path)?;
    let (shape, values) =
        map.tensors.get("pixel_values").ok_or_else(|| format!("{}: no tensor `pixel_values`", path.display()))?;
    let [b, c, h, w] = shape[..] else {
        return Err(format!("{}: `pixel_values` has shape {shape:?}, expected [B, 3, H, W]", path.display()).into());
    };
    Ok(Tensor::from_data(TensorData::new(values.clone(), [b, c, h, w]), device))
}

/// The tokenizer named by `--tokenizer` for a model with `vocab` rows (ids `0..vocab`).
///
/// A tokenizer spells ids `1..=n`; the model must have a row for every id a prompt can hold, so
/// that no prompt reaches an id the model lacks: `auto` takes the World vocabulary where it fits
/// and its byte tokens otherwise, and a tokenizer that does not fit is an error at load saying
/// which ids are missing. For the byte tokens that is ids up to 245 (byte 0xF4: the bytes
/// 0xF5–0xFF never occur in UTF-8 text), so a 256-row byte-level model fits. (Ids the model has
/// beyond the tokenizer, and the tokenizer's beyond the model, are never sampled.)
pub fn pick_tokenizer(name: &str, vocab: usize) -> Res<&'static Tokenizer> {
    let tokenizer: &'static Tokenizer = match name {
        "world" => Tokenizer::world(),
        "bytes" => Tokenizer::world_bytes(),
        "auto" if vocab > Tokenizer::world().vocab_size() => Tokenizer::world(),
        "auto" => Tokenizer::world_bytes(),
        // A vocabulary file in the World format (e.g. the demo's `checkpoint/vocab.txt`); the
        // command runs once, so leaking it for a 'static borrow costs nothing.
        path if Path::new(path).is_file() => Box::leak(Box::new(Tokenizer::from_file(path)?)),
        other => return Err(format!("unknown --tokenizer `{other}` (auto, world, bytes, or a vocabulary file)").into()),
    };
    let n = tokenizer.vocab_size();
    // The largest id that encoding UTF-8 text can give.
    let needed = if std::ptr::eq(tokenizer, Tokenizer::world_bytes()) { 0xF4 + 1 } else { n };
    if vocab <= needed {
        return Err(format!(
            "--tokenizer {name} spells token ids 1..={n} but the model's vocabulary has {vocab} ids (0..{vocab}): \
             ids {vocab}..={needed} are missing from it; use --tokenizer bytes or a vocabulary file the model was trained with"
        )
        .into());
    }
    Ok(tokenizer)
}

/// The name clap shows for a value of a `ValueEnum`.
pub fn value_name(v: &impl ValueEnum) -> String {
    v.to_possible_value().map(|p| p.get_name().to_string()).unwrap_or_default()
}

/// A built-in image scan (`--scan`; a library user passes any `Scan`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ScanArg {
    /// Every layer reads the image row by row.
    #[value(alias = "unidirectional")]
    Uni,
    /// Every second layer reads it reversed (VisualRWKV v6.0).
    #[value(alias = "bidirectional")]
    Bi,
    /// Rows, reversed rows, columns, reversed columns in turn.
    #[value(alias = "multidirectional")]
    Multi,
}

impl ScanArg {
    /// The scan.
    pub fn scan(self) -> Box<dyn Scan> {
        match self {
            ScanArg::Uni => Box::new(visualrwkv_scan::UniDirectional),
            ScanArg::Bi => Box::new(visualrwkv_scan::BiDirectional),
            ScanArg::Multi => Box::new(visualrwkv_scan::MultiDirectional),
        }
    }
}

/// A built-in prompt layout (`--prompt`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PromptArg {
    /// The image before the conversation (the official `image_position` first).
    First,
    /// The image after it (last).
    Last,
    /// The image between the instruction and the question (middle; VisualRWKV v6.0).
    #[value(alias = "middle")]
    Sandwich,
    /// The sandwich with the instruction repeated after the image (VisualRWKV v5).
    SandwichRepeat,
}

impl PromptArg {
    /// The layout.
    pub fn strategy(self) -> Box<dyn visualrwkv_prompt::PromptStrategy> {
        match self {
            PromptArg::First => Box::new(visualrwkv_prompt::ImageFirst),
            PromptArg::Last => Box::new(visualrwkv_prompt::ImageLast),
            PromptArg::Sandwich => Box::new(visualrwkv_prompt::Sandwich),
            PromptArg::SandwichRepeat => Box::new(visualrwkv_prompt::SandwichRepeat),
        }
    }
}

/// Named prompt layouts, for reports.
pub fn named_prompts(prompts: &[PromptArg]) -> Vec<(String, Box<dyn visualrwkv_prompt::PromptStrategy>)> {
    prompts.iter().map(|p| (value_name(p), p.strategy())).collect()
}

/// Named scans, for reports.
pub fn named_scans(scans: &[ScanArg]) -> Vec<(String, Box<dyn Scan>)> {
    scans.iter().map(|s| (value_name(s), s.scan())).collect()
}

/// A vision tower for the benchmarks (random weights).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum VisionArg {
    /// No image.
    None,
    /// CLIP ViT-L/14 at 336 px (VisualRWKV v6.0's tower): 577 rows.
    #[value(name = "clip-l-336")]
    ClipL336,
    /// SigLIP so400m at 384 px: 729 rows.
    #[value(name = "siglip-so400m-384")]
    SiglipSo400m384,
    /// A one-layer CLIP of 32 px images, 8 px patches: 17 rows (tests).
    Tiny,
}

impl VisionArg {
    /// The flag's value.
    pub fn name(self) -> &'static str {
        match self {
            VisionArg::None => "none",
            VisionArg::ClipL336 => "clip-l-336",
            VisionArg::SiglipSo400m384 => "siglip-so400m-384",
            VisionArg::Tiny => "tiny",
        }
    }

    /// The tower's sizes (`None` for no image).
    pub fn sizes(self) -> Option<visualrwkv_efficiency::VisionSizes> {
        use visualrwkv_vision::{TowerKind, VisionConfig};
        let config = match self {
            VisionArg::None => return None,
            VisionArg::ClipL336 => VisionConfig::clip_vit_large_336(),
            VisionArg::SiglipSo400m384 => VisionConfig::siglip_so400m_384(),
            VisionArg::Tiny => VisionConfig::new(TowerKind::Clip, 32, 8, 24, 48, 1, 2),
        };
        Some(visualrwkv_efficiency::VisionSizes { name: self.name().to_string(), config })
    }
}

/// Which parameters the demo trains.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StageArg {
    /// Stage 2: projector + RWKV, embeddings frozen.
    #[value(alias = "2")]
    Full,
    /// Stage 1: the projector only.
    #[value(alias = "1")]
    Projector,
}

/// How the synthetic task's text becomes ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum VocabArg {
    /// The 256 bytes plus the task's word pieces (one token per word).
    Words,
    /// Byte-level World ids.
    Bytes,
}

/// A preset of the synthetic task (`visualrwkv::demo::Task`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TaskArg {
    /// 3×3 grid, 2–5 shapes, the six original question types.
    Easy,
    /// 3×3 grid, 2–5 shapes, all eight question types (the four neighbour directions).
    Spatial,
    /// 6×6 grid, 6–12 shapes and 8 clutter cells, all eight types, a small state (head size 8).
    Capacity,
}

/// `--init`: how the language model trained from scratch starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum InitArg {
    /// The official trainer's initialisation, RWKV-6 or RWKV-7 (made for pretraining; with the
    /// embeddings frozen it stays at the answer prior on the synthetic task).
    Trainer,
    /// Every parameter random in the trainer's ranges.
    Random,
}

/// Settings shared by `demo` and `ablate`: data, model, optimisation and devices. Flags left
/// out take the `--task` preset's value.
#[derive(Args, Clone, Debug)]
pub struct RunArgs {
    /// Task preset: grid, shapes, clutter, question types and the model's size.
    #[arg(long, value_enum, default_value_t = TaskArg::Spatial)]
    pub task: TaskArg,
    /// Optimiser steps [default: the preset's].
    #[arg(long)]
    pub steps: Option<usize>,
    /// Samples per step (split over --devices) [default: the preset's].
    #[arg(long)]
    pub batch: Option<usize>,
    /// Peak learning rate (cosine decay to 1/30 of it after the warmup) [default: the preset's].
    #[arg(long)]
    pub lr: Option<f64>,
    /// Training stage: full (projector + RWKV, embeddings frozen) or projector.
    #[arg(long, value_enum, default_value_t = StageArg::Full)]
    pub stage: StageArg,
    /// Training images, each with --questions-per-image questions [default: the preset's].
    #[arg(long)]
    pub train_images: Option<usize>,
    /// Test images [default: the preset's].
    #[arg(long)]
    pub test_images: Option<usize>,
    /// Questions per image [default: the preset's].
    #[arg(long)]
    pub questions_per_image: Option<usize>,
    /// Grid cells per side [default: the preset's].
    #[arg(long)]
    pub grid: Option<usize>,
    /// Fewest shapes per image [default: the preset's].
    #[arg(long)]
    pub min_objects: Option<usize>,
    /// Most shapes per image [default: the preset's].
    #[arg(long)]
    pub max_objects: Option<usize>,
    /// Clutter cells per image (grey texture that no question asks about) [default: the preset's].
    #[arg(long)]
    pub distractors: Option<usize>,
    /// Question types asked, comma-separated (color, shape_at, left_of, right_of, above, below,
    /// count, exists) [default: the preset's].
    #[arg(long, value_delimiter = ',')]
    pub types: Option<Vec<String>>,
    /// RWKV width [default: the preset's].
    #[arg(long)]
    pub width: Option<usize>,
    /// RWKV layers [default: the preset's].
    #[arg(long)]
    pub layers: Option<usize>,
    /// RWKV head size; the state is width/head-size heads of head-size² [default: the preset's].
    #[arg(long)]
    pub head_size: Option<usize>,
    /// Standard deviation of the tower's frozen position embeddings [default: the preset's].
    #[arg(long)]
    pub position_std: Option<f64>,
    /// Seed of data, initialisation and batch order.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Text ids: words (the 256 bytes plus the task's word pieces, one token per word) or bytes
    /// (byte-level World ids).
    #[arg(long, value_enum, default_value_t = VocabArg::Words)]
    pub vocab: VocabArg,
    /// The language model: x060 (RWKV-6 "Finch", the paper's) or x070 (RWKV-7 "Goose",
    /// VisualRWKV-7's).
    #[arg(long, default_value = "x060", value_parser = parse_arch)]
    pub arch: visualrwkv_rwkv::Arch,
    /// The language model's first weights: random (every parameter random in the trainer's
    /// ranges) or trainer (the official trainer's from-scratch initialisation: blocks start as
    /// the identity, docs/model.md §1.6).
    #[arg(long, value_enum, default_value_t = InitArg::Random)]
    pub init: InitArg,
    /// CPU replicas trained data-parallel when training on the CPU without --devices (burn-ndarray
    /// runs one replica on about one core; the update is the same for any count) [default: one
    /// per core, at most 4, divided among `ablate --jobs`].
    #[arg(long)]
    pub replicas: Option<usize>,
    #[command(flatten)]
    pub devices: crate::device::TrainDevices,
}

/// `--arch`: `x060` or `x070`.
pub fn parse_arch(s: &str) -> Result<visualrwkv_rwkv::Arch, String> {
    s.parse()
}

/// Most CPU replicas chosen without `--replicas`.
const MAX_AUTO_REPLICAS: usize = 4;

impl RunArgs {
    /// The devices to train on, `jobs` runs at a time: `--devices` as given; on the CPU,
    /// `--replicas` copies of it (default: the cores divided by `jobs`, at most 4 and at most the
    /// batch).
    pub fn device_list(&self, jobs: usize) -> crate::Res<Vec<crate::device::DeviceSpec>> {
        use crate::device::DeviceSpec;
        let list = self.devices.list()?;
        if self.devices.devices.is_some() || list != [DeviceSpec::Cpu] {
            if self.replicas.is_some() {
                return Err("--replicas applies to --device cpu only (name the devices with --devices)".into());
            }
            return Ok(list);
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let batch = self.batch.unwrap_or(usize::MAX);
        let n = match self.replicas {
            Some(0) => return Err("--replicas must be at least 1".into()),
            Some(n) => n,
            None => (cores / jobs.max(1)).clamp(1, MAX_AUTO_REPLICAS).min(batch),
        };
        Ok(vec![DeviceSpec::Cpu; n])
    }

    /// The library's settings for these flags: the preset, then every flag given.
    pub fn settings(&self) -> crate::Res<visualrwkv::demo::RunSettings> {
        use visualrwkv::demo::Task;
        use visualrwkv::training::{Stage, Vocab};
        use visualrwkv_train::data::QuestionType;
        let task = match self.task {
            TaskArg::Easy => Task::Easy,
            TaskArg::Spatial => Task::Spatial,
            TaskArg::Capacity => Task::Capacity,
        };
        let mut s = visualrwkv::demo::RunSettings::preset(task);
        let d = &mut s.data;
        d.train_images = self.train_images.unwrap_or(d.train_images);
        d.test_images = self.test_images.unwrap_or(d.test_images);
        d.questions_per_image = self.questions_per_image.unwrap_or(d.questions_per_image);
        d.seed = self.seed;
        if let Some(g) = self.grid {
            d.grid = g;
            d.max_objects = d.max_objects.min(g * g);
            d.min_objects = d.min_objects.min(d.max_objects);
            d.distractors = d.distractors.min(g * g - d.max_objects);
        }
        d.min_objects = self.min_objects.unwrap_or(d.min_objects);
        d.max_objects = self.max_objects.unwrap_or(d.max_objects);
        d.distractors = self.distractors.unwrap_or(d.distractors);
        if let Some(types) = &self.types {
            d.types = types
                .iter()
                .map(|t| {
                    QuestionType::by_name(t.trim()).ok_or_else(|| {
                        let all: Vec<&str> = QuestionType::ALL.iter().map(|q| q.name()).collect();
                        format!("unknown question type '{t}' in --types (one of {})", all.join(", "))
                    })
                })
                .collect::<Result<_, _>>()?;
        }
        if let Some(lr) = self.lr {
            s.train = s.train.clone().with_peak_lr(lr);
        }
        let t = &mut s.train;
        t.stage = match self.stage {
            StageArg::Full => Stage::Full,
            StageArg::Projector => Stage::Projector,
        };
        t.steps = self.steps.unwrap_or(t.steps);
        t.batch_size = self.batch.unwrap_or(t.batch_size);
        t.warmup = t.warmup.min(t.steps / 10);
        t.seed = self.seed;
        s.arch = self.arch;
        s.width = self.width.unwrap_or(s.width);
        s.layers = self.layers.unwrap_or(s.layers);
        s.head_size = self.head_size.unwrap_or(s.head_size);
        s.position_std = self.position_std.unwrap_or(s.position_std);
        s.model_seed = self.seed;
        s.vocab = match self.vocab {
            VocabArg::Words => Vocab::Words,
            VocabArg::Bytes => Vocab::Bytes,
        };
        s.init = match self.init {
            InitArg::Trainer => visualrwkv::training::LmInit::Trainer,
            InitArg::Random => visualrwkv::training::LmInit::Random,
        };
        Ok(s)
    }
}

/// The image pooling of `--grid` and `--num-token-per-image`: the latter (VisualRWKV-7 v7.00's
/// adaptive pooling to N = s² tokens) wins when given.
pub fn pooling(grid: i64, num_token_per_image: Option<usize>) -> Res<visualrwkv_vision::GridPooling> {
    Ok(match num_token_per_image {
        Some(n) => visualrwkv_vision::GridPooling::from_tokens_per_image(n)?,
        None => visualrwkv_vision::GridPooling::from_grid_size(grid)?,
    })
}
