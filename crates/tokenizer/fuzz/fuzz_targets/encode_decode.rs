//! `cargo fuzz run encode_decode` (from `crates/tokenizer`): encoding arbitrary bytes round-trips,
//! decoding arbitrary ids never panics, and streaming agrees with lossy decoding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use visualrwkv_tokenizer::Tokenizer;

fuzz_target!(|data: &[u8]| {
    let tok = Tokenizer::world();
    let ids = tok.encode_bytes(data);
    assert_eq!(tok.decode_bytes(&ids).unwrap(), data);
    if let Ok(s) = std::str::from_utf8(data) {
        assert_eq!(tok.decode(&tok.encode(s)).unwrap(), s);
    }
    // The same bytes read as little-endian u32 ids: decoding must error or succeed, never panic.
    let raw: Vec<u32> = data.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) % 70_000).collect();
    let lossy = tok.decode_lossy(&raw);
    let mut dec = tok.stream_decoder();
    let mut streamed = String::new();
    let mut failed = false;
    for &id in &raw {
        match dec.push(id) {
            Ok(s) => streamed += &s,
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    if !failed {
        streamed += &dec.finish();
        assert_eq!(streamed, lossy.unwrap());
    } else {
        assert!(lossy.is_err());
    }
});
