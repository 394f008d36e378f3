//! Model configuration, inferred from checkpoint tensor shapes.

use burn::config::Config;

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

    /// Every key of a checkpoint of this configuration with its shape, in the official layout.
    pub fn expected_keys(&self) -> Vec<(String, Vec<usize>)> {
        let (c, a, f, v) = (self.n_embd, self.dim_att(), self.dim_ffn, self.vocab_size);
        let mut keys = vec![
            ("emb.weight".to_string(), vec![v, c]),
            ("blocks.0.ln0.weight".to_string(), vec![c]),
            ("blocks.0.ln0.bias".to_string(), vec![c]),
        ];
        for l in 0..self.n_layer {
            let p = |s: &str| format!("blocks.{l}.{s}");
            for n in ["ln1", "ln2"] {
                keys.push((p(&format!("{n}.weight")), vec![c]));
                keys.push((p(&format!("{n}.bias")), vec![c]));
            }
            for m in ["x", "w", "k", "v", "r", "g"] {
                keys.push((p(&format!("att.time_maa_{m}")), vec![1, 1, c]));
            }
            keys.push((p("att.time_maa_w1"), vec![c, 5 * self.d_mix]));
            keys.push((p("att.time_maa_w2"), vec![5, self.d_mix, c]));
            keys.push((p("att.time_decay"), vec![1, 1, a]));
            keys.push((p("att.time_decay_w1"), vec![c, self.d_decay]));
            keys.push((p("att.time_decay_w2"), vec![self.d_decay, a]));
            keys.push((p("att.time_faaaa"), vec![self.n_head, self.head_size]));
            for m in ["receptance", "key", "value", "gate"] {
                keys.push((p(&format!("att.{m}.weight")), vec![a, c]));
            }
            keys.push((p("att.output.weight"), vec![c, a]));
            keys.push((p("att.ln_x.weight"), vec![a]));
            keys.push((p("att.ln_x.bias"), vec![a]));
            keys.push((p("ffn.time_maa_k"), vec![1, 1, c]));
            keys.push((p("ffn.time_maa_r"), vec![1, 1, c]));
            keys.push((p("ffn.key.weight"), vec![f, c]));
            keys.push((p("ffn.receptance.weight"), vec![c, c]));
            keys.push((p("ffn.value.weight"), vec![c, f]));
        }
        keys.push(("ln_out.weight".to_string(), vec![c]));
        keys.push(("ln_out.bias".to_string(), vec![c]));
        keys.push(("head.weight".to_string(), vec![v, c]));
        keys
    }

    /// Infers the configuration from `shape_of(key)` (the shapes of a checkpoint's tensors).
    pub fn infer(shape_of: impl Fn(&str) -> Option<Vec<usize>>, layer_keys: &[String]) -> Result<Self, String> {
        let get = |k: &str| shape_of(k).ok_or_else(|| format!("missing key `{k}`"));
        let dims = |k: &str, rank: usize| -> Result<Vec<usize>, String> {
            let s = get(k)?;
            if s.len() == rank { Ok(s) } else { Err(format!("key `{k}` has shape {s:?}, expected rank {rank}")) }
        };
        let emb = dims("emb.weight", 2)?;
        let n_layer = layer_keys
            .iter()
            .filter_map(|k| k.strip_prefix("blocks.")?.split('.').next()?.parse::<usize>().ok())
            .max()
            .map_or(0, |m| m + 1);
        if n_layer == 0 {
            return Err("no `blocks.{l}.*` keys".into());
        }
        let u = dims("blocks.0.att.time_faaaa", 2)?;
        let ffn = dims("blocks.0.ffn.key.weight", 2)?;
        let w1 = dims("blocks.0.att.time_maa_w1", 2)?;
        let d1 = dims("blocks.0.att.time_decay_w1", 2)?;
        if w1[1] % 5 != 0 {
            return Err(format!("`blocks.0.att.time_maa_w1` has {} columns, not a multiple of 5", w1[1]));
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
