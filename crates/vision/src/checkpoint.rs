//! Loading vision towers from Hugging Face safetensors (or `.pth`) and saving them back.
//!
//! Accepted layouts, detected from the keys: VisualRWKV's `vit.vision_model.*` (the tower inside
//! a VisualRWKV checkpoint), Hugging Face's `vision_model.*` (a `CLIPVisionModel`, or a full
//! `CLIPModel` / `SiglipModel` whose text side is then left alone), or bare keys
//! (`embeddings.*`, `encoder.*`, ...). Within the tower every key is checked: each missing,
//! unexpected or mis-shaped one is reported. The integer buffer `embeddings.position_ids` that
//! older exports carry is skipped (it is `arange(T)`).

use std::path::Path;

use burn::module::Param;
use burn::nn::{LayerNorm, Linear, LinearConfig};
use burn::tensor::{Tensor, backend::Backend};
use visualrwkv_checkpoint::TensorMap;

use crate::VisionError;
use crate::config::{TowerKind, VisionConfig};
use crate::tower::{Attention, EncoderLayer, Mlp, PoolingHead, VisionTower};

/// Key prefixes tried in order when looking for the tower inside a checkpoint.
pub const TOWER_PREFIXES: [&str; 2] = ["vit.vision_model.", "vision_model."];

fn is_buffer(key: &str) -> bool {
    key.ends_with("embeddings.position_ids")
}

/// Reads a checkpoint (safetensors, or `.pth`/`.bin` by extension), skipping integer buffers.
pub fn read_tensors(path: impl AsRef<Path>) -> Result<TensorMap, VisionError> {
    Ok(TensorMap::read_skipping(path, is_buffer)?)
}

/// The tower's tensors with the prefix removed: under `vit.vision_model.` if any key has it,
/// else under `vision_model.`, else the whole map.
pub fn vision_tensors(map: &TensorMap) -> TensorMap {
    TOWER_PREFIXES.iter().find(|p| map.has_prefix(p)).map(|p| map.strip_prefix(p)).unwrap_or_else(|| map.clone())
}

fn values(map: &TensorMap, key: &str) -> Vec<f32> {
    map.get(key).expect("keys checked against the configuration").to_vec()
}

fn tensor<B: Backend, const D: usize>(map: &TensorMap, key: &str, shape: [usize; D], dev: &B::Device) -> Tensor<B, D> {
    Tensor::from_data(burn::tensor::TensorData::new(values(map, key), shape), dev)
}

/// `nn.Linear` from `{name}.weight` `[out, in]` (and `{name}.bias`).
fn linear<B: Backend>(map: &TensorMap, name: &str, inp: usize, out: usize, bias: bool, dev: &B::Device) -> Linear<B> {
    let mut l = LinearConfig::new(inp, out).with_bias(bias).init(dev);
    l.weight = Param::from_tensor(tensor::<B, 2>(map, &format!("{name}.weight"), [out, inp], dev).transpose());
    if bias {
        l.bias = Some(Param::from_tensor(tensor(map, &format!("{name}.bias"), [out], dev)));
    }
    l
}

fn norm<B: Backend>(map: &TensorMap, name: &str, d: usize, eps: f64, dev: &B::Device) -> LayerNorm<B> {
    let mut ln = burn::nn::LayerNormConfig::new(d).with_epsilon(eps).init(dev);
    ln.gamma = Param::from_tensor(tensor(map, &format!("{name}.weight"), [d], dev));
    ln.beta = Some(Param::from_tensor(tensor(map, &format!("{name}.bias"), [d], dev)));
    ln
}

impl VisionConfig {
    /// Builds a tower from its tensors (prefix already removed, see [`vision_tensors`]). With
    /// `config` `None` the configuration is inferred from the shapes ([`VisionConfig::infer`]).
    /// Every key is checked against the configuration first.
    pub fn tower_from_tensors<B: Backend>(
        map: &TensorMap,
        config: Option<VisionConfig>,
        dev: &B::Device,
    ) -> Result<VisionTower<B>, VisionError> {
        let cfg = match config {
            Some(c) => {
                c.validate("configuration")?;
                c
            }
            None => Self::infer(map)?,
        };
        let model = match cfg.kind {
            TowerKind::Clip => "a CLIP vision tower",
            TowerKind::Siglip => "a SigLIP vision tower",
        };
        map.check_keys(&cfg.expected_keys(), model)?;
        let (d, f, p, c, eps) =
            (cfg.hidden_size, cfg.intermediate_size, cfg.patch_size, cfg.num_channels, cfg.layer_norm_eps);
        let clip = cfg.kind == TowerKind::Clip;
        let mlp = |name: &str| Mlp {
            fc1: linear(map, &format!("{name}.fc1"), d, f, true, dev),
            fc2: linear(map, &format!("{name}.fc2"), f, d, true, dev),
            act: cfg.hidden_act,
        };
        let layers = (0..cfg.num_hidden_layers)
            .map(|l| {
                let k = |s: &str| format!("encoder.layers.{l}.{s}");
                EncoderLayer {
                    layer_norm1: norm(map, &k("layer_norm1"), d, eps, dev),
                    self_attn: Attention {
                        q_proj: linear(map, &k("self_attn.q_proj"), d, d, true, dev),
                        k_proj: linear(map, &k("self_attn.k_proj"), d, d, true, dev),
                        v_proj: linear(map, &k("self_attn.v_proj"), d, d, true, dev),
                        out_proj: linear(map, &k("self_attn.out_proj"), d, d, true, dev),
                        heads: cfg.num_attention_heads,
                    },
                    layer_norm2: norm(map, &k("layer_norm2"), d, eps, dev),
                    mlp: mlp(&k("mlp")),
                }
            })
            .collect();
        let head = (!clip && cfg.use_head).then(|| {
            let packed = values(map, "head.attention.in_proj_weight");
            let packed_bias = values(map, "head.attention.in_proj_bias");
            let part = |i: usize| {
                let mut l = LinearConfig::new(d, d).init(dev);
                let w = Tensor::<B, 2>::from_data(
                    burn::tensor::TensorData::new(packed[i * d * d..(i + 1) * d * d].to_vec(), [d, d]),
                    dev,
                );
                l.weight = Param::from_tensor(w.transpose());
                l.bias = Some(Param::from_tensor(Tensor::from_data(
                    burn::tensor::TensorData::new(packed_bias[i * d..(i + 1) * d].to_vec(), [d]),
                    dev,
                )));
                l
            };
            PoolingHead {
                probe: Param::from_tensor(tensor(map, "head.probe", [1, 1, d], dev)),
                q_proj: part(0),
                k_proj: part(1),
                v_proj: part(2),
                out_proj: linear(map, "head.attention.out_proj", d, d, true, dev),
                layernorm: norm(map, "head.layernorm", d, eps, dev),
                mlp: mlp("head.mlp"),
                heads: cfg.num_attention_heads,
            }
        });
        let patch_w = tensor::<B, 2>(map, "embeddings.patch_embedding.weight", [d, c * p * p], dev);
        let mut patch_embedding = LinearConfig::new(c * p * p, d).with_bias(!clip).init(dev);
        patch_embedding.weight = Param::from_tensor(patch_w.transpose());
        if !clip {
            patch_embedding.bias = Some(Param::from_tensor(tensor(map, "embeddings.patch_embedding.bias", [d], dev)));
        }
        Ok(VisionTower {
            patch_embedding,
            class_embedding: clip.then(|| Param::from_tensor(tensor(map, "embeddings.class_embedding", [d], dev))),
            position_embedding: Param::from_tensor(tensor(
                map,
                "embeddings.position_embedding.weight",
                [cfg.num_positions(), d],
                dev,
            )),
            pre_layrnorm: clip.then(|| norm(map, "pre_layrnorm", d, eps, dev)),
            layers,
            post_layernorm: norm(map, "post_layernorm", d, eps, dev),
            head,
            config: cfg,
        })
    }
}

/// Loads a tower from a checkpoint file (any of the layouts above) with an optional Hugging Face
/// `config.json`; without one, a `config.json` next to the weights is used when present,
/// otherwise the configuration is inferred from the shapes.
pub fn load<B: Backend>(
    weights: impl AsRef<Path>,
    config: Option<&Path>,
    dev: &B::Device,
) -> Result<VisionTower<B>, VisionError> {
    let weights = weights.as_ref();
    let map = vision_tensors(&read_tensors(weights)?);
    let sibling = weights.parent().map(|d| d.join("config.json")).filter(|p| p.is_file());
    let config = match config.map(Path::to_path_buf).or(sibling) {
        Some(path) => Some(VisionConfig::from_hf_json(path)?),
        None => None,
    };
    VisionConfig::tower_from_tensors(&map, config, dev)
}

fn host<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec::<f32>().expect("converted to f32")
}

impl<B: Backend> VisionTower<B> {
    /// The tower's tensors under Hugging Face names, each prefixed with `prefix` (e.g.
    /// `"vision_model."`), as f32 — the inverse of [`VisionConfig::tower_from_tensors`].
    pub fn to_tensor_map(&self, prefix: &str) -> TensorMap {
        let cfg = &self.config;
        let (d, p, c) = (cfg.hidden_size, cfg.patch_size, cfg.num_channels);
        let mut map = TensorMap { origin: "vision tower".into(), tensors: Default::default() };
        let mut put = |key: String, shape: Vec<usize>, v: Vec<f32>| {
            map.tensors.insert(format!("{prefix}{key}"), (shape, v));
        };
        fn lin<B: Backend>(put: &mut dyn FnMut(String, Vec<usize>, Vec<f32>), name: &str, l: &Linear<B>) {
            let [i, o] = l.weight.dims();
            put(format!("{name}.weight"), vec![o, i], host(l.weight.val().transpose()));
            if let Some(b) = &l.bias {
                put(format!("{name}.bias"), vec![o], host(b.val()));
            }
        }
        fn ln<B: Backend>(put: &mut dyn FnMut(String, Vec<usize>, Vec<f32>), name: &str, l: &LayerNorm<B>) {
            let d = l.gamma.dims()[0];
            put(format!("{name}.weight"), vec![d], host(l.gamma.val()));
            if let Some(b) = &l.beta {
                put(format!("{name}.bias"), vec![d], host(b.val()));
            }
        }
        put(
            "embeddings.patch_embedding.weight".into(),
            vec![d, c, p, p],
            host(self.patch_embedding.weight.val().transpose()),
        );
        if let Some(b) = &self.patch_embedding.bias {
            put("embeddings.patch_embedding.bias".into(), vec![d], host(b.val()));
        }
        if let Some(cls) = &self.class_embedding {
            put("embeddings.class_embedding".into(), vec![d], host(cls.val()));
        }
        put(
            "embeddings.position_embedding.weight".into(),
            self.position_embedding.dims().to_vec(),
            host(self.position_embedding.val()),
        );
        if let Some(l) = &self.pre_layrnorm {
            ln(&mut put, "pre_layrnorm", l);
        }
        for (i, layer) in self.layers.iter().enumerate() {
            let k = |s: &str| format!("encoder.layers.{i}.{s}");
            ln(&mut put, &k("layer_norm1"), &layer.layer_norm1);
            ln(&mut put, &k("layer_norm2"), &layer.layer_norm2);
            let a = &layer.self_attn;
            for (name, l) in
                [("q_proj", &a.q_proj), ("k_proj", &a.k_proj), ("v_proj", &a.v_proj), ("out_proj", &a.out_proj)]
            {
                lin(&mut put, &k(&format!("self_attn.{name}")), l);
            }
            lin(&mut put, &k("mlp.fc1"), &layer.mlp.fc1);
            lin(&mut put, &k("mlp.fc2"), &layer.mlp.fc2);
        }
        ln(&mut put, "post_layernorm", &self.post_layernorm);
        if let Some(h) = &self.head {
            put("head.probe".into(), vec![1, 1, d], host(h.probe.val()));
            let ws = [&h.q_proj, &h.k_proj, &h.v_proj];
            put(
                "head.attention.in_proj_weight".into(),
                vec![3 * d, d],
                ws.iter().flat_map(|l| host(l.weight.val().transpose())).collect(),
            );
            put(
                "head.attention.in_proj_bias".into(),
                vec![3 * d],
                ws.iter().flat_map(|l| host(l.bias.as_ref().expect("in_proj has a bias").val())).collect(),
            );
            lin(&mut put, "head.attention.out_proj", &h.out_proj);
            ln(&mut put, "head.layernorm", &h.layernorm);
            lin(&mut put, "head.mlp.fc1", &h.mlp.fc1);
            lin(&mut put, "head.mlp.fc2", &h.mlp.fc2);
        }
        map
    }
}
