//! `visualrwkv demo`: train a tiny VisualRWKV on the synthetic spatial VQA task and report it.

use std::path::PathBuf;

use burn::tensor::backend::AutodiffBackend;
use visualrwkv::demo::{MetricsWriter, RunEvent, accuracy_table, examples, run as train};
use visualrwkv_rwkv::RwkvBackend;

use crate::Res;
use crate::args::{PromptArg, RunArgs, ScanArg, named_prompts, named_scans};
use crate::device::TrainJob;
use crate::progress::TrainBar;

/// Flags of `demo`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    run: RunArgs,
    /// Prompt layout: first, last, sandwich, sandwich-repeat.
    #[arg(long, value_enum, default_value_t = PromptArg::Sandwich)]
    prompt: PromptArg,
    /// Image scan.
    #[arg(long, value_enum, default_value_t = ScanArg::Multi)]
    scan: ScanArg,
    /// Test questions answered on screen (images saved as PNG).
    #[arg(long, default_value_t = 6)]
    examples: usize,
    /// Output folder (checkpoint, metrics.jsonl/.csv, loss.svg, example PNGs, report.md).
    #[arg(long, default_value = "demo-out")]
    out: PathBuf,
}

impl TrainJob for Args {
    type Output = ();

    fn devices(&self) -> Res<Vec<crate::device::DeviceSpec>> {
        self.run.device_list(1)
    }

    fn run<B>(self, devices: Vec<B::Device>) -> Res<()>
    where
        B: AutodiffBackend + RwkvBackend,
        B::InnerBackend: RwkvBackend,
    {
        let settings = self.run.settings()?;
        let (prompt_name, strategy) = named_prompts(&[self.prompt]).remove(0);
        let (scan_name, scan) = named_scans(&[self.scan]).remove(0);
        let out = &self.out;
        let d = &settings.data;
        eprintln!(
            "synthetic spatial VQA: {}x{} grid, {} train / {} test images, {} questions each; model: {} {}x{} + tiny CLIP tower, prompt {prompt_name}, scan {scan_name}, on {}",
            d.grid,
            d.grid,
            d.train_images,
            d.test_images,
            d.questions_per_image,
            settings.arch.label(),
            settings.layers,
            settings.width,
            self.run.device_list(1)?.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(",")
        );
        let mut metrics = MetricsWriter::create(out)?;
        let mut bar = TrainBar::new();
        let mut on_event = |e: &RunEvent| bar.event(e);
        let result =
            train::<B>(&settings, strategy.as_ref(), scan.as_ref(), &devices, &mut on_event, Some(&mut metrics))?;
        // Created only now: a run refused before training leaves no folder behind.
        std::fs::create_dir_all(out)?;
        let steps = result.history.len();
        let mean = |it: &mut dyn Iterator<Item = f64>| it.sum::<f64>() / steps.clamp(1, 20) as f64;
        let first = mean(&mut result.history.iter().take(20).map(|s| s.loss));
        let last = mean(&mut result.history.iter().rev().take(20).map(|s| s.loss));
        let mut report = format!(
            "trained {steps} steps in {:.0} s; loss {first:.3} -> {last:.3} (mean of the first / last 20 steps)\n\n",
            result.train_seconds
        );
        report.push_str("held-out (test split) accuracy, greedy answers, exact match:\n\n");
        report.push_str(&accuracy_table(&result.accuracy, &result.baseline));
        println!("{report}");
        for (i, (q, want, got, ascii)) in
            examples(&result, self.examples, d.cell_px, scan.as_ref(), Some(out))?.into_iter().enumerate()
        {
            let mark = if got == want { "right" } else { "wrong" };
            println!("example {i} (example-{i}.png):\n{ascii}Q: {q}\nA: {got}   (expected {want}: {mark})\n");
        }
        let checkpoint = out.join("checkpoint");
        result.trainer.save(&checkpoint)?;
        let vocab = checkpoint.join("vocab.txt");
        visualrwkv_checkpoint::write_atomic(&vocab, result.tokenizer.to_vocab_text().as_bytes())?;
        crate::plots::loss(&result.history, &out.join("loss.svg"))?;
        visualrwkv_checkpoint::write_atomic(out.join("report.md"), report.as_bytes())?;
        println!("checkpoint, metrics.jsonl/.csv, loss.svg, report.md and example PNGs in {}", out.display());
        // The answer ends at a newline piece of the task's vocabulary (as the evaluation stops).
        let mut stop = vec![0u32];
        for piece in ["\n", "\n\n"] {
            if let [id] = result.tokenizer.encode(piece)[..] {
                stop.push(id);
            }
        }
        let stop: Vec<String> = stop.iter().map(u32::to_string).collect();
        println!(
            "ask the trained model yourself:\n  visualrwkv chat --checkpoint {} --tokenizer {} --stop {} --max-tokens 12 --temperature 0 --prompt {prompt_name} --scan {scan_name} --image {} --question \"{}\"",
            checkpoint.join("model.safetensors").display(),
            vocab.display(),
            stop.join(","),
            out.join("example-0.png").display(),
            result.test.examples.first().map_or("What is left of the red square?", |e| e.question.as_str())
        );
        Ok(())
    }
}
