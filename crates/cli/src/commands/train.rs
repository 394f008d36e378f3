//! `visualrwkv train`: fine-tune VisualRWKV on a LLaVA-format dataset. Stage 1 trains a new
//! projector between an RWKV-6 World checkpoint and a Hugging Face CLIP / SigLIP tower; stage 2
//! trains the projector and RWKV (embeddings and tower frozen) from a VisualRWKV checkpoint.
//! Saves `OUT/model.safetensors` in the official layout (what `chat --checkpoint` loads), the
//! resume state under `OUT/trainer/`, metrics JSONL/CSV and a loss plot.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::tensor::backend::AutodiffBackend;
use indicatif::{ProgressBar, ProgressStyle};
use visualrwkv::VisualRwkv;
use visualrwkv::finetune::{FinetuneConfig, FinetuneEvent, finetune};
use visualrwkv::training::{Stage, StepStats, TrainConfig};
use visualrwkv::vlm::VisionOptions;
use visualrwkv_data::{DatasetOptions, Tokenized, prepare, read_llava};
use visualrwkv_projector::{ProjectorConfig, ProjectorKind};
use visualrwkv_prompt::PromptStrategy;
use visualrwkv_rwkv::{Arch, LanguageModel, RwkvBackend};
use visualrwkv_tokenizer::Tokenizer;
use visualrwkv_vision::ImageProcessor;

use crate::Res;
use crate::args::{PromptArg, ScanArg, value_name};
use crate::commands::dataset::{DataArgs, print_report};
use crate::device::{DeviceSpec, TrainDevices, TrainJob};

/// The projector a stage-1 run creates.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum ProjectorArg {
    /// `Linear(D → C)` without bias (VisualRWKV v6.0).
    Linear,
    /// LLaVA-1.5's two-layer MLP with GELU.
    #[value(name = "mlp2x_gelu")]
    Mlp2xGelu,
    /// VisualRWKV-7 v7.00's MLP with context gating (`--proj_type mlp` there):
    /// `LN(o_proj(x ⊙ σ(gate(x))))`.
    #[value(name = "context_gating_ln", alias = "mlp")]
    ContextGatingLn,
}

/// `--stage`: what a fine-tuning stage trains.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum StageArg {
    /// Stage 1: the projector only (alignment).
    #[value(name = "1")]
    Projector,
    /// Stage 2: projector + RWKV, embeddings frozen.
    #[value(name = "2")]
    Full,
}

/// Flags of `train`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    data: DataArgs,
    /// 1: train the projector only (alignment); 2: projector + RWKV, embeddings frozen.
    #[arg(long, value_enum, default_value_t = StageArg::Full)]
    stage: StageArg,
    /// A VisualRWKV checkpoint (`rwkv.*`, `vit.vision_model.*`, `proj.*`) to start from.
    #[arg(long, conflicts_with_all = ["rwkv", "vision"], required_unless_present_all = ["rwkv", "vision"])]
    checkpoint: Option<PathBuf>,
    /// An official RWKV-6 (x060) or RWKV-7 (x070) World checkpoint (.pth or safetensors), for
    /// stage 1 (with --vision); the version is told from its keys.
    #[arg(long, requires = "vision")]
    rwkv: Option<PathBuf>,
    /// The language model's architecture the run expects (x060 or x070); the checkpoint's keys
    /// must agree. Default: whatever the checkpoint is.
    #[arg(long, value_parser = crate::args::parse_arch)]
    arch: Option<Arch>,
    /// A Hugging Face CLIP or SigLIP vision tower (safetensors file, or its folder).
    #[arg(long, requires = "rwkv")]
    vision: Option<PathBuf>,
    /// The tower's Hugging Face config.json (default: beside the weights).
    #[arg(long)]
    vision_config: Option<PathBuf>,
    /// The new projector of a run from --rwkv and --vision.
    #[arg(long, value_enum, default_value_t = ProjectorArg::Linear)]
    projector: ProjectorArg,
    /// Image placement: first, last or sandwich (default: first in stage 1, sandwich in stage 2,
    /// as the official scripts).
    #[arg(long, value_enum)]
    prompt: Option<PromptArg>,
    /// Image scan (bi: v6.0).
    #[arg(long, value_enum, default_value_t = ScanArg::Bi)]
    scan: ScanArg,
    /// Context length in rows (image rows included); longer samples lose their tail, never
    /// inside the image.
    #[arg(long, default_value_t = 2048)]
    ctx_len: usize,
    /// Samples per micro-batch.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Micro-batches per optimiser step (effective batch = batch × grad-accum).
    #[arg(long, default_value_t = 1)]
    grad_accum: usize,
    /// Peak learning rate (default: 1e-3 in stage 1, 6e-5 in stage 2, the paper's 1.6B values).
    #[arg(long)]
    lr: Option<f64>,
    /// Final learning rate of the cosine decay (default: 1e-5 in stage 1, 1.5e-5 in stage 2).
    #[arg(long)]
    lr_final: Option<f64>,
    /// Warmup steps.
    #[arg(long, default_value_t = 0)]
    warmup: usize,
    /// Optimiser steps.
    #[arg(long, conflicts_with = "epochs", required_unless_present = "epochs")]
    steps: Option<usize>,
    /// Passes over the dataset (steps = ⌈epochs × samples / (batch × grad-accum)⌉).
    #[arg(long)]
    epochs: Option<f64>,
    /// AdamW weight decay of matrices (0 in the paper).
    #[arg(long, default_value_t = 0.0)]
    weight_decay: f64,
    /// Global gradient-norm clip (0: none).
    #[arg(long, default_value_t = 1.0)]
    grad_clip: f64,
    /// Save a checkpoint every this many steps (0: only at the end).
    #[arg(long, default_value_t = 0)]
    save_every: usize,
    /// Output folder: model.safetensors, vision_config.json, trainer/, metrics.jsonl/.csv,
    /// loss.svg.
    #[arg(long)]
    out: PathBuf,
    /// Continue the run saved in --out (same data; the saved settings are used).
    #[arg(long)]
    resume: bool,
    /// Stop with a checkpoint after this many steps of this invocation (continue with --resume),
    /// e.g. to fit a cluster job's time limit.
    #[arg(long)]
    stop_after: Option<usize>,
    /// Grid pooling of the image features: -1, 0, 1 or g >= 2.
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    grid: i64,
    /// VisualRWKV-7 v7.00's token pooling: average the patch grid down to this many tokens (a
    /// square number; v7.00's default is 16). Replaces --grid.
    #[arg(long)]
    num_token_per_image: Option<usize>,
    /// Vision hidden layer (-1 = last).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    layer: i64,
    /// Seed of the projector's initialisation and the data order.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    devices: TrainDevices,
}

impl Args {
    fn stage(&self) -> Stage {
        match self.stage {
            StageArg::Projector => Stage::Projector,
            StageArg::Full => Stage::Full,
        }
    }

    fn load<B: RwkvBackend>(&self, device: &B::Device) -> Res<VisualRwkv<B>> {
        let options =
            VisionOptions { layer: self.layer, pooling: crate::args::pooling(self.grid, self.num_token_per_image)? };
        let model = self.load_model::<B>(options, device)?;
        if let Some(want) = self.arch
            && model.rwkv.arch() != want
        {
            return Err(format!(
                "--arch {}: the language model of the checkpoint is {}",
                want.name(),
                model.rwkv.arch().name()
            )
            .into());
        }
        Ok(model)
    }

    fn load_model<B: RwkvBackend>(&self, options: VisionOptions, device: &B::Device) -> Res<VisualRwkv<B>> {
        let vcfg = self.vision_config.as_deref();
        if let Some(c) = &self.checkpoint {
            return Ok(VisualRwkv::<B>::load_checkpoint(c, vcfg, options, device)?);
        }
        let (Some(rwkv), Some(vision)) = (&self.rwkv, &self.vision) else {
            return Err("give --checkpoint, or --rwkv and --vision".into());
        };
        let vision: PathBuf = if vision.is_dir() { vision.join("model.safetensors") } else { vision.clone() };
        let rwkv = LanguageModel::<B>::load(rwkv, device)?;
        let tower = visualrwkv_vision::load::<B>(&vision, vcfg, device)?;
        let kind = match self.projector {
            ProjectorArg::Linear => ProjectorKind::Linear,
            ProjectorArg::Mlp2xGelu => ProjectorKind::Mlp2xGelu,
            ProjectorArg::ContextGatingLn => ProjectorKind::ContextGatingLn,
        };
        <B as burn::tensor::backend::Backend>::seed(device, self.seed);
        let projector =
            ProjectorConfig { kind, in_dim: tower.config.hidden_size, out_dim: rwkv.dims().n_embd }.init::<B>(device);
        let model = VisualRwkv::new(rwkv, tower, projector, options)?;
        visualrwkv::training::materialize(&model);
        Ok(model)
    }
}

/// Rows one image occupies in this model: the pooled grid and the non-grid rows (CLS).
pub fn image_rows<B: RwkvBackend>(model: &VisualRwkv<B>) -> Res<usize> {
    let c = &model.vision.config;
    let side = c.image_size / c.patch_size;
    Ok(model.options.pooling.rows((side, side), c.kind == visualrwkv_vision::TowerKind::Clip)?)
}

/// Peak and final learning rates of a stage: the flags given, else the paper's 1.6B values
/// (stage 1: 1e-3 → 1e-5; stage 2: 6e-5 → 1.5e-5).
pub fn stage_rates(stage: Stage, lr: Option<f64>, lr_final: Option<f64>) -> (f64, f64) {
    match stage {
        Stage::Projector => (lr.unwrap_or(1e-3), lr_final.unwrap_or(1e-5)),
        Stage::Full => (lr.unwrap_or(6e-5), lr_final.unwrap_or(1.5e-5)),
    }
}

/// Reads and tokenises the LLaVA data of `data` for `strategy` with images of `rows` rows, cut to
/// `ctx_len` rows, prints the dataset report, and checks that a model of `vocab_size` ids holds
/// the World ids the data is tokenised with.
pub fn prepare_samples(
    data: &DataArgs,
    strategy: Box<dyn PromptStrategy>,
    rows: usize,
    ctx_len: usize,
    vocab_size: usize,
) -> Res<Vec<Tokenized>> {
    let records = read_llava(&data.data)?;
    let options = DatasetOptions {
        ctx_len,
        on_missing_image: data.on_missing_image.into(),
        ..DatasetOptions::new(&data.image_folder, strategy, rows)
    };
    let prepared = prepare(&records, Tokenizer::world(), &options)?;
    print_report(&prepared.report);
    // The World tokenizer's ids run 1..=65529: the model needs a row for the largest.
    if vocab_size <= Tokenizer::world().vocab_size() {
        return Err(format!(
            "the RWKV model's vocabulary has {vocab_size} ids; the LLaVA data is tokenised with the World vocabulary ({} ids)",
            Tokenizer::world().vocab_size() + 1
        )
        .into());
    }
    Ok(prepared.samples)
}

/// A bar over the run's steps: loss, samples/s, ETA.
pub fn bar_event(bar: &mut ProgressBar, history: &mut Vec<StepStats>, e: &FinetuneEvent) {
    match e {
        FinetuneEvent::Started { start_step, total_steps, samples } => {
            *bar = ProgressBar::new(*total_steps as u64);
            bar.set_style(
                ProgressStyle::with_template("{bar:30} {pos}/{len} steps · {msg} · ETA {eta}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.set_position(*start_step as u64);
            bar.println(format!("{samples} samples; steps {start_step}..{total_steps}"));
        }
        FinetuneEvent::Step(s) => {
            bar.set_message(format!(
                "loss {:.3} · {:.1} samples/s · waited {:.0} ms for data",
                s.stats.loss,
                s.samples_per_s,
                s.data_wait_s * 1e3
            ));
            bar.inc(1);
            history.push(s.stats);
        }
        FinetuneEvent::Saved { step, dir } => bar.println(format!("step {step}: saved {}", dir.display())),
    }
}

/// Reads the loss history of a run from its metrics.jsonl (all steps, also before a resume).
pub fn read_history(path: &Path) -> Vec<StepStats> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| StepStats {
            step: v["step"].as_u64().unwrap_or(0) as usize,
            loss: v["loss"].as_f64().unwrap_or(f64::NAN),
            lr: v["lr"].as_f64().unwrap_or(0.0),
            grad_norm: v["grad_norm"].as_f64().unwrap_or(0.0),
            rows: v["rows"].as_u64().unwrap_or(0) as usize,
        })
        .collect()
}

impl TrainJob for Args {
    type Output = ();

    fn devices(&self) -> Res<Vec<DeviceSpec>> {
        self.devices.list()
    }

    fn run<B>(self, devices: Vec<B::Device>) -> Res<()>
    where
        B: AutodiffBackend + RwkvBackend,
        B::InnerBackend: RwkvBackend,
    {
        let stage = self.stage();
        let prompt_arg =
            self.prompt.unwrap_or(if stage == Stage::Projector { PromptArg::First } else { PromptArg::Sandwich });
        let (strategy, scan) = (prompt_arg.strategy(), self.scan.scan());
        let prompt = value_name(&prompt_arg);
        let device = devices.first().ok_or("no device")?.clone();
        let model = self.load::<B>(&device)?;
        let rows = image_rows(&model)?;
        let samples = prepare_samples(&self.data, strategy, rows, self.ctx_len, model.rwkv.dims().vocab_size)?;
        let per_step = self.batch * self.grad_accum;
        let steps = match (self.steps, self.epochs) {
            (Some(s), _) => s,
            (None, Some(e)) => ((e * samples.len() as f64) / per_step.max(1) as f64).ceil() as usize,
            (None, None) => return Err("give --steps or --epochs".into()),
        };
        let (lr_init, lr_final) = stage_rates(stage, self.lr, self.lr_final);
        let config = FinetuneConfig {
            train: TrainConfig {
                stage,
                steps,
                batch_size: self.batch,
                lr_init,
                lr_final: lr_final.min(lr_init),
                warmup: self.warmup,
                weight_decay: self.weight_decay,
                grad_clip: self.grad_clip,
                l2wrap: true,
                seed: self.seed,
            },
            grad_accum: self.grad_accum,
            save_every: self.save_every,
            stop_after: self.stop_after,
        };
        let processor = ImageProcessor::for_tower(&model.vision.config);
        let loader = self.data.loader(processor, 2 * per_step.max(self.data.workers()));
        eprintln!(
            "stage {}: {} trainable on {}; prompt {prompt}, scan {}, image {rows} rows, {steps} steps of {} samples",
            value_name(&self.stage),
            if stage == Stage::Projector { "projector" } else { "projector + RWKV" },
            self.devices.list()?.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(","),
            value_name(&self.scan),
            per_step
        );
        let mut bar = ProgressBar::hidden();
        let mut history = Vec::new();
        let mut on_event = |e: &FinetuneEvent| bar_event(&mut bar, &mut history, e);
        let trainer = finetune::<B>(
            model,
            Arc::new(samples),
            &config,
            loader,
            scan.as_ref(),
            &devices,
            &self.out,
            self.resume,
            &mut on_event,
        )?;
        bar.finish_and_clear();
        let history = read_history(&self.out.join("metrics.jsonl"));
        if !history.is_empty() {
            crate::plots::loss(&history, &self.out.join("loss.svg"))?;
        }
        let n = history.len().clamp(1, 5);
        let mean = |it: &mut dyn Iterator<Item = f64>| it.sum::<f64>() / n as f64;
        println!(
            "trained {} steps; loss {:.4} -> {:.4} (mean of the first / last {n} steps); checkpoint {}",
            trainer.step,
            mean(&mut history.iter().take(n).map(|s| s.loss)),
            mean(&mut history.iter().rev().take(n).map(|s| s.loss)),
            self.out.join("model.safetensors").display()
        );
        Ok(())
    }
}
