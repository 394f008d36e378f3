//! # visualrwkv-bench: criterion benchmarks
//!
//! `cargo bench -p visualrwkv-bench --bench wkv6` (the WKV6 op on the CPU: reference, chunked
//! burn op, CPU kernel, decoding step, gradients) and `--bench tokenizer` (World tokenizer
//! encode/decode against the `rwkv-tokenizer` crate). Kept apart from the library crates so that
//! criterion (and its command-line parser) is no dependency of theirs.
