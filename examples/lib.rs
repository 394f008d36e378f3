//! Runnable examples of the VisualRWKV crates. Each example is a file beside this one:
//!
//! - `wkv6_demo`: the WKV6 op end to end on the CPU (prefill against the reference, decoding from
//!   the carried state, gradients through autodiff):
//!   `cargo run --release -p visualrwkv-examples --example wkv6_demo`.
//!
//! The examples use only the crates' public APIs, as a user's crate would.
