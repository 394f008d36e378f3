//! `visualrwkv generate`: text after a prompt, streamed to stdout.

use std::path::PathBuf;

use visualrwkv::{Engine, generate, generate_tokens};
use visualrwkv_rwkv::{Arch, RwkvBackend};

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
    /// Tokenizer: `world`, `bytes` (the World vocabulary's 256 byte tokens), `auto` (world when
    /// the model has a row for each of its ids, else bytes) or a vocabulary file.
    #[arg(long, default_value = "auto")]
    tokenizer: String,
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
        let options = self.sampling.options()?;
        if Arch::of_file(&self.model)? == Arch::X070 {
            // RWKV-7 runs on the model's tensor ops (the fused decoder runs x060 only).
            self.sampling.decoder.dtype_for(Arch::X070, spec)?;
            let model = visualrwkv_rwkv::x070::load::<B>(&self.model, &dev)?;
            let tokenizer = crate::args::pick_tokenizer(&self.tokenizer, model.config().vocab_size)?;
            generate_tokens(&model, tokenizer, &self.prompt, &options, print_stream())?;
            println!();
            return Ok(());
        }
        let (model, decoder) = match self.sampling.decoder.dtype(spec)? {
            Some(dtype) => {
                let (model, decoder) = visualrwkv_rwkv::load_fused::<B>(&self.model, dtype, &dev)?;
                (model, Some(decoder))
            }
            None => (visualrwkv_rwkv::load::<B>(&self.model, &dev)?, None),
        };
        let tokenizer = crate::args::pick_tokenizer(&self.tokenizer, model.config().vocab_size)?;
        generate(&model, tokenizer, &self.prompt, &options, Engine::from(decoder.as_ref()), print_stream())?;
        println!();
        Ok(())
    }
}
