//! VisualRWKV-7 v7.00's left-padded generation (`decode_v700_padded`): v7.00 re-runs the whole
//! sequence for every new token, left-padded with token 261 to a multiple of 16 rows. Held to
//! goldens replayed with the official `rwkv` 0.8.32 package
//! (`scripts/make-v700-padding-fixtures.py`), and on the VLM to recomputing every step.

mod common;

use burn::backend::NdArray;
use burn::tensor::Distribution;
use visualrwkv::{
    GenerateOptions, ImageRows, Sample, V700_PAD_TOKEN, VisualRwkv, decode_v700_padded, v700_pad_len,
    v700_padded_prompts,
};
use visualrwkv_prompt::{Conversation, build};
use visualrwkv_rwkv::{LanguageModel, SamplingOptions, TensorMap};
use visualrwkv_tokenizer::Tokenizer;

type B = NdArray;

fn fixture(name: &str) -> String {
    format!("{}/../../tests/fixtures/x070/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn greedy(max_tokens: usize) -> GenerateOptions {
    GenerateOptions {
        sampling: SamplingOptions { temperature: 0.0, ..Default::default() },
        max_tokens,
        stop_tokens: vec![],
        ..Default::default()
    }
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn the_pad_count_fills_to_a_multiple_of_16() {
    assert_eq!(V700_PAD_TOKEN, 261);
    assert_eq!(
        (0..40).map(v700_pad_len).collect::<Vec<_>>()[..18],
        [0, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 15]
    );
    assert!((1..200).all(|n| (n + v700_pad_len(n)).is_multiple_of(16) && v700_pad_len(n) < 16));
}

#[test]
fn padded_generation_equals_the_official_package_replaying_v700() {
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("x070_pad_golden.json")).unwrap()).unwrap();
    let golden = TensorMap::read_safetensors(fixture("x070_pad_golden.safetensors")).unwrap();
    let model = LanguageModel::<B>::load(fixture("x070_pad_weights.safetensors"), &Default::default()).unwrap();
    let v = model.dims().vocab_size;
    let ids: Vec<u32> = meta["prompt"].as_array().unwrap().iter().map(|t| t.as_u64().unwrap() as u32).collect();
    let want: Vec<u32> = meta["generated"].as_array().unwrap().iter().map(|t| t.as_u64().unwrap() as u32).collect();

    // The prompt after k pad tokens, for every k.
    let prompts = v700_padded_prompts(&model, &ids, 5).unwrap();
    let padded = golden.get("prompt_padded").unwrap();
    for (k, (logits, _)) in prompts.iter().enumerate() {
        let d = max_diff(logits, &padded[k * v..(k + 1) * v]);
        assert!(d < 1e-4, "prompt after {k} pads: logits differ by {d}");
    }

    // Greedy decoding: the same tokens, and each chosen token's logit and probability.
    let steps = golden.get("steps").unwrap();
    let g = decode_v700_padded(&model, Tokenizer::world(), prompts, ids.len(), &greedy(want.len()), |_| {}).unwrap();
    assert_eq!(g.tokens, want);
    for (i, s) in g.scores.iter().enumerate() {
        let row = &steps[i * v..(i + 1) * v];
        assert!(
            (s.logit - row[s.token as usize]).abs() < 1e-4,
            "step {i}: logit {} vs {}",
            s.logit,
            row[s.token as usize]
        );
        let max = row.iter().fold(f32::MIN, |m, &x| m.max(x));
        let z: f32 = row.iter().map(|&x| (x - max).exp()).sum();
        let prob = (row[s.token as usize] - max).exp() / z;
        assert!((s.prob - prob).abs() < 1e-5, "step {i}: prob {} vs {prob}", s.prob);
    }

    // The padding matters: without it the package's logits along the same tokens differ.
    let d = max_diff(steps, golden.get("steps_unpadded").unwrap());
    assert!(d > 1e-2, "padded and unpadded logits differ by only {d}");
}

fn image(m: &VisualRwkv<B>, seed: u64) -> ImageRows<B> {
    <B as burn::tensor::backend::Backend>::seed(&Default::default(), seed);
    let px =
        burn::tensor::Tensor::<B, 4>::random([1, 3, 32, 32], Distribution::Uniform(-1.0, 1.0), &Default::default());
    m.encode_images(px).unwrap().remove(0)
}

#[test]
fn vlm_padded_generation_equals_recomputing_the_padded_sequence_every_step() {
    let m = visualrwkv_rwkv::seeded::<B, _>(&Default::default(), 11, || common::tiny_vlm_of(true, 2, 32));
    let layout = visualrwkv_prompt::by_name("sandwich").unwrap();
    let prompt =
        build(&Conversation::question("What is it?"), layout.as_ref(), Tokenizer::world(), true, true).unwrap();
    let sample = Sample::new(&prompt, Some(image(&m, 3)));
    for name in ["uni", "bi"] {
        let scan = visualrwkv_scan::by_name(name).unwrap();
        let g = m.generate_v700_padded(&sample, scan.as_ref(), Tokenizer::world(), &greedy(18), |_| {}).unwrap();
        assert_eq!(g.tokens.len(), 18);
        // v7.00's loop: the whole sequence from scratch, left-padded for its current length.
        for (i, s) in g.scores.iter().enumerate() {
            let mut padded = sample.clone();
            let pads = v700_pad_len(sample.len() + i);
            padded.tokens.splice(0..0, std::iter::repeat_n(i64::from(V700_PAD_TOKEN), pads));
            let full = m.recompute_next_logits(&padded, &g.tokens[..i], scan.as_ref()).unwrap();
            let best = full.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0 as u32;
            assert_eq!(best, s.token, "{name} step {i}: greedy token");
            assert!((full[s.token as usize] - s.logit).abs() < 1e-4, "{name} step {i}: logit");
        }
        // And it is not plain cached generation (the pads change the answer's logits).
        let plain = m
            .generate(&sample, scan.as_ref(), Tokenizer::world(), &greedy(18), visualrwkv::Engine::Model, |_| {})
            .unwrap();
        let differ =
            plain.scores.iter().zip(&g.scores).any(|(a, b)| a.token != b.token || (a.logit - b.logit).abs() > 1e-3);
        assert!(differ, "{name}: padding changed nothing");
    }
}
