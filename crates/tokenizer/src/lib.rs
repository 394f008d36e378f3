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
    #[error("vocabulary {origin}, line {line}: {problem}")]
    Vocab {
        /// Where the vocabulary came from (a path or `"embedded"`).
        origin: String,
        /// 1-based line number (0 for the whole file).
        line: usize,
        /// What is wrong.
        problem: vocab::VocabProblem,
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

/// One slot of the double-array byte trie: the node stored here has its children at
/// `base + byte`, and `check` names the node this slot is a child of ([`EMPTY`] when free).
/// The token ending at each slot sits in a parallel array, off the walk's load chain.
#[derive(Clone, Copy, Debug)]
struct Slot {
    base: u32,
    check: u32,
}

/// `Slot::check` of a free slot.
const EMPTY: u32 = u32::MAX;
/// `Slot::check` of the root (slot 0): no node's index, so no step lands on the root.
const ROOT: u32 = u32::MAX - 1;

/// The RWKV World tokenizer: vocabulary plus a byte trie (a double array: the child of the
/// node in slot `s` by byte `b` is slot `slots[s].base + b` when that slot's `check` is `s`) for
/// greedy longest-match encoding.
#[derive(Clone, Debug)]
pub struct Tokenizer {
    tokens: Vec<Vec<u8>>,
    /// The trie; slot 0 is the root. Invariant (made by [`Tokenizer::from_tokens`], relied on by
    /// the unchecked walk): `base + 256 <= slots.len()` for every slot.
    slots: Vec<Slot>,
    /// `token_at[s]`: the id of the token ending at slot `s` (0 = none); `slots.len()` entries.
    token_at: Vec<u32>,
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
        let mut slots = vec![Slot { base: 0, check: EMPTY }; 256];
        let mut token_at = vec![0; 256];
        slots[0] = Slot { base: 0, check: ROOT };
        token_at[0] = build[0].token;
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
                    slots.resize(need, Slot { base: 0, check: EMPTY });
                    token_at.resize(need, 0);
                }
                if children.keys().all(|&b| slots[base + b as usize].check == EMPTY) {
                    break;
                }
                base += 1;
            }
            slots[slot].base = base as u32;
            for (&b, &child) in children {
                let at = base + b as usize;
                slots[at] = Slot { base: 0, check: slot as u32 };
                token_at[at] = build[child].token;
                queue.push_back((child, at));
            }
        }
        // Trim free slots at the end, but keep 256 past the highest base: then `base + byte` is
        // in bounds for every slot (leaves have base 0), which the unchecked walk relies on.
        let used = slots.iter().rposition(|s| s.check != EMPTY).map_or(1, |i| i + 1);
        let len = slots.iter().map(|s| s.base as usize + 256).max().unwrap_or(256).max(used);
        slots.truncate(len);
        token_at.truncate(len);
        assert!(slots.iter().all(|s| s.base as usize + 256 <= slots.len()), "trie slots cover every base + byte");
        Self { tokens, slots, token_at }
    }

    /// Number of ids with bytes (65529 for World); valid ids are `1..=vocab_size()`.
    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    /// The bytes of token `id`, or `None` for 0 and ids above the vocabulary.
    pub fn token_bytes(&self, id: u32) -> Option<&[u8]> {
        (id as usize).checked_sub(1).and_then(|i| self.tokens.get(i)).map(|t| t.as_slice())
    }

    /// The longest token that is a prefix of `bytes` (non-empty): `(id, length)`, `(0, 0)` when
    /// none is. The fast walk: it follows the trie as far as the bytes go without tracking
    /// matches, and when the node it stops at is a token (nearly always), the answer is that
    /// node and the steps taken. The next token's start then depends only on a counter and a
    /// predictable branch, not on loaded data, so when the branch predictor knows the text the
    /// CPU starts the next walk before this one's loads complete (2.8x the throughput of
    /// tracking the best match in the loop on the benchmark's repetitive text, parity on prose:
    /// docs/performance.md). Otherwise [`Tokenizer::longest_prefix_plain`] re-walks the path.
    #[inline]
    fn longest_prefix(&self, bytes: &[u8]) -> (u32, usize) {
        let slots = self.slots.as_slice();
        let (mut at, mut steps) = (0usize, 0usize);
        for &b in bytes {
            // SAFETY: `at` is 0 or a child slot `base + byte` of an earlier slot, and every
            // `base + 256 <= slots.len()` (the invariant of `slots`), so `at` and `next` are in
            // bounds. `token_at` has as many entries as `slots`.
            let next = unsafe { slots.get_unchecked(at) }.base as usize + b as usize;
            if unsafe { slots.get_unchecked(next) }.check != at as u32 {
                break;
            }
            at = next;
            steps += 1;
        }
        // SAFETY: as above.
        match unsafe { *self.token_at.get_unchecked(at) } {
            0 => self.longest_prefix_plain(&bytes[..steps]),
            token => (token, steps),
        }
    }

    /// The plain reference of [`Tokenizer::longest_prefix`]: one checked step per byte,
    /// remembering the last token passed. The fast walk is tested equal to it.
    #[cold]
    #[inline(never)]
    fn longest_prefix_plain(&self, bytes: &[u8]) -> (u32, usize) {
        let (mut best, mut best_len) = (0, 0);
        let mut at = 0usize;
        for (i, &b) in bytes.iter().enumerate() {
            let next = self.slots[at].base as usize + b as usize;
            if self.slots[next].check != at as u32 {
                break;
            }
            at = next;
            if self.token_at[at] != 0 {
                (best, best_len) = (self.token_at[at], i + 1);
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Every position of `bytes`: the fast walk's answer equals the plain walk's.
    fn assert_walks_agree(tok: &Tokenizer, bytes: &[u8]) {
        for pos in 0..bytes.len() {
            let fast = tok.longest_prefix(&bytes[pos..]);
            let plain = tok.longest_prefix_plain(&bytes[pos..]);
            assert_eq!(fast, plain, "at byte {pos} of {bytes:?}");
        }
    }

    /// A sparse vocabulary where walks stop on nodes without a token ("ab" on the way to "abc"),
    /// bytes have no token (the fallback finds nothing) and byte 0 has no child of the root.
    #[test]
    fn fast_walk_equals_plain_on_a_sparse_vocabulary() {
        let tok = Tokenizer::from_tokens(vec![b"a".to_vec(), b"abc".to_vec(), b"b\0".to_vec(), b"bcd".to_vec()]);
        for input in [&b"abd"[..], b"abcabx", b"\0a\0", b"b\0abc", b"bcx", b"zzz", b"ab", b"bc"] {
            assert_walks_agree(&tok, input);
        }
        // "ab" is a path but not a token: "a", then "b" has no token and is skipped.
        assert_eq!(tok.encode_bytes(b"abd"), vec![1]);
        assert_eq!(tok.encode_bytes(b"abcab\0"), vec![2, 1, 3]);
        // Byte 0 at the root matches nothing (it must not lead back into the root).
        assert_eq!(tok.encode_bytes(b"\0a\0"), vec![1]);
        assert!(tok.slots.iter().all(|s| s.base as usize + 256 <= tok.slots.len()));
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// World vocabulary: fast walk == plain walk at every position of arbitrary bytes, of
        /// arbitrary text and of concatenated vocabulary entries (long matches, deep walks).
        #[test]
        fn fast_walk_equals_plain_on_world(
            bytes in proptest::collection::vec(any::<u8>(), 0..64),
            text in any::<String>(),
            ids in proptest::collection::vec(1u32..=65529, 0..12),
        ) {
            let tok = Tokenizer::world();
            let joined = tok.decode_bytes(&ids).unwrap();
            for input in [bytes, text.into_bytes(), joined] {
                assert_walks_agree(tok, &input);
            }
        }
    }
}
