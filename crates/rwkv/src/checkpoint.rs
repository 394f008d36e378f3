//! Official RWKV-6 (x060) checkpoints in safetensors: loading with strict key checking, and saving
//! under the same names.
//!
//! Key names and shapes are those of the RWKV-LM x060 trainer (`emb.weight` `[V, C]`,
//! `blocks.{l}.att.time_maa_x` `[1, 1, C]`, `nn.Linear` weights `[out, in]`, …; see
//! [`RwkvConfig::expected_keys`]). Tensors may be stored as F32, F16 or BF16. Every missing,
//! unexpected or mis-shaped key is reported, all at once — never silently ignored.

use std::collections::HashMap;
use std::path::Path;

use burn::module::Param;
use burn::nn::{
    Embedding, EmbeddingConfig, GroupNorm, GroupNormConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig,
};
use burn::tensor::{Tensor, TensorData, backend::Backend};

use crate::layers::{Block, ChannelMix, TimeMix};
use crate::model::{LN_X_EPS, Rwkv};
use crate::{RwkvConfig, RwkvError};
pub use visualrwkv_checkpoint::TensorMap;

fn values<'a>(map: &'a TensorMap, key: &str) -> &'a [f32] {
    map.get(key).expect("keys checked by RwkvConfig::from_checkpoint")
}

fn t1<B: Backend>(map: &TensorMap, key: &str, device: &B::Device) -> Tensor<B, 1> {
    let v = values(map, key);
    Tensor::from_data(TensorData::new(v.to_vec(), [v.len()]), device)
}

fn t2<B: Backend>(map: &TensorMap, key: &str, shape: [usize; 2], device: &B::Device) -> Tensor<B, 2> {
    Tensor::from_data(TensorData::new(values(map, key).to_vec(), shape), device)
}

impl RwkvConfig {
    /// Infers the RWKV-6 configuration of checkpoint tensors and checks every key against it.
    pub fn from_checkpoint(map: &TensorMap) -> Result<RwkvConfig, RwkvError> {
        let keys: Vec<String> = map.tensors.keys().cloned().collect();
        let config = RwkvConfig::infer(|k| map.shape(k), &keys)
            .map_err(|why| RwkvError::Config { path: map.origin.clone(), why })?;
        let problems = map.key_problems(&config.expected_keys());
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(RwkvError::Checkpoint(visualrwkv_checkpoint::CheckpointError::Keys {
                path: map.origin.clone(),
                model: "an RWKV-6 x060 model".into(),
                problems,
            }))
        }
    }
}

fn param<B: Backend, const D: usize>(t: Tensor<B, D>) -> Param<Tensor<B, D>> {
    Param::from_tensor(t)
}

impl RwkvConfig {
    /// Builds a model from checkpoint tensors (checked with [`RwkvConfig::from_checkpoint`]).
    pub fn from_tensors<B: Backend>(map: &TensorMap, device: &B::Device) -> Result<Rwkv<B>, RwkvError> {
        let cfg = RwkvConfig::from_checkpoint(map)?;
        let (c, a, f, v) = (cfg.n_embd, cfg.dim_att(), cfg.dim_ffn, cfg.vocab_size);
        // nn.Linear stores [out, in]; burn's Linear holds [in, out].
        let linear = |key: &str, out: usize, inp: usize| -> Linear<B> {
            let mut l = LinearConfig::new(inp, out).with_bias(false).init(device);
            l.weight = param(t2::<B>(map, key, [out, inp], device).transpose());
            l
        };
        let layer_norm = |prefix: &str| -> LayerNorm<B> {
            let mut ln = LayerNormConfig::new(c).init(device);
            ln.gamma = param(t1(map, &format!("{prefix}.weight"), device));
            ln.beta = Some(param(t1(map, &format!("{prefix}.bias"), device)));
            ln
        };
        let blocks = (0..cfg.n_layer)
            .map(|l| {
                let k = |s: &str| format!("blocks.{l}.{s}");
                let maa = Tensor::cat(
                    ["w", "k", "v", "r", "g"]
                        .iter()
                        .map(|m| t1::<B>(map, &k(&format!("att.time_maa_{m}")), device).unsqueeze_dim(0))
                        .collect(),
                    0,
                );
                let mut ln_x: GroupNorm<B> = GroupNormConfig::new(cfg.n_head, a).with_epsilon(LN_X_EPS).init(device);
                ln_x.gamma = Some(param(t1(map, &k("att.ln_x.weight"), device)));
                ln_x.beta = Some(param(t1(map, &k("att.ln_x.bias"), device)));
                let att = TimeMix {
                    maa_x: param(t1(map, &k("att.time_maa_x"), device)),
                    maa: param(maa),
                    maa_w1: param(t2(map, &k("att.time_maa_w1"), [c, 5 * cfg.d_mix], device)),
                    maa_w2: param(Tensor::from_data(
                        TensorData::new(values(map, &k("att.time_maa_w2")).to_vec(), [5, cfg.d_mix, c]),
                        device,
                    )),
                    decay: param(t1(map, &k("att.time_decay"), device)),
                    decay_w1: param(t2(map, &k("att.time_decay_w1"), [c, cfg.d_decay], device)),
                    decay_w2: param(t2(map, &k("att.time_decay_w2"), [cfg.d_decay, a], device)),
                    bonus: param(t2(map, &k("att.time_faaaa"), [cfg.n_head, cfg.head_size], device)),
                    receptance: linear(&k("att.receptance.weight"), a, c),
                    key: linear(&k("att.key.weight"), a, c),
                    value: linear(&k("att.value.weight"), a, c),
                    gate: linear(&k("att.gate.weight"), a, c),
                    output: linear(&k("att.output.weight"), c, a),
                    ln_x,
                };
                let ffn = ChannelMix {
                    maa_k: param(t1(map, &k("ffn.time_maa_k"), device)),
                    maa_r: param(t1(map, &k("ffn.time_maa_r"), device)),
                    key: linear(&k("ffn.key.weight"), f, c),
                    receptance: linear(&k("ffn.receptance.weight"), c, c),
                    value: linear(&k("ffn.value.weight"), c, f),
                };
                Block { ln1: layer_norm(&k("ln1")), ln2: layer_norm(&k("ln2")), att, ffn }
            })
            .collect();
        let mut emb: Embedding<B> = EmbeddingConfig::new(v, c).init(device);
        emb.weight = param(t2(map, "emb.weight", [v, c], device));
        Ok(Rwkv {
            emb,
            ln0: layer_norm("blocks.0.ln0"),
            blocks,
            ln_out: layer_norm("ln_out"),
            head: linear("head.weight", v, c),
        })
    }
}

/// Loads an official x060 checkpoint from a safetensors file.
pub fn load_safetensors<B: Backend>(path: impl AsRef<Path>, device: &B::Device) -> Result<Rwkv<B>, RwkvError> {
    RwkvConfig::from_tensors(&TensorMap::read_safetensors(path)?, device)
}

/// Loads an official x060 checkpoint, `.pth` (PyTorch) or safetensors by extension.
pub fn load<B: Backend>(path: impl AsRef<Path>, device: &B::Device) -> Result<Rwkv<B>, RwkvError> {
    RwkvConfig::from_tensors(&TensorMap::read(path)?, device)
}

fn host<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec::<f32>().expect("converted to f32")
}

impl<B: crate::RwkvBackend> Rwkv<B> {
    /// The model's tensors under the official key names and shapes (f32).
    pub fn to_tensor_map(&self) -> TensorMap {
        let cfg = self.config();
        let c = cfg.n_embd;
        let mut t = HashMap::new();
        let mut put = |k: String, shape: Vec<usize>, v: Vec<f32>| {
            t.insert(k, (shape, v));
        };
        let lin = |l: &Linear<B>| host(l.weight.val().transpose());
        let ln = |put: &mut dyn FnMut(String, Vec<usize>, Vec<f32>), p: &str, l: &LayerNorm<B>| {
            put(format!("{p}.weight"), vec![c], host(l.gamma.val()));
            put(format!("{p}.bias"), vec![c], host(l.beta.as_ref().expect("RWKV layer norms have a bias").val()));
        };
        put("emb.weight".into(), vec![cfg.vocab_size, c], host(self.emb.weight.val()));
        ln(&mut put, "blocks.0.ln0", &self.ln0);
        for (l, b) in self.blocks.iter().enumerate() {
            let k = |s: &str| format!("blocks.{l}.{s}");
            ln(&mut put, &k("ln1"), &b.ln1);
            ln(&mut put, &k("ln2"), &b.ln2);
            let att = &b.att;
            put(k("att.time_maa_x"), vec![1, 1, c], host(att.maa_x.val()));
            let maa = host(att.maa.val());
            for (j, m) in ["w", "k", "v", "r", "g"].iter().enumerate() {
                put(k(&format!("att.time_maa_{m}")), vec![1, 1, c], maa[j * c..(j + 1) * c].to_vec());
            }
            put(k("att.time_maa_w1"), att.maa_w1.dims().to_vec(), host(att.maa_w1.val()));
            put(k("att.time_maa_w2"), att.maa_w2.dims().to_vec(), host(att.maa_w2.val()));
            put(k("att.time_decay"), vec![1, 1, cfg.dim_att()], host(att.decay.val()));
            put(k("att.time_decay_w1"), att.decay_w1.dims().to_vec(), host(att.decay_w1.val()));
            put(k("att.time_decay_w2"), att.decay_w2.dims().to_vec(), host(att.decay_w2.val()));
            put(k("att.time_faaaa"), att.bonus.dims().to_vec(), host(att.bonus.val()));
            for (name, l) in [
                ("receptance", &att.receptance),
                ("key", &att.key),
                ("value", &att.value),
                ("gate", &att.gate),
                ("output", &att.output),
            ] {
                let [i, o] = l.weight.dims();
                put(k(&format!("att.{name}.weight")), vec![o, i], lin(l));
            }
            let g = &att.ln_x;
            put(k("att.ln_x.weight"), vec![cfg.dim_att()], host(g.gamma.as_ref().expect("affine ln_x").val()));
            put(k("att.ln_x.bias"), vec![cfg.dim_att()], host(g.beta.as_ref().expect("affine ln_x").val()));
            put(k("ffn.time_maa_k"), vec![1, 1, c], host(b.ffn.maa_k.val()));
            put(k("ffn.time_maa_r"), vec![1, 1, c], host(b.ffn.maa_r.val()));
            for (name, l) in [("key", &b.ffn.key), ("receptance", &b.ffn.receptance), ("value", &b.ffn.value)] {
                let [i, o] = l.weight.dims();
                put(k(&format!("ffn.{name}.weight")), vec![o, i], lin(l));
            }
        }
        ln(&mut put, "ln_out", &self.ln_out);
        put("head.weight".into(), vec![cfg.vocab_size, c], lin(&self.head));
        TensorMap { origin: "model".into(), tensors: t }
    }

    /// Saves the model as an official x060 safetensors checkpoint (f32).
    pub fn save_safetensors(&self, path: impl AsRef<Path>) -> Result<(), RwkvError> {
        write_safetensors(&self.to_tensor_map(), path)
    }
}

/// Writes a [`TensorMap`] as F32 safetensors.
pub fn write_safetensors(map: &TensorMap, path: impl AsRef<Path>) -> Result<(), RwkvError> {
    Ok(visualrwkv_checkpoint::write_safetensors(map, path)?)
}
