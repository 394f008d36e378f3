//! Loading vision towers from Hugging Face safetensors (or `.pth`) and saving them back.
//!
//! Accepted layouts, detected from the keys: VisualRWKV's `vit.vision_model.*` (the tower inside
//! a VisualRWKV checkpoint), Hugging Face's `vision_model.*` (a `CLIPVisionModel`, or a full
//! `CLIPModel` / `SiglipModel` whose text side is then left alone), or bare keys
//! (`embeddings.*`, `encoder.*`, ...). Within the tower every key is checked: each missing,
//! unexpected or mis-shaped one is reported. The integer buffer `embeddings.position_ids` that
//! older exports carry is skipped (it is `arange(T)`).

use std::path::Path;

use burn::tensor::backend::Backend;
use visualrwkv_checkpoint::{TensorMap, table};

use crate::VisionError;
use crate::config::{TowerKind, VisionConfig};
use crate::tower::VisionTower;

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
    into_vision_tensors(map.clone())
}

/// [`vision_tensors`] of a map this call may take apart (no values copied).
pub fn into_vision_tensors(mut map: TensorMap) -> TensorMap {
    match TOWER_PREFIXES.iter().find(|p| map.has_prefix(p)) {
        Some(p) => map.take_prefix(p),
        None => map,
    }
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
        Ok(table::load_into(cfg.init::<B>(dev), map, &cfg.weight_keys(), model, dev)?)
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
    let map = into_vision_tensors(read_tensors(weights)?);
    let sibling = weights.parent().map(|d| d.join("config.json")).filter(|p| p.is_file());
    let config = match config.map(Path::to_path_buf).or(sibling) {
        Some(path) => Some(VisionConfig::from_hf_json(path)?),
        None => None,
    };
    VisionConfig::tower_from_tensors(&map, config, dev)
}

impl<B: Backend> VisionTower<B> {
    /// The tower's tensors under Hugging Face names, each prefixed with `prefix` (e.g.
    /// `"vision_model."`), as f32 — the inverse of [`VisionConfig::tower_from_tensors`], from
    /// the same key table ([`VisionConfig::weight_keys`]).
    pub fn to_tensor_map(&self, prefix: &str) -> Result<TensorMap, VisionError> {
        let map = table::save_from(self, &self.config.weight_keys(), "vision tower")?;
        let tensors = map.tensors.into_iter().map(|(k, v)| (format!("{prefix}{k}"), v)).collect();
        Ok(TensorMap { origin: map.origin, tensors })
    }
}
