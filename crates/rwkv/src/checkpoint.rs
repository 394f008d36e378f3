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
use safetensors::{Dtype, SafeTensors};

use crate::error::KeyProblem;
use crate::layers::{Block, ChannelMix, TimeMix};
use crate::model::{LN_X_EPS, Rwkv};
use crate::{RwkvConfig, RwkvError};

/// Tensors of a checkpoint, converted to f32: `key -> (shape, values)`.
#[derive(Clone, Debug, Default)]
pub struct TensorMap {
    /// Where the tensors came from (for error messages).
    pub origin: String,
    /// The tensors.
    pub tensors: HashMap<String, (Vec<usize>, Vec<f32>)>,
}

impl TensorMap {
    /// Reads every tensor of a safetensors file (F32, F16 or BF16).
    pub fn read_safetensors(path: impl AsRef<Path>) -> Result<Self, RwkvError> {
        let path = path.as_ref();
        let origin = path.display().to_string();
        let file = std::fs::File::open(path).map_err(|e| RwkvError::Io { path: origin.clone(), why: e.to_string() })?;
        // SAFETY: the map is only read while `file` is open; a concurrent writer could change the
        // bytes under us, which yields wrong values or a parse error, not undefined behaviour in
        // the parser (it bounds-checks every offset).
        let mmap = unsafe { memmap2::Mmap::map(&file) }
            .map_err(|e| RwkvError::Io { path: origin.clone(), why: e.to_string() })?;
        Self::from_safetensors_bytes(&mmap, &origin)
    }

    /// Reads every tensor of a PyTorch `.pth` checkpoint (a pickled state dict, as saved by
    /// `torch.save`), converting F32/F16/BF16 to f32.
    pub fn read_pth(path: impl AsRef<Path>) -> Result<Self, RwkvError> {
        let path = path.as_ref();
        let origin = path.display().to_string();
        if !path.exists() {
            return Err(RwkvError::Io { path: origin, why: "no such file".into() });
        }
        let reader = burn_store::pytorch::PytorchReader::new(path).map_err(|e| RwkvError::Format {
            path: origin.clone(),
            why: format!("not a readable PyTorch checkpoint: {e}"),
        })?;
        let mut tensors = HashMap::new();
        for (key, snap) in reader.into_tensors() {
            let dtype = snap.dtype;
            if !matches!(
                dtype,
                burn::tensor::DType::F32
                    | burn::tensor::DType::F16
                    | burn::tensor::DType::BF16
                    | burn::tensor::DType::F64
            ) {
                return Err(RwkvError::Dtype { path: origin, key, dtype: format!("{dtype:?}") });
            }
            let data = snap
                .to_data()
                .map_err(|e| RwkvError::Format { path: origin.clone(), why: format!("tensor `{key}`: {e:?}") })?;
            let shape = data.shape.to_vec();
            let values = data
                .convert::<f32>()
                .into_vec::<f32>()
                .map_err(|e| RwkvError::Format { path: origin.clone(), why: format!("tensor `{key}`: {e:?}") })?;
            tensors.insert(key, (shape, values));
        }
        Ok(Self { origin, tensors })
    }

    /// Reads a checkpoint by extension: `.pth` / `.pt` / `.bin` as PyTorch, anything else as
    /// safetensors.
    pub fn read(path: impl AsRef<Path>) -> Result<Self, RwkvError> {
        let path = path.as_ref();
        match path.extension().and_then(|e| e.to_str()) {
            Some("pth" | "pt" | "bin") => Self::read_pth(path),
            _ => Self::read_safetensors(path),
        }
    }

    /// Parses safetensors bytes.
    pub fn from_safetensors_bytes(bytes: &[u8], origin: &str) -> Result<Self, RwkvError> {
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| RwkvError::Format { path: origin.to_string(), why: e.to_string() })?;
        let mut tensors = HashMap::new();
        for (key, view) in st.tensors() {
            let data = view.data();
            let values: Vec<f32> = match view.dtype() {
                Dtype::F32 => data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
                Dtype::F16 => data.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
                Dtype::BF16 => data.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
                other => {
                    return Err(RwkvError::Dtype { path: origin.to_string(), key, dtype: format!("{other:?}") });
                }
            };
            tensors.insert(key, (view.shape().to_vec(), values));
        }
        Ok(Self { origin: origin.to_string(), tensors })
    }

    /// The tensors whose key starts with `prefix`, with the prefix removed (e.g. `"rwkv."` for a
    /// VisualRWKV checkpoint).
    pub fn strip_prefix(&self, prefix: &str) -> Self {
        let tensors = self
            .tensors
            .iter()
            .filter_map(|(k, v)| k.strip_prefix(prefix).map(|k| (k.to_string(), v.clone())))
            .collect();
        Self { origin: self.origin.clone(), tensors }
    }

    fn shape(&self, key: &str) -> Option<Vec<usize>> {
        self.tensors.get(key).map(|(s, _)| s.clone())
    }

    /// Infers the configuration and checks every key against it.
    pub fn rwkv_config(&self) -> Result<RwkvConfig, RwkvError> {
        let keys: Vec<String> = self.tensors.keys().cloned().collect();
        let config = RwkvConfig::infer(|k| self.shape(k), &keys)
            .map_err(|why| RwkvError::Config { path: self.origin.clone(), why })?;
        let expected = config.expected_keys();
        let mut problems = Vec::new();
        for (key, shape) in &expected {
            match self.shape(key) {
                None => problems.push(KeyProblem::Missing(key.clone())),
                Some(found) if &found != shape => {
                    problems.push(KeyProblem::Shape { key: key.clone(), expected: shape.clone(), found })
                }
                Some(_) => {}
            }
        }
        let known: std::collections::HashSet<&str> = expected.iter().map(|(k, _)| k.as_str()).collect();
        let mut unexpected: Vec<&String> = self.tensors.keys().filter(|k| !known.contains(k.as_str())).collect();
        unexpected.sort();
        problems.extend(unexpected.into_iter().map(|k| KeyProblem::Unexpected(k.clone())));
        if problems.is_empty() { Ok(config) } else { Err(RwkvError::Keys { path: self.origin.clone(), problems }) }
    }

    fn values(&self, key: &str) -> &[f32] {
        &self.tensors[key].1
    }

    fn t1<B: Backend>(&self, key: &str, device: &B::Device) -> Tensor<B, 1> {
        let v = self.values(key);
        Tensor::from_data(TensorData::new(v.to_vec(), [v.len()]), device)
    }

    fn t2<B: Backend>(&self, key: &str, shape: [usize; 2], device: &B::Device) -> Tensor<B, 2> {
        Tensor::from_data(TensorData::new(self.values(key).to_vec(), shape), device)
    }
}

fn param<B: Backend, const D: usize>(t: Tensor<B, D>) -> Param<Tensor<B, D>> {
    Param::from_tensor(t)
}

impl RwkvConfig {
    /// Builds a model from checkpoint tensors (checked with [`TensorMap::rwkv_config`]).
    pub fn from_tensors<B: Backend>(map: &TensorMap, device: &B::Device) -> Result<Rwkv<B>, RwkvError> {
        let cfg = map.rwkv_config()?;
        let (c, a, f, v) = (cfg.n_embd, cfg.dim_att(), cfg.dim_ffn, cfg.vocab_size);
        // nn.Linear stores [out, in]; burn's Linear holds [in, out].
        let linear = |key: &str, out: usize, inp: usize| -> Linear<B> {
            let mut l = LinearConfig::new(inp, out).with_bias(false).init(device);
            l.weight = param(map.t2::<B>(key, [out, inp], device).transpose());
            l
        };
        let layer_norm = |prefix: &str| -> LayerNorm<B> {
            let mut ln = LayerNormConfig::new(c).init(device);
            ln.gamma = param(map.t1(&format!("{prefix}.weight"), device));
            ln.beta = Some(param(map.t1(&format!("{prefix}.bias"), device)));
            ln
        };
        let blocks = (0..cfg.n_layer)
            .map(|l| {
                let k = |s: &str| format!("blocks.{l}.{s}");
                let maa = Tensor::cat(
                    ["w", "k", "v", "r", "g"]
                        .iter()
                        .map(|m| map.t1::<B>(&k(&format!("att.time_maa_{m}")), device).unsqueeze_dim(0))
                        .collect(),
                    0,
                );
                let mut ln_x: GroupNorm<B> = GroupNormConfig::new(cfg.n_head, a).with_epsilon(LN_X_EPS).init(device);
                ln_x.gamma = Some(param(map.t1(&k("att.ln_x.weight"), device)));
                ln_x.beta = Some(param(map.t1(&k("att.ln_x.bias"), device)));
                let att = TimeMix {
                    maa_x: param(map.t1(&k("att.time_maa_x"), device)),
                    maa: param(maa),
                    maa_w1: param(map.t2(&k("att.time_maa_w1"), [c, 5 * cfg.d_mix], device)),
                    maa_w2: param(Tensor::from_data(
                        TensorData::new(map.values(&k("att.time_maa_w2")).to_vec(), [5, cfg.d_mix, c]),
                        device,
                    )),
                    decay: param(map.t1(&k("att.time_decay"), device)),
                    decay_w1: param(map.t2(&k("att.time_decay_w1"), [c, cfg.d_decay], device)),
                    decay_w2: param(map.t2(&k("att.time_decay_w2"), [cfg.d_decay, a], device)),
                    bonus: param(map.t2(&k("att.time_faaaa"), [cfg.n_head, cfg.head_size], device)),
                    receptance: linear(&k("att.receptance.weight"), a, c),
                    key: linear(&k("att.key.weight"), a, c),
                    value: linear(&k("att.value.weight"), a, c),
                    gate: linear(&k("att.gate.weight"), a, c),
                    output: linear(&k("att.output.weight"), c, a),
                    ln_x,
                };
                let ffn = ChannelMix {
                    maa_k: param(map.t1(&k("ffn.time_maa_k"), device)),
                    maa_r: param(map.t1(&k("ffn.time_maa_r"), device)),
                    key: linear(&k("ffn.key.weight"), f, c),
                    receptance: linear(&k("ffn.receptance.weight"), c, c),
                    value: linear(&k("ffn.value.weight"), c, f),
                };
                Block { ln1: layer_norm(&k("ln1")), ln2: layer_norm(&k("ln2")), att, ffn }
            })
            .collect();
        let mut emb: Embedding<B> = EmbeddingConfig::new(v, c).init(device);
        emb.weight = param(map.t2("emb.weight", [v, c], device));
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
    let path = path.as_ref();
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = map
        .tensors
        .iter()
        .map(|(k, (s, v))| (k.clone(), s.clone(), v.iter().flat_map(|x| x.to_le_bytes()).collect()))
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = bytes
        .iter()
        .map(|(k, s, b)| {
            (k.clone(), safetensors::tensor::TensorView::new(Dtype::F32, s.clone(), b).expect("consistent view"))
        })
        .collect();
    safetensors::serialize_to_file(views, None, path)
        .map_err(|e| RwkvError::Io { path: path.display().to_string(), why: e.to_string() })
}
