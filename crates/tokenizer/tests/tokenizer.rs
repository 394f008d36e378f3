//! The World tokenizer against the official `rwkv` package's outputs (`tokenizer_cases.jsonl`)
//! and worked ids from the official tokenizer; round trips, errors and streaming.

use std::collections::HashSet;
use std::sync::OnceLock;

use proptest::prelude::*;
use visualrwkv_tokenizer::vocab::{LiteralError, VocabProblem, parse_literal};
use visualrwkv_tokenizer::{Tokenizer, TokenizerError};

fn cases() -> Vec<(String, Vec<u32>)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/tokenizer_cases.jsonl");
    let text = std::fs::read_to_string(path).expect("fixture");
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let ids = v["ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
            (v["text"].as_str().unwrap().to_string(), ids)
        })
        .collect()
}

#[test]
fn matches_the_official_tokenizer_on_every_fixture_case() {
    let tok = Tokenizer::world();
    let cases = cases();
    assert!(cases.len() >= 10, "fixture has {} cases", cases.len());
    for (text, ids) in cases {
        assert_eq!(tok.encode(&text), ids, "encode {text:?}");
        assert_eq!(tok.decode(&ids).unwrap(), text, "decode {ids:?}");
    }
}

#[test]
fn spec_worked_ids() {
    let tok = Tokenizer::world();
    assert_eq!(tok.vocab_size(), 65529);
    assert_eq!(tok.encode("User: "), [24281, 59, 33]);
    assert_eq!(tok.encode("Assistant:"), [5585, 41693, 59]);
    assert_eq!(tok.encode("Assistant: Yes"), [5585, 41693, 59, 21186]);
    assert_eq!(tok.encode("\n"), [11]);
    assert_eq!(tok.encode(" "), [33]);
    assert_eq!(tok.encode("\n\n"), [261]);
    assert_eq!(tok.encode("\n\n\n"), [3328]);
    assert_eq!(tok.encode("What"), [24326]);
    assert_eq!(tok.encode(" What"), [30031]);
    // Single bytes: id = byte + 1.
    for b in 0..=255u8 {
        assert_eq!(tok.token_bytes(b as u32 + 1), Some(&[b][..]));
    }
    // The v6.0 image-first prompt's text after the image.
    let after = "\nWhat is the man holding?\nAnswer the question using a single word or phrase.\n\n";
    assert_eq!(
        tok.encode(after),
        [
            11, 24326, 4600, 22590, 22068, 51932, 64, 11, 40301, 22590, 57009, 40085, 332, 47289, 32497, 4715, 46808,
            47, 261
        ]
    );
}

#[test]
fn literal_escapes_follow_python() {
    // str literal: \xHH is the code point U+00HH (2 UTF-8 bytes when >= 0x80).
    assert_eq!(parse_literal(r"'\xe9'").unwrap(), "é".as_bytes());
    // bytes literal: \xHH is one byte.
    assert_eq!(parse_literal(r"b'\xe9'").unwrap(), [0xe9]);
    assert_eq!(parse_literal(r"'\u4eca'").unwrap(), "今".as_bytes());
    assert_eq!(parse_literal(r#""'""#).unwrap(), b"'");
    assert_eq!(parse_literal(r"'\'\\\n\t\r'").unwrap(), b"'\\\n\t\r");
    assert_eq!(parse_literal("'abc"), Err(LiteralError::NotQuoted { literal: "'abc".into() }));
    assert_eq!(parse_literal(""), Err(LiteralError::NotQuoted { literal: "".into() }));
    assert_eq!(parse_literal(r"'\q'"), Err(LiteralError::UnknownEscape { escape: 'q', literal: r"'\q'".into() }));
    assert!(matches!(parse_literal(r"'\x4'"), Err(LiteralError::TruncatedEscape { .. })));
    assert!(matches!(parse_literal(r"'\xzz'"), Err(LiteralError::BadHex { digits, .. }) if digits == "zz"));
    assert!(matches!(parse_literal(r"'\ud800'"), Err(LiteralError::BadCodePoint { code: 0xd800, .. })));
    assert!(matches!(parse_literal("b'é'"), Err(LiteralError::NonAsciiInBytes { .. })));
    assert!(matches!(parse_literal(r"b'\u0041'"), Err(LiteralError::UnknownEscape { escape: 'u', .. })));
    assert!(matches!(parse_literal("'a\\'"), Err(LiteralError::DanglingBackslash { .. })));
}

#[test]
fn bad_vocabulary_lines_are_errors_naming_the_line() {
    let err = Tokenizer::from_vocab_text("1 'a' 1\n2 'bc' 3\n", "test.txt").unwrap_err();
    let mismatch = VocabProblem::LengthMismatch { literal: "'bc'".into(), found: 2, stated: 3 };
    assert_eq!(err, TokenizerError::Vocab { origin: "test.txt".into(), line: 2, problem: mismatch });
    assert!(err.to_string().contains("test.txt, line 2"), "{err}");
    let err = Tokenizer::from_vocab_text("1 'a' 1\n3 'b' 1\n", "v").unwrap_err();
    assert!(matches!(err, TokenizerError::Vocab { problem: VocabProblem::OutOfOrder { id: 3, expected: 2 }, .. }));
    assert!(err.to_string().contains("out of order"), "{err}");
    let problem = |text: &str| match Tokenizer::from_vocab_text(text, "v") {
        Err(TokenizerError::Vocab { problem, .. }) => problem,
        other => panic!("{other:?}"),
    };
    assert_eq!(problem(""), VocabProblem::NoTokens);
    assert_eq!(problem("1 'a'\n"), VocabProblem::Format);
    assert_eq!(problem("x 'a' 1\n"), VocabProblem::BadId { id: "x".into() });
    assert_eq!(problem("1 'a' one\n"), VocabProblem::BadLength { length: "one".into() });
    assert_eq!(problem("1 '' 0\n"), VocabProblem::EmptyToken);
    assert!(matches!(problem("1 'a\\q' 2\n"), VocabProblem::Literal(LiteralError::UnknownEscape { escape: 'q', .. })));
    assert!(matches!(Tokenizer::from_file("/nonexistent/vocab.txt"), Err(TokenizerError::Io { .. })));
}

#[test]
fn unknown_ids_and_invalid_utf8_are_errors() {
    let tok = Tokenizer::world();
    assert_eq!(tok.decode(&[24281, 0]).unwrap_err(), TokenizerError::UnknownId { id: 0, position: 1, max: 65529 });
    assert!(matches!(tok.decode(&[65530]), Err(TokenizerError::UnknownId { id: 65530, .. })));
    assert!(matches!(tok.decode(&[u32::MAX]), Err(TokenizerError::UnknownId { .. })));
    // 0xE9 alone (id 0xE9 + 1) is not UTF-8.
    assert_eq!(tok.decode(&[24281, 0xE9 + 1]).unwrap_err(), TokenizerError::InvalidUtf8 { offset: 4 });
    assert_eq!(tok.decode_lossy(&[24281, 0xE9 + 1]).unwrap(), "User\u{FFFD}");
    assert_eq!(tok.encode(""), Vec::<u32>::new());
    assert_eq!(tok.decode(&[]).unwrap(), "");
}

#[test]
fn streaming_holds_back_incomplete_characters() {
    let tok = Tokenizer::world();
    // "今" = E4 BB 8A as three single-byte tokens.
    let ids: Vec<u32> = "今".bytes().map(|b| b as u32 + 1).collect();
    let mut dec = tok.stream_decoder();
    assert_eq!(dec.push(ids[0]).unwrap(), "");
    assert_eq!(dec.push(ids[1]).unwrap(), "");
    assert_eq!(dec.pending(), &[0xE4, 0xBB]);
    assert_eq!(dec.push(ids[2]).unwrap(), "今");
    // Invalid bytes become U+FFFD without stalling; an unknown id is an error.
    assert_eq!(dec.push(0xFF + 1).unwrap(), "\u{FFFD}");
    assert!(dec.push(0).is_err());
    assert_eq!(dec.push(0xE4 + 1).unwrap(), "");
    assert_eq!(dec.finish(), "\u{FFFD}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// decode(encode(s)) == s for arbitrary strings (any Unicode).
    #[test]
    fn round_trip(s in any::<String>()) {
        let tok = Tokenizer::world();
        let ids = tok.encode(&s);
        prop_assert_eq!(tok.decode(&ids).unwrap(), s.clone());
        // Streaming gives the same text.
        let mut dec = tok.stream_decoder();
        let mut out = String::new();
        for id in &ids {
            out += &dec.push(*id).unwrap();
        }
        out += &dec.finish();
        prop_assert_eq!(out, s);
    }

    /// Arbitrary bytes round-trip through encode_bytes / decode_bytes, and each id is the longest
    /// vocabulary entry that is a prefix at its position (checked against a set of all entries).
    #[test]
    fn bytes_round_trip_greedy(bytes in proptest::collection::vec(any::<u8>(), 0..200), text in "[a-z \n]{0,60}") {
        let tok = Tokenizer::world();
        let all: &HashSet<Vec<u8>> = ENTRIES.get_or_init(|| (1..=65529).map(|id| tok.token_bytes(id).unwrap().to_vec()).collect());
        for input in [bytes, text.into_bytes()] {
            let ids = tok.encode_bytes(&input);
            prop_assert_eq!(tok.decode_bytes(&ids).unwrap(), input.clone());
            let mut pos = 0;
            for id in ids {
                let t = tok.token_bytes(id).unwrap();
                prop_assert_eq!(t, &input[pos..pos + t.len()]);
                for len in (t.len() + 1)..=(input.len() - pos).min(128) {
                    prop_assert!(!all.contains(&input[pos..pos + len]), "a longer entry matches at {}", pos);
                }
                pos += t.len();
            }
        }
    }
}

static ENTRIES: OnceLock<HashSet<Vec<u8>>> = OnceLock::new();

/// A tokenizer written with `to_vocab_text` reads back to the same ids for every token, and the
/// World vocabulary survives the round trip (65529 tokens, same encodings).
#[test]
fn vocab_text_round_trips() {
    let custom =
        Tokenizer::from_tokens(vec![b"a".to_vec(), b"ab".to_vec(), vec![0xff, b'\''], "é\n\n".as_bytes().to_vec()]);
    let back = Tokenizer::from_vocab_text(&custom.to_vocab_text(), "custom").unwrap();
    assert_eq!(back.vocab_size(), 4);
    for id in 1..=4 {
        assert_eq!(back.token_bytes(id), custom.token_bytes(id), "id {id}");
    }
    let world = Tokenizer::world();
    let back = Tokenizer::from_vocab_text(&world.to_vocab_text(), "world").unwrap();
    assert_eq!(back.vocab_size(), world.vocab_size());
    let text = "User: What is the man holding?\n\nAssistant: 東京 ☕";
    assert_eq!(back.encode(text), world.encode(text));
}
