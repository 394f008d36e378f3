//! Parsing of the RWKV vocabulary format: one `<id> <python literal> <byte length>` per line.

use crate::TokenizerError;

/// Why a Python literal of the vocabulary file could not be read; each names the literal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LiteralError {
    /// Not `'…'`, `"…"`, `b'…'` or `b"…"` (an empty string included).
    #[error("not a quoted literal: {literal}")]
    NotQuoted {
        /// The literal as written.
        literal: String,
    },
    /// A `\` at the end of the body.
    #[error("dangling backslash in {literal}")]
    DanglingBackslash {
        /// The literal as written.
        literal: String,
    },
    /// `\x`, `\u` or `\U` followed by fewer hex digits than it takes.
    #[error("truncated escape in {literal}")]
    TruncatedEscape {
        /// The literal as written.
        literal: String,
    },
    /// The digits after `\x`, `\u` or `\U` are not hexadecimal.
    #[error("bad hex escape \\{digits} in {literal}")]
    BadHex {
        /// The digits read.
        digits: String,
        /// The literal as written.
        literal: String,
    },
    /// A `\u` / `\U` / `\x` value that is no Unicode scalar value.
    #[error("bad code point {code:#x} in {literal}")]
    BadCodePoint {
        /// The value.
        code: u32,
        /// The literal as written.
        literal: String,
    },
    /// A character outside ASCII in a bytes literal.
    #[error("non-ASCII character in a bytes literal: {literal}")]
    NonAsciiInBytes {
        /// The literal as written.
        literal: String,
    },
    /// A backslash escape Python does not have (or `\u` in a bytes literal).
    #[error("unknown escape \\{escape} in {literal}")]
    UnknownEscape {
        /// The character after the backslash.
        escape: char,
        /// The literal as written.
        literal: String,
    },
}

/// Parses one Python string or bytes literal (`'…'`, `"…"`, `b'…'`, `b"…"`) into its bytes.
///
/// In a str literal `\xHH` is the code point U+00HH (two UTF-8 bytes when `>= 0x80`) and `\uXXXX`
/// a code point; in a bytes literal `\xHH` is one raw byte and `\u` is not an escape.
pub fn parse_literal(lit: &str) -> Result<Vec<u8>, LiteralError> {
    let literal = || lit.to_string();
    let (is_bytes, rest) = match lit.strip_prefix('b') {
        Some(rest) => (true, rest),
        None => (false, lit),
    };
    let quote = rest.chars().next().ok_or_else(|| LiteralError::NotQuoted { literal: literal() })?;
    if !(quote == '\'' || quote == '"') || rest.len() < 2 || !rest.ends_with(quote) {
        return Err(LiteralError::NotQuoted { literal: literal() });
    }
    let body = &rest[1..rest.len() - 1];
    let mut out = Vec::with_capacity(body.len());
    let mut chars = body.chars();
    let push_char = |out: &mut Vec<u8>, c: char| {
        let mut buf = [0u8; 4];
        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
    };
    let hex = |chars: &mut std::str::Chars<'_>, digits: usize| -> Result<u32, LiteralError> {
        let s: String = chars.by_ref().take(digits).collect();
        if s.chars().count() != digits {
            return Err(LiteralError::TruncatedEscape { literal: literal() });
        }
        u32::from_str_radix(&s, 16).map_err(|_| LiteralError::BadHex { digits: s, literal: literal() })
    };
    let code_point =
        |code: u32| char::from_u32(code).ok_or_else(|| LiteralError::BadCodePoint { code, literal: literal() });
    while let Some(c) = chars.next() {
        if c != '\\' {
            if is_bytes && !c.is_ascii() {
                return Err(LiteralError::NonAsciiInBytes { literal: literal() });
            }
            push_char(&mut out, c);
            continue;
        }
        let e = chars.next().ok_or_else(|| LiteralError::DanglingBackslash { literal: literal() })?;
        match e {
            '\\' => out.push(b'\\'),
            '\'' => out.push(b'\''),
            '"' => out.push(b'"'),
            'n' => out.push(b'\n'),
            't' => out.push(b'\t'),
            'r' => out.push(b'\r'),
            'a' => out.push(0x07),
            'b' => out.push(0x08),
            'f' => out.push(0x0c),
            'v' => out.push(0x0b),
            '0' => out.push(0),
            'x' => {
                let v = hex(&mut chars, 2)?;
                if is_bytes {
                    out.push(v as u8);
                } else {
                    push_char(&mut out, code_point(v)?);
                }
            }
            'u' | 'U' if !is_bytes => {
                let v = hex(&mut chars, if e == 'u' { 4 } else { 8 })?;
                push_char(&mut out, code_point(v)?);
            }
            escape => return Err(LiteralError::UnknownEscape { escape, literal: literal() }),
        }
    }
    Ok(out)
}

/// What is wrong with one line (or the whole) of a vocabulary file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VocabProblem {
    /// The line is not `<id> <literal> <length>`.
    #[error("expected `<id> <literal> <length>`")]
    Format,
    /// The id is not a number.
    #[error("bad id {id:?}")]
    BadId {
        /// The id as written.
        id: String,
    },
    /// The byte length is not a number.
    #[error("bad byte length {length:?}")]
    BadLength {
        /// The length as written.
        length: String,
    },
    /// The ids are not `1, 2, 3, …` in order.
    #[error("id {id} out of order, expected {expected}")]
    OutOfOrder {
        /// The id found.
        id: usize,
        /// The id the line should have.
        expected: usize,
    },
    /// The literal could not be read.
    #[error(transparent)]
    Literal(#[from] LiteralError),
    /// The literal's bytes disagree with the stated length.
    #[error("literal {literal} has {found} bytes, the file says {stated}")]
    LengthMismatch {
        /// The literal as written.
        literal: String,
        /// Its byte count.
        found: usize,
        /// The count the line states.
        stated: usize,
    },
    /// A token of no bytes.
    #[error("empty token")]
    EmptyToken,
    /// The file has no tokens at all.
    #[error("no tokens")]
    NoTokens,
}

/// Parses a whole vocabulary file: ids must be `1..=n`, contiguous, each literal's byte length must
/// equal the stated one. Returns the token bytes indexed by `id - 1`.
pub fn parse_vocab(text: &str, source: &str) -> Result<Vec<Vec<u8>>, TokenizerError> {
    let mut tokens = Vec::with_capacity(65536);
    for (i, line) in text.lines().enumerate() {
        if line.is_empty() {
            continue;
        }
        let bad = |problem: VocabProblem| TokenizerError::Vocab { origin: source.to_string(), line: i + 1, problem };
        let (id, rest) = line.split_once(' ').ok_or_else(|| bad(VocabProblem::Format))?;
        let (lit, len) = rest.rsplit_once(' ').ok_or_else(|| bad(VocabProblem::Format))?;
        let id: usize = id.parse().map_err(|_| bad(VocabProblem::BadId { id: id.to_string() }))?;
        let len: usize = len.parse().map_err(|_| bad(VocabProblem::BadLength { length: len.to_string() }))?;
        if id != tokens.len() + 1 {
            return Err(bad(VocabProblem::OutOfOrder { id, expected: tokens.len() + 1 }));
        }
        let bytes = parse_literal(lit).map_err(|e| bad(e.into()))?;
        if bytes.len() != len {
            return Err(bad(VocabProblem::LengthMismatch {
                literal: lit.to_string(),
                found: bytes.len(),
                stated: len,
            }));
        }
        if bytes.is_empty() {
            return Err(bad(VocabProblem::EmptyToken));
        }
        tokens.push(bytes);
    }
    if tokens.is_empty() {
        return Err(TokenizerError::Vocab { origin: source.to_string(), line: 0, problem: VocabProblem::NoTokens });
    }
    Ok(tokens)
}
