//! `cargo bench -p visualrwkv-bench --bench tokenizer`: encode and decode throughput (MB/s of UTF-8 text) of
//! this crate next to the `rwkv-tokenizer` crate (0.9.1) on the same text, in the same run: a
//! repetitive ~1 MiB mix (group `tokenizer`) and the repository's docs (group `tokenizer docs`).

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput};
use visualrwkv_tokenizer::Tokenizer;

/// About 1 MB of mixed English, code, Chinese and emoji, built in-process.
fn corpus() -> String {
    let parts = [
        "User: What is the man holding?\nAnswer the question using a single word or phrase.\n\nAssistant: Umbrella\n\n",
        "The quick brown fox jumps over the lazy dog. It's 2026-11-27; prices rose 3.5% (to $1,024.00).\n",
        "fn main() {\n    let x: Vec<u32> = (0..10).map(|i| i * i).collect();\n    println!(\"{x:?}\");\n}\n",
        "今天是美好的一天。我们一起去公园散步吧！视觉语言模型很有趣。\n",
        "Émile a visité Zürich et São Paulo — naïve café, jalapeño. 🙂🚀 ∑ ∫ ≠ ≤\n",
    ];
    let mut s = String::new();
    let mut i = 0;
    while s.len() < 1 << 20 {
        s.push_str(parts[i % parts.len()]);
        i += 1;
    }
    s
}

/// The repository's documentation (~120 KB of English prose, tables and code, little
/// repetition): text whose matches the branch predictor cannot learn by heart, unlike [`corpus`].
fn docs() -> String {
    [
        include_str!("../../../docs/architecture.md"),
        include_str!("../../../docs/model.md"),
        include_str!("../../../docs/training.md"),
        include_str!("../../../docs/evaluation.md"),
        include_str!("../../../docs/extending.md"),
        include_str!("../../../docs/ablations.md"),
        include_str!("../../../docs/reliability.md"),
    ]
    .concat()
}

fn main() {
    let mut c = Criterion::default().configure_from_args().sample_size(20).measurement_time(Duration::from_secs(3));
    let ours = Tokenizer::world();
    let peer = rwkv_tokenizer::WorldTokenizer::new(None).expect("rwkv-tokenizer's embedded vocabulary");
    for (group, text) in [("tokenizer", corpus()), ("tokenizer docs", docs())] {
        let ids = ours.encode(&text);
        let peer_ids: Vec<u16> = ids.iter().map(|&i| i as u16).collect();
        assert_eq!(peer.encode(&text), peer_ids, "both tokenizers agree on the {group} text");

        let mut g = c.benchmark_group(group);
        g.throughput(Throughput::Bytes(text.len() as u64));
        g.bench_function("encode visualrwkv-tokenizer", |b| b.iter(|| ours.encode(black_box(&text))));
        g.bench_function("encode rwkv-tokenizer 0.9.1", |b| b.iter(|| peer.encode(black_box(&text))));
        g.bench_function("decode visualrwkv-tokenizer", |b| b.iter(|| ours.decode(black_box(&ids)).unwrap()));
        g.bench_function("decode rwkv-tokenizer 0.9.1", |b| {
            b.iter(|| peer.decode(black_box(peer_ids.clone())).unwrap())
        });
        g.finish();
    }
}
