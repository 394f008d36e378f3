//! # visualrwkv-tokenizer: the RWKV "World" tokenizer
//!
//! The tokenizer of RWKV-6 World models and of VisualRWKV (docs/model.md §7): a vocabulary of 65529 byte
//! strings (ids `1..=65529`; id 0 is end-of-text / padding and has no bytes), and encoding by
//! **greedy longest match over the UTF-8 bytes** of the input — not BPE. Ids `1..=256` are the
//! single bytes, so every input is encodable.
//!
//! The vocabulary (`rwkv_vocab_v20230424.txt`, BlinkDL, Apache-2.0: see `vocab/NOTICE`) is
//! embedded in the crate; [`Tokenizer::world`] needs no file at run time.
//!
//! ```
//! use visualrwkv_tokenizer::Tokenizer;
//!
//! let tok = Tokenizer::world();
//! assert_eq!(tok.encode("User: "), vec![24281, 59, 33]);
//! assert_eq!(tok.decode(&[5585, 41693, 59]).unwrap(), "Assistant:");
//! assert!(tok.decode(&[0]).is_err()); // id 0 has no bytes
//! ```

mod stream;
pub mod vocab;

use std::sync::OnceLock;

pub use stream::StreamDecoder;

/// The World vocabulary file, embedded.
pub const WORLD_VOCAB: &str = include_str!("../vocab/rwkv_vocab_v20230424.txt");

/// Id of the end-of-text / padding token (not in the vocabulary file).
pub const END_OF_TEXT: u32 = 0;
/// Id of `"\n\n"`, the stop token of the RWKV chat format.
pub const DOUBLE_NEWLINE: u32 = 261;

/// Errors of the tokenizer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenizerError {
    /// A vocabulary line could not be parsed or failed its byte-length check.
    #[error("vocabulary {origin}, line {line}: {why}")]
    Vocab {
        /// Where the vocabulary came from (a path or `"embedded"`).
        origin: String,
        /// 1-based line number (0 for the whole file).
        line: usize,
        /// What is wrong.
        why: String,
    },
    /// An id with no bytes in the vocabulary (0, or above the vocabulary size).
    #[error("unknown token id {id} at position {position} (valid ids: 1..={max})")]
    UnknownId {
        /// The id.
        id: u32,
        /// Its position in the input.
        position: usize,
        /// The largest valid id.
        max: u32,
    },
    /// The decoded bytes are not valid UTF-8.
    #[error("decoded bytes are not valid UTF-8 (first bad byte at offset {offset})")]
    InvalidUtf8 {
        /// Offset of the first invalid byte.
        offset: usize,
    },
    /// Reading a vocabulary file failed.
    #[error("reading vocabulary {path}: {why}")]
    Io {
        /// The path.
        path: String,
        /// The I/O error.
        why: String,
    },
}

/// One slot of the double-array byte trie: the node stored here (its children sit at
/// `base + byte`), which node it is a child of (`check`, [`EMPTY`] when the slot is free) and the
/// token ending here (0 = none). One slot per step keeps a match at one memory access per byte.
#[derive(Clone, Copy, Debug)]
struct Slot {
    base: u32,
    check: u32,
    token: u32,
}

/// `Slot::check` of a free slot.
const EMPTY: u32 = u32::MAX;

/// The RWKV World tokenizer: vocabulary plus a byte trie (a double array: the child of the
/// node in slot `s` by byte `b` is slot `slots[s].base + b` when that slot's `check` is `s`) for
/// greedy longest-match encoding.
#[derive(Clone, Debug)]
pub struct Tokenizer {
    tokens: Vec<Vec<u8>>,
    /// The trie; slot 0 is the root.
    slots: Vec<Slot>,
}

impl Tokenizer {
    /// The World tokenizer with the embedded vocabulary (built once, then shared).
    pub fn world() -> &'static Tokenizer {
        static WORLD: OnceLock<Tokenizer> = OnceLock::new();
        WORLD.get_or_init(|| {
            Tokenizer::from_vocab_text(WORLD_VOCAB, "embedded").expect("the embedded vocabulary is valid")
        })
    }

    /// The World vocabulary restricted to its 256 single-byte tokens: byte `b` is id `b + 1`,
    /// exactly as in the full vocabulary. For small models (vocabulary ≤ 257) trained on bytes:
    /// their ids mean the same bytes as the World tokenizer's, and decoding is shared.
    pub fn world_bytes() -> &'static Tokenizer {
        static BYTES: OnceLock<Tokenizer> = OnceLock::new();
        BYTES.get_or_init(|| Tokenizer::from_tokens((0..=255u8).map(|b| vec![b]).collect()))
    }

    /// A tokenizer from the text of a vocabulary in the World format.
    pub fn from_vocab_text(text: &str, source: &str) -> Result<Self, TokenizerError> {
        Ok(Self::from_tokens(vocab::parse_vocab(text, source)?))
    }

    /// A tokenizer from a vocabulary file in the World format.
    pub fn from_file(path: impl AsRef<std::path::Path>) -> Result<Self, TokenizerError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| TokenizerError::Io { path: path.display().to_string(), why: e.to_string() })?;
        Self::from_vocab_text(&text, &path.display().to_string())
    }

    /// The vocabulary in the World format (`<id> b'<\\xHH…>' <byte length>` per line, every
    /// token as a bytes literal), which [`Tokenizer::from_vocab_text`] reads back to the same
    /// tokenizer: how a model trained with its own vocabulary ships it.
    pub fn to_vocab_text(&self) -> String {
        let mut out = String::new();
        for (i, t) in self.tokens.iter().enumerate() {
            let hex: String = t.iter().map(|b| format!("\\x{b:02x}")).collect();
            out.push_str(&format!("{} b'{hex}' {}\n", i + 1, t.len()));
        }
        out
    }

    /// A tokenizer from token byte strings; token `i` (0-based) gets id `i + 1`. When two tokens
    /// have the same bytes, the later id wins (the World vocabulary has no such pair).
    pub fn from_tokens(tokens: Vec<Vec<u8>>) -> Self {
        // Build a pointer trie, then flatten it with sorted edges.
        #[derive(Default)]
        struct Build {
            token: u32,
            children: std::collections::BTreeMap<u8, usize>,
        }
        let mut build: Vec<Build> = vec![Build::default()];
        for (i, t) in tokens.iter().enumerate() {
            let mut node = 0;
            for &b in t {
                node = match build[node].children.get(&b) {
                    Some(&c) => c,
                    None => {
                        build.push(Build::default());
                        let c = build.len() - 1;
                        build[node].children.insert(b, c);
                        c
                    }
                };
            }
            build[node].token = i as u32 + 1;
        }
        // Place the nodes breadth-first: each node's children go where all their slots
        // (`base + byte`) are free, first fit from the lowest free slot.
        let mut slots = vec![Slot { base: 0, check: EMPTY, token: 0 }; 256];
        slots[0] = Slot { base: 0, check: 0, token: build[0].token };
        let mut first_free = 1;
        let mut queue = std::collections::VecDeque::from([(0usize, 0usize)]);
        while let Some((node, slot)) = queue.pop_front() {
            let children = &build[node].children;
            let Some((&lowest, _)) = children.first_key_value() else { continue };
            while slots.get(first_free).is_some_and(|s| s.check != EMPTY) {
                first_free += 1;
            }
            let mut base = first_free.saturating_sub(lowest as usize);
            loop {
                let need = base + 256;
                if slots.len() < need {
                    slots.resize(need, Slot { base: 0, check: EMPTY, token: 0 });
                }
                // Slot 0 is the root: no child may land there.
                if children.keys().all(|&b| base + b as usize != 0 && slots[base + b as usize].check == EMPTY) {
                    break;
                }
                base += 1;
            }
            slots[slot].base = base as u32;
            for (&b, &child) in children {
                let at = base + b as usize;
                slots[at] = Slot { base: 0, check: slot as u32, token: build[child].token };
                queue.push_back((child, at));
            }
        }
        while slots.last().is_some_and(|s| s.check == EMPTY) {
            slots.pop();
        }
        Self { tokens, slots }
    }

    /// Number of ids with bytes (65529 for World); valid ids are `1..=vocab_size()`.
    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    /// The bytes of token `id`, or `None` for 0 and ids above the vocabulary.
    pub fn token_bytes(&self, id: u32) -> Option<&[u8]> {
        (id as usize).checked_sub(1).and_then(|i| self.tokens.get(i)).map(|t| t.as_slice())
    }

    /// The longest token that is a prefix of `bytes` (non-empty): `(id, length)`.
    #[inline]
    fn longest_prefix(&self, bytes: &[u8]) -> (u32, usize) {
        let (mut best, mut best_len) = (0, 0);
        let mut at = 0usize;
        for (i, &b) in bytes.iter().enumerate() {
            let next = self.slots[at].base as usize + b as usize;
            match self.slots.get(next) {
                Some(slot) if slot.check == at as u32 => {
                    at = next;
                    if slot.token != 0 {
                        (best, best_len) = (slot.token, i + 1);
                    }
                }
                _ => break,
            }
        }
        (best, best_len)
    }

    /// Encodes bytes by greedy longest match. Bytes with no token (impossible with the World
    /// vocabulary, which has all 256 single bytes) are skipped.
    pub fn encode_bytes(&self, bytes: &[u8]) -> Vec<u32> {
        let mut ids = Vec::with_capacity(bytes.len() / 3 + 1);
        let mut pos = 0;
        while pos < bytes.len() {
            let (id, len) = self.longest_prefix(&bytes[pos..]);
            if len == 0 {
                pos += 1;
                continue;
            }
            ids.push(id);
            pos += len;
        }
        ids
    }

    /// Encodes a string (its UTF-8 bytes) by greedy longest match.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        self.encode_bytes(text.as_bytes())
    }

    /// The concatenated bytes of `ids`; errors on an id with no bytes (0 or out of range).
    pub fn decode_bytes(&self, ids: &[u32]) -> Result<Vec<u8>, TokenizerError> {
        let mut out = Vec::with_capacity(ids.len() * 4);
        for (position, &id) in ids.iter().enumerate() {
            let t = self.token_bytes(id).ok_or(TokenizerError::UnknownId {
                id,
                position,
                max: self.vocab_size() as u32,
            })?;
            out.extend_from_slice(t);
        }
        Ok(out)
    }

    /// Decodes `ids` to a string; errors on an unknown id or bytes that are not UTF-8.
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        String::from_utf8(self.decode_bytes(ids)?)
            .map_err(|e| TokenizerError::InvalidUtf8 { offset: e.utf8_error().valid_up_to() })
    }

    /// Decodes `ids`, replacing invalid UTF-8 with U+FFFD (only the bad bytes, unlike the
    /// reference, which replaces the whole output); still errors on an unknown id.
    pub fn decode_lossy(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        Ok(String::from_utf8_lossy(&self.decode_bytes(ids)?).into_owned())
    }

    /// A streaming decoder that emits text as soon as it is complete UTF-8.
    pub fn stream_decoder(&self) -> StreamDecoder<'_> {
        StreamDecoder::new(self)
    }
}
