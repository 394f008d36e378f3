//! Flags shared by several subcommands and the small parsers behind them.

use std::path::Path;

use burn::tensor::{Tensor, TensorData};
use clap::{Args, ValueEnum};
use visualrwkv::GenerateOptions;
use visualrwkv_checkpoint::TensorMap;
use visualrwkv_rwkv::{Decoder, Rwkv, RwkvBackend, SamplingOptions, WeightDtype};
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
    /// The model's tensor ops on the chosen device.
    Burn,
}

/// Sampling flags shared by the generating commands.
#[derive(Args, Clone, Debug)]
pub struct SamplingArgs {
    /// How single-token steps run: auto (f32 on the CPU, burn elsewhere), f32 / bf16 / f16 = the
    /// fused CPU decoder with its matrices in that type, burn = the model's tensor ops.
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
    pub fn decoder_for<B: RwkvBackend>(&self, model: &Rwkv<B>, device: &DeviceSpec) -> Res<Option<Decoder>> {
        let dtype = match (self.decoder, device.is_cpu()) {
            (DecoderKind::Auto, true) | (DecoderKind::F32, true) => WeightDtype::F32,
            (DecoderKind::Bf16, true) => WeightDtype::Bf16,
            (DecoderKind::F16, true) => WeightDtype::F16,
            (DecoderKind::Auto | DecoderKind::Burn, _) => return Ok(None),
            (other, false) => {
                return Err(format!(
                    "--decoder {} is the fused CPU decoder; on --device {device} use --decoder burn (the default there)",
                    other.to_possible_value().map(|v| v.get_name().to_string()).unwrap_or_default()
                )
                .into());
            }
        };
        Ok(Some(Decoder::new(model, dtype)?))
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

/// The tokenizer named by `--tokenizer` for a model with `vocab` rows.
pub fn pick_tokenizer(name: &str, vocab: usize) -> Res<&'static Tokenizer> {
    Ok(match name {
        "world" => Tokenizer::world(),
        "bytes" => Tokenizer::world_bytes(),
        "auto" if vocab > Tokenizer::world().vocab_size() - 1 => Tokenizer::world(),
        "auto" => Tokenizer::world_bytes(),
        // A vocabulary file in the World format (e.g. the demo's `checkpoint/vocab.txt`); the
        // command runs once, so leaking it for a 'static borrow costs nothing.
        path if Path::new(path).is_file() => Box::leak(Box::new(Tokenizer::from_file(path)?)),
        other => return Err(format!("unknown --tokenizer `{other}` (auto, world, bytes, or a vocabulary file)").into()),
    })
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

/// Settings shared by `demo` and `ablate`: data, model, optimisation and devices.
#[derive(Args, Clone, Debug)]
pub struct RunArgs {
    /// Optimiser steps (4000 take about 4 minutes on 2 CPU cores).
    #[arg(long, default_value_t = 4000)]
    pub steps: usize,
    /// Samples per step (split over --devices).
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Peak learning rate (cosine decay to 1/30 of it after 50 warmup steps).
    #[arg(long, default_value_t = 3e-3)]
    pub lr: f64,
    /// Training stage: full (projector + RWKV, embeddings frozen) or projector.
    #[arg(long, value_enum, default_value_t = StageArg::Full)]
    pub stage: StageArg,
    /// Training images (each with --questions questions).
    #[arg(long, default_value_t = 2000)]
    pub train_images: usize,
    /// Test images.
    #[arg(long, default_value_t = 200)]
    pub test_images: usize,
    /// Questions per image.
    #[arg(long, default_value_t = 6)]
    pub questions: usize,
    /// Grid cells per side.
    #[arg(long, default_value_t = 3)]
    pub grid: usize,
    /// RWKV width.
    #[arg(long, default_value_t = 64)]
    pub width: usize,
    /// RWKV layers.
    #[arg(long, default_value_t = 2)]
    pub layers: usize,
    /// Seed of data, initialisation and batch order.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Text ids: words (the 256 bytes plus the task's word pieces, one token per word) or bytes
    /// (byte-level World ids).
    #[arg(long, value_enum, default_value_t = VocabArg::Words)]
    pub vocab: VocabArg,
    #[command(flatten)]
    pub devices: crate::device::TrainDevices,
}

impl RunArgs {
    /// The library's settings for these flags.
    pub fn settings(&self) -> visualrwkv::demo::RunSettings {
        use visualrwkv::training::{Stage, TrainConfig, Vocab};
        use visualrwkv_train::data::DataConfig;
        let data = DataConfig {
            grid: self.grid,
            train_images: self.train_images,
            val_images: 50,
            test_images: self.test_images,
            questions_per_image: self.questions,
            max_objects: 5.min(self.grid * self.grid),
            seed: self.seed,
            ..DataConfig::default()
        };
        let train = TrainConfig {
            stage: match self.stage {
                StageArg::Full => Stage::Full,
                StageArg::Projector => Stage::Projector,
            },
            steps: self.steps,
            batch_size: self.batch,
            lr_init: self.lr,
            lr_final: self.lr / 30.0,
            warmup: 50.min(self.steps / 10),
            seed: self.seed,
            ..TrainConfig::default()
        };
        visualrwkv::demo::RunSettings {
            data,
            width: self.width,
            layers: self.layers,
            vocab: match self.vocab {
                VocabArg::Words => Vocab::Words,
                VocabArg::Bytes => Vocab::Bytes,
            },
            train,
            model_seed: self.seed,
            eval_limit: None,
        }
    }
}
