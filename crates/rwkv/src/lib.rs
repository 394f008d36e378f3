//! # visualrwkv-rwkv: the RWKV-6 (x060, "Finch") language model on burn
//!
//! Generic over any backend implementing [`visualrwkv_wkv::Wkv6Backend`] (ndarray, autodiff,
//! wgpu, cuda, tch). Follows docs/model.md §1: `emb` → `ln0` on every input row → blocks (time mix with
//! ddlerp token shift, data-dependent decay, WKV6, GroupNorm `ln_x`, SiLU gate; channel mix with
//! squared ReLU) → `ln_out` → `head`.
//!
//! - [`RwkvConfig`]: sizes, inferred from checkpoint shapes; `init` for random models.
//! - [`Rwkv`]: the model; `forward` (token ids) and `forward_embeddings` (rows such as image
//!   features) from an optional [`State`]; `forward_layer` for layer-by-layer execution.
//! - [`Decoder`]: the fused CPU decoder (one token at a time over host buffers, weights in f32,
//!   bf16 or f16) for fast generation.
//! - [`checkpoint`]: official x060 safetensors checkpoints (F32/F16/BF16) with strict key checks,
//!   and saving under the same names; [`weights`]: the one table of official keys ↔ module
//!   parameters they use.
//! - [`x070`]: RWKV-7 ("Goose"), [`Rwkv7`], on the same state, backends and checkpoint
//!   machinery, with its own key table.
//! - [`seeded`]: seeded random draws (model `init`) that other threads' draws cannot disturb.
//! - [`layers`]: [`layers::DdLerp`], [`layers::DecayLora`], [`layers::TimeMix`],
//!   [`layers::ChannelMix`], [`layers::Block`], each with its config.
//!
//! # Shapes
//!
//! Tokens `[B, T]`, rows `[B, T, C]`, logits `[B, T, V]`; state per layer: `att_shift` `[B, C]`,
//! `wkv` `[B, H, N, N]`, `ffn_shift` `[B, C]`.

pub mod checkpoint;
mod config;
pub mod decoder;
pub mod dense;
mod error;
pub mod language_model;
pub mod layers;
mod model;
pub mod sampling;
mod seed;
mod state;
pub mod weights;
pub mod x070;

pub use checkpoint::{TensorMap, TensorSource, load, load_fused, load_fused_model, load_safetensors};
pub use config::RwkvConfig;
pub use decoder::{Agreement, Decoder, HostLayerState, HostState, RowOrder, TokenId, WeightDtype, agreement};
pub use dense::RwkvBackend;
pub use error::{ConfigError, KeyProblem, RwkvError};
pub use language_model::{LanguageModel, LayerOutput, LmConfig, LmDims};
pub use layers::LN_X_EPS;
pub use model::{Rwkv, RwkvOutput, materialize};
pub use sampling::{Sampler, SamplingError, SamplingOptions};
pub use seed::seeded;
pub use state::{LayerState, State};
pub use visualrwkv_checkpoint::CheckpointError;
pub use x070::{Arch, Rwkv7, Rwkv7Config};
