//! Cached generation (prefill once, then one token per step from the state) equals greedy
//! decoding by full recompute of the whole sequence at every step.

use burn::backend::NdArray;
use burn::tensor::{Int, Tensor, TensorData};
use visualrwkv::{Engine, GenerateOptions, generate, generate_tokens};
use visualrwkv_tokenizer::Tokenizer;

type B = NdArray;

#[test]
fn cached_generation_equals_full_recompute() {
    let path = format!("{}/../../tests/fixtures/rwkv6_tiny_a_weights.safetensors", env!("CARGO_MANIFEST_DIR"));
    let model = visualrwkv_rwkv::load::<B>(path, &Default::default()).unwrap();
    let tok = Tokenizer::world();
    // The tiny model has 256 ids: a prompt of single-byte tokens (id = byte + 1).
    let prompt = "~|~";
    assert!(tok.encode(prompt).iter().all(|&i| i < 256));
    let options = GenerateOptions { max_tokens: 12, stop_tokens: vec![0], ..Default::default() };
    let mut streamed = String::new();
    let out = generate(&model, tok, prompt, &options, Engine::Model, |s| streamed.push_str(s)).unwrap();
    assert_eq!(streamed, out.text);
    let want =
        greedy_by_recompute(&tok.encode(prompt), out.tokens.len(), |ids| model.forward(ids, None).unwrap().logits);
    assert_eq!(out.tokens, want);
    assert!(generate(&model, tok, "", &options, Engine::Model, |_| {}).is_err());
}

/// Greedy decoding of `steps` tokens after `prompt` by running the whole sequence through
/// `logits_of` (`[1, T]` ids → `[1, T, V]` logits) at every step.
fn greedy_by_recompute(
    prompt: &[u32],
    steps: usize,
    logits_of: impl Fn(Tensor<B, 2, Int>) -> Tensor<B, 3>,
) -> Vec<u32> {
    let mut seq: Vec<i64> = prompt.iter().map(|&i| i as i64).collect();
    let mut want = Vec::new();
    for _ in 0..steps {
        let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(seq.clone(), [1, seq.len()]), &Default::default());
        let logits = logits_of(ids);
        let [_, t, v] = logits.dims();
        let last: Vec<f32> = logits.slice([0..1, t - 1..t, 0..v]).into_data().into_vec().unwrap();
        let id = last.iter().enumerate().fold((0, f32::MIN), |b, (i, &x)| if x > b.1 { (i, x) } else { b }).0;
        want.push(id as u32);
        seq.push(id as i64);
    }
    want
}

/// The same for RWKV-7 (x070) through [`generate_tokens`], with the prompt prefilled whole and
/// in chunks of 2.
#[test]
fn x070_cached_generation_equals_full_recompute() {
    let path = format!("{}/../../tests/fixtures/x070/x070_tiny_weights.safetensors", env!("CARGO_MANIFEST_DIR"));
    let model = visualrwkv_rwkv::x070::load::<B>(path, &Default::default()).unwrap();
    let tok = Tokenizer::world();
    // The tiny model has 128 ids: single-byte tokens below it.
    let prompt = "~|~";
    for prefill_chunk in [256, 2] {
        let options = GenerateOptions { max_tokens: 12, stop_tokens: vec![0], prefill_chunk, ..Default::default() };
        let mut streamed = String::new();
        let out = generate_tokens(&model, tok, prompt, &options, |s| streamed.push_str(s)).unwrap();
        assert_eq!(streamed, out.text);
        assert_eq!(out.tokens.len(), 12, "no early stop expected");
        let want = greedy_by_recompute(&tok.encode(prompt), 12, |ids| model.forward(ids, None).unwrap().logits);
        assert_eq!(out.tokens, want, "prefill chunk {prefill_chunk}");
    }
}

/// Generation with the fused CPU decoder (f32 weights) gives the same greedy tokens and final
/// state as the model's tensor ops; with bf16 weights it still runs and returns the same number
/// of state layers.
#[test]
fn fused_decoder_generation_equals_tensor_ops() {
    use visualrwkv_rwkv::{Decoder, WeightDtype};
    let path = format!("{}/../../tests/fixtures/rwkv6_tiny_a_weights.safetensors", env!("CARGO_MANIFEST_DIR"));
    let model = visualrwkv_rwkv::load::<B>(path, &Default::default()).unwrap();
    let tok = Tokenizer::world();
    let prompt = "~|~";
    let plain = GenerateOptions { max_tokens: 12, stop_tokens: vec![0], ..Default::default() };
    let want = generate(&model, tok, prompt, &plain, Engine::Model, |_| {}).unwrap();
    let f32_decoder = Decoder::new(&model, WeightDtype::F32).unwrap();
    let fused = Engine::Fused(&f32_decoder);
    let got = generate(&model, tok, prompt, &plain, fused, |_| {}).unwrap();
    assert_eq!(got.tokens, want.tokens);
    assert_eq!(got.text, want.text);
    for (a, b) in got.state.layers.iter().zip(&want.state.layers) {
        let d = (a.wkv.clone() - b.wkv.clone()).abs().max().into_scalar();
        assert!(d < 1e-4, "wkv state differs by {d}");
    }
    // The prompt prefilled by the fused decoder's sequence mode in chunks of 2 and 1 tokens.
    let chunked = GenerateOptions { prefill_chunk: 2, ..plain.clone() };
    let got = generate(&model, tok, prompt, &chunked, fused, |_| {}).unwrap();
    assert_eq!(got.tokens, want.tokens);
    let bf16_decoder = Decoder::new(&model, WeightDtype::Bf16).unwrap();
    let out = generate(&model, tok, prompt, &plain, Engine::Fused(&bf16_decoder), |_| {}).unwrap();
    assert_eq!(out.state.layers.len(), want.state.layers.len());
}
