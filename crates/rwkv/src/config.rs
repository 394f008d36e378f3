//! Model configuration, inferred from checkpoint tensor shapes.

use burn::config::Config;

use crate::error::ConfigError;

/// Sizes of an RWKV-6 (x060) model. Every field can be read off the tensor shapes of a
/// checkpoint ([`RwkvConfig::infer`]); nothing is hard-coded (the LoRA ranks differ between
/// releases, the fixture's `dim_ffn` is not the 3.5x default).
#[derive(Config, Debug, PartialEq, Eq)]
pub struct RwkvConfig {
    /// Number of blocks L.
    pub n_layer: usize,
    /// Residual width C (`n_embd`).
    pub n_embd: usize,
    /// Number of heads H.
    pub n_head: usize,
    /// Head size N (`C_att = H·N`).
    pub head_size: usize,
    /// Channel-mix hidden width F.
    pub dim_ffn: usize,
    /// Vocabulary size V (rows of `emb` and `head`).
    pub vocab_size: usize,
    /// Rank of the token-shift LoRA (`time_maa_w1` is `[C, 5·D_MIX]`).
    pub d_mix: usize,
    /// Rank of the decay LoRA (`time_decay_w1` is `[C, D_DECAY]`).
    pub d_decay: usize,
}

impl RwkvConfig {
    /// `C_att = H·N`, the width of r, k, v, g and the WKV state.
    pub fn dim_att(&self) -> usize {
        self.n_head * self.head_size
    }

    /// The defaults of the official trainer for width `n_embd` (head size 64, `dim_ffn` =
    /// 3.5·C rounded down to a multiple of 32, LoRA ranks 32/64, or 64/128 from C = 4096).
    pub fn official(n_layer: usize, n_embd: usize, vocab_size: usize) -> Self {
        let big = n_embd >= 4096;
        Self {
            n_layer,
            n_embd,
            n_head: n_embd / 64,
            head_size: 64,
            dim_ffn: (n_embd * 7 / 2) / 32 * 32,
            vocab_size,
            d_mix: if big { 64 } else { 32 },
            d_decay: if big { 128 } else { 64 },
        }
    }

    /// Every key of a checkpoint of this configuration with its shape, in the official layout
    /// (from the key table, [`crate::weights::weight_keys`]).
    pub fn expected_keys(&self) -> Vec<(String, Vec<usize>)> {
        crate::weights::weight_keys(self).into_iter().map(|k| (k.official, k.shape)).collect()
    }

    /// Infers the configuration from `shape_of(key)` (the shapes of a checkpoint's tensors).
    pub fn infer(shape_of: impl Fn(&str) -> Option<Vec<usize>>, layer_keys: &[String]) -> Result<Self, ConfigError> {
        let dims = |key: &str, rank: usize| -> Result<Vec<usize>, ConfigError> {
            let shape = shape_of(key).ok_or_else(|| ConfigError::MissingKey(key.into()))?;
            if shape.len() == rank { Ok(shape) } else { Err(ConfigError::Rank { key: key.into(), shape, rank }) }
        };
        let emb = dims("emb.weight", 2)?;
        let n_layer = layer_keys
            .iter()
            .filter_map(|k| k.strip_prefix("blocks.")?.split('.').next()?.parse::<usize>().ok())
            .max()
            .map_or(0, |m| m + 1);
        if n_layer == 0 {
            return Err(ConfigError::NoBlocks);
        }
        let u = dims("blocks.0.att.time_faaaa", 2)?;
        let ffn = dims("blocks.0.ffn.key.weight", 2)?;
        let w1 = dims("blocks.0.att.time_maa_w1", 2)?;
        let d1 = dims("blocks.0.att.time_decay_w1", 2)?;
        if w1[1] % 5 != 0 {
            return Err(ConfigError::MixColumns(w1[1]));
        }
        Ok(Self {
            n_layer,
            n_embd: emb[1],
            n_head: u[0],
            head_size: u[1],
            dim_ffn: ffn[0],
            vocab_size: emb[0],
            d_mix: w1[1] / 5,
            d_decay: d1[1],
        })
    }
}
