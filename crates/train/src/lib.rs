//! # visualrwkv-train: training VisualRWKV
//!
//! - [`data`]: a synthetic spatial VQA task (coloured shapes on a grid; questions that need the
//!   image and its layout), deterministic from a seed, with train / validation / test splits and
//!   the majority-answer baseline per question type.
//! - [`loss`]: per-sample cross-entropy with ignore index −100, and L2Wrap.
//! - [`schedule`]: warmup + cosine learning rate, applied to every parameter group.
//! - [`stats`]: paired bootstrap intervals over seeds and test items, and verdicts on claims.

pub mod data;
pub mod loss;
pub mod schedule;
pub mod stats;
