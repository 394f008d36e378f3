//! A user-defined prompt strategy (`Hint`, in `lib.rs`) next to the built-in ones: the token ids
//! each produces for the same question (World tokenizer; −200 marks the image).
//!
//! `cargo run --release -p visualrwkv-examples --example prompts`

use visualrwkv_examples::Hint;
use visualrwkv_prompt::{Conversation, PromptStrategy, build, by_name};
use visualrwkv_tokenizer::Tokenizer;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let conv = Conversation::question("What is the man holding?\nAnswer the question using a single word or phrase.");
    let mut strategies: Vec<Box<dyn PromptStrategy>> =
        ["first", "last", "sandwich", "sandwich-repeat"].iter().filter_map(|n| by_name(n)).collect();
    strategies.push(Box::new(Hint::default()));
    for s in &strategies {
        let p = build(&conv, s.as_ref(), Tokenizer::world(), true, true)?;
        let (before, after) = p.split();
        println!(
            "{:>16}: image at {:>2}, {} tokens + 577 image rows\n{:>16}  text: {:?} <image> {:?}",
            s.name(),
            p.image_position().unwrap_or(0),
            p.tokens.len() - 1,
            "",
            Tokenizer::world().decode(&before)?,
            Tokenizer::world().decode(&after)?,
        );
    }
    Ok(())
}
