//! Any bytes as an `eval` question file (JSON lines, JSON, MMBench TSV) and as an answer file:
//! an error or questions, never a panic, and at most `text_bound` heap bytes.
#![no_main]

visualrwkv_fuzz::loader_target!(visualrwkv_fuzz::read_questions, visualrwkv_fuzz::text_bound);
