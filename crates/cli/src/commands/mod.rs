//! One module per subcommand: its flags (`Args`) and its body (`run`).

pub mod ablate;
pub mod bench_efficiency;
pub mod bench_serve;
pub mod bench_train;
pub mod chat;
pub mod convert;
pub mod dataset;
pub mod demo;
pub mod eval;
pub mod example_data;
pub mod generate;
pub mod info;
pub mod logits;
pub mod score;
pub mod serve;
pub mod tokenize;
pub mod train;
pub mod vision_features;
pub mod vlm;
pub mod vlm_logits;
