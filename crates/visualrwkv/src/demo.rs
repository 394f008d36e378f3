//! `visualrwkv demo` and `visualrwkv ablate`: train a tiny VisualRWKV from scratch on the
//! synthetic spatial VQA task (`visualrwkv_train::data`) on any autodiff backend (the CPU by
//! default, a GPU, or several devices data-parallel), and compare prompt layouts and scans under
//! the same budget. Progress reaches the caller as [`RunEvent`]s; drawing it is the app's job.
//!
//! # Shapes
//!
//! Images `grid · cell_px` pixels square (one tower patch per grid cell); see
//! [`crate::training`] for the model's tensors.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::backend::AutodiffBackend;
use visualrwkv_prompt::PromptStrategy;
use visualrwkv_rwkv::RwkvBackend;
use visualrwkv_scan::Scan;
use visualrwkv_tokenizer::Tokenizer;
use visualrwkv_train::data::{Baseline, DataConfig, QuestionType, Splits, generate, majority_baseline};

use crate::training::{
    Accuracy, ModelConfig, StepStats, TaskData, TrainConfig, TrainError, Trainer, Vocab, answer, evaluate, for_eval,
};

/// Settings of one training run on the synthetic task.
#[derive(Clone, Debug)]
pub struct RunSettings {
    /// The dataset.
    pub data: DataConfig,
    /// RWKV width.
    pub width: usize,
    /// RWKV layers.
    pub layers: usize,
    /// How text becomes ids.
    pub vocab: Vocab,
    /// Optimisation.
    pub train: TrainConfig,
    /// Seed of the model's initialisation.
    pub model_seed: u64,
    /// Test questions evaluated (all when `None`).
    pub eval_limit: Option<usize>,
}

impl Default for RunSettings {
    fn default() -> Self {
        Self {
            data: DataConfig::default(),
            width: 64,
            layers: 2,
            vocab: Vocab::default(),
            train: TrainConfig { steps: 4000, ..TrainConfig::default() },
            model_seed: 0,
            eval_limit: None,
        }
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

/// Writes one line of metrics per step as JSON (`metrics.jsonl`) and CSV (`metrics.csv`).
pub struct MetricsWriter {
    jsonl: std::fs::File,
    csv: std::fs::File,
    dir: PathBuf,
}

impl MetricsWriter {
    /// Creates (truncates) the two files in `dir`.
    pub fn create(dir: &Path) -> Result<Self, TrainError> {
        let io = |p: &Path, e: std::io::Error| TrainError::Io { path: p.to_path_buf(), message: e.to_string() };
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let j = dir.join("metrics.jsonl");
        let c = dir.join("metrics.csv");
        let jsonl = std::fs::File::create(&j).map_err(|e| io(&j, e))?;
        let mut csv = std::fs::File::create(&c).map_err(|e| io(&c, e))?;
        writeln!(csv, "step,loss,lr,grad_norm,rows,tokens_per_s").map_err(|e| io(&c, e))?;
        Ok(Self { jsonl, csv, dir: dir.to_path_buf() })
    }

    /// Appends a step.
    pub fn write(&mut self, s: &StepStats, tokens_per_s: f64) -> Result<(), TrainError> {
        let io = |e: std::io::Error| TrainError::Io { path: self.dir.clone(), message: e.to_string() };
        let line = serde_json::json!({
            "step": s.step, "loss": s.loss, "lr": s.lr, "grad_norm": s.grad_norm, "rows": s.rows,
            "tokens_per_s": tokens_per_s,
        });
        writeln!(self.jsonl, "{line}").map_err(io)?;
        writeln!(self.csv, "{},{},{},{},{},{:.1}", s.step, s.loss, s.lr, s.grad_norm, s.rows, tokens_per_s).map_err(io)
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
    B::seed(device, settings.model_seed);
    let tokenizer = settings.vocab.tokenizer(&splits.train);
    let model = ModelConfig::tiny(&settings.data, settings.width, settings.layers, &tokenizer).init::<B>(device)?;
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
    for q in QuestionType::ALL {
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
            scene
                .render(cell_px)
                .save(&path)
                .map_err(|e| TrainError::Io { path: path.clone(), message: e.to_string() })?;
        }
        out.push((e.question.clone(), e.answer.clone(), got, scene.ascii()));
    }
    Ok(out)
}

/// One ablation run's held-out accuracy.
#[derive(Clone, Debug, serde::Serialize)]
pub struct AblationRun {
    /// Prompt strategy name.
    pub prompt: String,
    /// Scan name.
    pub scan: String,
    /// Seed (model initialisation and batch order).
    pub seed: u64,
    /// Accuracy over all test questions.
    pub overall: f64,
    /// Accuracy per question type name.
    pub per_type: Vec<(String, f64)>,
    /// Training seconds.
    pub train_seconds: f64,
}

/// Mean and standard deviation (population) of `v`.
pub fn mean_std(v: &[f64]) -> (f64, f64) {
    if v.is_empty() {
        return (0.0, 0.0);
    }
    let m = v.iter().sum::<f64>() / v.len() as f64;
    (m, (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / v.len() as f64).sqrt())
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
    /// Progress of the current run.
    Train(RunEvent),
}

/// Trains every `prompt × scan` combination for each seed with the same settings and budget on
/// `devices` (the dataset is the same for all runs; the seed sets the model's initialisation and
/// the batch order). Named strategies can be user-defined types (see `examples/ablate_custom.rs`).
pub fn ablate<B>(
    settings: &RunSettings,
    prompts: &[(String, Box<dyn PromptStrategy>)],
    scans: &[(String, Box<dyn Scan>)],
    seeds: usize,
    devices: &[B::Device],
    on_event: &mut (dyn FnMut(&AblationEvent) + Send),
) -> Result<Vec<AblationRun>, TrainError>
where
    B: AutodiffBackend + RwkvBackend,
    B::InnerBackend: RwkvBackend,
{
    let mut runs = Vec::new();
    let total = prompts.len() * scans.len() * seeds;
    for (pn, prompt) in prompts {
        for (sn, scan) in scans {
            for seed in 0..seeds as u64 {
                let mut s = settings.clone();
                s.model_seed = settings.model_seed + seed;
                s.train.seed = settings.train.seed + seed;
                on_event(&AblationEvent::Run {
                    index: runs.len() + 1,
                    total,
                    prompt: pn.clone(),
                    scan: sn.clone(),
                    seed,
                });
                let mut forward = |e: &RunEvent| on_event(&AblationEvent::Train(e.clone()));
                let r = run::<B>(&s, prompt.as_ref(), scan.as_ref(), devices, &mut forward, None)?;
                runs.push(AblationRun {
                    prompt: pn.clone(),
                    scan: sn.clone(),
                    seed,
                    overall: r.accuracy.overall(),
                    per_type: QuestionType::ALL.iter().map(|q| (q.name().to_string(), r.accuracy.of(*q))).collect(),
                    train_seconds: r.train_seconds,
                });
            }
        }
    }
    Ok(runs)
}

/// The markdown report of an ablation: mean ± std over seeds per combination (overall and per
/// question type), then the orderings by prompt and by scan compared with the paper's.
pub fn ablation_report(runs: &[AblationRun], baseline: &Baseline) -> String {
    let mut combos: Vec<(String, String)> = Vec::new();
    for r in runs {
        let key = (r.prompt.clone(), r.scan.clone());
        if !combos.contains(&key) {
            combos.push(key);
        }
    }
    let mut t = String::from("| prompt | scan | accuracy (mean ± std) |");
    for q in QuestionType::ALL {
        t.push_str(&format!(" {} |", q.name()));
    }
    t.push_str("\n|---|---|---|");
    t.push_str(&"---|".repeat(QuestionType::ALL.len()));
    t.push('\n');
    for (p, s) in &combos {
        let sel: Vec<&AblationRun> = runs.iter().filter(|r| &r.prompt == p && &r.scan == s).collect();
        let (m, sd) = mean_std(&sel.iter().map(|r| r.overall).collect::<Vec<_>>());
        t.push_str(&format!("| {p} | {s} | {:.1} ± {:.1}% |", 100.0 * m, 100.0 * sd));
        for (qi, _) in QuestionType::ALL.iter().enumerate() {
            let (m, sd) = mean_std(&sel.iter().map(|r| r.per_type[qi].1).collect::<Vec<_>>());
            t.push_str(&format!(" {:.0} ± {:.0} |", 100.0 * m, 100.0 * sd));
        }
        t.push('\n');
    }
    t.push_str(&format!("| majority baseline | | {:.1}% |", 100.0 * baseline.overall));
    for q in QuestionType::ALL {
        t.push_str(&format!(" {:.0} |", 100.0 * baseline.per_type.get(&q).map_or(0.0, |x| x.1)));
    }
    t.push('\n');

    let order = |key: fn(&AblationRun) -> &String| -> Vec<(String, f64, f64)> {
        let mut names: Vec<String> = Vec::new();
        for r in runs {
            if !names.contains(key(r)) {
                names.push(key(r).clone());
            }
        }
        let mut v: Vec<(String, f64, f64)> = names
            .into_iter()
            .map(|n| {
                let (m, sd) = mean_std(&runs.iter().filter(|r| key(r) == &n).map(|r| r.overall).collect::<Vec<_>>());
                (n, m, sd)
            })
            .collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1));
        v
    };
    let fmt = |v: &[(String, f64, f64)]| {
        v.iter().map(|(n, m, sd)| format!("{n} {:.1} ± {:.1}%", 100.0 * m, 100.0 * sd)).collect::<Vec<_>>().join(" > ")
    };
    let prompts = order(|r| &r.prompt);
    let scans = order(|r| &r.scan);
    t.push_str(&format!("\nBy prompt (all scans and seeds): {}.\n", fmt(&prompts)));
    t.push_str(&format!("By scan (all prompts and seeds): {}.\n", fmt(&scans)));
    let rank = |v: &[(String, f64, f64)], n: &str| v.iter().position(|x| x.0 == n);
    if let (Some(s), Some(f), Some(l)) = (rank(&prompts, "sandwich"), rank(&prompts, "first"), rank(&prompts, "last")) {
        let holds = s < f && f < l;
        t.push_str(&format!(
            "Paper Table 3 (sandwich > image-first > image-last): {} on this task.\n",
            if holds { "reproduced" } else { "NOT reproduced" }
        ));
    }
    if let (Some(b), Some(m), Some(u)) = (rank(&scans, "bi"), rank(&scans, "multi"), rank(&scans, "uni")) {
        let holds = b < u && m < u;
        t.push_str(&format!(
            "Paper Table 4 (bi ≈ multi > uni): {} on this task.\n",
            if holds { "reproduced (both bi and multi above uni)" } else { "NOT reproduced" }
        ));
    }
    t.push_str("Differences smaller than the seeds' standard deviation are not evidence either way.\n");
    t
}
