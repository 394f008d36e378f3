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
use visualrwkv_checkpoint::{TensorMap, TensorSource, table};

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
        let (cfg, model) = Self::checked(map, config)?;
        Ok(table::load_into(cfg.init::<B>(dev), map, &cfg.weight_keys(), model, dev)?)
    }

    /// [`VisionConfig::tower_from_tensors`] with the parameters left unread until first used,
    /// then read from `source`, the file `map` came from (under the same prefix): the checks are
    /// made now, and the caller may take `map` apart afterwards (e.g. into a
    /// [`crate::FusedTower::from_tensors`]) — see [`table::load_lazily`].
    pub fn tower_from_tensors_lazily<B: Backend>(
        map: &TensorMap,
        config: Option<VisionConfig>,
        source: &TensorSource,
        dev: &B::Device,
    ) -> Result<VisionTower<B>, VisionError> {
        let (cfg, model) = Self::checked(map, config)?;
        Ok(table::load_lazily(cfg.init::<B>(dev), map, source, &cfg.weight_keys(), model, dev)?)
    }

    /// The configuration of tower tensors (`config`, validated, or inferred from the shapes)
    /// with every key checked against it, and the tower's name for messages.
    pub(crate) fn checked(map: &TensorMap, config: Option<VisionConfig>) -> Result<(Self, &'static str), VisionError> {
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
        Ok((cfg, model))
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
    VisionConfig::tower_from_tensors(&map, config_beside(weights, config)?, dev)
}

/// The configuration [`load`] uses for the tower at `weights`: the `config` file if given, else
/// a `config.json` beside the weights, else `None` (to be inferred from the shapes).
pub fn config_beside(weights: &Path, config: Option<&Path>) -> Result<Option<VisionConfig>, VisionError> {
    let sibling = weights.parent().map(|d| d.join("config.json")).filter(|p| p.is_file());
    config.map(Path::to_path_buf).or(sibling).map(VisionConfig::from_hf_json).transpose()
}

/// Every tensor of an opened checkpoint, integer buffers skipped ([`read_tensors`] of a
/// [`TensorSource`]).
pub fn read_source(source: &TensorSource) -> Result<TensorMap, VisionError> {
    Ok(source.read_skipping(is_buffer)?)
}

/// The tower's tensors of an opened checkpoint and the prefix they were found under (`""` for
/// bare keys): [`into_vision_tensors`] of [`read_source`], with the prefix a lazily loaded tower
/// reads its parameters under.
pub fn tower_tensors(source: &TensorSource) -> Result<(TensorMap, &'static str), VisionError> {
    let map = read_source(source)?;
    let prefix = TOWER_PREFIXES.iter().copied().find(|p| map.has_prefix(p)).unwrap_or("");
    Ok((into_vision_tensors(map), prefix))
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
