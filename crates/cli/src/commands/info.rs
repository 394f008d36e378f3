//! `visualrwkv info`: the configuration inferred from a checkpoint.

use std::path::PathBuf;

use visualrwkv_rwkv::{RwkvConfig, TensorMap};

use crate::Res;

/// Flags of `info`.
#[derive(clap::Args)]
pub struct Args {
    /// The checkpoint.
    #[arg(long)]
    model: PathBuf,
}

/// Prints the inferred configuration as JSON.
pub fn run(a: Args) -> Res<()> {
    let map = TensorMap::read(&a.model)?;
    let c = RwkvConfig::from_checkpoint(&map)?;
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({
            "arch": "rwkv6 x060",
            "n_layer": c.n_layer, "n_embd": c.n_embd, "n_head": c.n_head, "head_size": c.head_size,
            "dim_att": c.dim_att(), "dim_ffn": c.dim_ffn, "vocab_size": c.vocab_size,
            "d_mix_lora": c.d_mix, "d_decay_lora": c.d_decay,
            "parameters": map.tensors.values().map(|(s, _)| s.iter().product::<usize>()).sum::<usize>(),
        }))?
    );
    Ok(())
}
