//! `visualrwkv generate`: text after a prompt, streamed to stdout.

use std::path::PathBuf;

use visualrwkv::{Engine, generate, generate_tokens_v700_padded};
use visualrwkv_rwkv::{LanguageModel, RwkvBackend};

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
        let options = self.sampling.options()?;
        // Either architecture (told from the keys): the fused decoder on the CPU, else the
        // model's tensor ops.
        let (model, decoder) = match self.sampling.decoder.dtype(spec)? {
            Some(dtype) => {
                let (model, decoder) = visualrwkv_rwkv::load_fused_model::<B>(&self.model, dtype, &dev)?;
                (model, Some(decoder))
            }
            None => (LanguageModel::load(&self.model, &dev)?, None),
        };
        let tokenizer = crate::args::pick_tokenizer(&self.tokenizer, model.dims().vocab_size)?;
        if self.v700_padding {
            generate_tokens_v700_padded(&model, tokenizer, &self.prompt, &options, print_stream())?;
        } else {
            generate(&model, tokenizer, &self.prompt, &options, Engine::from(decoder.as_ref()), print_stream())?;
        }
        println!();
        Ok(())
    }
}
