//! Any bytes as a LLaVA-format JSON file, each record then tokenised in every prompt layout: an
//! error or samples, never a panic, and at most `text_bound` heap bytes.
#![no_main]

visualrwkv_fuzz::loader_target!(visualrwkv_fuzz::read_llava, visualrwkv_fuzz::text_bound);
