//! `visualrwkv ablate`: every prompt × scan combination under the same budget and seeds.

use std::path::PathBuf;

use burn::tensor::backend::AutodiffBackend;
use visualrwkv::demo::{AblationEvent, ablation_report};
use visualrwkv_rwkv::RwkvBackend;
use visualrwkv_train::data::{QuestionType, generate, majority_baseline};

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
    #[arg(long, default_value_t = 3)]
    seeds: usize,
    /// Output folder (ablation.md, ablation.csv, ablation.svg).
    #[arg(long, default_value = "ablation")]
    out: PathBuf,
}

impl TrainJob for Args {
    type Output = ();

    fn devices(&self) -> Res<Vec<crate::device::DeviceSpec>> {
        self.run.devices.list()
    }

    fn run<B>(self, devices: Vec<B::Device>) -> Res<()>
    where
        B: AutodiffBackend + RwkvBackend,
        B::InnerBackend: RwkvBackend,
    {
        let settings = self.run.settings();
        let prompts = named_prompts(&self.prompts);
        let scans = named_scans(&self.scans);
        if self.seeds == 0 {
            return Err("--seeds must be at least 1".into());
        }
        let out = &self.out;
        std::fs::create_dir_all(out)?;
        let mut bar = TrainBar::new();
        let mut on_event = |e: &AblationEvent| match e {
            AblationEvent::Run { index, total, prompt, scan, seed } => {
                eprintln!("[{index}/{total}] prompt {prompt}, scan {scan}, seed {seed}")
            }
            AblationEvent::Train(e) => bar.event(e),
        };
        let runs = visualrwkv::demo::ablate::<B>(&settings, &prompts, &scans, self.seeds, &devices, &mut on_event)?;
        let splits = generate(&settings.data)?;
        let baseline = majority_baseline(&splits.train, &splits.test);
        let report = ablation_report(&runs, &baseline);
        let mut csv = String::from("prompt,scan,seed,overall,train_seconds");
        for q in QuestionType::ALL {
            csv.push_str(&format!(",{}", q.name()));
        }
        csv.push('\n');
        for r in &runs {
            csv.push_str(&format!("{},{},{},{:.4},{:.1}", r.prompt, r.scan, r.seed, r.overall, r.train_seconds));
            for (_, a) in &r.per_type {
                csv.push_str(&format!(",{a:.4}"));
            }
            csv.push('\n');
        }
        std::fs::write(out.join("ablation.csv"), csv)?;
        let header = format!(
            "# Prompt × scan ablation on the synthetic spatial VQA task\n\n{} steps × batch {} per run, {} seeds, RWKV-6 {}x{}; held-out accuracy on {} test images.\n\n",
            settings.train.steps,
            settings.train.batch_size,
            self.seeds,
            settings.layers,
            settings.width,
            settings.data.test_images
        );
        std::fs::write(out.join("ablation.md"), format!("{header}{report}"))?;
        crate::plots::ablation(&runs, &out.join("ablation.svg"))?;
        println!("{report}");
        println!("ablation.md, ablation.csv and ablation.svg in {}", out.display());
        Ok(())
    }
}
