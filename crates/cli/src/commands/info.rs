//! `visualrwkv info`: the configuration inferred from a checkpoint.

use std::path::PathBuf;

use visualrwkv_rwkv::{Arch, Rwkv7Config, RwkvConfig, TensorMap};

use crate::Res;

/// Flags of `info`.
#[derive(clap::Args)]
pub struct Args {
    /// The checkpoint.
    #[arg(long)]
    model: PathBuf,
}

/// Prints the inferred configuration as JSON; the architecture (x060 or x070) is told from the
/// keys.
pub fn run(a: Args) -> Res<()> {
    let map = TensorMap::read(&a.model)?;
    let parameters = map.tensors.values().map(|(s, _)| s.iter().product::<usize>()).sum::<usize>();
    let info = match Arch::detect(&map)? {
        Arch::X060 => {
            let c = RwkvConfig::from_checkpoint(&map)?;
            serde_json::json!({
                "arch": "rwkv6 x060", "version": "x060",
                "n_layer": c.n_layer, "n_embd": c.n_embd, "n_head": c.n_head, "head_size": c.head_size,
                "dim_att": c.dim_att(), "dim_ffn": c.dim_ffn, "vocab_size": c.vocab_size,
                "d_mix_lora": c.d_mix, "d_decay_lora": c.d_decay, "parameters": parameters,
            })
        }
        Arch::X070 => {
            let c = Rwkv7Config::from_checkpoint(&map)?;
            serde_json::json!({
                "arch": "rwkv7 x070", "version": "x070",
                "n_layer": c.n_layer, "n_embd": c.n_embd, "n_head": c.n_head, "head_size": c.head_size,
                "dim_att": c.n_head * c.head_size, "dim_ffn": c.dim_ffn, "vocab_size": c.vocab_size,
                "d_decay_lora": c.d_decay, "d_aaa_lora": c.d_aaa, "d_mv_lora": c.d_mv, "d_gate_lora": c.d_gate,
                "parameters": parameters,
            })
        }
    };
    println!("{}", serde_json::to_string_pretty(&info)?);
    Ok(())
}
