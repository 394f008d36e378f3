//! Vision tower configuration: read from a Hugging Face `config.json`, or inferred from tensor
//! shapes.

use std::path::Path;

use burn::config::Config;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use visualrwkv_checkpoint::TensorMap;
use visualrwkv_checkpoint::table::{self, Layout, WeightKey};

use crate::VisionError;

/// Which family a tower belongs to; decides the embedding and output conventions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TowerKind {
    /// CLIP: patch conv without bias, class token, `pre_layrnorm`, `post_layernorm` only on the
    /// pooled CLS.
    Clip,
    /// SigLIP: patch conv with bias, no class token, `post_layernorm` on the whole sequence, and
    /// optionally the attention-pooling head (`pooler_output`).
    Siglip,
}

/// The MLP activation (`hidden_act`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Activation {
    /// `quick_gelu`: `x·σ(1.702·x)` (OpenAI CLIP).
    QuickGelu,
    /// `gelu`: exact, `x·Φ(x)` with erf.
    Gelu,
    /// `gelu_pytorch_tanh` / `gelu_new`: the tanh approximation (SigLIP).
    GeluTanh,
}

impl Activation {
    /// Parses a Hugging Face `hidden_act` name.
    pub fn from_hf(name: &str) -> Option<Self> {
        match name {
            "quick_gelu" => Some(Self::QuickGelu),
            "gelu" => Some(Self::Gelu),
            "gelu_pytorch_tanh" | "gelu_new" | "gelu_fast" => Some(Self::GeluTanh),
            _ => None,
        }
    }
}

/// Sizes and conventions of a ViT vision tower (CLIP or SigLIP).
#[derive(Config, Debug, PartialEq)]
pub struct VisionConfig {
    /// CLIP or SigLIP conventions.
    pub kind: TowerKind,
    /// The image side the position embedding was trained for (pixels).
    pub image_size: usize,
    /// Patch side P (the patch conv has kernel = stride = P).
    pub patch_size: usize,
    /// Hidden width D.
    pub hidden_size: usize,
    /// MLP hidden width.
    pub intermediate_size: usize,
    /// Number of encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads (D must be a multiple).
    pub num_attention_heads: usize,
    /// Input channels.
    #[config(default = 3)]
    pub num_channels: usize,
    /// LayerNorm epsilon.
    #[config(default = 1e-5)]
    pub layer_norm_eps: f64,
    /// MLP activation.
    #[config(default = "Activation::QuickGelu")]
    pub hidden_act: Activation,
    /// SigLIP only: whether the tower has the attention-pooling head (`head.*`).
    #[config(default = false)]
    pub use_head: bool,
}

/// The non-negative integer `key` of `v` (`default` when absent).
fn get_usize(v: &Value, key: &str, default: usize, origin: &str) -> Result<usize, VisionError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(x) => x.as_u64().map(|x| x as usize).ok_or_else(|| VisionError::Config {
            origin: origin.to_string(),
            why: format!("`{key}` is not a non-negative integer"),
        }),
    }
}

impl VisionConfig {
    /// CLIP ViT-L/14-336 (`openai/clip-vit-large-patch14-336`), the tower of VisualRWKV v6.0.
    pub fn clip_vit_large_336() -> Self {
        Self::new(TowerKind::Clip, 336, 14, 1024, 4096, 24, 16)
    }

    /// SigLIP so400m/14 at 384 (`google/siglip-so400m-patch14-384`).
    pub fn siglip_so400m_384() -> Self {
        Self::new(TowerKind::Siglip, 384, 14, 1152, 4304, 27, 16)
            .with_layer_norm_eps(1e-6)
            .with_hidden_act(Activation::GeluTanh)
            .with_use_head(true)
    }

    /// Number of patches per side for the trained image size.
    pub fn grid_side(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// Rows of the position embedding: patches, plus the class token for CLIP.
    pub fn num_positions(&self) -> usize {
        self.grid_side() * self.grid_side() + usize::from(self.kind == TowerKind::Clip)
    }

    /// Head width `D / heads`.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads.max(1)
    }

    /// Checks the sizes are consistent (non-zero, D divisible by the heads, image ≥ patch); the
    /// error names `origin` (the file or "configuration").
    pub fn validate(&self, origin: &str) -> Result<(), VisionError> {
        self.problem().map_or(Ok(()), |why| Err(VisionError::Config { origin: origin.to_string(), why }))
    }

    /// What [`VisionConfig::validate`] finds wrong, if anything.
    fn problem(&self) -> Option<String> {
        let fields = [
            ("image_size", self.image_size),
            ("patch_size", self.patch_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_attention_heads", self.num_attention_heads),
            ("num_channels", self.num_channels),
        ];
        if let Some((name, _)) = fields.iter().find(|(_, v)| *v == 0) {
            return Some(format!("`{name}` must be positive"));
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Some(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if self.image_size < self.patch_size {
            return Some(format!("image_size {} is smaller than patch_size {}", self.image_size, self.patch_size));
        }
        if self.layer_norm_eps.is_nan() || self.layer_norm_eps <= 0.0 {
            return Some("`layer_norm_eps` must be positive".into());
        }
        None
    }

    /// Parses a Hugging Face `config.json`: a vision config (`model_type` `clip_vision_model` /
    /// `siglip_vision_model`) or a full CLIP/SigLIP config with a `vision_config` section.
    /// Missing fields take Hugging Face's defaults for that family.
    pub fn from_hf_json_str(text: &str, origin: &str) -> Result<Self, VisionError> {
        let err = |why: String| VisionError::Config { origin: origin.to_string(), why };
        let root: Value = serde_json::from_str(text).map_err(|e| err(format!("not valid JSON: {e}")))?;
        let top_type = root.get("model_type").and_then(Value::as_str).unwrap_or("").to_string();
        let v = root.get("vision_config").unwrap_or(&root);
        let model_type = v.get("model_type").and_then(Value::as_str).unwrap_or(&top_type).to_string();
        let kind = if model_type.contains("siglip") {
            TowerKind::Siglip
        } else if model_type.contains("clip") || model_type.is_empty() {
            TowerKind::Clip
        } else {
            return Err(err(format!("model_type `{model_type}` is neither CLIP nor SigLIP")));
        };
        // Hugging Face's defaults (CLIPVisionConfig, SiglipVisionConfig).
        let (d_patch, d_act, d_eps) = match kind {
            TowerKind::Clip => (32, "quick_gelu", 1e-5),
            TowerKind::Siglip => (16, "gelu_pytorch_tanh", 1e-6),
        };
        let act_name = v.get("hidden_act").and_then(Value::as_str).unwrap_or(d_act);
        let hidden_act =
            Activation::from_hf(act_name).ok_or_else(|| err(format!("unsupported hidden_act `{act_name}`")))?;
        let eps = match v.get("layer_norm_eps") {
            None | Some(Value::Null) => d_eps,
            Some(x) => x.as_f64().ok_or_else(|| err("`layer_norm_eps` is not a number".into()))?,
        };
        let use_head = kind == TowerKind::Siglip && v.get("vision_use_head").and_then(Value::as_bool).unwrap_or(true);
        let config = Self {
            kind,
            image_size: get_usize(v, "image_size", 224, origin)?,
            patch_size: get_usize(v, "patch_size", d_patch, origin)?,
            hidden_size: get_usize(v, "hidden_size", 768, origin)?,
            intermediate_size: get_usize(v, "intermediate_size", 3072, origin)?,
            num_hidden_layers: get_usize(v, "num_hidden_layers", 12, origin)?,
            num_attention_heads: get_usize(v, "num_attention_heads", 12, origin)?,
            num_channels: get_usize(v, "num_channels", 3, origin)?,
            layer_norm_eps: eps,
            hidden_act,
            use_head,
        };
        config.validate(origin)?;
        Ok(config)
    }

    /// The configuration as a Hugging Face vision `config.json` (`clip_vision_model` /
    /// `siglip_vision_model`), which [`VisionConfig::from_hf_json_str`] reads back unchanged.
    pub fn to_hf_json(&self) -> Value {
        let act = match self.hidden_act {
            Activation::QuickGelu => "quick_gelu",
            Activation::Gelu => "gelu",
            Activation::GeluTanh => "gelu_pytorch_tanh",
        };
        let mut v = serde_json::json!({
            "model_type": match self.kind { TowerKind::Clip => "clip_vision_model", TowerKind::Siglip => "siglip_vision_model" },
            "image_size": self.image_size,
            "patch_size": self.patch_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_channels": self.num_channels,
            "layer_norm_eps": self.layer_norm_eps,
            "hidden_act": act,
        });
        if self.kind == TowerKind::Siglip {
            v["vision_use_head"] = Value::Bool(self.use_head);
        }
        v
    }

    /// Reads a Hugging Face `config.json` file (see [`VisionConfig::from_hf_json_str`]).
    pub fn from_hf_json(path: impl AsRef<Path>) -> Result<Self, VisionError> {
        let path = path.as_ref();
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| VisionError::Config { origin: origin.clone(), why: e.to_string() })?;
        Self::from_hf_json_str(&text, &origin)
    }

    /// Infers the configuration from tensor shapes (keys without prefix, as after
    /// [`crate::checkpoint::vision_tensors`]).
    ///
    /// Read off the shapes: the family (a class embedding means CLIP, a patch bias SigLIP),
    /// patch size and width (patch conv `[D, C, P, P]`), image size (position rows), layer count,
    /// MLP width and the SigLIP head. **Not** in the shapes, so taken from the family's
    /// conventions: epsilon (CLIP 1e-5, SigLIP 1e-6), activation (CLIP `quick_gelu`, SigLIP
    /// tanh GELU) and the head count: head width 64 for D ≥ 512 (every CLIP and SigLIP size but
    /// so400m), 16 heads for so400m (D = 1152), and 4 heads below 512 (Hugging Face's tiny test
    /// towers). Pass a `config.json` whenever a tower departs from these.
    pub fn infer(map: &TensorMap) -> Result<Self, VisionError> {
        let err = |why: String| VisionError::Config { origin: map.origin.clone(), why };
        let patch = map
            .shape("embeddings.patch_embedding.weight")
            .ok_or_else(|| err("no `embeddings.patch_embedding.weight`: not a CLIP/SigLIP vision tower".into()))?;
        let [d, ch, p, p2] = patch[..] else {
            return Err(err(format!("`embeddings.patch_embedding.weight` has shape {patch:?}, expected [D, C, P, P]")));
        };
        if p != p2 || p == 0 || d == 0 {
            return Err(err(format!("`embeddings.patch_embedding.weight` has shape {patch:?}, expected [D, C, P, P]")));
        }
        let kind = if map.shape("embeddings.class_embedding").is_some() {
            TowerKind::Clip
        } else if map.shape("embeddings.patch_embedding.bias").is_some() {
            TowerKind::Siglip
        } else {
            return Err(err("neither `embeddings.class_embedding` (CLIP) nor a patch bias (SigLIP)".into()));
        };
        let pos = map
            .shape("embeddings.position_embedding.weight")
            .ok_or_else(|| err("no `embeddings.position_embedding.weight`".into()))?;
        let patches = pos[0].saturating_sub(usize::from(kind == TowerKind::Clip));
        let side = (patches as f64).sqrt().round() as usize;
        if side * side != patches || side == 0 {
            return Err(err(format!("position embedding has {} rows: not a square grid of patches", pos[0])));
        }
        let mut layers = 0;
        while map.shape(&format!("encoder.layers.{layers}.layer_norm1.weight")).is_some() {
            layers += 1;
        }
        let inter = map
            .shape("encoder.layers.0.mlp.fc1.weight")
            .map(|s| s[0])
            .ok_or_else(|| err("no `encoder.layers.0.mlp.fc1.weight`".into()))?;
        let heads = match d {
            1152 => 16,
            d if d >= 512 && d % 64 == 0 => d / 64,
            d if d % 4 == 0 => 4,
            _ => 1,
        };
        let mut config = Self::new(kind, side * p, p, d, inter, layers, heads).with_num_channels(ch);
        if kind == TowerKind::Siglip {
            config = config
                .with_layer_norm_eps(1e-6)
                .with_hidden_act(Activation::GeluTanh)
                .with_use_head(map.shape("head.probe").is_some());
        }
        config.validate(&map.origin)?;
        Ok(config)
    }

    /// Every key of this tower (without prefix, Hugging Face names) with its shape.
    pub fn expected_keys(&self) -> Vec<(String, Vec<usize>)> {
        table::expected_keys(&self.weight_keys())
    }

    /// The key table of this tower: each Hugging Face key (without prefix), its shape, the
    /// [`crate::VisionTower`] parameter it fills and how (`nn.Linear` and the patch convolution
    /// transposed; SigLIP's packed `in_proj` split into the head's q/k/v projections).
    pub fn weight_keys(&self) -> Vec<WeightKey> {
        let (d, f, p, c) = (self.hidden_size, self.intermediate_size, self.patch_size, self.num_channels);
        let mut keys = Vec::new();
        let key = |keys: &mut Vec<WeightKey>, official: &str, param: &str, shape: Vec<usize>, layout: Layout| {
            keys.push(WeightKey::new(official, param, shape, layout));
        };
        // `nn.Linear(inp → out)` with bias, and a LayerNorm of width D: official name, module path.
        let linear = |keys: &mut Vec<WeightKey>, o: &str, m: &str, out: usize, inp: usize| {
            key(keys, &format!("{o}.weight"), &format!("{m}.weight"), vec![out, inp], Layout::Transposed);
            key(keys, &format!("{o}.bias"), &format!("{m}.bias"), vec![out], Layout::Same);
        };
        let norm = |keys: &mut Vec<WeightKey>, o: &str, m: &str| {
            key(keys, &format!("{o}.weight"), &format!("{m}.gamma"), vec![d], Layout::Same);
            key(keys, &format!("{o}.bias"), &format!("{m}.beta"), vec![d], Layout::Same);
        };
        let k = &mut keys;
        key(k, "embeddings.patch_embedding.weight", "patch_embedding.weight", vec![d, c, p, p], Layout::Transposed);
        key(
            k,
            "embeddings.position_embedding.weight",
            "position_embedding",
            vec![self.num_positions(), d],
            Layout::Same,
        );
        match self.kind {
            TowerKind::Clip => {
                key(k, "embeddings.class_embedding", "class_embedding", vec![d], Layout::Same);
                norm(k, "pre_layrnorm", "pre_layrnorm");
            }
            TowerKind::Siglip => {
                key(k, "embeddings.patch_embedding.bias", "patch_embedding.bias", vec![d], Layout::Same)
            }
        }
        for l in 0..self.num_hidden_layers {
            let (o, m) = (format!("encoder.layers.{l}"), format!("layers.{l}"));
            for proj in ["q_proj", "k_proj", "v_proj", "out_proj"] {
                linear(k, &format!("{o}.self_attn.{proj}"), &format!("{m}.self_attn.{proj}"), d, d);
            }
            norm(k, &format!("{o}.layer_norm1"), &format!("{m}.layer_norm1"));
            norm(k, &format!("{o}.layer_norm2"), &format!("{m}.layer_norm2"));
            linear(k, &format!("{o}.mlp.fc1"), &format!("{m}.mlp.fc1"), f, d);
            linear(k, &format!("{o}.mlp.fc2"), &format!("{m}.mlp.fc2"), d, f);
        }
        norm(k, "post_layernorm", "post_layernorm");
        if self.kind == TowerKind::Siglip && self.use_head {
            key(k, "head.probe", "head.probe", vec![1, 1, d], Layout::Same);
            for (j, proj) in ["q_proj", "k_proj", "v_proj"].iter().enumerate() {
                let (w, b) = (format!("head.{proj}.weight"), format!("head.{proj}.bias"));
                key(k, "head.attention.in_proj_weight", &w, vec![3 * d, d], Layout::TransposedPart(j));
                key(k, "head.attention.in_proj_bias", &b, vec![3 * d], Layout::Part(j));
            }
            linear(k, "head.attention.out_proj", "head.out_proj", d, d);
            norm(k, "head.layernorm", "head.layernorm");
            linear(k, "head.mlp.fc1", "head.mlp.fc1", f, d);
            linear(k, "head.mlp.fc2", "head.mlp.fc2", d, f);
        }
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hf_json_round_trips() {
        for config in [
            VisionConfig::clip_vit_large_336(),
            VisionConfig::siglip_so400m_384(),
            VisionConfig::new(TowerKind::Clip, 32, 8, 64, 128, 2, 4),
        ] {
            let text = config.to_hf_json().to_string();
            assert_eq!(VisionConfig::from_hf_json_str(&text, "t").unwrap(), config, "{text}");
        }
    }
}
