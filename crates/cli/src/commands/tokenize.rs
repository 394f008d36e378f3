//! `visualrwkv tokenize` / `detokenize`: the World tokenizer.

use std::io::Write;
use std::path::PathBuf;

use visualrwkv_tokenizer::Tokenizer;

use crate::Res;
use crate::args::parse_ids;

/// Flags of `tokenize`.
#[derive(clap::Args)]
pub struct Args {
    /// The text.
    #[arg(long, conflicts_with = "file")]
    text: Option<String>,
    /// Read the text from a file.
    #[arg(long)]
    file: Option<PathBuf>,
}

/// Prints the ids of the text as a JSON array.
pub fn run(a: Args) -> Res<()> {
    let text = match (a.text, a.file) {
        (Some(t), None) => t,
        (None, Some(f)) => std::fs::read_to_string(&f).map_err(|e| format!("{}: {e}", f.display()))?,
        _ => return Err("give --text or --file".into()),
    };
    println!("{}", serde_json::to_string(&Tokenizer::world().encode(&text))?);
    Ok(())
}

/// Flags of `detokenize`.
#[derive(clap::Args)]
pub struct DetokenizeArgs {
    /// Comma-separated token ids.
    #[arg(long)]
    ids: String,
}

/// Prints the text of the ids.
pub fn detokenize(a: DetokenizeArgs) -> Res<()> {
    let text = Tokenizer::world().decode(&parse_ids(&a.ids)?)?;
    print!("{text}");
    std::io::stdout().flush()?;
    Ok(())
}
