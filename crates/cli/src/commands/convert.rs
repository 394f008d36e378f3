//! `visualrwkv convert`: a checkpoint to safetensors under the same key names.

use std::path::PathBuf;

use visualrwkv_rwkv::checkpoint::write_safetensors;
use visualrwkv_rwkv::{RwkvConfig, TensorMap};

use crate::Res;

/// Flags of `convert`.
#[derive(clap::Args)]
pub struct Args {
    /// Input checkpoint.
    #[arg(long)]
    from: PathBuf,
    /// Output safetensors file.
    #[arg(long)]
    to: PathBuf,
}

/// Checks the checkpoint is an RWKV-6 one and writes it as F32 safetensors.
pub fn run(a: Args) -> Res<()> {
    let map = TensorMap::read(&a.from)?;
    RwkvConfig::from_checkpoint(&map)?;
    write_safetensors(&map, &a.to)?;
    eprintln!("wrote {} tensors to {}", map.tensors.len(), a.to.display());
    Ok(())
}
