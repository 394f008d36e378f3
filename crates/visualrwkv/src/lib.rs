//! # visualrwkv: VisualRWKV on burn
//!
//! The top of the library stack, generic over the burn backend: the vision-language model
//! [`VisualRwkv`] (image features spliced into RWKV-6's sequence, per-layer scans of the image
//! span, exact state-cached generation), text generation ([`generate`]), training
//! ([`training`]: the two-stage recipe; [`parallel`]: data-parallel over several devices with the
//! `collective` feature) and the synthetic-task demo and ablation ([`demo`]). The `visualrwkv`
//! command-line tool lives in the `visualrwkv-cli` crate.
//!
//! Features: `ndarray` + `autodiff` (default: the CPU), `wgpu`, `cuda`, `tch` (the backends they
//! name), `collective` (training on several devices). With `default-features = false` no backend
//! is compiled in.

pub mod answering;
pub mod demo;
pub mod finetune;
pub mod generate;
pub mod parallel;
pub mod serving;
pub mod training;
pub mod vlm;

pub use generate::{
    Drawn, Engine, GenerateOptions, Generation, PaddedPrompt, PromptState, TokenModel, TokenSampler, TokenScore,
    V700_CHUNK_LEN, V700_PAD_TOKEN, decode, decode_prompt_state, decode_v700_padded, generate, generate_tokens,
    generate_tokens_v700_padded, v700_pad_len, v700_padded_prompts,
};
pub use vlm::{FusedVisualRwkv, ImageRows, PaddedLogits, Sample, VisionOptions, VisualRwkv, VlmError};
