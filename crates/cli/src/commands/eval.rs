//! `visualrwkv eval`: answer a benchmark's questions into an answer file, as the official
//! `evaluate.py` does — resumable, split into chunks across processes, images and image states
//! cached across questions.

use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use visualrwkv::answering::{Answerer, Picture};
use visualrwkv::{Engine, VlmError};
use visualrwkv_eval::answers::{AnswerFile, answer_id, answered, round3};
use visualrwkv_eval::{Answer, AnswerMetadata, ImageRef, Question, QuestionFormat, chunk_range, read_questions};
use visualrwkv_rwkv::RwkvBackend;
use visualrwkv_vision::VisionError;

use super::dataset::OnMissing;
use super::vlm::{LoadedModel, ModelArgs};
use crate::Res;
use crate::args::{DecoderKind, SamplingArgs};
use crate::device::{DeviceArgs, DeviceSpec, Job};

/// How the question file is read.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Format {
    /// By extension: .jsonl, .json, .tsv (MMBench).
    Auto,
    /// JSON lines {question_id, image, text | conversations, category}.
    Jsonl,
    /// A JSON list of such objects.
    Json,
    /// MMBench TSV, English instruction.
    Mmbench,
    /// MMBench TSV, Chinese instruction.
    MmbenchCn,
}

impl From<Format> for QuestionFormat {
    fn from(f: Format) -> Self {
        match f {
            Format::Auto => QuestionFormat::Auto,
            Format::Jsonl => QuestionFormat::JsonLines,
            Format::Json => QuestionFormat::Json,
            Format::Mmbench => QuestionFormat::Mmbench,
            Format::MmbenchCn => QuestionFormat::MmbenchCn,
        }
    }
}

/// Flags of `eval`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// The questions: JSON lines {question_id, image, text[, category]} (LLaVA-1.5), a JSON list
    /// with `conversations` (the official evaluate.py input), or an MMBench .tsv.
    #[arg(long)]
    questions: PathBuf,
    /// How to read --questions.
    #[arg(long, value_enum, default_value_t = Format::Auto)]
    format: Format,
    /// The folder the questions' image files are relative to.
    #[arg(long, default_value = ".")]
    image_folder: PathBuf,
    /// The answer file (JSON lines, one per question, written as each is answered).
    #[arg(long)]
    answers: PathBuf,
    /// Continue an interrupted run: keep the answers already in --answers, answer the rest.
    #[arg(long)]
    resume: bool,
    /// Split the questions into this many consecutive chunks (one per process or GPU)...
    #[arg(long, default_value_t = 1)]
    chunks: usize,
    /// ...and answer this one (0-based).
    #[arg(long, default_value_t = 0)]
    chunk_index: usize,
    /// A question whose image file is missing: error (stop) or skip (no answer; counted).
    #[arg(long, value_enum, default_value_t = OnMissing::Error)]
    on_missing_image: OnMissing,
    /// The answers' `model_id` (default: the checkpoint's folder name, as evaluate.py).
    #[arg(long)]
    model_id: Option<String>,
    /// 0 = greedy (the official evaluation).
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Nucleus threshold when sampling.
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// Maximum answer tokens (evaluate.py's max_new_tokens).
    #[arg(long, default_value_t = 128)]
    max_tokens: usize,
    /// Sampling seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// How single-token steps run (see `chat --help`).
    #[arg(long, value_enum, default_value_t = DecoderKind::Auto)]
    decoder: DecoderKind,
    /// Images (and image states) kept for later questions on the same image.
    #[arg(long, default_value_t = 16)]
    image_cache: usize,
    /// Decode as VisualRWKV-7 v7.00's `generate` does: the sequence left-padded with "\n\n"
    /// (token 261) to a multiple of 16 rows at every step (about 16x the work; on the model's
    /// tensor ops). For reproducing v7.00's outputs exactly.
    #[arg(long)]
    v700_padding: bool,
    #[command(flatten)]
    device: DeviceArgs,
}

impl Job for Args {
    type Output = ();

    fn device_args(&self) -> &DeviceArgs {
        &self.device
    }

    fn run<B: RwkvBackend>(self, dev: B::Device, spec: &DeviceSpec) -> Res<()> {
        let all = read_questions(&self.questions, self.format.into())?;
        let range = chunk_range(all.len(), self.chunks, self.chunk_index)?;
        let questions = &all[range.clone()];
        let (mut out, done) = if self.resume {
            let (file, resumed) = AnswerFile::resume(&self.answers)?;
            if resumed.torn_bytes > 0 {
                eprintln!("{}: cut off a torn last line ({} bytes)", self.answers.display(), resumed.torn_bytes);
            }
            let ids: Vec<String> = questions.iter().map(|q| q.id_text()).collect();
            (file, answered(&ids, &resumed.answers, &self.answers)?)
        } else {
            (AnswerFile::create(&self.answers)?, vec![false; questions.len()])
        };
        let pending: Vec<&visualrwkv_eval::Question> =
            questions.iter().zip(&done).filter(|(_, d)| !**d).map(|(q, _)| q).collect();
        eprintln!(
            "{}: questions {}..{} of {} (chunk {} of {}); {} answered before, {} to answer",
            self.questions.display(),
            range.start,
            range.end,
            all.len(),
            self.chunk_index,
            self.chunks,
            questions.len() - pending.len(),
            pending.len()
        );
        if pending.is_empty() {
            return Ok(());
        }
        let LoadedModel { model, fused, scan, strategy, tokenizer } =
            self.model.load::<B>(&dev, self.model.fused_dtype(self.decoder, spec)?)?;
        let sampling = SamplingArgs::evaluation(self.decoder, self.temperature, self.top_p, self.max_tokens, self.seed);
        let options = sampling.options()?;
        let engine = Engine::from(fused.as_ref().map(|(decoder, _)| decoder));
        let mut answerer =
            Answerer::new(&model, scan.as_ref(), strategy.as_ref(), tokenizer, options, engine, self.image_cache)
                .with_v700_padding(self.v700_padding);
        if let Some((_, tower)) = &fused {
            answerer = answerer.with_fused_tower(tower);
        }
        let model_id = self.model_id.clone().unwrap_or_else(|| self.model.model_id());
        let bar = ProgressBar::new(pending.len() as u64);
        bar.set_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} questions · {per_sec} · ETA {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        let t0 = Instant::now();
        let (mut written, mut skipped) = (0usize, 0usize);
        for q in pending {
            match answer_question(
                &mut answerer,
                q,
                &self.questions,
                &self.image_folder,
                self.on_missing_image,
                &model_id,
            )? {
                Some(answer) => {
                    out.write(&answer)?;
                    written += 1;
                }
                None => skipped += 1,
            }
            bar.inc(1);
        }
        out.sync()?;
        bar.finish_and_clear();
        let secs = t0.elapsed().as_secs_f64();
        let s = answerer.stats;
        eprintln!(
            "answered {written} questions in {secs:.1} s ({:.2} questions/s); skipped {skipped} with a missing image; images encoded {}, reused {}; image states reused {}",
            written as f64 / secs.max(1e-9),
            s.images_encoded,
            s.image_hits,
            s.state_hits
        );
        println!("wrote {} ({written} answers)", out.path().display());
        Ok(())
    }
}

/// Answers question `q` of the file `questions` (image paths relative to `image_folder`) as the
/// official `evaluate.py` records it, under `model_id`. `None`: its image file is missing and
/// `on_missing` says skip. Errors name the file, the line and the question id.
pub fn answer_question<B: RwkvBackend>(
    answerer: &mut Answerer<'_, B>,
    q: &Question,
    questions: &Path,
    image_folder: &Path,
    on_missing: OnMissing,
    model_id: &str,
) -> Res<Option<Answer>> {
    let at =
        |e: &dyn std::fmt::Display| format!("{}:{}: question_id {}: {e}", questions.display(), q.line, q.question_id);
    let processor = answerer.processor().clone();
    let result = match &q.image {
        Some(ImageRef::File(file)) => {
            let path = image_folder.join(file);
            if !path.is_file() {
                if matches!(on_missing, OnMissing::Skip) {
                    return Ok(None);
                }
                return Err(at(&format!(
                    "image {} not found (--image-folder {}; --on-missing-image skip leaves it out)",
                    path.display(),
                    image_folder.display()
                ))
                .into());
            }
            let mut load = || processor.open(&path).map(Picture::Image).map_err(VlmError::from);
            answerer.answer(&q.text, Some((&path.display().to_string(), &mut load)))
        }
        Some(inline @ ImageRef::Inline(b64)) => {
            let key = format!("inline:{}", answer_id(&[b64]));
            let origin = format!("{} row {}", questions.display(), q.line);
            let mut load = || -> Result<Picture, VlmError> {
                let bytes = inline.inline_bytes().unwrap_or(Ok(Vec::new())).map_err(|e| {
                    VlmError::Vision(VisionError::Image {
                        origin: origin.clone(),
                        why: format!("the base64 image does not decode: {e}"),
                    })
                })?;
                Ok(Picture::Image(processor.decode(&bytes, &origin)?))
            };
            answerer.answer(&q.text, Some((&key, &mut load)))
        }
        None => answerer.answer(&q.text, None),
    };
    let a = result.map_err(|e| at(&e))?;
    let id = q.id_text();
    Ok(Some(Answer {
        question_id: q.question_id.clone(),
        answer_id: answer_id(&[model_id, &id, &a.prompt, &a.text]),
        prompt: a.prompt,
        text: a.text,
        model_id: model_id.to_string(),
        metadata: AnswerMetadata {
            image_file: q.image.as_ref().and_then(|i| i.file()).map(str::to_string),
            category: q.category.clone(),
        },
        avg_logit: round3(a.avg_logit),
        avg_prob: round3(a.avg_prob),
    }))
}
