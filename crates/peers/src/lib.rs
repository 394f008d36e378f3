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

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use visualrwkv_rwkv::{Rwkv, RwkvBackend, RwkvConfig, RwkvError};

/// A named tensor: shape and row-major values.
pub type HostTensor = (Vec<usize>, Vec<f32>);

/// `config` with the LoRA ranks candle's `rwkv_v6` hard-codes (mix rank = H, decay rank = 2H).
pub fn candle_compatible(config: &RwkvConfig) -> RwkvConfig {
    RwkvConfig { d_mix: config.n_head, d_decay: 2 * config.n_head, ..config.clone() }
}

fn host<B: Backend, const D: usize>(t: Tensor<B, D>, name: &str) -> Result<HostTensor, RwkvError> {
    let shape = t.dims().to_vec();
    let v = t
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .map_err(|e| RwkvError::Input(format!("{name}: cannot read the tensor: {e:?}")))?;
    Ok((shape, v))
}

/// `[in, out]` → `[out, in]`.
fn transposed((shape, v): HostTensor) -> HostTensor {
    let (i, o) = (shape[0], shape[1]);
    let mut t = vec![0f32; v.len()];
    for a in 0..i {
        for b in 0..o {
            t[b * i + a] = v[a * o + b];
        }
    }
    (vec![o, i], t)
}

/// The weights of `model` under candle's `rwkv_v6` names. Errors when the model's LoRA ranks are
/// not the ones candle expects ([`candle_compatible`]).
pub fn candle_tensors<B: RwkvBackend>(model: &Rwkv<B>) -> Result<BTreeMap<String, HostTensor>, RwkvError> {
    let cfg = model.config();
    if cfg != candle_compatible(&cfg) {
        return Err(RwkvError::Input(format!(
            "candle's rwkv_v6 needs LoRA ranks d_mix = H = {} and d_decay = 2H = {}, found {} and {}",
            cfg.n_head,
            2 * cfg.n_head,
            cfg.d_mix,
            cfg.d_decay
        )));
    }
    let c = cfg.n_embd;
    let mut m = BTreeMap::new();
    let mut put = |name: String, t: HostTensor| {
        m.insert(name, t);
    };
    put("rwkv.embeddings.weight".into(), host(model.emb.weight.val(), "emb.weight")?);
    put("head.weight".into(), transposed(host(model.head.weight.val(), "head.weight")?));
    let ln = |l: &burn::nn::LayerNorm<B>, name: &str| -> Result<[HostTensor; 2], RwkvError> {
        let w = host(l.gamma.val(), name)?;
        let b = match &l.beta {
            Some(b) => host(b.val(), name)?,
            None => (vec![c], vec![0.0; c]),
        };
        Ok([w, b])
    };
    let [w, b] = ln(&model.ln_out, "ln_out")?;
    put("rwkv.ln_out.weight".into(), w);
    put("rwkv.ln_out.bias".into(), b);
    let [w, b] = ln(&model.ln0, "ln0")?;
    put("rwkv.blocks.0.pre_ln.weight".into(), w);
    put("rwkv.blocks.0.pre_ln.bias".into(), b);
    let row = |v: HostTensor| (vec![1, 1, v.1.len()], v.1);
    for (i, blk) in model.blocks.iter().enumerate() {
        let p = format!("rwkv.blocks.{i}");
        for (n, l) in [("ln1", &blk.ln1), ("ln2", &blk.ln2)] {
            let [w, b] = ln(l, n)?;
            put(format!("{p}.{n}.weight"), w);
            put(format!("{p}.{n}.bias"), b);
        }
        let a = &blk.att;
        for (n, l) in [
            ("key", &a.key),
            ("receptance", &a.receptance),
            ("value", &a.value),
            ("gate", &a.gate),
            ("output", &a.output),
        ] {
            put(format!("{p}.attention.{n}.weight"), transposed(host(l.weight.val(), n)?));
        }
        let gn = |t: &Option<burn::module::Param<Tensor<B, 1>>>, fill: f32| -> Result<HostTensor, RwkvError> {
            match t {
                Some(t) => host(t.val(), "ln_x"),
                None => Ok((vec![c], vec![fill; c])),
            }
        };
        put(format!("{p}.attention.ln_x.weight"), gn(&a.ln_x.gamma, 1.0)?);
        put(format!("{p}.attention.ln_x.bias"), gn(&a.ln_x.beta, 0.0)?);
        put(format!("{p}.attention.time_mix_x"), row(host(a.maa_x.val(), "time_maa_x")?));
        let (_, maa) = host(a.maa.val(), "time_maa")?;
        for (j, n) in ["w", "key", "value", "receptance", "gate"].iter().enumerate() {
            put(format!("{p}.attention.time_mix_{n}"), (vec![1, 1, c], maa[j * c..(j + 1) * c].to_vec()));
        }
        put(format!("{p}.attention.time_decay"), row(host(a.decay.val(), "time_decay")?));
        put(format!("{p}.attention.time_faaaa"), host(a.bonus.val(), "time_faaaa")?);
        put(format!("{p}.attention.time_decay_w1"), host(a.decay_w1.val(), "time_decay_w1")?);
        put(format!("{p}.attention.time_decay_w2"), host(a.decay_w2.val(), "time_decay_w2")?);
        put(format!("{p}.attention.time_mix_w1"), host(a.maa_w1.val(), "time_maa_w1")?);
        put(format!("{p}.attention.time_mix_w2"), host(a.maa_w2.val(), "time_maa_w2")?);
        let f = &blk.ffn;
        put(format!("{p}.feed_forward.time_mix_key"), row(host(f.maa_k.val(), "ffn.time_maa_k")?));
        put(format!("{p}.feed_forward.time_mix_receptance"), row(host(f.maa_r.val(), "ffn.time_maa_r")?));
        for (n, l) in [("key", &f.key), ("receptance", &f.receptance), ("value", &f.value)] {
            put(format!("{p}.feed_forward.{n}.weight"), transposed(host(l.weight.val(), n)?));
        }
    }
    Ok(m)
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
        let burn_head = host(model.head.weight.val(), "head").unwrap().1;
        assert_eq!(m["head.weight"].1[3 * 16 + 5], burn_head[5 * 11 + 3]);
    }

    #[test]
    fn other_lora_ranks_are_an_error() {
        let model = RwkvConfig { d_mix: 3, ..small() }.init::<NdArray>(&Default::default());
        let err = candle_tensors(&model).unwrap_err().to_string();
        assert!(err.contains("d_mix"), "{err}");
    }
}
