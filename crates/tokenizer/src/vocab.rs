//! Parsing of the RWKV vocabulary format: one `<id> <python literal> <byte length>` per line.

use crate::TokenizerError;

/// Parses one Python string or bytes literal (`'…'`, `"…"`, `b'…'`, `b"…"`) into its bytes.
///
/// In a str literal `\xHH` is the code point U+00HH (two UTF-8 bytes when `>= 0x80`) and `\uXXXX`
/// a code point; in a bytes literal `\xHH` is one raw byte and `\u` is not an escape.
pub fn parse_literal(lit: &str) -> Result<Vec<u8>, String> {
    let (is_bytes, rest) = match lit.strip_prefix('b') {
        Some(rest) => (true, rest),
        None => (false, lit),
    };
    let quote = rest.chars().next().ok_or("empty literal")?;
    if !(quote == '\'' || quote == '"') || rest.len() < 2 || !rest.ends_with(quote) {
        return Err(format!("not a quoted literal: {lit}"));
    }
    let body = &rest[1..rest.len() - 1];
    let mut out = Vec::with_capacity(body.len());
    let mut chars = body.chars();
    let push_char = |out: &mut Vec<u8>, c: char| {
        let mut buf = [0u8; 4];
        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
    };
    let hex = |chars: &mut std::str::Chars<'_>, digits: usize| -> Result<u32, String> {
        let s: String = chars.by_ref().take(digits).collect();
        if s.len() != digits {
            return Err(format!("truncated escape in {lit}"));
        }
        u32::from_str_radix(&s, 16).map_err(|_| format!("bad hex escape \\{s} in {lit}"))
    };
    while let Some(c) = chars.next() {
        if c != '\\' {
            if is_bytes && !c.is_ascii() {
                return Err(format!("non-ASCII character in a bytes literal: {lit}"));
            }
            push_char(&mut out, c);
            continue;
        }
        let e = chars.next().ok_or_else(|| format!("dangling backslash in {lit}"))?;
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
                    push_char(&mut out, char::from_u32(v).ok_or("bad code point")?);
                }
            }
            'u' | 'U' if !is_bytes => {
                let v = hex(&mut chars, if e == 'u' { 4 } else { 8 })?;
                push_char(&mut out, char::from_u32(v).ok_or_else(|| format!("bad code point {v:#x} in {lit}"))?);
            }
            other => return Err(format!("unknown escape \\{other} in {lit}")),
        }
    }
    Ok(out)
}

/// Parses a whole vocabulary file: ids must be `1..=n`, contiguous, each literal's byte length must
/// equal the stated one. Returns the token bytes indexed by `id - 1`.
pub fn parse_vocab(text: &str, source: &str) -> Result<Vec<Vec<u8>>, TokenizerError> {
    let mut tokens = Vec::with_capacity(65536);
    for (i, line) in text.lines().enumerate() {
        if line.is_empty() {
            continue;
        }
        let bad = |why: String| TokenizerError::Vocab { origin: source.to_string(), line: i + 1, why };
        let (id, rest) = line.split_once(' ').ok_or_else(|| bad("expected `<id> <literal> <length>`".into()))?;
        let (lit, len) = rest.rsplit_once(' ').ok_or_else(|| bad("expected `<id> <literal> <length>`".into()))?;
        let id: usize = id.parse().map_err(|_| bad(format!("bad id {id:?}")))?;
        let len: usize = len.parse().map_err(|_| bad(format!("bad byte length {len:?}")))?;
        if id != tokens.len() + 1 {
            return Err(bad(format!("id {id} out of order, expected {}", tokens.len() + 1)));
        }
        let bytes = parse_literal(lit).map_err(bad)?;
        if bytes.len() != len {
            return Err(bad(format!("literal {lit} has {} bytes, the file says {len}", bytes.len())));
        }
        if bytes.is_empty() {
            return Err(bad("empty token".into()));
        }
        tokens.push(bytes);
    }
    if tokens.is_empty() {
        return Err(TokenizerError::Vocab { origin: source.to_string(), line: 0, why: "no tokens".into() });
    }
    Ok(tokens)
}
