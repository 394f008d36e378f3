//! Streaming decoding: text is emitted as soon as it is complete UTF-8.

use crate::{Tokenizer, TokenizerError};

/// Decodes ids one at a time for streaming output.
///
/// A token can end in the middle of a multi-byte character; those bytes are held back until the
/// character is complete. Bytes that can never become valid UTF-8 are emitted as U+FFFD, so a
/// model's invalid output never stalls or aborts the stream.
///
/// ```
/// use visualrwkv_tokenizer::Tokenizer;
///
/// let tok = Tokenizer::world();
/// let mut dec = tok.stream_decoder();
/// let mut text = String::new();
/// for id in tok.encode("naïve 今天") {
///     text += &dec.push(id).unwrap();
/// }
/// text += &dec.finish();
/// assert_eq!(text, "naïve 今天");
/// ```
#[derive(Debug, Clone)]
pub struct StreamDecoder<'a> {
    tokenizer: &'a Tokenizer,
    pending: Vec<u8>,
    position: usize,
}

impl<'a> StreamDecoder<'a> {
    /// A decoder with nothing pending.
    pub fn new(tokenizer: &'a Tokenizer) -> Self {
        Self { tokenizer, pending: Vec::new(), position: 0 }
    }

    /// Adds one id and returns the text that became complete (possibly empty). Errors on an id
    /// with no bytes; the decoder is unchanged then.
    pub fn push(&mut self, id: u32) -> Result<String, TokenizerError> {
        let bytes = self.tokenizer.token_bytes(id).ok_or(TokenizerError::UnknownId {
            id,
            position: self.position,
            max: self.tokenizer.vocab_size() as u32,
        })?;
        self.position += 1;
        self.pending.extend_from_slice(bytes);
        Ok(self.drain(false))
    }

    /// Bytes held back because they may start an incomplete character.
    pub fn pending(&self) -> &[u8] {
        &self.pending
    }

    /// Flushes what is pending (an incomplete character becomes U+FFFD).
    pub fn finish(&mut self) -> String {
        self.drain(true)
    }

    fn drain(&mut self, all: bool) -> String {
        let mut out = String::new();
        let mut rest: &[u8] = &self.pending;
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    rest = &[];
                    break;
                }
                Err(e) => {
                    let (good, bad) = rest.split_at(e.valid_up_to());
                    out.push_str(std::str::from_utf8(good).expect("valid prefix"));
                    match e.error_len() {
                        // Invalid bytes: replace and go on.
                        Some(n) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            rest = &bad[n..];
                        }
                        // An incomplete character at the end: hold it back (or flush it).
                        None => {
                            if all {
                                out.push(char::REPLACEMENT_CHARACTER);
                                rest = &[];
                            } else {
                                rest = bad;
                            }
                            break;
                        }
                    }
                }
            }
        }
        self.pending = rest.to_vec();
        out
    }
}
