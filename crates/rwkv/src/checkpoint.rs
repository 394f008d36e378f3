//! Official RWKV-6 (x060) checkpoints in safetensors: loading with strict key checking, and saving
//! under the same names.
//!
//! Key names and shapes are those of the RWKV-LM x060 trainer (`emb.weight` `[V, C]`,
//! `blocks.{l}.att.time_maa_x` `[1, 1, C]`, `nn.Linear` weights `[out, in]`, …; see
//! [`crate::weights`]). Tensors may be stored as F32, F16 or BF16. Every missing,
//! unexpected or mis-shaped key is reported, all at once — never silently ignored.

use std::path::Path;

use burn::tensor::backend::Backend;

use crate::model::Rwkv;
use crate::weights::{load_official, load_official_lazily, official_tensors};
use crate::{Decoder, RwkvConfig, RwkvError, WeightDtype};
pub use visualrwkv_checkpoint::{TensorMap, TensorSource};

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

impl<B: Backend> Rwkv<B> {
    /// A model from official checkpoint tensors: the configuration inferred and every key
    /// checked, then the tensors loaded into [`RwkvConfig::init`]'s skeleton
    /// ([`crate::weights::load_official`]).
    pub fn from_tensors(map: &TensorMap, device: &B::Device) -> Result<Self, RwkvError> {
        load_official(map, device)
    }

    /// [`Rwkv::from_tensors`] with the parameters left unread until first used, then read from
    /// `source`, the file `map` came from (under the same prefix); see
    /// [`crate::weights::load_official_lazily`].
    pub fn from_tensors_lazily(map: &TensorMap, source: &TensorSource, device: &B::Device) -> Result<Self, RwkvError> {
        load_official_lazily(map, source, device)
    }
}

/// Loads an official x060 checkpoint from a safetensors file.
pub fn load_safetensors<B: Backend>(path: impl AsRef<Path>, device: &B::Device) -> Result<Rwkv<B>, RwkvError> {
    Rwkv::from_tensors(&TensorMap::read_safetensors(path)?, device)
}

/// Loads an official x060 checkpoint, `.pth` (PyTorch) or safetensors by extension.
pub fn load<B: Backend>(path: impl AsRef<Path>, device: &B::Device) -> Result<Rwkv<B>, RwkvError> {
    Rwkv::from_tensors(&TensorMap::read(path)?, device)
}

/// Loads an official x060 checkpoint (`.pth` or safetensors) for the fused CPU decoder: the
/// tensors are moved into a [`Decoder`] with its matrices in `dtype`
/// ([`Decoder::from_tensors`]), and the model beside it reads its parameters from the file only
/// if something uses them ([`Rwkv::from_tensors_lazily`]) — one copy of the weights, read once.
pub fn load_fused<B: Backend>(
    path: impl AsRef<Path>,
    dtype: WeightDtype,
    device: &B::Device,
) -> Result<(Rwkv<B>, Decoder), RwkvError> {
    let source = TensorSource::open(path)?;
    let map = source.read_skipping(|_| false)?;
    let model = Rwkv::from_tensors_lazily(&map, &source, device)?;
    Ok((model, Decoder::from_tensors(map, dtype)?))
}

/// [`load_fused`] for a checkpoint of either architecture (told from its keys): the language
/// model, read lazily from the file, and the fused decoder holding the weights.
pub fn load_fused_model<B: crate::RwkvBackend>(
    path: impl AsRef<Path>,
    dtype: WeightDtype,
    device: &B::Device,
) -> Result<(crate::LanguageModel<B>, Decoder), RwkvError> {
    let source = TensorSource::open(path)?;
    let map = source.read_skipping(|_| false)?;
    let model = crate::LanguageModel::from_tensors_lazily(&map, &source, device)?;
    Ok((model, Decoder::from_tensors(map, dtype)?))
}

impl<B: crate::RwkvBackend> Rwkv<B> {
    /// The model's tensors under the official key names and shapes (f32), as
    /// [`crate::weights`] maps them.
    pub fn to_tensor_map(&self) -> Result<TensorMap, RwkvError> {
        official_tensors(self)
    }

    /// Saves the model as an official x060 safetensors checkpoint (f32).
    pub fn save_safetensors(&self, path: impl AsRef<Path>) -> Result<(), RwkvError> {
        write_safetensors(&self.to_tensor_map()?, path)
    }
}

/// Writes a [`TensorMap`] as F32 safetensors.
pub fn write_safetensors(map: &TensorMap, path: impl AsRef<Path>) -> Result<(), RwkvError> {
    Ok(visualrwkv_checkpoint::write_safetensors(map, path)?)
}

/// Whether the fused decoder stores the official tensor `key` in its [`WeightDtype`]: the
/// embedding, the head and the time- and channel-mix projections (the LoRA matrices, decays
/// and norms stay f32).
pub fn is_decoder_matrix(key: &str) -> bool {
    if matches!(key, "emb.weight" | "head.weight") {
        return true;
    }
    let name = key.strip_prefix("blocks.").and_then(|rest| rest.split_once('.')).map(|(_, name)| name);
    matches!(
        name,
        Some(
            "att.receptance.weight"
                | "att.key.weight"
                | "att.value.weight"
                | "att.gate.weight"
                | "att.output.weight"
                | "ffn.key.weight"
                | "ffn.receptance.weight"
                | "ffn.value.weight"
        )
    )
}

/// Writes an official checkpoint's tensors as safetensors with the decoder's matrices
/// ([`is_decoder_matrix`]) block-quantised as `dtype` stores them (int8 or 4-bit, see
/// [`visualrwkv_checkpoint::quant`]; other types write F32). Read back ([`crate::load`],
/// [`load_fused`]), each quantised weight is its dequantised value, and a decoder of the same
/// type built from them holds exactly the codes and scales written.
pub fn write_safetensors_quantized(
    map: &TensorMap,
    dtype: WeightDtype,
    path: impl AsRef<Path>,
) -> Result<(), RwkvError> {
    let quant = dtype.quant();
    Ok(visualrwkv_checkpoint::write_safetensors_quantized(map, |k, _| quant.filter(|_| is_decoder_matrix(k)), path)?)
}
