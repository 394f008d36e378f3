//! # visualrwkv: VisualRWKV on burn
//!
//! The top of the stack: the vision-language model [`VisualRwkv`] (image features spliced into
//! RWKV-6's sequence, per-layer scans of the image span, exact state-cached generation), text
//! generation ([`generate`]), and the `visualrwkv` command-line tool (`src/bin/visualrwkv.rs`).

pub mod demo;
pub mod efficiency;
pub mod generate;
pub mod training;
pub mod vlm;

pub use generate::{GenerateOptions, Generation, decode, generate};
pub use vlm::{ImageRows, Sample, VisionOptions, VisualRwkv, VlmError};
