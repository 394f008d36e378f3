//! # visualrwkv-peers: peer benchmarks
//!
//! Puts this project's RWKV-6 next to other implementations on the same weights. Only benchmarks
//! use it; no library crate depends on it.
//!
//! - [`candle_tensors`]: the weights of an [`Rwkv`] under the names and layouts that
//!   `candle_transformers::models::rwkv_v6::Model` loads (Hugging Face's RWKV naming), and
//!   [`candle_compatible`]: the configurations that model can express (its LoRA ranks are tied to
//!   the head count: mix rank = H, decay rank = 2H).
//! - `benches/candle_rwkv.rs` (feature `candle`): prefill and decode tokens/s of both on random
//!   models shaped like RWKV-6 0.1B and 0.4B, in the same process.
//!
//! # Shapes
//!
//! Tensors are returned as `(shape, row-major f32 values)`; linear weights are transposed to
//! candle's `[out, in]`.

use std::collections::BTreeMap;

use visualrwkv_rwkv::{Rwkv, RwkvBackend, RwkvConfig, RwkvError};

/// A named tensor: shape and row-major values.
pub type HostTensor = (Vec<usize>, Vec<f32>);

/// `config` with the LoRA ranks candle's `rwkv_v6` hard-codes (mix rank = H, decay rank = 2H).
pub fn candle_compatible(config: &RwkvConfig) -> RwkvConfig {
    RwkvConfig { d_mix: config.n_head, d_decay: 2 * config.n_head, ..config.clone() }
}

/// The candle (Hugging Face RWKV) name of an official key, or `None` for a key candle does not
/// load. Blocks keep their index: `blocks.{l}.att.*` → `rwkv.blocks.{l}.attention.*` with
/// `time_maa_*` → `time_mix_*` and the mix names spelled out, `blocks.{l}.ffn.*` →
/// `rwkv.blocks.{l}.feed_forward.*`.
pub fn candle_name(official: &str) -> Option<String> {
    let top = [
        ("emb.weight", "rwkv.embeddings.weight"),
        ("ln_out.weight", "rwkv.ln_out.weight"),
        ("ln_out.bias", "rwkv.ln_out.bias"),
        ("head.weight", "head.weight"),
        ("blocks.0.ln0.weight", "rwkv.blocks.0.pre_ln.weight"),
        ("blocks.0.ln0.bias", "rwkv.blocks.0.pre_ln.bias"),
    ];
    if let Some((_, name)) = top.iter().find(|(o, _)| *o == official) {
        return Some(name.to_string());
    }
    let rest = official.strip_prefix("blocks.")?;
    let (layer, key) = rest.split_once('.')?;
    let key = if let Some(att) = key.strip_prefix("att.") {
        let mix = [
            ("time_maa_k", "time_mix_key"),
            ("time_maa_v", "time_mix_value"),
            ("time_maa_r", "time_mix_receptance"),
            ("time_maa_g", "time_mix_gate"),
        ];
        let att = match mix.iter().find(|(o, _)| *o == att) {
            Some((_, n)) => n.to_string(),
            None => att.replace("time_maa_", "time_mix_"),
        };
        format!("attention.{att}")
    } else if let Some(ffn) = key.strip_prefix("ffn.") {
        let ffn = ffn.replace("time_maa_k", "time_mix_key").replace("time_maa_r", "time_mix_receptance");
        format!("feed_forward.{ffn}")
    } else {
        key.to_string()
    };
    Some(format!("rwkv.blocks.{layer}.{key}"))
}

/// The weights of `model` under candle's `rwkv_v6` names (the official tensors of
/// [`Rwkv::to_tensor_map`], renamed by [`candle_name`]; candle keeps the official layouts).
/// Errors when the model's LoRA ranks are not the ones candle expects ([`candle_compatible`]).
pub fn candle_tensors<B: RwkvBackend>(model: &Rwkv<B>) -> Result<BTreeMap<String, HostTensor>, RwkvError> {
    let cfg = model.config();
    let want = candle_compatible(&cfg);
    if cfg != want {
        return Err(RwkvError::Shape {
            what: "LoRA ranks (d_mix, d_decay) for candle's rwkv_v6, which ties them to H".into(),
            expected: vec![want.d_mix, want.d_decay],
            found: vec![cfg.d_mix, cfg.d_decay],
        });
    }
    Ok(model.to_tensor_map()?.tensors.into_iter().filter_map(|(key, t)| Some((candle_name(&key)?, t))).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;

    fn small() -> RwkvConfig {
        RwkvConfig {
            n_layer: 2,
            n_embd: 16,
            n_head: 2,
            head_size: 8,
            dim_ffn: 56,
            vocab_size: 11,
            d_mix: 2,
            d_decay: 4,
        }
    }

    #[test]
    fn names_and_layouts_follow_candle() {
        let model = small().init::<NdArray>(&Default::default());
        let m = candle_tensors(&model).unwrap();
        assert_eq!(m["head.weight"].0, vec![11, 16]);
        assert_eq!(m["rwkv.blocks.1.feed_forward.key.weight"].0, vec![56, 16]);
        assert_eq!(m["rwkv.blocks.0.attention.time_mix_w2"].0, vec![5, 2, 16]);
        assert_eq!(m["rwkv.blocks.0.attention.time_mix_gate"].0, vec![1, 1, 16]);
        assert!(m.contains_key("rwkv.blocks.0.pre_ln.weight") && !m.contains_key("rwkv.blocks.1.pre_ln.weight"));
        // Transposition: head.weight[o][i] == burn head [i][o].
        let burn_head = model.head.weight.val().into_data().to_vec::<f32>().unwrap();
        assert_eq!(m["head.weight"].1[3 * 16 + 5], burn_head[5 * 11 + 3]);
        assert_eq!(m["rwkv.blocks.1.attention.time_mix_receptance"].0, vec![1, 1, 16]);
        assert_eq!(m["rwkv.blocks.1.feed_forward.time_mix_key"].0, vec![1, 1, 16]);
        assert_eq!(m.len(), small().expected_keys().len());
    }

    #[test]
    fn other_lora_ranks_are_an_error() {
        let model = RwkvConfig { d_mix: 3, ..small() }.init::<NdArray>(&Default::default());
        let err = candle_tensors(&model).unwrap_err().to_string();
        assert!(err.contains("d_mix"), "{err}");
    }
}
