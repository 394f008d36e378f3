//! `visualrwkv demo` and `visualrwkv ablate`: train a tiny VisualRWKV from scratch on the
//! synthetic spatial VQA task (`visualrwkv_train::data`) on any autodiff backend (the CPU by
//! default, a GPU, or several devices data-parallel), and compare prompt layouts and scans under
//! the same budget. Progress reaches the caller as [`RunEvent`]s; drawing it is the app's job.
//!
//! # Shapes
//!
//! Images `grid · cell_px` pixels square (one tower patch per grid cell); see
//! [`crate::training`] for the model's tensors.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::backend::AutodiffBackend;
use visualrwkv_prompt::PromptStrategy;
use visualrwkv_rwkv::RwkvBackend;
use visualrwkv_scan::Scan;
use visualrwkv_tokenizer::Tokenizer;
use visualrwkv_train::data::{Baseline, DataConfig, QuestionType, Splits, generate, majority_baseline};
use visualrwkv_train::stats::{Claim, Interval, RESAMPLES, Verdict, bootstrap, paired, verdict};

use visualrwkv_rwkv::Arch;

use crate::training::{
    Accuracy, LmInit, ModelConfig, StepStats, TaskData, TrainConfig, TrainError, Trainer, Vocab, answer, append_line,
    evaluate, for_eval, io_error,
};

/// Settings of one training run on the synthetic task.
#[derive(Clone, Debug)]
pub struct RunSettings {
    /// The dataset.
    pub data: DataConfig,
    /// The language model's architecture (RWKV-6 x060 or RWKV-7 x070).
    pub arch: Arch,
    /// RWKV width.
    pub width: usize,
    /// RWKV layers.
    pub layers: usize,
    /// RWKV head size (the recurrent state is `width / head_size` heads of `head_size²`).
    pub head_size: usize,
    /// Standard deviation of the tower's frozen position embeddings ([`ModelConfig::position_std`]).
    pub position_std: f64,
    /// How text becomes ids.
    pub vocab: Vocab,
    /// How the language model's first weights are drawn.
    pub init: LmInit,
    /// Optimisation.
    pub train: TrainConfig,
    /// Seed of the model's initialisation.
    pub model_seed: u64,
    /// Test questions evaluated (all when `None`).
    pub eval_limit: Option<usize>,
}

impl Default for RunSettings {
    fn default() -> Self {
        Self::preset(Task::Spatial)
    }
}

/// Presets of the synthetic task and the model trained on it (`docs/ablations.md` gives the
/// reasoning behind each).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Task {
    /// 3×3 grid, 2–5 shapes, the six question types of the first version of the task (colour,
    /// shape in a cell, left of, above, count, exists).
    Easy,
    /// 3×3 grid, 2–5 shapes, all eight question types: the four neighbour directions make the
    /// reading order matter (the evidence for "left of X" comes right before X in a row-major
    /// reading, for "right of X" right after it).
    #[default]
    Spatial,
    /// 6×6 grid, 6–12 shapes and 8 clutter cells, all eight types, and a small recurrent state
    /// (head size 8): more content than the state holds, so reading the question before the image
    /// pays.
    Capacity,
}

/// Peak learning rate of the presets (cosine decay to 1/30 of it after the warmup).
pub const DEMO_LR: f64 = 2e-3;

impl RunSettings {
    /// The settings of a task preset (the demo's defaults are [`Task::Spatial`]).
    pub fn preset(task: Task) -> Self {
        let base = DataConfig { train_images: 20_000, ..DataConfig::default() };
        let data = match task {
            Task::Easy => DataConfig {
                types: vec![
                    QuestionType::Color,
                    QuestionType::ShapeAt,
                    QuestionType::LeftOf,
                    QuestionType::Above,
                    QuestionType::Count,
                    QuestionType::Exists,
                ],
                ..base
            },
            Task::Spatial => base,
            Task::Capacity => DataConfig { grid: 6, min_objects: 6, max_objects: 12, distractors: 8, ..base },
        };
        Self {
            data,
            arch: Arch::X060,
            width: 64,
            // Three layers: with the multi-directional scan, row-major, reversed and column-major
            // readings, so every neighbour but one is adjacent in some layer.
            layers: if task == Task::Capacity { 4 } else { 3 },
            head_size: if task == Task::Capacity { 8 } else { 16 },
            position_std: 0.02,
            vocab: Vocab::default(),
            // `LmInit::Trainer` stays at the answer prior here: its tiny embeddings are frozen
            // (docs/training.md).
            init: LmInit::Random,
            // Batches of 64: at 16 the positional questions stay at their prior for thousands of
            // steps. Peak rate 2e-3: 3e-3 leaves some seeds short of a type at 2 000 steps
            // (docs/training.md).
            train: TrainConfig { steps: 2000, batch_size: 64, ..TrainConfig::default() }.with_peak_lr(DEMO_LR),
            model_seed: 0,
            eval_limit: None,
        }
    }
}

impl RunSettings {
    /// The model these settings train, for the task vocabulary `tokenizer`.
    pub fn model_config(&self, tokenizer: &Tokenizer) -> Result<ModelConfig, TrainError> {
        if self.head_size == 0 || !self.width.is_multiple_of(self.head_size) {
            return Err(TrainError::HeadSize { width: self.width, head_size: self.head_size });
        }
        let mut config = ModelConfig::tiny(&self.data, self.width, self.layers, tokenizer);
        config.rwkv.head_size = self.head_size;
        config.rwkv.n_head = self.width / self.head_size;
        config.position_std = self.position_std;
        config.init = self.init;
        config.arch = self.arch;
        Ok(config)
    }
}

/// What [`run`] reports while it works.
#[derive(Clone, Debug, PartialEq)]
pub enum RunEvent {
    /// Training starts: `steps` optimiser steps on `devices` devices.
    Started {
        /// Steps to run.
        steps: usize,
        /// Devices training data-parallel (1: one device).
        devices: usize,
    },
    /// An optimiser step finished.
    Step {
        /// What it did.
        stats: StepStats,
        /// Sequence rows per second of wall time since the previous step.
        tokens_per_s: f64,
    },
    /// Training finished; the held-out questions are being answered.
    Evaluating {
        /// Questions to answer.
        questions: usize,
    },
}

/// The outcome of one run on the autodiff backend `B`.
pub struct RunResult<B: AutodiffBackend + RwkvBackend>
where
    B::InnerBackend: RwkvBackend,
{
    /// The trainer at the end (model, optimisers, step).
    pub trainer: Trainer<B>,
    /// Per-step statistics.
    pub history: Vec<StepStats>,
    /// Held-out (test) accuracy.
    pub accuracy: Accuracy,
    /// The majority-answer baseline on the test split.
    pub baseline: Baseline,
    /// Training wall time in seconds.
    pub train_seconds: f64,
    /// The splits.
    pub splits: Splits,
    /// The prepared test split.
    pub test: TaskData<B::InnerBackend>,
    /// The tokenizer the model was trained with.
    pub tokenizer: Tokenizer,
}

/// Writes one line of metrics per step as JSON (`metrics.jsonl`) and CSV (`metrics.csv`), each
/// line in one write: a run killed at any moment leaves whole lines.
pub struct MetricsWriter {
    dir: PathBuf,
    /// The two files with their paths, opened at the first step.
    files: Option<[(std::fs::File, PathBuf); 2]>,
}

impl MetricsWriter {
    /// A writer of the two files in `dir`: they are created (truncated) at the first step, so a
    /// run that fails before training leaves nothing behind.
    pub fn create(dir: &Path) -> Result<Self, TrainError> {
        Ok(Self { dir: dir.to_path_buf(), files: None })
    }

    fn open(&mut self) -> Result<&mut [(std::fs::File, PathBuf); 2], TrainError> {
        let files = match self.files.take() {
            Some(files) => files,
            None => {
                let dir = &self.dir;
                std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
                let open = |name: &str| {
                    let path = dir.join(name);
                    std::fs::File::create(&path).map(|f| (f, path.clone())).map_err(|e| io_error(&path, e))
                };
                let (jsonl, mut csv) = (open("metrics.jsonl")?, open("metrics.csv")?);
                append_line(&mut csv.0, &csv.1, "step,loss,lr,grad_norm,rows,tokens_per_s")?;
                [jsonl, csv]
            }
        };
        Ok(self.files.insert(files))
    }

    /// Appends a step.
    pub fn write(&mut self, s: &StepStats, tokens_per_s: f64) -> Result<(), TrainError> {
        let line = serde_json::json!({
            "step": s.step, "loss": s.loss, "lr": s.lr, "grad_norm": s.grad_norm, "rows": s.rows,
            "tokens_per_s": tokens_per_s,
        });
        let row = format!("{},{},{},{},{},{:.1}", s.step, s.loss, s.lr, s.grad_norm, s.rows, tokens_per_s);
        let [jsonl, csv] = self.open()?;
        append_line(&mut jsonl.0, &jsonl.1, &line.to_string())?;
        append_line(&mut csv.0, &csv.1, &row)
    }
}

/// Trains one model on the synthetic task on `devices` (one: plain training; several:
/// data-parallel, feature `collective`) and evaluates it on the test split (on the first device).
/// The model is initialised on the first device from `settings.model_seed`. `on_event` sees the
/// progress; `metrics` receives one line per step.
pub fn run<B>(
    settings: &RunSettings,
    strategy: &dyn PromptStrategy,
    scan: &dyn Scan,
    devices: &[B::Device],
    on_event: &mut (dyn FnMut(&RunEvent) + Send),
    mut metrics: Option<&mut MetricsWriter>,
) -> Result<RunResult<B>, TrainError>
where
    B: AutodiffBackend + RwkvBackend,
    B::InnerBackend: RwkvBackend,
{
    let device = devices.first().ok_or(TrainError::NoDevice)?;
    let splits = generate(&settings.data)?;
    let baseline = majority_baseline(&splits.train, &splits.test);
    let tokenizer = settings.vocab.tokenizer(&splits.train);
    // The backend's generator is global: runs of a parallel ablation seed and draw in turn.
    let config = settings.model_config(&tokenizer)?;
    let model = visualrwkv_rwkv::seeded::<B, _>(device, settings.model_seed, || config.init::<B>(device))?;
    let inner = for_eval(&model);
    let train = TaskData::prepare(&splits.train, settings.data.cell_px, &inner, strategy, &tokenizer)?;
    let test = TaskData::prepare(&splits.test, settings.data.cell_px, &inner, strategy, &tokenizer)?;

    on_event(&RunEvent::Started { steps: settings.train.steps, devices: devices.len() });
    let start = Instant::now();
    let mut history = Vec::with_capacity(settings.train.steps);
    let mut last = Instant::now();
    let mut failed_write = None;
    let mut on_step = |s: &StepStats| {
        let tokens_per_s = s.rows as f64 / last.elapsed().as_secs_f64().max(1e-9);
        last = Instant::now();
        if let Some(m) = metrics.as_deref_mut()
            && let Err(e) = m.write(s, tokens_per_s)
        {
            failed_write.get_or_insert(e);
        }
        on_event(&RunEvent::Step { stats: *s, tokens_per_s });
        history.push(*s);
    };
    let trainer = crate::parallel::train_parallel(model, settings.train.clone(), &train, devices, scan, &mut on_step)?;
    if let Some(e) = failed_write {
        return Err(e);
    }
    let train_seconds = start.elapsed().as_secs_f64();
    let questions = settings.eval_limit.unwrap_or(test.examples.len()).min(test.examples.len());
    on_event(&RunEvent::Evaluating { questions });
    let accuracy = evaluate(&for_eval(&trainer.model), &test, scan, &tokenizer, settings.eval_limit)?;
    Ok(RunResult { trainer, history, accuracy, baseline, train_seconds, splits, test, tokenizer })
}

/// The accuracy table of a run next to the baseline, in markdown.
pub fn accuracy_table(accuracy: &Accuracy, baseline: &Baseline) -> String {
    let mut t = String::from("| question type | accuracy | majority baseline | baseline answer |\n|---|---|---|---|\n");
    for q in QuestionType::ALL.into_iter().filter(|q| accuracy.per_type.contains_key(q.name())) {
        let (ans, acc, _) = baseline.per_type.get(&q).cloned().unwrap_or_default();
        let n = accuracy.per_type.get(q.name()).map_or(0, |x| x.1);
        t.push_str(&format!("| {} ({n}) | {:.1}% | {:.1}% | {ans} |\n", q.name(), 100.0 * accuracy.of(q), 100.0 * acc));
    }
    t.push_str(&format!(
        "| **all** | **{:.1}%** | **{:.1}%** | |\n",
        100.0 * accuracy.overall(),
        100.0 * baseline.overall
    ));
    t
}

/// Greedy answers to the first `n` test questions: `(question, expected, got, ascii image)`;
/// each image is also saved as `example-{i}.png` in `dir` when given.
pub fn examples<B>(
    result: &RunResult<B>,
    n: usize,
    cell_px: usize,
    scan: &dyn Scan,
    dir: Option<&Path>,
) -> Result<Vec<(String, String, String, String)>, TrainError>
where
    B: AutodiffBackend + RwkvBackend,
    B::InnerBackend: RwkvBackend,
{
    let model = for_eval(&result.trainer.model);
    let tokenizer = &result.tokenizer;
    let mut out = Vec::new();
    for i in 0..n.min(result.test.examples.len()) {
        let e = &result.test.examples[i];
        let got = answer(&model, &result.test, i, scan, tokenizer)?;
        let scene =
            result.splits.test.scenes.get(e.image).ok_or_else(|| TrainError::MissingImage(e.image.to_string()))?;
        if let Some(dir) = dir {
            let path = dir.join(format!("example-{i}.png"));
            visualrwkv_vision::save_image(&scene.render(cell_px), &path).map_err(|e| io_error(&path, e))?;
        }
        out.push((e.question.clone(), e.answer.clone(), got, scene.ascii()));
    }
    Ok(out)
}

/// One ablation run's held-out accuracy.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AblationRun {
    /// Prompt strategy name.
    pub prompt: String,
    /// Scan name.
    pub scan: String,
    /// Seed offset (model initialisation and batch order).
    pub seed: u64,
    /// Accuracy over all test questions.
    pub overall: f64,
    /// Accuracy per question type name (the types of the test split, in [`QuestionType::ALL`]
    /// order).
    pub per_type: Vec<(String, f64)>,
    /// Per test question, in the split's order: 1.0 right, 0.0 wrong.
    pub scores: Vec<f64>,
    /// Training seconds.
    pub train_seconds: f64,
}

/// Every run of an ablation and what its test questions are.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Ablation {
    /// The runs, by prompt, then scan, then seed.
    pub runs: Vec<AblationRun>,
    /// The question type name of each test question (the same questions for every run).
    pub kinds: Vec<String>,
}

/// Where an ablation keeps each finished run, so that an interrupted ablation resumes where it
/// stopped: run `PROMPT × SCAN` with seed offset `k` is written to `dir/PROMPT-SCAN-seedK.json`
/// (atomically) as soon as it finishes, with the settings it was trained under. With `resume`, a
/// run whose file is there is read back instead of trained again; a file written under other
/// settings is an error (a changed experiment belongs in a new folder), so a resumed ablation
/// equals an uninterrupted one.
#[derive(Clone, Debug)]
pub struct RunStore {
    /// The folder of run files (created when missing).
    pub dir: PathBuf,
    /// Reuse the runs already in `dir` (otherwise they are trained again and overwritten).
    pub resume: bool,
}

/// A run file's content.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredRun {
    /// What the run's result depends on.
    settings: String,
    run: AblationRun,
    /// The question type of each test question.
    kinds: Vec<String>,
}

impl RunStore {
    /// The file of run `prompt × scan` with seed offset `seed`. Characters outside
    /// `[A-Za-z0-9_.]` in the names become `_` (the file records the names too, checked on reading).
    pub fn path(&self, prompt: &str, scan: &str, seed: u64) -> PathBuf {
        let clean = |n: &str| -> String {
            n.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '.' { c } else { '_' }).collect()
        };
        self.dir.join(format!("{}-{}-seed{seed}.json", clean(prompt), clean(scan)))
    }

    /// When resuming and the run's file exists: the stored run and its test questions' types.
    /// `settings` describes everything the run's result depends on (for the synthetic task, the
    /// run's [`RunSettings`] as `{:?}` prints them); a file stored under other settings is an error.
    pub fn load(
        &self,
        settings: &str,
        prompt: &str,
        scan: &str,
        seed: u64,
    ) -> Result<Option<(AblationRun, Vec<String>)>, TrainError> {
        let key = (prompt, scan, seed);
        let path = self.path(prompt, scan, seed);
        if !self.resume || !path.exists() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path).map_err(|e| io_error(&path, e))?;
        let stored: StoredRun = serde_json::from_str(&text).map_err(|e| io_error(&path, e))?;
        let same_run = (stored.run.prompt.as_str(), stored.run.scan.as_str(), stored.run.seed) == key;
        if !same_run || stored.settings != settings {
            let message = format!(
                "run {prompt} × {scan}, seed {seed} was trained under other settings than this ablation's; resume into a new folder"
            );
            return Err(io_error(&path, message));
        }
        Ok(Some((stored.run, stored.kinds)))
    }

    /// Writes a finished run trained under `settings` (as [`RunStore::load`] takes them) with its
    /// test questions' types.
    pub fn save(&self, settings: &str, run: &AblationRun, kinds: &[String]) -> Result<(), TrainError> {
        std::fs::create_dir_all(&self.dir).map_err(|e| io_error(&self.dir, e))?;
        let path = self.path(&run.prompt, &run.scan, run.seed);
        let stored = StoredRun { settings: settings.to_string(), run: run.clone(), kinds: kinds.to_vec() };
        let json = serde_json::to_string(&stored).map_err(|e| io_error(&path, e))?;
        visualrwkv_checkpoint::write_atomic(&path, json.as_bytes()).map_err(|e| io_error(&path, e))
    }
}

/// What [`ablate`] reports while it works.
#[derive(Clone, Debug, PartialEq)]
pub enum AblationEvent {
    /// Run `index` (1-based) of `total` starts.
    Run {
        /// This run's number, from 1.
        index: usize,
        /// Runs in all.
        total: usize,
        /// Prompt layout name.
        prompt: String,
        /// Scan name.
        scan: String,
        /// Seed offset.
        seed: u64,
    },
    /// Progress of a run (with `jobs > 1`, of whichever run sent it).
    Train(RunEvent),
    /// Run `index` finished.
    Finished {
        /// Its number, from 1.
        index: usize,
        /// Its held-out accuracy.
        overall: f64,
        /// Its training seconds.
        seconds: f64,
        /// Read back from the [`RunStore`] instead of trained.
        reused: bool,
    },
}

/// How an ablation is run: seeds per combination, runs at a time, and where finished runs are
/// kept.
#[derive(Clone, Debug)]
pub struct AblationOptions {
    /// Seeds per combination (run `k` of every combination uses seed offset `k`). Runs go seed
    /// by seed (every combination's seed 0, then seed 1, …), so an interrupted ablation kept in a
    /// store can be summarised over the seeds it finished.
    pub seeds: usize,
    /// Runs trained at the same time (each on all of the devices; on the CPU they share the
    /// cores). The result does not depend on it.
    pub jobs: usize,
    /// Where each finished run is saved (and, when resuming, read back from).
    pub store: Option<RunStore>,
}

impl Default for AblationOptions {
    /// 5 seeds, one run at a time, nothing kept.
    fn default() -> Self {
        Self { seeds: 5, jobs: 1, store: None }
    }
}

/// Trains every `prompt × scan` combination for each seed with the same settings and budget on
/// `devices` (the dataset is the same for all runs; seed offset `k` shifts the model's
/// initialisation and the batch order by `k`), `options.jobs` runs at a time. Named strategies
/// can be user-defined types (see `examples/ablate_custom.rs`). With a store, each finished run
/// is saved at once and, when resuming, runs already saved are read back (see [`RunStore`]).
pub fn ablate<B>(
    settings: &RunSettings,
    prompts: &[(String, Box<dyn PromptStrategy>)],
    scans: &[(String, Box<dyn Scan>)],
    options: &AblationOptions,
    devices: &[B::Device],
    on_event: &mut (dyn FnMut(&AblationEvent) + Send),
) -> Result<Ablation, TrainError>
where
    B: AutodiffBackend + RwkvBackend,
    B::InnerBackend: RwkvBackend,
{
    let AblationOptions { seeds, jobs, ref store } = *options;
    let store = store.as_ref();
    if seeds == 0 {
        return Err(TrainError::AtLeastOne("the number of seeds"));
    }
    if jobs == 0 {
        return Err(TrainError::AtLeastOne("the number of jobs"));
    }
    // Seed by seed, so that an interrupted ablation holds whole seeds of every combination (a
    // smaller `seeds` then summarises it); results are stored by prompt, then scan, then seed.
    let n_scans = scans.len();
    let work: Vec<(usize, usize, u64)> = (0..seeds as u64)
        .flat_map(|k| (0..prompts.len()).flat_map(move |p| (0..n_scans).map(move |s| (p, s, k))))
        .collect();
    let total = work.len();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let events = std::sync::Mutex::new(on_event);
    let emit = |e: &AblationEvent| {
        if let Ok(mut f) = events.lock() {
            f(e)
        }
    };
    // Per work item: the run and its test questions' types, once finished.
    type Outcome = Result<(AblationRun, Vec<String>), TrainError>;
    let results: std::sync::Mutex<Vec<Option<Outcome>>> = std::sync::Mutex::new((0..total).map(|_| None).collect());
    let failed = std::sync::atomic::AtomicBool::new(false);
    let worker = || {
        loop {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if i >= total || failed.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
            let (p, sc, seed) = work[i];
            let ((pn, prompt), (sn, scan)) = (&prompts[p], &scans[sc]);
            let mut s = settings.clone();
            s.model_seed = settings.model_seed + seed;
            s.train.seed = settings.train.seed + seed;
            emit(&AblationEvent::Run { index: i + 1, total, prompt: pn.clone(), scan: sn.clone(), seed });
            let fingerprint = format!("{s:?}");
            let stored = match store {
                Some(st) => st.load(&fingerprint, pn, sn, seed),
                None => Ok(None),
            };
            let reused = matches!(stored, Ok(Some(_)));
            let outcome = stored.and_then(|found| match found {
                Some(found) => Ok(found),
                None => {
                    let mut forward = |e: &RunEvent| emit(&AblationEvent::Train(e.clone()));
                    let r = run::<B>(&s, prompt.as_ref(), scan.as_ref(), devices, &mut forward, None)?;
                    let present: Vec<QuestionType> =
                        QuestionType::ALL.into_iter().filter(|q| r.accuracy.per_type.contains_key(q.name())).collect();
                    let run = AblationRun {
                        prompt: pn.clone(),
                        scan: sn.clone(),
                        seed,
                        overall: r.accuracy.overall(),
                        per_type: present.iter().map(|q| (q.name().to_string(), r.accuracy.of(*q))).collect(),
                        scores: r.accuracy.items.iter().map(|x| x.1).collect(),
                        train_seconds: r.train_seconds,
                    };
                    let kinds: Vec<String> = r.accuracy.items.iter().map(|x| x.0.clone()).collect();
                    if let Some(st) = store {
                        st.save(&fingerprint, &run, &kinds)?;
                    }
                    Ok((run, kinds))
                }
            });
            match &outcome {
                Ok((run, _)) => emit(&AblationEvent::Finished {
                    index: i + 1,
                    overall: run.overall,
                    seconds: run.train_seconds,
                    reused,
                }),
                Err(_) => failed.store(true, std::sync::atomic::Ordering::SeqCst),
            }
            let slot = (p * n_scans + sc) * seeds + seed as usize;
            results.lock().unwrap_or_else(|e| e.into_inner())[slot] = Some(outcome);
        }
    };
    std::thread::scope(|scope| {
        for _ in 1..jobs.min(total) {
            scope.spawn(worker);
        }
        worker();
    });
    // A poisoned lock still holds every result written before the panic.
    let results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    let mut runs = Vec::with_capacity(total);
    let mut kinds = Vec::new();
    for r in results.into_iter().flatten() {
        let (run, k) = r?;
        kinds = k;
        runs.push(run);
    }
    if runs.len() != total {
        return Err(TrainError::AblationIncomplete { finished: runs.len(), total });
    }
    Ok(Ablation { runs, kinds })
}

/// Which factor two variants differ in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Factor {
    /// The prompt layout (paired within each scan).
    Prompt,
    /// The scan (paired within each prompt layout).
    Scan,
}

/// One combination's accuracy with its 95 % interval, overall and per question type.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ComboSummary {
    /// Prompt layout.
    pub prompt: String,
    /// Scan.
    pub scan: String,
    /// Accuracy over all test questions and seeds.
    pub overall: Interval,
    /// Per question type.
    pub per_type: Vec<(String, Interval)>,
}

/// The paired difference `A − B` between two variants of one factor, pooled over the other
/// factor's values and over seeds, with its 95 % interval and the verdict on `claim`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Comparison {
    /// What differs.
    pub factor: Factor,
    /// Variant A.
    pub a: String,
    /// Variant B.
    pub b: String,
    /// The claim tested (`A > B`, or `A ≈ B` within a margin).
    pub claim: Claim,
    /// Where the claim comes from ("Table 3", "Table 4"), or `None` for a pair the paper does not
    /// order.
    pub source: Option<String>,
    /// `A − B` over all test questions.
    pub overall: Interval,
    /// `A − B` per question type.
    pub per_type: Vec<(String, Interval)>,
    /// The verdict on `claim`, from `overall`'s interval.
    pub verdict: Verdict,
}

/// A paper ordering made of several pairwise claims.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Ordering {
    /// The ordering as the paper states it.
    pub name: String,
    /// The comparisons it consists of (indices into [`AblationSummary::comparisons`]).
    pub parts: Vec<usize>,
    /// All parts reproduced: reproduced; any contradicted: contradicted; else inconclusive.
    pub verdict: Verdict,
}

/// Everything an ablation report shows.
#[derive(Clone, Debug, serde::Serialize)]
pub struct AblationSummary {
    /// Per combination.
    pub combos: Vec<ComboSummary>,
    /// The paper's pairwise claims present in the ablation, then every other pair of variants.
    pub comparisons: Vec<Comparison>,
    /// The paper's orderings whose variants are all present.
    pub orderings: Vec<Ordering>,
    /// Seeds per combination.
    pub seeds: usize,
    /// Test questions per run.
    pub items: usize,
}

/// Half-width of the band within which two variants count as equivalent (`bi ≈ multi`): two
/// accuracy points.
pub const EQUIVALENCE_MARGIN: f64 = 0.02;

/// The paper's pairwise claims: Table 3 (sandwich > image-first > image-last) and Table 4
/// (bi ≈ multi > uni).
fn paper_claims() -> Vec<(Factor, &'static str, &'static str, Claim, &'static str)> {
    let eq = Claim::Equivalent { margin: EQUIVALENCE_MARGIN };
    vec![
        (Factor::Prompt, "sandwich", "first", Claim::Better, "Table 3"),
        (Factor::Prompt, "first", "last", Claim::Better, "Table 3"),
        (Factor::Prompt, "sandwich", "last", Claim::Better, "Table 3"),
        (Factor::Scan, "bi", "uni", Claim::Better, "Table 4"),
        (Factor::Scan, "multi", "uni", Claim::Better, "Table 4"),
        (Factor::Scan, "multi", "bi", eq, "Table 4"),
    ]
}

fn names(runs: &[AblationRun], factor: Factor) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in runs {
        let n = if factor == Factor::Prompt { &r.prompt } else { &r.scan };
        if !out.contains(n) {
            out.push(n.clone());
        }
    }
    out
}

/// Scores `[seed][item]` of the runs of `variant` of `factor`, averaged over the other factor.
fn variant_table(runs: &[AblationRun], factor: Factor, variant: &str) -> Vec<Vec<f64>> {
    let mut seeds: Vec<u64> = runs.iter().map(|r| r.seed).collect();
    seeds.sort_unstable();
    seeds.dedup();
    seeds
        .iter()
        .map(|&seed| {
            let sel: Vec<&AblationRun> = runs
                .iter()
                .filter(|r| r.seed == seed && (if factor == Factor::Prompt { &r.prompt } else { &r.scan }) == variant)
                .collect();
            let n = sel.first().map_or(0, |r| r.scores.len());
            (0..n)
                .map(|i| sel.iter().map(|r| r.scores.get(i).copied().unwrap_or(0.0)).sum::<f64>() / sel.len() as f64)
                .collect()
        })
        .collect()
}

/// The columns of `table` whose item is of type `kind`.
fn columns(table: &[Vec<f64>], kinds: &[String], kind: &str) -> Vec<Vec<f64>> {
    table.iter().map(|row| row.iter().zip(kinds).filter(|(_, k)| *k == kind).map(|(x, _)| *x).collect()).collect()
}

/// The question types among `kinds`: the synthetic task's in [`QuestionType::ALL`] order, then any
/// other (a benchmark's categories) in order of first appearance.
fn type_names(kinds: &[String]) -> Vec<String> {
    let mut out: Vec<String> =
        QuestionType::ALL.iter().map(|q| q.name().to_string()).filter(|n| kinds.contains(n)).collect();
    for k in kinds {
        if !out.contains(k) {
            out.push(k.clone());
        }
    }
    out
}

fn intervals(table: &[Vec<f64>], kinds: &[String]) -> Result<(Interval, Vec<(String, Interval)>), TrainError> {
    let overall = bootstrap(table, RESAMPLES, 0)?;
    let per_type = type_names(kinds)
        .into_iter()
        .map(|t| Ok((t.clone(), bootstrap(&columns(table, kinds, &t), RESAMPLES / 2, 0)?)))
        .collect::<Result<Vec<_>, TrainError>>()?;
    Ok((overall, per_type))
}

/// The statistics of an ablation: each combination's accuracy and the paired differences with
/// bootstrap intervals over seeds and test questions ([`visualrwkv_train::stats`]), the verdicts on
/// the paper's claims, and every other pair of variants.
pub fn summarize(ablation: &Ablation) -> Result<AblationSummary, TrainError> {
    let (runs, kinds) = (&ablation.runs, &ablation.kinds);
    let first = runs.first().ok_or(TrainError::Empty("the ablation"))?;
    let seeds = runs.iter().filter(|r| r.prompt == first.prompt && r.scan == first.scan).count();
    let mut combos = Vec::new();
    for p in names(runs, Factor::Prompt) {
        for s in names(runs, Factor::Scan) {
            let table: Vec<Vec<f64>> =
                runs.iter().filter(|r| r.prompt == p && r.scan == s).map(|r| r.scores.clone()).collect();
            if table.len() != seeds {
                return Err(TrainError::AblationSeeds {
                    combination: format!("{p} × {s}"),
                    expected: seeds,
                    found: table.len(),
                });
            }
            let (overall, per_type) = intervals(&table, kinds)?;
            combos.push(ComboSummary { prompt: p.clone(), scan: s.clone(), overall, per_type });
        }
    }
    let mut comparisons = Vec::new();
    let mut compare =
        |factor: Factor, a: &str, b: &str, claim: Claim, source: Option<&str>| -> Result<(), TrainError> {
            let d = paired(&variant_table(runs, factor, a), &variant_table(runs, factor, b))?;
            let (overall, per_type) = intervals(&d, kinds)?;
            comparisons.push(Comparison {
                factor,
                a: a.to_string(),
                b: b.to_string(),
                claim,
                source: source.map(str::to_string),
                verdict: verdict(claim, &overall),
                overall,
                per_type,
            });
            Ok(())
        };
    let mut claimed: Vec<(Factor, String, String)> = Vec::new();
    for (factor, a, b, claim, source) in paper_claims() {
        let present = names(runs, factor);
        if present.iter().any(|n| n == a) && present.iter().any(|n| n == b) {
            compare(factor, a, b, claim, Some(source))?;
            claimed.push((factor, a.to_string(), b.to_string()));
        }
    }
    for factor in [Factor::Prompt, Factor::Scan] {
        let present = names(runs, factor);
        for (i, a) in present.iter().enumerate() {
            for b in &present[i + 1..] {
                let done = claimed.iter().any(|(f, x, y)| *f == factor && ((x == a && y == b) || (x == b && y == a)));
                if !done {
                    compare(factor, a, b, Claim::Better, None)?;
                }
            }
        }
    }
    let find = |f: Factor, a: &str, b: &str| comparisons.iter().position(|c| c.factor == f && c.a == a && c.b == b);
    let mut orderings = Vec::new();
    let t3 = [find(Factor::Prompt, "sandwich", "first"), find(Factor::Prompt, "first", "last")];
    let t4 = [find(Factor::Scan, "bi", "uni"), find(Factor::Scan, "multi", "uni"), find(Factor::Scan, "multi", "bi")];
    for (name, parts) in
        [("Table 3: sandwich > image-first > image-last", t3.to_vec()), ("Table 4: bi ≈ multi > uni", t4.to_vec())]
    {
        if let Some(parts) = parts.into_iter().collect::<Option<Vec<usize>>>() {
            let verdict = Verdict::all(parts.iter().map(|&i| comparisons[i].verdict));
            orderings.push(Ordering { name: name.to_string(), parts, verdict });
        }
    }
    Ok(AblationSummary { combos, comparisons, orderings, seeds, items: kinds.len() })
}

fn pct(iv: &Interval) -> String {
    format!("{:.1} [{:.1}, {:.1}]", 100.0 * iv.mean, 100.0 * iv.low, 100.0 * iv.high)
}

fn claim_text(c: &Comparison) -> String {
    match c.claim {
        Claim::Better => format!("{} > {}", c.a, c.b),
        Claim::Equivalent { margin } => format!("{} ≈ {} (±{:.0} pt)", c.a, c.b, 100.0 * margin),
    }
}

/// The markdown report of an ablation: accuracy with 95 % intervals per combination and question
/// type (next to the majority baseline of the synthetic task, when given), the paper's claims with the paired differences, their
/// intervals and verdicts, then every other pair.
pub fn ablation_markdown(summary: &AblationSummary, baseline: Option<&Baseline>) -> String {
    let types: Vec<String> =
        summary.combos.first().map_or(Vec::new(), |c| c.per_type.iter().map(|x| x.0.clone()).collect());
    let mut t = format!(
        "Accuracy in % (mean over {} seeds × {} test questions, [95 % bootstrap interval over seeds and questions]):\n\n| prompt | scan | all |",
        summary.seeds, summary.items
    );
    for q in &types {
        t.push_str(&format!(" {q} |"));
    }
    t.push_str("\n|---|---|---|");
    t.push_str(&"---|".repeat(types.len()));
    t.push('\n');
    for c in &summary.combos {
        t.push_str(&format!("| {} | {} | {} |", c.prompt, c.scan, pct(&c.overall)));
        for (_, iv) in &c.per_type {
            t.push_str(&format!(" {:.0} ±{:.0} |", 100.0 * iv.mean, 50.0 * (iv.high - iv.low)));
        }
        t.push('\n');
    }
    if let Some(baseline) = baseline {
        t.push_str(&format!("| majority baseline | | {:.1} |", 100.0 * baseline.overall));
        for q in &types {
            let b = QuestionType::by_name(q).and_then(|q| baseline.per_type.get(&q)).map_or(0.0, |x| x.1);
            t.push_str(&format!(" {:.0} |", 100.0 * b));
        }
        t.push('\n');
    }
    t.push('\n');
    let row = |c: &Comparison| {
        let mut line = format!(
            "| {} | {} | {} | **{}** |",
            c.source.as_deref().unwrap_or("—"),
            claim_text(c),
            pct(&c.overall),
            if c.source.is_some() {
                c.verdict.name().to_string()
            } else {
                match c.verdict {
                    Verdict::Reproduced => format!("{} better", c.a),
                    Verdict::Contradicted => format!("{} better", c.b),
                    Verdict::Inconclusive => "no difference shown".to_string(),
                }
            }
        );
        for (_, iv) in &c.per_type {
            line.push_str(&format!(" {:+.0} [{:+.0}, {:+.0}] |", 100.0 * iv.mean, 100.0 * iv.low, 100.0 * iv.high));
        }
        line.push('\n');
        line
    };
    t.push_str("Paired differences A − B in accuracy points (prompts paired within each scan, scans within each prompt, and by seed and question), [95 % interval]; the verdict is decided by the interval: above 0 (or inside the ±band for ≈) reproduced, below 0 (or outside the band) contradicted, else inconclusive:\n\n| source | claim | A − B | verdict |");
    for q in &types {
        t.push_str(&format!(" {q} |"));
    }
    t.push_str("\n|---|---|---|---|");
    t.push_str(&"---|".repeat(types.len()));
    t.push('\n');
    for c in &summary.comparisons {
        t.push_str(&row(c));
    }
    t.push('\n');
    for o in &summary.orderings {
        let parts: Vec<String> = o
            .parts
            .iter()
            .map(|&i| {
                let c = &summary.comparisons[i];
                format!("{} {}", claim_text(c), c.verdict.name())
            })
            .collect();
        t.push_str(&format!("- **{}**: {} ({}).\n", o.name, o.verdict.name(), parts.join("; ")));
    }
    t
}

/// Every run as CSV: `prompt,scan,seed,overall,train_seconds,<type>…`.
pub fn runs_csv(ablation: &Ablation) -> String {
    let types = type_names(&ablation.kinds);
    let mut csv = String::from("prompt,scan,seed,overall,train_seconds");
    for q in &types {
        csv.push_str(&format!(",{q}"));
    }
    csv.push('\n');
    for r in &ablation.runs {
        csv.push_str(&format!("{},{},{},{:.4},{:.1}", r.prompt, r.scan, r.seed, r.overall, r.train_seconds));
        for q in &types {
            let a = r.per_type.iter().find(|x| &x.0 == q).map_or(0.0, |x| x.1);
            csv.push_str(&format!(",{a:.4}"));
        }
        csv.push('\n');
    }
    csv
}

/// The comparisons as CSV: `factor,a,b,claim,source,question_type,mean,low,high,verdict` (one
/// row for all questions, `question_type = all`, then one per type).
pub fn comparisons_csv(summary: &AblationSummary) -> String {
    let mut csv = String::from("factor,a,b,claim,source,question_type,mean,low,high,verdict\n");
    for c in &summary.comparisons {
        let claim = match c.claim {
            Claim::Better => "better".to_string(),
            Claim::Equivalent { margin } => format!("equivalent({margin})"),
        };
        let rows = std::iter::once(("all".to_string(), c.overall)).chain(c.per_type.iter().cloned());
        for (kind, iv) in rows {
            let v = verdict(c.claim, &iv);
            csv.push_str(&format!(
                "{:?},{},{},{claim},{},{kind},{:.4},{:.4},{:.4},{}\n",
                c.factor,
                c.a,
                c.b,
                c.source.as_deref().unwrap_or(""),
                iv.mean,
                iv.low,
                iv.high,
                v.name()
            ));
        }
    }
    csv
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs whose scores are drawn so that `p_right` is the chance of a right answer, per item.
    fn runs(prompt: &str, scan: &str, p_right: f64, seeds: u64, kinds: &[String]) -> Vec<AblationRun> {
        (0..seeds)
            .map(|seed| {
                let mut rng = visualrwkv_train::data::Rng(seed * 1000 + prompt.len() as u64 * 7 + scan.len() as u64);
                let scores: Vec<f64> = kinds.iter().map(|_| if rng.unit() < p_right { 1.0 } else { 0.0 }).collect();
                AblationRun {
                    prompt: prompt.into(),
                    scan: scan.into(),
                    seed,
                    overall: scores.iter().sum::<f64>() / scores.len() as f64,
                    per_type: vec![],
                    scores,
                    train_seconds: 1.0,
                }
            })
            .collect()
    }

    #[test]
    fn summary_decides_claims_by_their_intervals() {
        let kinds: Vec<String> = (0..600).map(|i| ["color", "left_of"][i % 2].to_string()).collect();
        let mut all = Vec::new();
        // sandwich clearly above first; first and last the same; bi and multi the same as uni.
        for scan in ["uni", "bi", "multi"] {
            all.extend(runs("sandwich", scan, 0.9, 5, &kinds));
            all.extend(runs("first", scan, 0.5, 5, &kinds));
            all.extend(runs("last", scan, 0.5, 5, &kinds));
        }
        let s = summarize(&Ablation { runs: all, kinds: kinds.clone() }).unwrap();
        assert_eq!((s.seeds, s.items, s.combos.len()), (5, 600, 9));
        let get = |a: &str, b: &str| s.comparisons.iter().find(|c| c.a == a && c.b == b).unwrap();
        let sf = get("sandwich", "first");
        assert_eq!(sf.verdict, Verdict::Reproduced, "{sf:?}");
        assert!((sf.overall.mean - 0.4).abs() < 0.05 && sf.overall.low > 0.3, "{sf:?}");
        assert_eq!(sf.per_type.len(), 2);
        // Equal rates: the interval straddles 0, whatever the sign of the mean.
        assert_eq!(get("first", "last").verdict, Verdict::Inconclusive);
        assert_eq!(get("bi", "uni").verdict, Verdict::Inconclusive);
        // bi ≈ multi within two points: the pooled interval over 5 seeds × 600 items × 3 prompts
        // is about ±2 points wide, so equivalence is not shown either way here.
        assert_ne!(get("multi", "bi").verdict, Verdict::Contradicted);
        let t3 = s.orderings.iter().find(|o| o.name.starts_with("Table 3")).unwrap();
        assert_eq!(t3.verdict, Verdict::Inconclusive, "sandwich > first holds, first > last is not shown");
        let md = ablation_markdown(
            &s,
            Some(&visualrwkv_train::data::Baseline { per_type: Default::default(), overall: 0.5 }),
        );
        assert!(md.contains("| Table 3 | sandwich > first |") && md.contains("**reproduced**"), "{md}");
        // Reversed: first far above sandwich contradicts Table 3.
        let mut rev = Vec::new();
        for scan in ["uni", "bi"] {
            rev.extend(runs("sandwich", scan, 0.3, 3, &kinds));
            rev.extend(runs("first", scan, 0.8, 3, &kinds));
            rev.extend(runs("last", scan, 0.2, 3, &kinds));
        }
        let s = summarize(&Ablation { runs: rev, kinds: kinds.clone() }).unwrap();
        assert_eq!(s.orderings[0].verdict, Verdict::Contradicted);
        assert_eq!(s.orderings.len(), 1, "no multi scan: no Table 4 ordering");
        assert!(comparisons_csv(&s).lines().any(|l| l.starts_with("Prompt,sandwich,first,better,Table 3,all,")));
        // A combination missing a seed is an error, not a skewed pairing.
        let mut short = runs("sandwich", "uni", 0.5, 3, &kinds);
        short.extend(runs("first", "uni", 0.5, 2, &kinds));
        assert!(matches!(
            summarize(&Ablation { runs: short, kinds }),
            Err(TrainError::AblationSeeds { expected: 3, found: 2, .. })
        ));
    }

    #[test]
    fn a_run_store_reads_back_what_it_saved_and_refuses_other_settings() {
        let dir = std::env::temp_dir().join(format!("visualrwkv-run-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let kinds: Vec<String> = vec!["color".into(), "count".into()];
        let run = runs("my prompt", "snake/2", 0.5, 1, &kinds).remove(0);
        let store = RunStore { dir: dir.clone(), resume: true };
        assert_eq!(store.path("my prompt", "snake/2", 0), dir.join("my_prompt-snake_2-seed0.json"));
        assert_eq!(store.load("settings A", "my prompt", "snake/2", 0).unwrap(), None, "nothing stored yet");
        store.save("settings A", &run, &kinds).unwrap();
        assert_eq!(store.load("settings A", "my prompt", "snake/2", 0).unwrap(), Some((run.clone(), kinds.clone())));
        // Other settings, or another name that maps to the same file, are errors naming the file.
        for (settings, prompt) in [("settings B", "my prompt"), ("settings A", "my_prompt")] {
            match store.load(settings, prompt, "snake/2", 0) {
                Err(TrainError::Io { path, message }) => {
                    assert_eq!(path, store.path(prompt, "snake/2", 0));
                    assert!(message.contains("other settings"), "{message}");
                }
                other => panic!("{other:?}"),
            }
        }
        // Without `resume` nothing is read back; a damaged file is an error, not a panic.
        assert_eq!(
            RunStore { resume: false, ..store.clone() }.load("settings B", "my prompt", "snake/2", 0).unwrap(),
            None
        );
        std::fs::write(store.path("my prompt", "snake/2", 0), "{\"settings\": 1").unwrap();
        assert!(matches!(store.load("settings A", "my prompt", "snake/2", 0), Err(TrainError::Io { .. })));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
