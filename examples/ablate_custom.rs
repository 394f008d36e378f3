//! A prompt × scan ablation on the synthetic spatial VQA task that includes your own scan and
//! prompt layout next to the built-in ones — a few lines of code.
//!
//! ```text
//! cargo run --release -p visualrwkv-examples --example ablate_custom [-- STEPS]
//! ```
//!
//! `Snake` (a scan) and `Hint` (a prompt strategy) are defined in `examples/lib.rs`; any type
//! implementing `visualrwkv_scan::Scan` or `visualrwkv_prompt::PromptStrategy` works.

use burn::backend::{Autodiff, NdArray};
use visualrwkv::demo::{AblationEvent, AblationOptions, RunSettings, RunStore, ablate, ablation_markdown, summarize};
use visualrwkv_examples::{Hint, Snake};
use visualrwkv_prompt::{PromptStrategy, Sandwich};
use visualrwkv_scan::{BiDirectional, Scan};
use visualrwkv_train::data::{generate, majority_baseline};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let steps: usize = match std::env::args().nth(1) {
        Some(a) => a.parse().map_err(|e| format!("STEPS must be a positive integer ({a:?}: {e})"))?,
        None => 200,
    };
    let mut settings = RunSettings::default();
    settings.train.steps = steps;
    settings.data.train_images = 500;
    settings.data.test_images = 100;

    let prompts: Vec<(String, Box<dyn PromptStrategy>)> =
        vec![("sandwich".into(), Box::new(Sandwich)), ("hint".into(), Box::new(Hint("Look at the grid.".into())))];
    let scans: Vec<(String, Box<dyn Scan>)> =
        vec![("bi".into(), Box::new(BiDirectional)), ("snake".into(), Box::new(Snake))];

    // One CPU device; pass several (and enable `collective`) to train each run data-parallel.
    let mut progress = |e: &AblationEvent| {
        if let AblationEvent::Run { index, total, prompt, scan, .. } = e {
            eprintln!("[{index}/{total}] prompt {prompt}, scan {scan}");
        }
    };
    // Two seeds per combination, one run at a time, each finished run kept in ablation-custom/
    // (rerun with `resume: true` to continue an interrupted ablation); the report pairs every two
    // variants by seed and test question and gives each difference a 95 % bootstrap interval.
    let store = RunStore { dir: "ablation-custom".into(), resume: false };
    let options = AblationOptions { seeds: 2, jobs: 1, store: Some(store) };
    let ablation =
        ablate::<Autodiff<NdArray>>(&settings, &prompts, &scans, &options, &[Default::default()], &mut progress)?;
    let splits = generate(&settings.data)?;
    let summary = summarize(&ablation)?;
    println!("{}", ablation_markdown(&summary, Some(&majority_baseline(&splits.train, &splits.test))));
    Ok(())
}
