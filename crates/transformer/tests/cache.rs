//! Cached decoding == full recompute; blocked attention == one block; shapes.

use burn::backend::NdArray;
use burn::tensor::{Int, Tensor, TensorData};
use visualrwkv_transformer::{ATTENTION_BLOCK, TransformerConfig};

type B = NdArray;

fn ids(v: &[i64]) -> Tensor<B, 2, Int> {
    Tensor::from_data(TensorData::new(v.to_vec(), [1, v.len()]), &Default::default())
}

fn host<const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().into_vec::<f32>().unwrap()
}

#[test]
fn cached_decoding_equals_recompute_across_attention_blocks() {
    let cfg = TransformerConfig::new(2, 32, 4, 64, 50, 4096);
    let m = cfg.init::<B>(&Default::default());
    // Longer than one attention block, so blocked prefill is exercised.
    let prompt: Vec<i64> = (0..ATTENTION_BLOCK as i64 + 37).map(|i| (i * 7) % 50).collect();
    let (full, _) = m.forward(ids(&prompt), None).unwrap();
    let (_, cache) = m.forward_last(ids(&prompt[..300]), None).unwrap();
    let (logits, cache) = m.forward_last(ids(&prompt[300..prompt.len() - 1]), Some(cache)).unwrap();
    let (last, cache) = m.forward_last(ids(&prompt[prompt.len() - 1..]), Some(cache)).unwrap();
    assert_eq!(cache.len(), prompt.len());
    assert_eq!(cache.bytes(), 2 * 2 * prompt.len() * 32 * 4);
    let t = prompt.len();
    let full = host(full);
    let want_last = &full[(t - 1) * 50..t * 50];
    let want_prev = &full[(t - 2) * 50..(t - 1) * 50];
    let d1 = host(last).iter().zip(want_last).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    let d2 = host(logits).iter().zip(want_prev).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    assert!(d1 < 1e-4 && d2 < 1e-4, "{d1} {d2}");
}

#[test]
fn bad_inputs_are_errors() {
    use visualrwkv_transformer::TransformerError;
    let m = TransformerConfig::new(1, 32, 2, 64, 50, 16).init::<B>(&Default::default());
    assert_eq!(m.forward(ids(&[3, 50]), None).unwrap_err(), TransformerError::TokenId { id: 50, vocab: 50 });
    assert_eq!(m.forward(ids(&[1; 17]), None).unwrap_err(), TransformerError::TooLong { needed: 17, max_len: 16 });
    let (_, cache) = m.forward_last(ids(&[1; 16]), None).unwrap();
    assert!(matches!(m.forward_last(ids(&[1]), Some(cache)), Err(TransformerError::TooLong { .. })));
}

#[test]
fn embedding_rows_equal_their_tokens_and_continue_from_a_cache() {
    let m = TransformerConfig::new(2, 32, 4, 64, 50, 128).init::<B>(&Default::default());
    let prompt: Vec<i64> = (0..40).map(|i| (i * 11) % 50).collect();
    let (want, _) = m.forward_last(ids(&prompt), None).unwrap();
    // Rows given as embeddings (as projected image rows are), then tokens after the cache.
    let rows = m.embed(ids(&prompt[..30])).unwrap();
    let (_, cache) = m.forward_embeddings_last(rows, None).unwrap();
    let (got, cache) = m.forward_last(ids(&prompt[30..]), Some(cache)).unwrap();
    assert_eq!(cache.len(), 40);
    let d = host(want).iter().zip(host(got)).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    assert!(d < 1e-5, "{d}");
    use visualrwkv_transformer::TransformerError;
    let narrow = Tensor::<B, 3>::zeros([1, 3, 16], &Default::default());
    assert_eq!(
        m.forward_embeddings_last(narrow, None).unwrap_err(),
        TransformerError::Width { expected: 32, found: 16 }
    );
    let empty = Tensor::<B, 3>::zeros([1, 0, 32], &Default::default());
    assert_eq!(m.forward_embeddings_last(empty, None).unwrap_err(), TransformerError::Empty);
}
