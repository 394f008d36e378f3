//! `visualrwkv bench-train`: stage-2 training speed of a random VisualRWKV at a given size, on
//! one device or data-parallel over several.

use std::path::PathBuf;

use burn::tensor::backend::AutodiffBackend;
use visualrwkv_efficiency::{Sizes, measure_train};
use visualrwkv_rwkv::RwkvBackend;

use crate::Res;
use crate::args::VisionArg;
use crate::device::{DeviceSpec, TrainDevices, TrainJob, run_train, with_device_memory};

/// Flags of `bench-train`.
#[derive(clap::Args)]
pub struct Args {
    /// RWKV width (2048: the 1.6B shape).
    #[arg(long, default_value_t = 2048)]
    width: usize,
    /// RWKV layers (24: the 1.6B shape).
    #[arg(long, default_value_t = 24)]
    layers: usize,
    /// Vocabulary.
    #[arg(long, default_value_t = 65536)]
    vocab: usize,
    /// The vision tower whose (frozen, cached) features start every sample.
    #[arg(long, value_enum, default_value_t = VisionArg::ClipL336)]
    vision: VisionArg,
    /// Rows per sample (image + text).
    #[arg(long, default_value_t = 1024)]
    ctx_len: usize,
    /// Samples per step (over all devices).
    #[arg(long, default_value_t = 4)]
    batch: usize,
    /// Optimiser steps (the first is not timed).
    #[arg(long, default_value_t = 6)]
    steps: usize,
    #[command(flatten)]
    devices: TrainDevices,
    /// Also write the result as JSON here.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Measures on the chosen devices and prints one JSON line.
pub fn run(a: Args) -> Res<()> {
    let devices = a.devices.list()?;
    let on_cuda = matches!(devices[0], DeviceSpec::Cuda(_));
    let names = devices.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(",");
    let out = a.out.clone();
    let (point, device_peak) = with_device_memory(std::process::id(), on_cuda, || run_train(a));
    let mut point = point?;
    point.device_peak_mib = device_peak;
    point.device = names;
    let line = serde_json::to_string(&point)?;
    println!("{line}");
    if let Some(path) = out {
        visualrwkv_checkpoint::write_atomic(&path, format!("{line}\n").as_bytes())?;
    }
    Ok(())
}

impl TrainJob for Args {
    type Output = visualrwkv_efficiency::TrainPoint;

    fn devices(&self) -> Res<Vec<DeviceSpec>> {
        self.devices.list()
    }

    fn run<B>(self, devices: Vec<B::Device>) -> Res<Self::Output>
    where
        B: AutodiffBackend + RwkvBackend,
        B::InnerBackend: RwkvBackend,
    {
        let sizes = Sizes { width: self.width, layers: self.layers, vocab: self.vocab };
        let vision = self.vision.sizes().ok_or("bench-train needs a --vision tower (stage 2 trains on images)")?;
        Ok(measure_train::<B>(sizes, &vision, self.ctx_len, self.batch, self.steps, &devices)?)
    }
}
