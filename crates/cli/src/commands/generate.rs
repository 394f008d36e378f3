//! `visualrwkv generate`: text after a prompt, streamed to stdout.

use std::path::PathBuf;

use visualrwkv::{Engine, generate};
use visualrwkv_rwkv::RwkvBackend;
use visualrwkv_tokenizer::Tokenizer;

use crate::Res;
use crate::args::{SamplingArgs, print_stream};
use crate::device::{DeviceArgs, DeviceSpec, Job};

/// Flags of `generate`.
#[derive(clap::Args)]
pub struct Args {
    /// The checkpoint.
    #[arg(long)]
    model: PathBuf,
    /// The prompt.
    #[arg(long)]
    prompt: String,
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
        let model = visualrwkv_rwkv::load::<B>(&self.model, &dev)?;
        let options = self.sampling.options()?;
        let decoder = self.sampling.decoder_for(&model, spec)?;
        generate(&model, Tokenizer::world(), &self.prompt, &options, Engine::from(decoder.as_ref()), print_stream())?;
        println!();
        Ok(())
    }
}
