//! `visualrwkv ablate`: every prompt × scan combination under the same budget and seeds.

use std::path::PathBuf;

use burn::tensor::backend::AutodiffBackend;
use visualrwkv::demo::{AblationEvent, ablation_markdown, comparisons_csv, runs_csv, summarize};
use visualrwkv_checkpoint::write_atomic;
use visualrwkv_rwkv::RwkvBackend;
use visualrwkv_train::data::{generate, majority_baseline};

use crate::Res;
use crate::args::{PromptArg, RunArgs, ScanArg, named_prompts, named_scans};
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
    /// Output folder (ablation.md, ablation.csv, comparisons.csv, ablation.json, ablation.svg).
    #[arg(long, default_value = "ablation")]
    out: PathBuf,
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
        if self.seeds == 0 {
            return Err("--seeds must be at least 1".into());
        }
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
            AblationEvent::Finished { index, overall, seconds } => {
                eprintln!("[{index}] done: {:.1}% in {seconds:.0} s of training", 100.0 * overall)
            }
        };
        let ablation =
            visualrwkv::demo::ablate::<B>(&settings, &prompts, &scans, self.seeds, self.jobs, &devices, &mut on_event)?;
        let splits = generate(&settings.data)?;
        let baseline = majority_baseline(&splits.train, &splits.test);
        let summary = summarize(&ablation)?;
        let report = ablation_markdown(&summary, &baseline);
        let d = &settings.data;
        let header = format!(
            "# Prompt × scan ablation on the synthetic spatial VQA task\n\n{}x{} grid, {}–{} shapes, {} clutter cells; {} train / {} test images × {} questions. RWKV-6 {} layers × {} (head size {}), {} steps × batch {} per run, lr {}, {} seeds per combination.\n\n",
            d.grid,
            d.grid,
            d.min_objects,
            d.max_objects,
            d.distractors,
            d.train_images,
            d.test_images,
            d.questions_per_image,
            settings.layers,
            settings.width,
            settings.head_size,
            settings.train.steps,
            settings.train.batch_size,
            settings.train.lr_init,
            self.seeds,
        );
        write_atomic(out.join("ablation.md"), format!("{header}{report}").as_bytes())?;
        write_atomic(out.join("ablation.csv"), runs_csv(&ablation).as_bytes())?;
        write_atomic(out.join("comparisons.csv"), comparisons_csv(&summary).as_bytes())?;
        let json = serde_json::json!({ "ablation": ablation, "summary": summary });
        write_atomic(out.join("ablation.json"), serde_json::to_string_pretty(&json)?.as_bytes())?;
        crate::plots::ablation(&summary, &out.join("ablation.svg"))?;
        println!("{report}");
        println!("ablation.md, ablation.csv, comparisons.csv, ablation.json and ablation.svg in {}", out.display());
        Ok(())
    }
}
