//! [`LanguageModel`]: an RWKV-6 (x060) or RWKV-7 (x070) model behind one type, for code that
//! takes either (the VLM, training, evaluation, serving): the architecture is told from a
//! checkpoint's keys ([`Arch::detect`]) and every entry point dispatches to the model's own.
//!
//! # Shapes
//!
//! As for [`Rwkv`]: tokens `[B, T]`, rows `[B, T, C]`, logits `[B, T, V]`, the same per-layer
//! [`State`]. RWKV-7 blocks also pass the first block's values `v_first` `[B·T, C]` along
//! ([`LanguageModel::forward_layer`]).

use std::path::Path;

use burn::module::Module;
use burn::nn::Embedding;
use burn::tensor::{Int, Tensor, backend::Backend};

use crate::x070::{Arch, Rwkv7};
use crate::{LayerState, Rwkv, RwkvBackend, RwkvError, RwkvOutput, State, TensorMap};

/// An RWKV language model of either architecture.
#[derive(Module, Debug)]
pub enum LanguageModel<B: Backend> {
    /// RWKV-6 "Finch".
    X060(Rwkv<B>),
    /// RWKV-7 "Goose".
    X070(Rwkv7<B>),
}

/// The sizes both architectures share.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LmDims {
    /// The architecture.
    pub arch: Arch,
    /// Blocks L.
    pub n_layer: usize,
    /// Width C.
    pub n_embd: usize,
    /// Heads H.
    pub n_head: usize,
    /// Head size N.
    pub head_size: usize,
    /// Vocabulary V.
    pub vocab_size: usize,
}

/// The full configuration of either architecture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LmConfig {
    /// RWKV-6.
    X060(crate::RwkvConfig),
    /// RWKV-7.
    X070(crate::Rwkv7Config),
}

impl LmConfig {
    /// The sizes both architectures share.
    pub fn dims(&self) -> LmDims {
        let (arch, n_layer, n_embd, n_head, head_size, vocab_size) = match self {
            Self::X060(c) => (Arch::X060, c.n_layer, c.n_embd, c.n_head, c.head_size, c.vocab_size),
            Self::X070(c) => (Arch::X070, c.n_layer, c.n_embd, c.n_head, c.head_size, c.vocab_size),
        };
        LmDims { arch, n_layer, n_embd, n_head, head_size, vocab_size }
    }

    /// A randomly initialised model of this configuration.
    pub fn init<B: Backend>(&self, device: &B::Device) -> LanguageModel<B> {
        match self {
            Self::X060(c) => LanguageModel::X060(c.init(device)),
            Self::X070(c) => LanguageModel::X070(c.init(device)),
        }
    }

    /// Every key of a checkpoint of this configuration with its official shape.
    pub fn expected_keys(&self) -> Vec<(String, Vec<usize>)> {
        match self {
            Self::X060(c) => c.expected_keys(),
            Self::X070(c) => c.expected_keys(),
        }
    }
}

/// Output of [`LanguageModel::forward_layer`].
#[derive(Clone, Debug)]
pub struct LayerOutput<B: Backend> {
    /// `[B, T, C]`.
    pub x: Tensor<B, 3>,
    /// The layer's new state.
    pub state: LayerState<B>,
    /// RWKV-7: the first block's values `[B·T, C]` for the next blocks; `None` for RWKV-6.
    pub v_first: Option<Tensor<B, 2>>,
}

impl<B: Backend> From<Rwkv<B>> for LanguageModel<B> {
    fn from(m: Rwkv<B>) -> Self {
        Self::X060(m)
    }
}

impl<B: Backend> From<Rwkv7<B>> for LanguageModel<B> {
    fn from(m: Rwkv7<B>) -> Self {
        Self::X070(m)
    }
}

impl<B: RwkvBackend> LanguageModel<B> {
    /// A model from official checkpoint tensors of either architecture (told from the keys).
    pub fn from_tensors(map: &TensorMap, device: &B::Device) -> Result<Self, RwkvError> {
        Ok(match Arch::detect(map)? {
            Arch::X060 => Self::X060(Rwkv::from_tensors(map, device)?),
            Arch::X070 => Self::X070(Rwkv7::from_tensors(map, device)?),
        })
    }

    /// As [`LanguageModel::from_tensors`], each parameter read from `source` (the file `map` was
    /// read from) only when first used: for a model whose weights a fused decoder holds.
    pub fn from_tensors_lazily(
        map: &TensorMap,
        source: &visualrwkv_checkpoint::TensorSource,
        device: &B::Device,
    ) -> Result<Self, RwkvError> {
        Ok(match Arch::detect(map)? {
            Arch::X060 => Self::X060(Rwkv::from_tensors_lazily(map, source, device)?),
            Arch::X070 => Self::X070(Rwkv7::from_tensors_lazily(map, source, device)?),
        })
    }

    /// Loads an official checkpoint (`.pth` or safetensors) of either architecture.
    pub fn load(path: impl AsRef<Path>, device: &B::Device) -> Result<Self, RwkvError> {
        Self::from_tensors(&TensorMap::read(path)?, device)
    }

    /// The architecture.
    pub fn arch(&self) -> Arch {
        match self {
            Self::X060(_) => Arch::X060,
            Self::X070(_) => Arch::X070,
        }
    }

    /// The sizes both architectures share.
    pub fn dims(&self) -> LmDims {
        self.config().dims()
    }

    /// The full configuration (LoRA ranks included).
    pub fn config(&self) -> LmConfig {
        match self {
            Self::X060(m) => LmConfig::X060(m.config()),
            Self::X070(m) => LmConfig::X070(m.config()),
        }
    }

    /// The RWKV-6 model, when this is one.
    pub fn x060(&self) -> Option<&Rwkv<B>> {
        match self {
            Self::X060(m) => Some(m),
            Self::X070(_) => None,
        }
    }

    /// [`LanguageModel::x060`], or an error naming `what` needs it.
    pub fn require_x060(&self, what: &str) -> Result<&Rwkv<B>, RwkvError> {
        self.x060().ok_or_else(|| RwkvError::Unsupported { what: what.into(), arch: "x070" })
    }

    /// The token embedding `emb` `[V, C]`.
    pub fn emb(&self) -> &Embedding<B> {
        match self {
            Self::X060(m) => &m.emb,
            Self::X070(m) => &m.emb,
        }
    }

    /// The device the parameters are on.
    pub fn device(&self) -> B::Device {
        match self {
            Self::X060(m) => m.device(),
            Self::X070(m) => m.device(),
        }
    }

    /// The zero state for `batch` rows.
    pub fn zero_state(&self, batch: usize) -> State<B> {
        match self {
            Self::X060(m) => m.zero_state(batch),
            Self::X070(m) => m.zero_state(batch),
        }
    }

    /// Checks that `state` fits this model with `batch` rows.
    pub fn check_state(&self, state: &State<B>, batch: usize) -> Result<(), RwkvError> {
        let d = self.dims();
        state.check_sized(d.n_layer, d.n_embd, d.n_head, d.head_size, batch)
    }

    /// Raw embedding rows `[B, T, C]` of `tokens` `[B, T]`; errors on ids outside the vocabulary.
    pub fn embed(&self, tokens: Tensor<B, 2, Int>) -> Result<Tensor<B, 3>, RwkvError> {
        match self {
            Self::X060(m) => m.embed(tokens),
            Self::X070(m) => m.embed(tokens),
        }
    }

    /// `ln0` over rows `[B, T, C]`.
    pub fn input_norm(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        match self {
            Self::X060(m) => m.input_norm(x),
            Self::X070(m) => m.input_norm(x),
        }
    }

    /// Block `layer` over `x` `[B, T, C]` from its state; `v_first` is RWKV-7's first-block
    /// values in the same row order as `x` (ignored by RWKV-6).
    pub fn forward_layer(
        &self,
        layer: usize,
        x: Tensor<B, 3>,
        state: LayerState<B>,
        v_first: Option<Tensor<B, 2>>,
    ) -> Result<LayerOutput<B>, RwkvError> {
        match self {
            Self::X060(m) => {
                let out = m.forward_layer(layer, x, state)?;
                Ok(LayerOutput { x: out.x, state: out.state, v_first: None })
            }
            Self::X070(m) => {
                let out = m.forward_layer(layer, x, state, v_first)?;
                Ok(LayerOutput { x: out.x, state: out.state, v_first: Some(out.v_first) })
            }
        }
    }

    /// `ln_out` then `head`: logits `[B, T, V]` of the residual stream `[B, T, C]`.
    pub fn logits(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        match self {
            Self::X060(m) => m.logits(x),
            Self::X070(m) => m.logits(x),
        }
    }

    /// Every row's logits of embedding rows `x` `[B, T, C]` (before `ln0`) from `state`.
    pub fn forward_embeddings(&self, x: Tensor<B, 3>, state: Option<&State<B>>) -> Result<RwkvOutput<B>, RwkvError> {
        match self {
            Self::X060(m) => m.forward_embeddings(x, state),
            Self::X070(m) => m.forward_embeddings(x, state),
        }
    }

    /// Every row's logits of token ids `[B, T]` from `state` (zeros when `None`).
    pub fn forward(&self, tokens: Tensor<B, 2, Int>, state: Option<&State<B>>) -> Result<RwkvOutput<B>, RwkvError> {
        match self {
            Self::X060(m) => m.forward(tokens, state),
            Self::X070(m) => m.forward(tokens, state),
        }
    }

    /// The last row's logits `[B, 1, V]` and the state after `tokens`.
    pub fn forward_last(
        &self,
        tokens: Tensor<B, 2, Int>,
        state: Option<&State<B>>,
    ) -> Result<RwkvOutput<B>, RwkvError> {
        match self {
            Self::X060(m) => m.forward_last(tokens, state),
            Self::X070(m) => m.forward_last(tokens, state),
        }
    }

    /// The tensors under the architecture's official keys (f32).
    pub fn to_tensor_map(&self) -> Result<TensorMap, RwkvError> {
        match self {
            Self::X060(m) => m.to_tensor_map(),
            Self::X070(m) => m.to_tensor_map(),
        }
    }

    /// Saves the model under its architecture's official keys (f32 safetensors, written
    /// atomically).
    pub fn save_safetensors(&self, path: impl AsRef<Path>) -> Result<(), RwkvError> {
        crate::checkpoint::write_safetensors(&self.to_tensor_map()?, path)
    }
}
