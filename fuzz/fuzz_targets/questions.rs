//! Any bytes as an `eval` question file (JSON lines, JSON, MMBench TSV) and as an answer file:
//! an error or questions, never a panic, and at most `text_bound` heap bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use visualrwkv_fuzz::{Counting, read_questions, text_bound};

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fuzz_target!(|data: &[u8]| {
    let peak = read_questions(data);
    assert!(peak <= text_bound(data.len()), "{peak} heap bytes for {} input bytes", data.len());
});
