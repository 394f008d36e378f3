//! # visualrwkv: VisualRWKV on burn
//!
//! The top of the stack: text generation with an RWKV-6 model and the World tokenizer
//! ([`generate`]), and the `visualrwkv` command-line tool (`src/bin/visualrwkv.rs`). The
//! vision-language model (image features spliced into the sequence, per-layer scans, prompt
//! strategies) builds on these.

pub mod generate;

pub use generate::{GenerateOptions, generate};
