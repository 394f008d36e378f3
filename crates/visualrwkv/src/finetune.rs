//! Fine-tuning on LLaVA-format data: stage 1 (projector) or stage 2 (projector + RWKV) over a
//! prepared dataset (`visualrwkv_data::prepare`), images streamed by worker threads
//! (`visualrwkv_data::loader`), the frozen tower run on the inner (non-autodiff) backend,
//! gradient accumulation, periodic checkpoints in the official layout ([`Trainer::save`]) and
//! a resume that continues exactly where the run stopped.
//!
//! Data order: epoch `e` visits the samples in `visualrwkv_data::epoch_order(n, e, seed)`; step
//! `s` takes the `batch × grad_accum` samples at positions `s·batch·grad_accum …` of the
//! concatenated epochs, so a resumed run sees the same samples as an uninterrupted one.
//!
//! # Shapes
//!
//! Loader pixels `[3, H, W]` → a micro-batch's images `[b, 3, H, W]` → tower features
//! `[b, n_tokens, D]` → pooled `[1, n, D]` per image → projected rows `[n, C]` in the sequence.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorData};
use visualrwkv_data::loader::{Loaded, Loader, LoaderOptions};
use visualrwkv_data::{Tokenized, epoch_order};
use visualrwkv_rwkv::RwkvBackend;
use visualrwkv_scan::{ImageLayout, Scan};
use visualrwkv_vision::{TowerKind, VisionTower, grid_pool};

use crate::training::{
    ImageFeatures, Replica, StepStats, TRAINER_DIR, TrainConfig, TrainError, TrainExample, Trainer, append_line,
    io_error as io,
};
use crate::vlm::{VisionOptions, VisualRwkv, VlmError};

/// Settings of a fine-tuning run.
#[derive(Clone, Debug)]
pub struct FinetuneConfig {
    /// Stage, optimiser steps, samples per micro-batch (`batch_size`), schedule, seed.
    pub train: TrainConfig,
    /// Micro-batches per optimiser step.
    pub grad_accum: usize,
    /// Save a checkpoint every this many steps (0: only at the end).
    pub save_every: usize,
    /// Stop (with a checkpoint) after this many steps of this invocation, to continue later with
    /// a resume, e.g. within a cluster job's time limit (`None`: run to the end).
    pub stop_after: Option<usize>,
}

/// One optimiser step of a fine-tuning run.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct FinetuneStep {
    /// Loss, rate, gradient norm, rows.
    #[serde(flatten)]
    pub stats: StepStats,
    /// Samples trained in this step.
    pub samples: usize,
    /// Samples per second of this step (data waiting included).
    pub samples_per_s: f64,
    /// Seconds this step waited for the loader.
    pub data_wait_s: f64,
    /// Seconds since the run (or the resume) started.
    pub elapsed_s: f64,
    /// Samples left out so far because their image could not be read.
    pub skipped_images: usize,
}

/// Progress of a fine-tuning run.
#[derive(Clone, Debug)]
pub enum FinetuneEvent {
    /// The run starts at `start_step` of `total_steps`.
    Started {
        /// Steps already done (after a resume).
        start_step: usize,
        /// Steps of the whole run.
        total_steps: usize,
        /// Samples in the dataset.
        samples: usize,
    },
    /// A step finished.
    Step(FinetuneStep),
    /// A checkpoint was written.
    Saved {
        /// Steps done.
        step: usize,
        /// The checkpoint directory.
        dir: PathBuf,
    },
}

/// Encodes the images of loaded samples with the frozen tower: features `[1, n, D]` per sample
/// that has an image (`None` for text-only ones), all on the inner backend.
pub fn tower_features<B: RwkvBackend>(
    tower: &VisionTower<B>,
    options: VisionOptions,
    loaded: &[Loaded],
    device: &B::Device,
) -> Result<Vec<Option<ImageFeatures<B>>>, TrainError> {
    let with: Vec<&Loaded> = loaded.iter().filter(|l| l.pixels.is_some()).collect();
    let mut out = vec![None; loaded.len()];
    let Some(first) = with.first() else { return Ok(out) };
    let (h, w) = first.size;
    let mut values = Vec::with_capacity(with.len() * 3 * h * w);
    for l in &with {
        if l.size != (h, w) {
            return Err(TrainError::ImageSizes { sample: l.sample.id.clone(), expected: (h, w), found: l.size });
        }
        values.extend_from_slice(l.pixels.as_deref().unwrap_or_default());
    }
    let pixels = Tensor::<B, 4>::from_data(TensorData::new(values, [with.len(), 3, h, w]), device);
    let (features, grid) = tower.features(pixels, options.layer).map_err(VlmError::from)?;
    let pooled =
        grid_pool(features, grid, tower.config.kind == TowerKind::Clip, options.pooling).map_err(VlmError::from)?;
    let layout = ImageLayout::new(pooled.grid_h, pooled.grid_w, pooled.extra);
    let [_, n, d] = pooled.features.dims();
    let mut k = 0;
    for (slot, l) in out.iter_mut().zip(loaded) {
        if l.pixels.is_some() {
            *slot = Some((pooled.features.clone().slice([k..k + 1, 0..n, 0..d]), layout));
            k += 1;
        }
    }
    Ok(out)
}

/// Positions `from..to` of the concatenated epochs over `n` samples, as sample indices.
fn order(n: usize, from: usize, to: usize, seed: u64) -> Vec<usize> {
    let mut out = Vec::with_capacity(to.saturating_sub(from));
    let mut epoch = usize::MAX;
    let mut perm = Vec::new();
    for q in from..to {
        if q / n != epoch {
            epoch = q / n;
            perm = epoch_order(n, epoch, seed);
        }
        out.push(perm[q % n]);
    }
    out
}

/// Keeps the first `step` lines of a metrics file (a resumed run rewrites what follows).
fn keep_lines(path: &Path, keep: usize) -> Result<(), TrainError> {
    let Ok(text) = std::fs::read_to_string(path) else { return Ok(()) };
    let kept: String = text.lines().take(keep).map(|l| format!("{l}\n")).collect();
    visualrwkv_checkpoint::write_atomic(path, kept.as_bytes()).map_err(|e| io(path, e))
}

/// Fine-tunes `model` on `data` (prepared samples; images under `loader.image_folder`) on
/// `devices` (several: data-parallel, feature `collective`, each replica loading every sample
/// and computing its part of each micro-batch) and saves checkpoints into `out` (see
/// [`Trainer::save`]), with per-step metrics appended to `out/metrics.jsonl` and
/// `out/metrics.csv`. With `resume`, continues the run saved in `out` (its settings win over
/// `config.train`; `model` gives the architecture and vision options). Returns the trainer
/// (replica 0's).
#[allow(clippy::too_many_arguments)]
pub fn finetune<B>(
    model: VisualRwkv<B>,
    data: Arc<Vec<Tokenized>>,
    config: &FinetuneConfig,
    loader: LoaderOptions,
    scan: &dyn Scan,
    devices: &[B::Device],
    out: &Path,
    resume: bool,
    on_event: &mut (dyn FnMut(&FinetuneEvent) + Send),
) -> Result<Trainer<B>, TrainError>
where
    B: AutodiffBackend + RwkvBackend,
    B::InnerBackend: RwkvBackend,
{
    if data.is_empty() {
        return Err(TrainError::Empty("the dataset's usable samples"));
    }
    if config.grad_accum == 0 {
        return Err(TrainError::AtLeastOne("--grad-accum"));
    }
    if devices.len() > 1 && config.train.batch_size < devices.len() {
        return Err(TrainError::BatchSplit { batch: config.train.batch_size, devices: devices.len() });
    }
    std::fs::create_dir_all(out).map_err(|e| io(out, e))?;
    let resuming = resume && out.join(TRAINER_DIR).join("trainer.json").is_file();
    let on_event = std::sync::Mutex::new(on_event);
    let run = Run { data: &data, config, loader: &loader, scan, out, resuming, on_event: &on_event };
    crate::parallel::on_replicas(model, devices, |model, device, replica| run.replica(model, device, replica))
}

/// What every replica of a fine-tuning run shares.
struct Run<'a, 'e> {
    data: &'a Arc<Vec<Tokenized>>,
    config: &'a FinetuneConfig,
    loader: &'a LoaderOptions,
    scan: &'a dyn Scan,
    out: &'a Path,
    resuming: bool,
    on_event: &'a std::sync::Mutex<&'e mut (dyn FnMut(&FinetuneEvent) + Send + 'e)>,
}

impl Run<'_, '_> {
    fn emit(&self, e: FinetuneEvent) {
        (self.on_event.lock().unwrap_or_else(|e| e.into_inner()))(&e);
    }

    /// The training loop of one replica (`None`: training alone). Replica 0 (or the lone
    /// trainer) writes metrics and checkpoints and reports events.
    fn replica<B>(
        &self,
        model: VisualRwkv<B>,
        device: &B::Device,
        replica: Option<Replica>,
    ) -> Result<Trainer<B>, TrainError>
    where
        B: AutodiffBackend + RwkvBackend,
        B::InnerBackend: RwkvBackend,
    {
        let (data, out) = (self.data, self.out);
        let lead = replica.is_none_or(|r| r.rank == 0);
        let mut trainer = if self.resuming {
            let t = Trainer::resume(out, model)?;
            let saved = t.meta["samples"].as_u64().unwrap_or(0) as usize;
            if saved != data.len() {
                return Err(TrainError::Resume {
                    path: out.to_path_buf(),
                    why: format!("the run was saved with {saved} samples, the dataset now has {}", data.len()),
                });
            }
            t
        } else {
            Trainer::new(model, self.config.train.clone())?
        };
        trainer.replica = replica;
        let accum = self.config.grad_accum;
        let per_step = trainer.config.batch_size * accum;
        trainer.meta = serde_json::json!({ "samples": data.len(), "grad_accum": accum });
        let (start, total) = (trainer.step, trainer.config.steps);
        let stop_at = self.config.stop_after.map_or(total, |n| (start + n).min(total));
        let jsonl = out.join("metrics.jsonl");
        let csv = out.join("metrics.csv");
        if lead {
            if self.resuming {
                keep_lines(&jsonl, start)?;
                keep_lines(&csv, start + 1)?;
            } else {
                let _ = std::fs::remove_file(&jsonl);
                std::fs::write(&csv, "step,loss,lr,grad_norm,rows,samples,samples_per_s,data_wait_s,elapsed_s\n")
                    .map_err(|e| io(&csv, e))?;
            }
            self.emit(FinetuneEvent::Started { start_step: start, total_steps: total, samples: data.len() });
        }
        let append = |path: &Path, line: String| -> Result<(), TrainError> {
            let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(|e| io(path, e))?;
            append_line(&mut f, path, &line)
        };
        if start >= stop_at {
            trainer.replica = None;
            return Ok(trainer);
        }
        let positions = order(data.len(), start * per_step, stop_at * per_step, trainer.config.seed);
        let mut stream = Loader::spawn(data.clone(), positions, self.loader.clone())?;
        let tower = trainer.model.vision.valid();
        let options = trainer.model.options;
        let began = Instant::now();
        let mut skipped = 0;
        while trainer.step < stop_at {
            let t0 = Instant::now();
            let mut wait = 0.0;
            let mut micro_batches = Vec::with_capacity(accum);
            let mut samples = 0;
            for _ in 0..accum {
                let mut loaded = Vec::with_capacity(trainer.config.batch_size);
                for _ in 0..trainer.config.batch_size {
                    let w0 = Instant::now();
                    let item = stream.next().ok_or(TrainError::LoaderEnded)?;
                    wait += w0.elapsed().as_secs_f64();
                    let item = item?;
                    if item.skipped {
                        skipped += 1;
                    } else {
                        loaded.push(item);
                    }
                }
                if loaded.is_empty() || replica.is_some_and(|r| r.part(loaded.len()).is_empty()) {
                    continue;
                }
                let features = tower_features(&tower, options, &loaded, device)?;
                let batch: Vec<TrainExample<B>> = loaded
                    .into_iter()
                    .zip(features)
                    .map(|(l, f)| TrainExample {
                        tokens: l.sample.input_ids,
                        labels: l.sample.labels,
                        image: f.map(|(t, layout)| (Tensor::from_inner(t), layout)),
                    })
                    .collect();
                samples += batch.len();
                micro_batches.push(batch);
            }
            if micro_batches.is_empty() {
                return Err(TrainError::NoSampleLeft(trainer.step + 1));
            }
            let stats = trainer.step_examples(&micro_batches, self.scan)?;
            if !lead {
                continue;
            }
            let secs = t0.elapsed().as_secs_f64();
            let step = FinetuneStep {
                stats,
                samples,
                samples_per_s: samples as f64 / secs.max(1e-9),
                data_wait_s: wait,
                elapsed_s: began.elapsed().as_secs_f64(),
                skipped_images: skipped,
            };
            append(&jsonl, serde_json::to_string(&step).unwrap_or_default())?;
            append(
                &csv,
                format!(
                    "{},{},{},{},{},{},{:.3},{:.4},{:.2}",
                    stats.step,
                    stats.loss,
                    stats.lr,
                    stats.grad_norm,
                    stats.rows,
                    samples,
                    step.samples_per_s,
                    wait,
                    step.elapsed_s
                ),
            )?;
            self.emit(FinetuneEvent::Step(step));
            let last = trainer.step == stop_at;
            if last || (self.config.save_every > 0 && trainer.step.is_multiple_of(self.config.save_every)) {
                trainer.save(out)?;
                self.emit(FinetuneEvent::Saved { step: trainer.step, dir: out.to_path_buf() });
            }
        }
        trainer.replica = None;
        Ok(trainer)
    }
}

#[cfg(test)]
mod tests {
    use super::order;

    #[test]
    fn order_concatenates_epoch_permutations_from_any_position() {
        let whole = order(5, 0, 12, 3);
        assert_eq!(order(5, 7, 12, 3), whole[7..].to_vec());
        let mut first = whole[..5].to_vec();
        first.sort();
        assert_eq!(first, vec![0, 1, 2, 3, 4]);
    }
}
