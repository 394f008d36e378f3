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
        input.model.generate(&input.sample, input.scan.as_ref(), input.tokenizer, &options, engine, print_stream())?;
        println!();
        Ok(())
    }
}
