//! `visualrwkv ablate`: every prompt × scan combination under the same budget and seeds, on the
//! synthetic task (trained from scratch) or on real data (`--data`: each combination fine-tuned
//! from the same checkpoint, then made to answer a benchmark's questions and scored with its
//! metric); the same paired statistics either way.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use indicatif::ProgressBar;
use visualrwkv::answering::Answerer;
use visualrwkv::demo::{
    Ablation, AblationEvent, AblationOptions, AblationRun, AblationSummary, RunStore, ablation_markdown,
    comparisons_csv, runs_csv, summarize,
};
use visualrwkv::finetune::{FinetuneConfig, FinetuneEvent, finetune};
use visualrwkv::training::{Stage, TrainConfig};
use visualrwkv::vlm::VisionOptions;
use visualrwkv::{Engine, VisualRwkv};
use visualrwkv_checkpoint::write_atomic;
use visualrwkv_eval::annotations::{JoinOptions, join, read_answer_rows};
use visualrwkv_eval::metrics::{Item, item_from_object, score};
use visualrwkv_eval::{AnswerFile, Metric, QuestionFormat, read_questions};
use visualrwkv_rwkv::RwkvBackend;
use visualrwkv_tokenizer::Tokenizer;
use visualrwkv_train::data::{generate, majority_baseline};
use visualrwkv_vision::{FusedTower, GridPooling, ImageProcessor};

use super::dataset::{DataArgs, OnMissing};
use super::eval::answer_question;
use super::train::{bar_event, image_rows, prepare_samples, stage_rates};
use crate::Res;
use crate::args::{
    DecoderKind, PromptArg, RunArgs, SamplingArgs, ScanArg, StageArg, named_prompts, named_scans, value_name,
};
use crate::device::TrainJob;
use crate::progress::TrainBar;

/// Flags of `ablate`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    run: RunArgs,
    /// Prompt layouts, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "first,last,sandwich")]
    prompts: Vec<PromptArg>,
    /// Scans, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "uni,bi,multi")]
    scans: Vec<ScanArg>,
    /// Seeds per combination.
    #[arg(long, default_value_t = 5)]
    seeds: usize,
    /// Runs trained at the same time (each on all of --devices; on the CPU they share the cores).
    #[arg(long, default_value_t = 1)]
    jobs: usize,
    /// Output folder (ablation.md, ablation.csv, comparisons.csv, ablation.json, ablation.svg;
    /// runs/PROMPT-SCAN-seedK.json with each run's result as soon as it finishes; with --data also
    /// runs/PROMPT-SCAN-seedK/ with each run's metrics and answers).
    #[arg(long, default_value = "ablation")]
    out: PathBuf,
    /// Reuse the runs already finished in --out/runs/ (an interrupted ablation continues where it
    /// stopped; runs stored under other settings are an error).
    #[arg(long)]
    resume: bool,
    #[command(flatten)]
    real: Box<RealDataArgs>,
}

/// The real-data ablation's flags (`--data` switches it on; the synthetic task's flags are then
/// unused, `--steps`, `--batch`, `--lr`, `--stage`, `--seed` and the device flags apply).
#[derive(clap::Args)]
struct RealDataArgs {
    /// A LLaVA-format JSON file: fine-tune every combination on it from --checkpoint (instead of
    /// training on the synthetic task).
    #[arg(long, requires_all = ["questions", "metric", "checkpoint"])]
    data: Option<PathBuf>,
    /// The folder the training samples' image paths are relative to.
    #[arg(long, default_value = ".")]
    image_folder: PathBuf,
    /// The questions each fine-tuned combination answers (as `eval --questions`). Without
    /// --annotations: JSON lines that also carry the reference (`answers` or `label`, optional
    /// `category`, as `score --input`).
    #[arg(long, requires = "data")]
    questions: Option<PathBuf>,
    /// The folder the questions' image paths are relative to [default: --image-folder].
    #[arg(long)]
    question_images: Option<PathBuf>,
    /// The benchmark's metric: vqa, gqa, pope, scienceqa or mme.
    #[arg(long, requires = "data", value_parser = |name: &str| Metric::from_name(name))]
    metric: Option<Metric>,
    /// The benchmark's annotation file or folder, joined with the answers as `score
    /// --annotations` does.
    #[arg(long, requires = "data")]
    annotations: Option<PathBuf>,
    /// The VisualRWKV checkpoint every combination is fine-tuned from.
    #[arg(long, requires = "data")]
    checkpoint: Option<PathBuf>,
    /// The tower's Hugging Face config.json (default: beside the checkpoint).
    #[arg(long)]
    vision_config: Option<PathBuf>,
    /// Context length in rows (image rows included).
    #[arg(long, default_value_t = 2048)]
    ctx_len: usize,
    /// Micro-batches per optimiser step.
    #[arg(long, default_value_t = 1)]
    grad_accum: usize,
    /// Passes over the data when --steps is not given.
    #[arg(long, default_value_t = 1.0)]
    epochs: f64,
    /// Maximum answer tokens.
    #[arg(long, default_value_t = 32)]
    max_tokens: usize,
    /// How the answers' single-token steps run (see `chat --help`).
    #[arg(long, value_enum, default_value_t = DecoderKind::Auto)]
    decoder: DecoderKind,
    /// Missing images (training and questions): error or skip (a skipped question scores 0 in
    /// every run).
    #[arg(long, value_enum, default_value_t = OnMissing::Error)]
    on_missing_image: OnMissing,
    /// Image-decoding worker threads (default: the CPU count).
    #[arg(long)]
    workers: Option<usize>,
    /// Keep each run's fine-tuned checkpoint (default: deleted once its answers are scored).
    #[arg(long)]
    keep_checkpoints: bool,
}

/// Layers of an ablation unless `--layers` says otherwise: with fewer than 4, the multi-directional
/// scan's layers are the bi-directional scan's.
const ABLATION_LAYERS: usize = 4;
/// Steps per run unless `--steps` says otherwise: 45 runs of 4 layers × 64 at ≈ 0.22 s per step of
/// 64 samples fit an hour on 2 cores.
const ABLATION_STEPS: usize = 300;

impl TrainJob for Args {
    type Output = ();

    fn devices(&self) -> Res<Vec<crate::device::DeviceSpec>> {
        self.run.device_list(self.jobs)
    }

    fn run<B>(self, devices: Vec<B::Device>) -> Res<()>
    where
        B: AutodiffBackend + RwkvBackend,
        B::InnerBackend: RwkvBackend,
    {
        if self.seeds == 0 {
            return Err("--seeds must be at least 1".into());
        }
        if self.real.data.is_some() {
            return self.run_on_data::<B>(devices);
        }
        let mut settings = self.run.settings()?;
        if self.run.layers.is_none() {
            settings.layers = settings.layers.max(ABLATION_LAYERS);
        }
        if self.run.steps.is_none() {
            settings.train.steps = ABLATION_STEPS;
            settings.train.warmup = settings.train.warmup.min(ABLATION_STEPS / 10);
        }
        let prompts = named_prompts(&self.prompts);
        let scans = named_scans(&self.scans);
        let out = &self.out;
        std::fs::create_dir_all(out)?;
        let jobs = self.jobs;
        let mut bar = TrainBar::new();
        let mut on_event = |e: &AblationEvent| match e {
            AblationEvent::Run { index, total, prompt, scan, seed } => {
                eprintln!("[{index}/{total}] prompt {prompt}, scan {scan}, seed {seed}")
            }
            AblationEvent::Train(e) if jobs == 1 => bar.event(e),
            AblationEvent::Train(_) => {}
            AblationEvent::Finished { index, overall, seconds, reused: false } => {
                eprintln!("[{index}] done: {:.1}% in {seconds:.0} s of training", 100.0 * overall)
            }
            AblationEvent::Finished { index, overall, reused: true, .. } => {
                eprintln!("[{index}] already done: {:.1}% (read back from runs/)", 100.0 * overall)
            }
        };
        let options = AblationOptions { seeds: self.seeds, jobs: self.jobs, store: Some(self.store()) };
        let ablation = visualrwkv::demo::ablate::<B>(&settings, &prompts, &scans, &options, &devices, &mut on_event)?;
        let splits = generate(&settings.data)?;
        let baseline = majority_baseline(&splits.train, &splits.test);
        let summary = summarize(&ablation)?;
        let report = ablation_markdown(&summary, Some(&baseline));
        let d = &settings.data;
        let header = format!(
            "# Prompt × scan ablation on the synthetic spatial VQA task\n\n{}x{} grid, {}–{} shapes, {} clutter cells; {} train / {} test images × {} questions. {} {} layers × {} (head size {}), {} steps × batch {} per run, lr {}, {} seeds per combination.\n\n",
            d.grid,
            d.grid,
            d.min_objects,
            d.max_objects,
            d.distractors,
            d.train_images,
            d.test_images,
            d.questions_per_image,
            settings.arch.label(),
            settings.layers,
            settings.width,
            settings.head_size,
            settings.train.steps,
            settings.train.batch_size,
            settings.train.lr_init,
            self.seeds,
        );
        write_reports(out, &header, &report, &ablation, &summary)
    }
}

/// Writes the ablation's reports into `out` and prints the markdown.
fn write_reports(out: &Path, header: &str, report: &str, ablation: &Ablation, summary: &AblationSummary) -> Res<()> {
    write_atomic(out.join("ablation.md"), format!("{header}{report}").as_bytes())?;
    write_atomic(out.join("ablation.csv"), runs_csv(ablation).as_bytes())?;
    write_atomic(out.join("comparisons.csv"), comparisons_csv(summary).as_bytes())?;
    let json = serde_json::json!({ "ablation": ablation, "summary": summary });
    write_atomic(out.join("ablation.json"), serde_json::to_string_pretty(&json)?.as_bytes())?;
    crate::plots::ablation(summary, &out.join("ablation.svg"))?;
    println!("{report}");
    println!("ablation.md, ablation.csv, comparisons.csv, ablation.json and ablation.svg in {}", out.display());
    Ok(())
}

/// What a real-data run is scored against: the benchmark's annotations, or references carried
/// by the question lines.
enum References {
    /// Joined with the answers as `score --annotations` does.
    Annotations(PathBuf),
    /// The question file's objects by 1-based line.
    Inline(Vec<(usize, serde_json::Map<String, serde_json::Value>)>),
}

impl References {
    /// Per-item (question type, score) of the answers in `answers` (the order is the same for
    /// every run: the annotations' or the questions').
    fn score(&self, metric: Metric, questions: &Path, answers: &Path) -> Res<Vec<(String, f64)>> {
        let rows = read_answer_rows(answers)?;
        let items: Vec<Item> = match self {
            References::Annotations(ann) => {
                let options = JoinOptions { questions: Some(questions.to_path_buf()), split: None };
                join(metric, ann, rows, &options)?.items
            }
            References::Inline(objects) => {
                let mut by_id = std::collections::HashMap::new();
                for r in rows {
                    by_id.insert(r.id.clone(), r.text);
                }
                objects
                    .iter()
                    .map(|(line, object)| {
                        let mut object = object.clone();
                        let id = object.get("question_id").map(visualrwkv_eval::id_text).unwrap_or_default();
                        let text = by_id.get(&id).cloned().unwrap_or_default();
                        object.insert("prediction".into(), serde_json::Value::String(text));
                        item_from_object(&object, metric, questions, *line)
                    })
                    .collect::<Result<_, _>>()?
            }
        };
        if items.is_empty() {
            return Err(format!("{}: no question to score", questions.display()).into());
        }
        let (scored, _) = score(metric, &items)?;
        Ok(items
            .iter()
            .zip(scored)
            .map(|(item, s)| {
                let kind = item.groups.iter().find(|(d, _)| d == "category").map_or("all", |(_, v)| v.as_str());
                (kind.to_string(), s.score)
            })
            .collect())
    }
}

impl Args {
    /// Where each finished run is kept (`--out/runs/`), reused with `--resume`.
    fn store(&self) -> RunStore {
        RunStore { dir: self.out.join("runs"), resume: self.resume }
    }

    /// The real-data ablation: for each prompt × scan × seed, fine-tune from the checkpoint on the
    /// data laid out with that prompt, answer the questions with the same prompt and scan, score
    /// them; then the same statistics as the synthetic task, with the benchmark's categories as
    /// question types.
    fn run_on_data<B>(self, devices: Vec<B::Device>) -> Res<()>
    where
        B: AutodiffBackend + RwkvBackend,
        B::InnerBackend: RwkvBackend,
    {
        let r = &self.real;
        let (Some(data), Some(questions), Some(metric), Some(checkpoint)) =
            (&r.data, &r.questions, r.metric, &r.checkpoint)
        else {
            return Err("--data needs --questions, --metric and --checkpoint".into());
        };
        if self.jobs != 1 {
            return Err("--jobs applies to the synthetic task; with --data the runs go one after another (each on all of --devices)".into());
        }
        let spec = self.run.device_list(1)?.into_iter().next().ok_or("no device")?;
        let device = devices.first().ok_or("no device")?.clone();
        let options = VisionOptions { layer: -1, pooling: GridPooling::from_grid_size(-1)? };
        let base = VisualRwkv::<B>::load_checkpoint(checkpoint, r.vision_config.as_deref(), options, &device)?;
        let rows = image_rows(&base)?;
        let references = match &r.annotations {
            Some(a) => References::Annotations(a.clone()),
            None if questions.extension().is_some_and(|e| e == "jsonl") => {
                References::Inline(visualrwkv_eval::read_json_lines(questions)?)
            }
            None => {
                return Err(format!(
                    "{}: without --annotations the questions must be JSON lines (.jsonl) carrying `answers` or `label`",
                    questions.display()
                )
                .into());
            }
        };
        let asked = read_questions(questions, QuestionFormat::Auto)?;
        let data_args = DataArgs {
            data: data.clone(),
            image_folder: r.image_folder.clone(),
            on_missing_image: r.on_missing_image,
            workers: r.workers,
        };
        let question_images = r.question_images.clone().unwrap_or_else(|| r.image_folder.clone());
        let stage = match self.run.stage {
            StageArg::Full => Stage::Full,
            StageArg::Projector => Stage::Projector,
        };
        let (lr_init, lr_final) = stage_rates(stage, self.run.lr, None);
        let batch = self.run.batch.unwrap_or(8);
        let per_step = batch * r.grad_accum;
        let processor = ImageProcessor::for_tower(&base.vision.config);
        let loader = data_args.loader(processor, 2 * per_step.max(data_args.workers()));
        let sampling = SamplingArgs::evaluation(r.decoder, 0.0, 1.0, r.max_tokens, 0);
        std::fs::create_dir_all(&self.out)?;
        let store = self.store();
        let total = self.prompts.len() * self.scans.len() * self.seeds;
        let (mut runs, mut kinds, mut steps_run, mut samples_n) = (Vec::with_capacity(total), Vec::new(), 0, 0);
        for prompt in &self.prompts {
            let samples =
                Arc::new(prepare_samples(&data_args, prompt.strategy(), rows, r.ctx_len, base.rwkv.dims().vocab_size)?);
            samples_n = samples.len();
            let steps = self
                .run
                .steps
                .unwrap_or_else(|| ((r.epochs * samples.len() as f64) / per_step as f64).ceil() as usize)
                .max(1);
            steps_run = steps;
            for scan_arg in &self.scans {
                for k in 0..self.seeds as u64 {
                    let (pn, sn) = (value_name(prompt), value_name(scan_arg));
                    let name = format!("{pn}-{sn}-seed{k}");
                    let dir = self.out.join("runs").join(&name);
                    eprintln!(
                        "[{}/{total}] prompt {pn}, scan {sn}, seed {k}: {steps} steps of {per_step} samples",
                        runs.len() + 1
                    );
                    let config = FinetuneConfig {
                        train: TrainConfig {
                            stage,
                            steps,
                            batch_size: batch,
                            lr_init,
                            lr_final: lr_final.min(lr_init),
                            warmup: 0,
                            weight_decay: 0.0,
                            grad_clip: 1.0,
                            l2wrap: true,
                            seed: self.run.seed + k,
                        },
                        grad_accum: r.grad_accum,
                        save_every: 0,
                        stop_after: None,
                    };
                    // Everything this run's scores depend on besides its prompt, scan and seed.
                    let fingerprint = format!(
                        "{config:?}; data {}; images {}; checkpoint {}; questions {}; question images {}; annotations {:?}; metric {}; ctx_len {}; max_tokens {}",
                        data.display(),
                        r.image_folder.display(),
                        checkpoint.display(),
                        questions.display(),
                        question_images.display(),
                        r.annotations,
                        metric.name(),
                        r.ctx_len,
                        r.max_tokens,
                    );
                    if let Some((run, stored_kinds)) = store.load(&fingerprint, &pn, &sn, k)? {
                        eprintln!(
                            "[{}] already done: {:.1}% (read back from runs/)",
                            runs.len() + 1,
                            100.0 * run.overall
                        );
                        kinds = stored_kinds;
                        runs.push(run);
                        continue;
                    }
                    let scan = scan_arg.scan();
                    let (mut bar, mut history) = (ProgressBar::hidden(), Vec::new());
                    let mut on_event = |e: &FinetuneEvent| bar_event(&mut bar, &mut history, e);
                    let t0 = Instant::now();
                    let trainer = finetune::<B>(
                        base.clone(),
                        samples.clone(),
                        &config,
                        loader.clone(),
                        scan.as_ref(),
                        &devices,
                        &dir,
                        false,
                        &mut on_event,
                    )?;
                    bar.finish_and_clear();
                    let train_seconds = t0.elapsed().as_secs_f64();
                    let model = trainer.model.valid();
                    let strategy = prompt.strategy();
                    let decoder = sampling.decoder_for(&model.rwkv, &spec)?;
                    let mut answerer = Answerer::new(
                        &model,
                        scan.as_ref(),
                        strategy.as_ref(),
                        Tokenizer::world(),
                        sampling.options()?,
                        Engine::from(decoder.as_ref()),
                        16,
                    );
                    let tower = decoder.as_ref().map(|_| FusedTower::new(&model.vision));
                    if let Some(tower) = &tower {
                        answerer = answerer.with_fused_tower(tower);
                    }
                    let answers_path = dir.join("answers.jsonl");
                    let mut file = AnswerFile::create(&answers_path)?;
                    for q in &asked {
                        if let Some(a) =
                            answer_question(&mut answerer, q, questions, &question_images, r.on_missing_image, &name)?
                        {
                            file.write(&a)?;
                        }
                    }
                    file.sync()?;
                    drop(file);
                    let scored = references.score(metric, questions, &answers_path)?;
                    if !r.keep_checkpoints {
                        let _ = std::fs::remove_file(dir.join("model.safetensors"));
                        let _ = std::fs::remove_dir_all(dir.join(visualrwkv::training::TRAINER_DIR));
                    }
                    let run = data_run(&pn, &sn, k, &scored, train_seconds);
                    eprintln!(
                        "[{}] done: {metric_name} {:.1}% in {train_seconds:.0} s of training",
                        runs.len() + 1,
                        100.0 * run.overall,
                        metric_name = metric.name()
                    );
                    kinds = scored.into_iter().map(|x| x.0).collect();
                    store.save(&fingerprint, &run, &kinds)?;
                    runs.push(run);
                }
            }
        }
        let ablation = Ablation { runs, kinds };
        let summary = summarize(&ablation)?;
        let report = ablation_markdown(&summary, None);
        let header = format!(
            "# Prompt × scan ablation on {}\n\nEach combination fine-tuned (stage {}) from {} on {} ({samples_n} samples): {steps_run} steps × {per_step} samples, lr {lr_init}, {} seeds (data order); scored with `{}` on {} ({} questions).\n\n",
            data.display(),
            value_name(&self.run.stage),
            checkpoint.display(),
            data.display(),
            self.seeds,
            metric.name(),
            questions.display(),
            ablation.kinds.len(),
        );
        write_reports(&self.out, &header, &report, &ablation, &summary)
    }
}

/// A real-data run's record: per-item scores and their means per question type.
fn data_run(prompt: &str, scan: &str, seed: u64, scored: &[(String, f64)], train_seconds: f64) -> AblationRun {
    let mean = |it: &mut dyn Iterator<Item = f64>| {
        let v: Vec<f64> = it.collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    };
    let mut types: Vec<String> = Vec::new();
    for (k, _) in scored {
        if !types.contains(k) {
            types.push(k.clone());
        }
    }
    AblationRun {
        prompt: prompt.to_string(),
        scan: scan.to_string(),
        seed,
        overall: mean(&mut scored.iter().map(|x| x.1)),
        per_type: types
            .iter()
            .map(|t| (t.clone(), mean(&mut scored.iter().filter(|x| &x.0 == t).map(|x| x.1))))
            .collect(),
        scores: scored.iter().map(|x| x.1).collect(),
        train_seconds,
    }
}
