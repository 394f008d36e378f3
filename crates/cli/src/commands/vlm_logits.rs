//! `visualrwkv vlm-logits`: the VLM's logits over the whole assembled sequence.

use std::collections::HashMap;
use std::path::PathBuf;

use visualrwkv_rwkv::{RwkvBackend, TensorMap};

use super::vlm::VlmArgs;
use crate::Res;
use crate::args::{DecoderKind, values};
use crate::device::{DeviceArgs, DeviceSpec, Job};

/// Flags of `vlm-logits`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    vlm: VlmArgs,
    /// Output safetensors file.
    #[arg(long)]
    out: PathBuf,
    /// What runs the sequence: auto (the fused decoder with f32 matrices on the CPU, burn
    /// elsewhere), f32 / bf16 / f16 = the fused CPU decoder, burn = the model's tensor ops.
    #[arg(long, value_enum, default_value_t = DecoderKind::Auto)]
    decoder: DecoderKind,
    #[command(flatten)]
    device: DeviceArgs,
}

impl Job for Args {
    type Output = ();

    fn device_args(&self) -> &DeviceArgs {
        &self.device
    }

    fn run<B: RwkvBackend>(self, dev: B::Device, spec: &DeviceSpec) -> Res<()> {
        let input = self.vlm.load::<B>(&dev, self.vlm.fused_dtype(self.decoder, spec)?)?;
        let sample = input.sample;
        let logits = match &input.decoder {
            Some(decoder) => input.model.logits_fused(decoder, &sample, input.scan.as_ref())?,
            None => input.model.forward(std::slice::from_ref(&sample), input.scan.as_ref())?.remove(0),
        };
        let [t, v] = logits.dims();
        let mut map = TensorMap { origin: self.out.display().to_string(), tensors: HashMap::new() };
        map.tensors.insert("logits".into(), (vec![t, v], values(logits)?));
        let (start, end) = sample.image_span().ok_or("no image in the sequence")?;
        let ints = [
            ("tokens".to_string(), vec![t], sample.row_tokens()),
            ("image_span".to_string(), vec![2], vec![start as i64, end as i64]),
        ];
        visualrwkv_checkpoint::write_safetensors_with_ints(&map, &ints, &self.out)?;
        eprintln!("{t} rows, image rows {start}..{end}, vocabulary {v}");
        Ok(())
    }
}
