//! Any bytes as a LLaVA-format JSON file, each record then tokenised in every prompt layout: an
//! error or samples, never a panic, and at most `text_bound` heap bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use visualrwkv_fuzz::{Counting, read_llava, text_bound};

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fuzz_target!(|data: &[u8]| {
    let peak = read_llava(data);
    assert!(peak <= text_bound(data.len()), "{peak} heap bytes for {} input bytes", data.len());
});
