//! `visualrwkv chat`: a question about an image, the answer streamed from a cached state.

use visualrwkv::Engine;
use visualrwkv_rwkv::RwkvBackend;

use super::vlm::VlmArgs;
use crate::Res;
use crate::args::{SamplingArgs, print_stream};
use crate::device::{DeviceArgs, DeviceSpec, Job};

/// Flags of `chat`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    vlm: VlmArgs,
    /// Decode as VisualRWKV-7 v7.00's `generate` does: the sequence left-padded with "\n\n"
    /// (token 261) to a multiple of 16 rows at every step (about 16x the work; on the model's
    /// tensor ops). For reproducing v7.00's outputs exactly.
    #[arg(long)]
    v700_padding: bool,
    #[command(flatten)]
    sampling: SamplingArgs,
    #[command(flatten)]
    device: DeviceArgs,
}

impl Job for Args {
    type Output = ();

    fn device_args(&self) -> &DeviceArgs {
        &self.device
    }

    fn run<B: RwkvBackend>(self, dev: B::Device, spec: &DeviceSpec) -> Res<()> {
        let input = self.vlm.load::<B>(&dev, self.vlm.fused_dtype(self.sampling.decoder, spec)?)?;
        let options = self.sampling.options()?;
        let engine = Engine::from(input.decoder.as_ref());
        if self.v700_padding {
            input.model.generate_v700_padded(
                &input.sample,
                input.scan.as_ref(),
                input.tokenizer,
                &options,
                print_stream(),
            )?;
        } else {
            input.model.generate(
                &input.sample,
                input.scan.as_ref(),
                input.tokenizer,
                &options,
                engine,
                print_stream(),
            )?;
        }
        println!();
        Ok(())
    }
}
