//! The `visualrwkv` command-line tool: one module per subcommand (`commands/`), the backend
//! chosen by `--device` ([`device`]). Errors go to stderr with a non-zero exit code.

mod args;
mod commands;
mod device;
mod plots;
mod progress;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use commands::*;
use device::{run_job, run_train};

/// The error type of the commands: any error, printed as one line.
pub type Res<T> = Result<T, Box<dyn std::error::Error>>;

#[derive(Parser)]
#[command(name = "visualrwkv", version, about = "VisualRWKV / RWKV-6 in Rust, on the CPU, wgpu or CUDA")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the configuration inferred from a checkpoint (.pth or .safetensors).
    Info(info::Args),
    /// Run token ids through the model; write `logits` [T,V] and optionally the final state.
    Logits(logits::Args),
    /// Print the World-tokenizer ids of a text as a JSON array.
    Tokenize(tokenize::Args),
    /// Print the text of comma-separated token ids.
    Detokenize(tokenize::DetokenizeArgs),
    /// Generate text after a prompt, streaming it to stdout.
    Generate(generate::Args),
    /// Run a CLIP or SigLIP vision tower on an image (or ready pixels); write every hidden
    /// state, `last_hidden_state`, `pooler_output` (where the tower has one) and `pooled` (the
    /// selected layer after grid pooling, with `pooled_grid` = [grid_h, grid_w, extra rows]).
    VisionFeatures(vision_features::Args),
    /// Ask a question about an image; streams the answer (cached-state generation).
    Chat(chat::Args),
    /// Write the VLM's logits [T, V] over the whole assembled sequence, `tokens` (I64 [T], -200 at
    /// image rows) and `image_span` (I64 [2]: first image row, one past the last).
    VlmLogits(vlm_logits::Args),
    /// RWKV-6 vs a same-size transformer from 1K to 24K tokens: prefill time, per-token decode
    /// latency and peak memory per context; writes efficiency.json/.csv/.md and efficiency.svg.
    BenchEfficiency(bench_efficiency::Args),
    /// Stage-2 training speed of a random VisualRWKV (default: the 1.6B shape with CLIP-L/336):
    /// steps/s and tokens/s on one device or data-parallel over several; one JSON line.
    BenchTrain(bench_train::Args),
    /// Train a tiny VisualRWKV from scratch on a synthetic spatial VQA task (coloured shapes on a
    /// grid), then report held-out accuracy per question type next to the majority baseline,
    /// answer a few test questions, and save the checkpoint, metrics and loss curve.
    Demo(demo::Args),
    /// Train every prompt × scan combination for several seeds with the same budget and write
    /// held-out accuracy with 95 % bootstrap intervals as markdown, CSV, JSON and a plot, with
    /// each of the paper's orderings as a paired difference and a verdict.
    Ablate(ablate::Args),
    /// Convert a checkpoint (.pth or .safetensors) to safetensors with the same key names: f32,
    /// or the matrices block-quantised to int8 / 4-bit (--quantize i8|q4).
    Convert(convert::Args),
    /// Check a LLaVA-format dataset (every sample and image) and write its token ids and labels
    /// as JSON lines; print counts (samples, with image, text-only, truncated, skipped) and a
    /// row-length histogram.
    Dataset(dataset::Args),
    /// Fine-tune on a LLaVA-format dataset: stage 1 (projector, from an RWKV-6 checkpoint and a
    /// Hugging Face tower) or stage 2 (projector + RWKV, from a VisualRWKV checkpoint); saves
    /// model.safetensors in the official layout, the resume state, metrics and a loss plot.
    Train(train::Args),
    /// Write a small LLaVA-format dataset (JPEG and PNG images) and tiny random RWKV-6 and CLIP
    /// checkpoints in the official layouts, to try `dataset`, `train` and `chat` offline.
    ExampleData(example_data::Args),
    /// Answer a benchmark's questions (LLaVA JSONL, the official JSON, MMBench TSV) into an
    /// answer file as the official evaluate.py writes it: greedy, images and image states
    /// cached across questions, resumable (--resume), split across processes (--chunks).
    Eval(eval::Args),
    /// Score predictions with a benchmark's official metric (vqa, gqa, pope, scienceqa, mme):
    /// generic items, or an answer file joined with the benchmark's annotation files; prints
    /// and writes the summary JSON, optionally each item with its score.
    Score(score::Args),
    /// Serve the model over HTTP with OpenAI's API: /v1/chat/completions (images as data: URLs,
    /// streaming), /v1/completions, /v1/models, /health and Prometheus /metrics; requests are
    /// decoded together (continuous batching) and image states cached (docs/serving.md).
    Serve(serve::Args),
    /// Benchmark `serve` over real HTTP: time to first token with an image-cache miss, a rows
    /// hit and a state hit, then tokens/s and requests/s at several concurrent clients; prints
    /// Markdown and writes `--json` (docs/performance.md).
    BenchServe(bench_serve::Args),
}

fn run(cli: Cli) -> Res<()> {
    match cli.command {
        Command::Info(a) => info::run(a),
        Command::Logits(a) => run_job(a),
        Command::Tokenize(a) => tokenize::run(a),
        Command::Detokenize(a) => tokenize::detokenize(a),
        Command::Generate(a) => run_job(a),
        Command::VisionFeatures(a) => run_job(a),
        Command::Chat(a) => run_job(a),
        Command::VlmLogits(a) => run_job(a),
        Command::BenchEfficiency(a) => bench_efficiency::run(a),
        Command::BenchTrain(a) => bench_train::run(a),
        Command::Demo(a) => run_train(a),
        Command::Ablate(a) => run_train(a),
        Command::Convert(a) => convert::run(a),
        Command::Dataset(a) => dataset::run(a),
        Command::Train(a) => run_train(a),
        Command::ExampleData(a) => example_data::run(a),
        Command::Eval(a) => run_job(a),
        Command::Score(a) => score::run(a),
        Command::Serve(a) => run_job(a),
        Command::BenchServe(a) => run_job(a),
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
