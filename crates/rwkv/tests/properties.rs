//! On random small models: sequence mode == token-by-token == split with carried state, for
//! batches, odd lengths and several heads; states can be sliced per batch row.

use burn::backend::NdArray;
use burn::tensor::{Distribution, Int, Tensor};
use proptest::prelude::*;
use visualrwkv_rwkv::{RwkvConfig, State};

type B = NdArray;

fn vals<const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec::<f32>().unwrap()
}

fn close(a: &[f32], b: &[f32], what: &str) -> Result<(), TestCaseError> {
    let d = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
    prop_assert!(a.len() == b.len() && d <= 1e-4, "{}: max diff {:e}", what, d);
    Ok(())
}

fn tokens(b: usize, t: usize, v: usize) -> Tensor<B, 2, Int> {
    Tensor::<B, 2>::random([b, t], Distribution::Uniform(0.0, v as f64 - 0.01), &Default::default()).int()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn sequence_equals_token_by_token_and_split(
        n_layer in 1usize..3, n_head in 1usize..3, head_size in prop::sample::select(vec![4usize, 8, 16]),
        batch in 1usize..3, t in 1usize..12, split in 0usize..12, seed in any::<u64>(),
    ) {
        let c = n_head * head_size;
        let cfg = RwkvConfig { n_layer, n_embd: c, n_head, head_size, dim_ffn: 2 * c, vocab_size: 50, d_mix: 4, d_decay: 8 };
        let model = visualrwkv_rwkv::seeded::<B, _>(&Default::default(), seed, || cfg.init::<B>(&Default::default()));
        let ids = tokens(batch, t, 50);
        let full = model.forward(ids.clone(), None).unwrap();
        let v = 50;
        // Token by token.
        let mut state: Option<State<B>> = None;
        for i in 0..t {
            let out = model.forward(ids.clone().slice([0..batch, i..i + 1]), state.as_ref()).unwrap();
            let want = full.logits.clone().slice([0..batch, i..i + 1, 0..v]);
            close(&vals(out.logits), &vals(want), &format!("step {i}"))?;
            state = Some(out.state);
        }
        let state = state.unwrap();
        for (a, b) in state.layers.iter().zip(&full.state.layers) {
            close(&vals(a.wkv.clone()), &vals(b.wkv.clone()), "wkv state")?;
            close(&vals(a.att_shift.clone()), &vals(b.att_shift.clone()), "att shift")?;
            close(&vals(a.ffn_shift.clone()), &vals(b.ffn_shift.clone()), "ffn shift")?;
        }
        // Split anywhere with the carried state.
        let s = split.clamp(1, t);
        if s < t {
            let first = model.forward(ids.clone().slice([0..batch, 0..s]), None).unwrap();
            let rest = model.forward(ids.clone().slice([0..batch, s..t]), Some(&first.state)).unwrap();
            close(&vals(rest.logits), &vals(full.logits.clone().slice([0..batch, s..t, 0..v])), "split")?;
        }
        // Each batch row alone equals its row of the batch.
        for r in 0..batch {
            let alone = model.forward(ids.clone().slice([r..r + 1, 0..t]), None).unwrap();
            close(&vals(alone.logits), &vals(full.logits.clone().slice([r..r + 1, 0..t, 0..v])), "batch row")?;
            let row = full.state.batch_rows(r..r + 1).unwrap();
            close(&vals(row.layers[0].wkv.clone()), &vals(alone.state.layers[0].wkv.clone()), "state row")?;
        }
    }
}

/// A tiny model: C = 8 (2 heads of 4), V = 10.
fn tiny_config(n_layer: usize) -> RwkvConfig {
    RwkvConfig { n_layer, n_embd: 8, n_head: 2, head_size: 4, dim_ffn: 16, vocab_size: 10, d_mix: 2, d_decay: 2 }
}

#[test]
fn bad_inputs_are_errors() {
    let model = tiny_config(1).init::<B>(&Default::default());
    let dev = Default::default();
    let bad = Tensor::<B, 2, Int>::from_data([[3, 10]], &dev);
    assert!(model.forward(bad, None).unwrap_err().to_string().contains("token id 10"));
    let empty = Tensor::<B, 3>::zeros([1, 0, 8], &dev);
    assert!(model.forward_embeddings(empty, None).is_err());
    let wide = Tensor::<B, 3>::zeros([1, 2, 9], &dev);
    assert!(model.forward_embeddings(wide, None).is_err());
    let state = model.zero_state(2);
    let ok = Tensor::<B, 2, Int>::from_data([[1, 2]], &dev);
    let e = model.forward(ok, Some(&state)).unwrap_err();
    assert!(e.to_string().contains("state.0.att_shift"), "{e}");
    assert!(state.batch_rows(1..3).is_err());
    assert!(model.forward_layer(5, Tensor::zeros([1, 1, 8], &dev), model.zero_state(1).layers[0].clone()).is_err());
}

#[test]
fn state_save_load_round_trip_and_batch_rows() {
    let cfg = tiny_config(2);
    let model = cfg.init::<B>(&Default::default());
    let out = model.forward(tokens(3, 5, 10), None).unwrap();
    let path = std::env::temp_dir().join(format!("visualrwkv-state-{}.safetensors", std::process::id()));
    out.state.save(&path, false).unwrap();
    let back = State::<B>::load(&path, &cfg, &Default::default()).unwrap();
    assert_eq!(back.batch_size(), 3);
    for (a, b) in back.layers.iter().zip(&out.state.layers) {
        assert_eq!(vals(a.wkv.clone()), vals(b.wkv.clone()));
        assert_eq!(vals(a.att_shift.clone()), vals(b.att_shift.clone()));
        assert_eq!(vals(a.ffn_shift.clone()), vals(b.ffn_shift.clone()));
    }
    // Rows sliced and concatenated back give the same state.
    let rows = State::cat(vec![out.state.batch_rows(0..1).unwrap(), out.state.batch_rows(1..3).unwrap()]).unwrap();
    assert_eq!(vals(rows.layers[1].wkv.clone()), vals(out.state.layers[1].wkv.clone()));
    // A state for another configuration is an error.
    let other = RwkvConfig { n_embd: 12, n_head: 3, ..cfg };
    assert!(State::<B>::load(&path, &other, &Default::default()).is_err());
    std::fs::remove_file(path).ok();
}

#[test]
fn forward_last_equals_the_last_row_of_forward() {
    let model = tiny_config(2).init::<B>(&Default::default());
    let ids = tokens(2, 7, 10);
    let full = model.forward(ids.clone(), None).unwrap();
    let last = model.forward_last(ids, None).unwrap();
    assert_eq!(last.logits.dims(), [2, 1, 10]);
    // Equal up to summation order (a few rows take the CPU's matrix-vector path).
    let (a, b) = (vals(last.logits), vals(full.logits.slice([0..2, 6..7, 0..10])));
    assert!(a.iter().zip(&b).all(|(x, y)| (x - y).abs() <= 1e-5), "{a:?} vs {b:?}");
    assert_eq!(vals(last.state.layers[1].wkv.clone()), vals(full.state.layers[1].wkv.clone()));
}
