//! The one table of the official RWKV-6 (x060) weights: each official checkpoint key, its shape,
//! the [`Rwkv`] parameter it fills and how the two layouts differ ([`Layout`]). Loading
//! ([`load_official`]: [`RwkvConfig::init`]'s skeleton, then every parameter replaced by its
//! tensor), saving ([`official_tensors`]), the key check ([`RwkvConfig::expected_keys`]) and the
//! peers' renames all read it.
//!
//! # Shapes
//!
//! Official shapes (RWKV-LM's trainer): `nn.Linear` weights `[out, in]`, per-channel vectors
//! `[1, 1, C]`, the five ddlerp mixes as five keys. Module shapes: burn's `Linear` `[in, out]`,
//! vectors `[C]`, the five mixes stacked `[5, C]` (`w, k, v, r, g`).

use burn::tensor::backend::Backend;
pub use visualrwkv_checkpoint::table::{Layout, WeightKey};
use visualrwkv_checkpoint::{TensorMap, table};

use crate::{Rwkv, RwkvBackend, RwkvConfig, RwkvError};

/// A shape from the configuration.
type ShapeOf = fn(&RwkvConfig) -> Vec<usize>;

/// Keys outside the blocks: `(official, module path, layout, official shape)`.
const MODEL_KEYS: &[(&str, &str, Layout, ShapeOf)] = &[
    ("emb.weight", "emb.weight", Layout::Same, |c| vec![c.vocab_size, c.n_embd]),
    ("blocks.0.ln0.weight", "ln0.gamma", Layout::Same, |c| vec![c.n_embd]),
    ("blocks.0.ln0.bias", "ln0.beta", Layout::Same, |c| vec![c.n_embd]),
    ("ln_out.weight", "ln_out.gamma", Layout::Same, |c| vec![c.n_embd]),
    ("ln_out.bias", "ln_out.beta", Layout::Same, |c| vec![c.n_embd]),
    ("head.weight", "head.weight", Layout::Transposed, |c| vec![c.vocab_size, c.n_embd]),
];

/// Keys of block `l`, relative to `blocks.{l}.` on both sides.
const BLOCK_KEYS: &[(&str, &str, Layout, ShapeOf)] = &[
    ("ln1.weight", "ln1.gamma", Layout::Same, |c| vec![c.n_embd]),
    ("ln1.bias", "ln1.beta", Layout::Same, |c| vec![c.n_embd]),
    ("ln2.weight", "ln2.gamma", Layout::Same, |c| vec![c.n_embd]),
    ("ln2.bias", "ln2.beta", Layout::Same, |c| vec![c.n_embd]),
    ("att.time_maa_x", "att.ddlerp.maa_x", Layout::Same, |c| vec![1, 1, c.n_embd]),
    ("att.time_maa_w", "att.ddlerp.maa", Layout::Row(0), |c| vec![1, 1, c.n_embd]),
    ("att.time_maa_k", "att.ddlerp.maa", Layout::Row(1), |c| vec![1, 1, c.n_embd]),
    ("att.time_maa_v", "att.ddlerp.maa", Layout::Row(2), |c| vec![1, 1, c.n_embd]),
    ("att.time_maa_r", "att.ddlerp.maa", Layout::Row(3), |c| vec![1, 1, c.n_embd]),
    ("att.time_maa_g", "att.ddlerp.maa", Layout::Row(4), |c| vec![1, 1, c.n_embd]),
    ("att.time_maa_w1", "att.ddlerp.w1", Layout::Same, |c| vec![c.n_embd, 5 * c.d_mix]),
    ("att.time_maa_w2", "att.ddlerp.w2", Layout::Same, |c| vec![5, c.d_mix, c.n_embd]),
    ("att.time_decay", "att.decay.base", Layout::Same, |c| vec![1, 1, c.dim_att()]),
    ("att.time_decay_w1", "att.decay.w1", Layout::Same, |c| vec![c.n_embd, c.d_decay]),
    ("att.time_decay_w2", "att.decay.w2", Layout::Same, |c| vec![c.d_decay, c.dim_att()]),
    ("att.time_faaaa", "att.bonus", Layout::Same, |c| vec![c.n_head, c.head_size]),
    ("att.receptance.weight", "att.receptance.weight", Layout::Transposed, |c| vec![c.dim_att(), c.n_embd]),
    ("att.key.weight", "att.key.weight", Layout::Transposed, |c| vec![c.dim_att(), c.n_embd]),
    ("att.value.weight", "att.value.weight", Layout::Transposed, |c| vec![c.dim_att(), c.n_embd]),
    ("att.gate.weight", "att.gate.weight", Layout::Transposed, |c| vec![c.dim_att(), c.n_embd]),
    ("att.output.weight", "att.output.weight", Layout::Transposed, |c| vec![c.n_embd, c.dim_att()]),
    ("att.ln_x.weight", "att.ln_x.gamma", Layout::Same, |c| vec![c.dim_att()]),
    ("att.ln_x.bias", "att.ln_x.beta", Layout::Same, |c| vec![c.dim_att()]),
    ("ffn.time_maa_k", "ffn.maa_k", Layout::Same, |c| vec![1, 1, c.n_embd]),
    ("ffn.time_maa_r", "ffn.maa_r", Layout::Same, |c| vec![1, 1, c.n_embd]),
    ("ffn.key.weight", "ffn.key.weight", Layout::Transposed, |c| vec![c.dim_ffn, c.n_embd]),
    ("ffn.receptance.weight", "ffn.receptance.weight", Layout::Transposed, |c| vec![c.n_embd, c.n_embd]),
    ("ffn.value.weight", "ffn.value.weight", Layout::Transposed, |c| vec![c.n_embd, c.dim_ffn]),
];

/// Every official tensor of a model of configuration `cfg`, in checkpoint order (embedding, ln0,
/// the blocks, ln_out, head).
pub fn weight_keys(cfg: &RwkvConfig) -> Vec<WeightKey> {
    let key = |official: String, param: String, layout: Layout, shape: ShapeOf| {
        WeightKey::new(official, param, shape(cfg), layout)
    };
    let top = |range: std::ops::Range<usize>| {
        MODEL_KEYS[range]
            .iter()
            .map(|&(o, p, layout, shape)| key(o.into(), p.into(), layout, shape))
            .collect::<Vec<_>>()
    };
    let mut keys = top(0..3);
    for l in 0..cfg.n_layer {
        keys.extend(
            BLOCK_KEYS
                .iter()
                .map(|&(o, p, layout, shape)| key(format!("blocks.{l}.{o}"), format!("blocks.{l}.{p}"), layout, shape)),
        );
    }
    keys.extend(top(3..MODEL_KEYS.len()));
    keys
}

/// Loads official checkpoint tensors into a model: the configuration is inferred and every key
/// checked ([`RwkvConfig::from_checkpoint`]), then each parameter of the (lazy, never drawn)
/// skeleton of that configuration is replaced by its tensor as the table says.
pub fn load_official<B: Backend>(map: &TensorMap, device: &B::Device) -> Result<Rwkv<B>, RwkvError> {
    let cfg = RwkvConfig::from_checkpoint(map)?;
    Ok(table::load_into(cfg.init_lazy::<B>(device), map, &weight_keys(&cfg), "the RWKV-6 module", device)?)
}

/// The tensors of `model` under the official keys and shapes (f32), as the table maps them.
pub fn official_tensors<B: RwkvBackend>(model: &Rwkv<B>) -> Result<TensorMap, RwkvError> {
    Ok(table::save_from(model, &weight_keys(&model.config()), "model")?)
}

/// The values of a float tensor as f32 on the host.
pub(crate) fn host_f32<B: Backend, const D: usize>(t: burn::tensor::Tensor<B, D>) -> Vec<f32> {
    visualrwkv_checkpoint::host_values(t)
}

/// [`load_official`] with every parameter read from `source` (the file `map` came from, under the
/// same prefix) only when first used ([`table::load_lazily`]): for a model whose weights a fused
/// engine holds, so that the two do not both keep a copy.
pub fn load_official_lazily<B: Backend>(
    map: &TensorMap,
    source: &visualrwkv_checkpoint::TensorSource,
    device: &B::Device,
) -> Result<Rwkv<B>, RwkvError> {
    let cfg = RwkvConfig::from_checkpoint(map)?;
    let keys = weight_keys(&cfg);
    Ok(table::load_lazily(cfg.init_lazy::<B>(device), map, source, &keys, "the RWKV-6 module", device)?)
}
