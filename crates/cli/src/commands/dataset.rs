//! `visualrwkv dataset`: check a LLaVA-format dataset (every sample, every image decoded) and
//! write its token ids and labels as JSON lines, with counts and a length histogram.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use visualrwkv_data::loader::{Loader, LoaderOptions};
use visualrwkv_data::{DatasetOptions, MissingImage, Report, prepare, read_llava};
use visualrwkv_tokenizer::Tokenizer;
use visualrwkv_vision::{AlphaMode, ImageProcessor, VisionConfig};

use crate::Res;
use crate::args::PromptArg;
use crate::device::DeviceSpec;

/// What happens to a sample whose image is missing or undecodable.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum OnMissing {
    /// Stop with an error naming the sample and the file.
    Error,
    /// Leave the sample out and count it.
    Skip,
}

impl From<OnMissing> for MissingImage {
    fn from(o: OnMissing) -> Self {
        match o {
            OnMissing::Error => MissingImage::Error,
            OnMissing::Skip => MissingImage::Skip,
        }
    }
}

/// The data flags `dataset` and `train` share.
#[derive(clap::Args, Clone, Debug)]
pub struct DataArgs {
    /// The LLaVA-format JSON file (a list of {id, image?, conversations}).
    #[arg(long)]
    pub data: PathBuf,
    /// The folder the samples' image paths are relative to.
    #[arg(long, default_value = ".")]
    pub image_folder: PathBuf,
    /// Missing or undecodable images: error (stop) or skip (count and leave the sample out).
    #[arg(long, value_enum, default_value_t = OnMissing::Error)]
    pub on_missing_image: OnMissing,
    /// Image-decoding worker threads (default: the CPU count).
    #[arg(long)]
    pub workers: Option<usize>,
}

impl DataArgs {
    /// Worker threads to use.
    pub fn workers(&self) -> usize {
        self.workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
    }

    /// Loader settings for images preprocessed by `processor` (alpha dropped, as the
    /// reference's `convert("RGB")`).
    pub fn loader(&self, processor: ImageProcessor, window: usize) -> LoaderOptions {
        LoaderOptions {
            image_folder: self.image_folder.clone(),
            processor: ImageProcessor { alpha: AlphaMode::Drop, ..processor },
            workers: self.workers(),
            window,
            on_missing_image: self.on_missing_image.into(),
            origin: self.data.clone(),
        }
    }
}

/// `--format`: the dataset's JSON layout.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataFormat {
    /// VisualRWKV v6.0 / LLaVA: one `image` per sample, placed by --prompt.
    Llava,
    /// VisualRWKV-7 v7.00: `image` a path or a list, one `<image>` per path, each a run of
    /// --num-token-per-image placeholders (65535), padded to --ctx-len with 0.
    V700,
}

/// Flags of `dataset`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    data: DataArgs,
    /// The JSON layout: llava (v6.0) or v700 (VisualRWKV-7's multi-image format).
    #[arg(long, value_enum, default_value_t = DataFormat::Llava)]
    format: DataFormat,
    /// `--format v700`: placeholder tokens per image (v7.00's `--num_token_per_image`).
    #[arg(long, default_value_t = 16)]
    num_token_per_image: usize,
    /// Image placement: first, last or sandwich (the official image_position first / last /
    /// middle).
    #[arg(long, value_enum, default_value_t = PromptArg::Sandwich)]
    prompt: PromptArg,
    /// Context length in rows, the image counting --image-rows (0: no limit). Longer samples
    /// lose their tail; one whose image would be cut, or with nothing left to train, is skipped.
    #[arg(long, default_value_t = 2048)]
    ctx_len: usize,
    /// Rows one image occupies (577: CLIP-L/14-336 patches and CLS).
    #[arg(long, default_value_t = 577)]
    image_rows: usize,
    /// Preprocess images for this tower's Hugging Face config.json (default: CLIP-L/14-336).
    #[arg(long)]
    vision_config: Option<PathBuf>,
    /// Only check that image files exist (do not decode them).
    #[arg(long)]
    no_decode: bool,
    /// The JSON-lines output: one {"id", "input_ids", "labels"} per kept sample.
    #[arg(long)]
    out: PathBuf,
    /// Accepted for uniformity with the model commands: `dataset` runs on CPU threads only.
    #[arg(long, default_value = "cpu")]
    device: DeviceSpec,
}

/// Prints a report's counts and histogram.
pub fn print_report(report: &Report) {
    println!(
        "samples {} · with image {} · text-only {} · truncated {} · skipped {}",
        report.samples, report.with_image, report.text_only, report.truncated, report.skipped
    );
    for (reason, n) in &report.skipped_by_reason {
        println!("  skipped ({reason}): {n}");
    }
    let hist = report.histogram();
    let most = hist.iter().map(|h| h.2).max().unwrap_or(1).max(1);
    if !hist.is_empty() {
        println!("rows per sample:");
    }
    for (lo, hi, n) in hist {
        println!("  {lo:>6}–{:<6} {n:>8} {}", hi - 1, "#".repeat((n * 40).div_ceil(most)));
    }
}

/// `--format v700`: every sample rendered as v7.00's `src/dataset.py` does, padded (or cut) to
/// `--ctx-len` tokens when it is not 0, image files checked to exist (v7.00's towers have no
/// preprocessing here to decode them for).
fn run_v700(a: &Args) -> Res<()> {
    let records = visualrwkv_data::v700::read_v700(&a.data.data)?;
    let (mut text, mut kept, mut missing, mut cut) = (Vec::new(), 0, 0, 0);
    for r in &records {
        let absent = r.images.iter().find(|i| !a.data.image_folder.join(i).is_file());
        if let Some(image) = absent {
            if matches!(a.data.on_missing_image, OnMissing::Error) {
                return Err(visualrwkv_data::DataError::Image {
                    path: a.data.data.clone(),
                    id: r.id.clone(),
                    image: a.data.image_folder.join(image),
                    why: "not found".into(),
                }
                .into());
            }
            missing += 1;
            continue;
        }
        let t = visualrwkv_data::v700::tokenize_v700(r, Tokenizer::world(), a.num_token_per_image);
        let (ids, labels) = if a.ctx_len > 0 { t.padded(a.ctx_len) } else { (t.input_ids.clone(), t.labels.clone()) };
        cut += usize::from(a.ctx_len > 0 && t.input_ids.len() > a.ctx_len);
        let line = serde_json::json!({
            "id": t.id, "input_ids": ids, "labels": labels, "images": t.images, "input_text": t.input_text,
        });
        writeln!(text, "{line}")?;
        kept += 1;
    }
    visualrwkv_checkpoint::write_atomic(&a.out, &text)?;
    let images: usize = records.iter().map(|r| r.images.len()).sum();
    println!("samples {} · images {images} · truncated {cut} · skipped (missing image) {missing}", records.len());
    println!("wrote {} ({kept} samples)", a.out.display());
    Ok(())
}

/// Runs `dataset`.
pub fn run(a: Args) -> Res<()> {
    let _ = &a.device;
    if a.format == DataFormat::V700 {
        return run_v700(&a);
    }
    if a.prompt == PromptArg::SandwichRepeat {
        return Err("--prompt sandwich-repeat has no official dataset layout (first, last, sandwich)".into());
    }
    let strategy = a.prompt.strategy();
    let records = read_llava(&a.data.data)?;
    let options = DatasetOptions {
        ctx_len: a.ctx_len,
        on_missing_image: a.data.on_missing_image.into(),
        ..DatasetOptions::new(&a.data.image_folder, strategy, a.image_rows)
    };
    let mut prepared = prepare(&records, Tokenizer::world(), &options)?;
    if !a.no_decode {
        let processor = match &a.vision_config {
            Some(c) => ImageProcessor::for_tower(&VisionConfig::from_hf_json(c)?),
            None => ImageProcessor::clip_336(),
        };
        let with_image: Vec<usize> =
            (0..prepared.samples.len()).filter(|&i| prepared.samples[i].image.is_some()).collect();
        let samples = Arc::new(prepared.samples.clone());
        let t0 = Instant::now();
        let mut unreadable = Vec::new();
        let workers = a.data.workers();
        for item in Loader::spawn(samples, with_image.clone(), a.data.loader(processor, 4 * workers))? {
            let item = item?;
            if item.skipped {
                unreadable.push(with_image[item.position]);
            }
        }
        let secs = t0.elapsed().as_secs_f64();
        eprintln!(
            "decoded {} images in {secs:.2} s ({:.1} images/s on {workers} threads)",
            with_image.len(),
            with_image.len() as f64 / secs.max(1e-9)
        );
        for &i in unreadable.iter().rev() {
            prepared.samples.remove(i);
            prepared.report.rows.remove(i);
            prepared.report.with_image -= 1;
            prepared.report.skip(visualrwkv_data::SkipReason::MissingImage);
        }
    }
    let mut text = Vec::new();
    for s in &prepared.samples {
        let line = serde_json::json!({ "id": s.id, "input_ids": s.input_ids, "labels": s.labels });
        writeln!(text, "{line}")?;
    }
    visualrwkv_checkpoint::write_atomic(&a.out, &text)?;
    print_report(&prepared.report);
    println!("wrote {} ({} samples)", a.out.display(), prepared.samples.len());
    Ok(())
}
