//! `visualrwkv convert`: a checkpoint to safetensors under the same key names, optionally with
//! the decoder's matrices quantised.

use std::path::PathBuf;

use visualrwkv_rwkv::checkpoint::{write_safetensors, write_safetensors_quantized};
use visualrwkv_rwkv::{Arch, Rwkv7Config, RwkvConfig, TensorMap, WeightDtype};

use crate::Res;

/// The weight types `--quantize` takes.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Quantize {
    /// int8 in blocks of 32 with an f32 scale each (1.125 bytes per weight).
    I8,
    /// 4-bit in blocks of 32 with an f32 scale each (0.625 bytes per weight).
    Q4,
}

/// Flags of `convert`.
#[derive(clap::Args)]
pub struct Args {
    /// Input checkpoint.
    #[arg(long)]
    from: PathBuf,
    /// Output safetensors file.
    #[arg(long)]
    to: PathBuf,
    /// Store the embedding, head and projection matrices block-quantised as `--decoder i8|q4`
    /// holds them (the rest stays f32); every command reads such a file (dequantised on load).
    #[arg(long, value_enum)]
    quantize: Option<Quantize>,
}

/// Checks the checkpoint is a complete RWKV-6 (x060) or RWKV-7 (x070) one and writes it as
/// safetensors (f32, or with the fused decoder's matrices block-quantised).
pub fn run(a: Args) -> Res<()> {
    let map = TensorMap::read(&a.from)?;
    match Arch::detect(&map)? {
        Arch::X060 => {
            RwkvConfig::from_checkpoint(&map)?;
        }
        Arch::X070 => {
            Rwkv7Config::from_checkpoint(&map)?;
        }
    }
    match a.quantize {
        None => write_safetensors(&map, &a.to)?,
        Some(q) => {
            let dtype = match q {
                Quantize::I8 => WeightDtype::I8,
                Quantize::Q4 => WeightDtype::Q4,
            };
            write_safetensors_quantized(&map, dtype, &a.to)?
        }
    }
    let bytes = std::fs::metadata(&a.to).map(|m| m.len()).unwrap_or(0);
    eprintln!("wrote {} tensors ({:.1} MB) to {}", map.tensors.len(), bytes as f64 / 1e6, a.to.display());
    Ok(())
}
