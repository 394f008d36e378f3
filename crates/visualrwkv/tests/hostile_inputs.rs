//! Hostile inputs: every loader, given arbitrary bytes or a fixture with bytes flipped, truncated
//! or inserted, returns an error or a value — never a panic — and allocates no more than its
//! documented bound (`docs/reliability.md`), counted by an allocator that tracks the calling
//! thread's live bytes. The loaders are driven by `fuzz/src/lib.rs`, the same code the fuzz
//! targets run (`fuzz/src/loaders.rs`, `scripts/fuzz.sh`).
//!
//! Loaders: checkpoint tensors (safetensors and `.pth`) and the RWKV, vision-tower, projector
//! and VisualRWKV loaders on them; image decoding and preprocessing; the LLaVA-format reader with
//! prompt building in every layout; the question-file and answer-file readers of `eval`.

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use visualrwkv_checkpoint::TensorMap;

#[path = "../../../fuzz/src/loaders.rs"]
mod loaders;

use loaders::{
    checkpoint_bound, decode_image, image_bound, load_checkpoints, read_llava, read_questions, scratch, text_bound,
};

#[global_allocator]
static ALLOCATOR: loaders::Counting = loaders::Counting;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures").join(name)
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).unwrap()
}

/// How a seed file is damaged.
#[derive(Clone, Debug)]
enum Damage {
    /// Overwrite bytes at these (relative) positions.
    Flip(Vec<(f64, u8)>),
    /// Overwrite bytes among the first KiB (headers, magic numbers, pickle opcodes).
    FlipHead(Vec<(usize, u8)>),
    /// Keep this fraction of the file.
    Truncate(f64),
    /// Insert bytes at a (relative) position.
    Insert(f64, Vec<u8>),
    /// Replace the whole file.
    Replace(Vec<u8>),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        3 => prop::collection::vec((0.0..1.0f64, any::<u8>()), 1..16).prop_map(Damage::Flip),
        3 => prop::collection::vec((0usize..1024, any::<u8>()), 1..8).prop_map(Damage::FlipHead),
        2 => (0.0..1.0f64).prop_map(Damage::Truncate),
        2 => (0.0..1.0f64, prop::collection::vec(any::<u8>(), 1..64)).prop_map(|(at, b)| Damage::Insert(at, b)),
        1 => prop::collection::vec(any::<u8>(), 0..512).prop_map(Damage::Replace),
    ]
}

fn apply(seed: &[u8], d: &Damage) -> Vec<u8> {
    let at = |f: f64, len: usize| ((f * len as f64) as usize).min(len.saturating_sub(1));
    match d {
        Damage::Flip(edits) => {
            let mut b = seed.to_vec();
            for &(f, v) in edits {
                if !b.is_empty() {
                    let i = at(f, b.len());
                    b[i] = v;
                }
            }
            b
        }
        Damage::FlipHead(edits) => {
            let mut b = seed.to_vec();
            for &(i, v) in edits {
                if i < b.len() {
                    b[i] = v;
                }
            }
            b
        }
        Damage::Truncate(f) => seed[..(f * seed.len() as f64) as usize].to_vec(),
        Damage::Insert(f, bytes) => {
            let i = at(*f, seed.len() + 1);
            [&seed[..i], bytes.as_slice(), &seed[i..]].concat()
        }
        Damage::Replace(b) => b.clone(),
    }
}

/// A safetensors file holding a whole VisualRWKV checkpoint (`rwkv.*`, `vit.vision_model.*`,
/// `proj.*`) built from the fixtures, as bytes.
fn visualrwkv_checkpoint() -> Vec<u8> {
    let rwkv = TensorMap::read(fixture("rwkv6_tiny_a_weights.safetensors")).unwrap();
    let vit = TensorMap::read(fixture("clip_tiny_weights.safetensors")).unwrap();
    let vit_dim = vit.shape("vision_model.post_layernorm.weight").unwrap()[0];
    let c = rwkv.shape("emb.weight").unwrap()[1];
    let mut all = TensorMap { origin: "checkpoint".into(), tensors: Default::default() };
    for (k, v) in rwkv.tensors {
        all.tensors.insert(format!("rwkv.{k}"), v);
    }
    for (k, v) in vit.tensors {
        all.tensors.insert(format!("vit.{k}"), v);
    }
    all.tensors.insert("proj.weight".into(), (vec![c, vit_dim], vec![0.01; c * vit_dim]));
    let path = scratch("visualrwkv.safetensors");
    visualrwkv_checkpoint::write_safetensors(&all, &path).unwrap();
    std::fs::read(path).unwrap()
}

#[test]
fn the_intact_fixtures_load_within_their_bounds() {
    for (name, bytes) in [
        ("rwkv.safetensors", read("rwkv6_tiny_a_weights.safetensors")),
        ("rwkv.pth", read("rwkv6_tiny_a_weights_bf16.pth")),
        ("clip.safetensors", read("clip_tiny_weights.safetensors")),
        ("visualrwkv.safetensors", visualrwkv_checkpoint()),
    ] {
        let peak = load_checkpoints(&bytes, name);
        assert!(peak <= checkpoint_bound(bytes.len()), "{name}: {peak} bytes for a {}-byte file", bytes.len());
        assert!(peak > bytes.len() / 2, "{name}: the count sees the loads ({peak} bytes)");
    }
    let jpeg = read("jpeg/baseline_420_q75_500x333.jpg");
    let peak = decode_image(&jpeg);
    assert!(peak > 500 * 333 * 3 && peak <= image_bound(jpeg.len()), "{peak}");
    let llava = read("llava/llava_dev.json");
    assert!(read_llava(&llava) <= text_bound(llava.len()));
    let questions = read("eval/pope/questions.jsonl");
    assert!(read_questions(&questions) <= text_bound(questions.len()));
}

/// `driver` on `seed` damaged by `d`: it returns (a panic fails the case) within `bound` of the
/// damaged file's size.
fn damaged(
    seed: &[u8],
    d: &Damage,
    driver: impl Fn(&[u8]) -> usize,
    bound: fn(usize) -> usize,
) -> Result<(), TestCaseError> {
    let bytes = apply(seed, d);
    let peak = driver(&bytes);
    prop_assert!(peak <= bound(bytes.len()), "{peak} heap bytes for a {}-byte input", bytes.len());
    Ok(())
}

const IMAGES: [&str; 5] = [
    "jpeg/baseline_420_q75_500x333.jpg",
    "jpeg/progressive_420_q85_321x480.jpg",
    "jpeg/gray_q80_80x64.jpg",
    "preprocess/noise_rgba.png",
    "preprocess/gradient_rgb.png",
];

const TEXTS: [&str; 4] = [
    "llava/llava_dev.json",
    "eval/pope/questions.jsonl",
    "eval/gqa/testdev_balanced_questions.json",
    "eval/items/vqa.jsonl",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn damaged_checkpoints_are_errors_within_the_bound(which in 0usize..4, d in damage()) {
        let (name, seed) = match which {
            0 => ("rwkv.safetensors", read("rwkv6_tiny_a_weights.safetensors")),
            1 => ("rwkv.pth", read("rwkv6_tiny_a_weights_bf16.pth")),
            2 => ("clip.safetensors", read("clip_tiny_weights.safetensors")),
            _ => ("visualrwkv.safetensors", visualrwkv_checkpoint()),
        };
        damaged(&seed, &d, |bytes| load_checkpoints(bytes, name), checkpoint_bound)?;
    }

    #[test]
    fn damaged_images_are_errors_within_the_bound(name in prop::sample::select(IMAGES.to_vec()), d in damage()) {
        damaged(&read(name), &d, decode_image, image_bound)?;
    }

    #[test]
    fn damaged_text_files_are_errors_within_the_bound(name in prop::sample::select(TEXTS.to_vec()), d in damage()) {
        damaged(&read(name), &d, |bytes| read_llava(bytes).max(read_questions(bytes)), text_bound)?;
    }
}
