//! The official `rwkv` package's outputs for the tiny x060 model (`rwkv6_tiny_a_*`): logits, final
//! states, mid-sequence resume and per-layer hidden states, to abs 1e-4.

use std::collections::HashMap;

use burn::backend::NdArray;
use burn::tensor::{Int, Tensor, TensorData};
use visualrwkv_rwkv::{RwkvConfig, State, TensorMap, load_safetensors};

type B = NdArray;
const TOL: f32 = 1e-4;

fn fixture(name: &str) -> String {
    format!("{}/../../tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

type Tensors = HashMap<String, (Vec<usize>, Vec<f32>)>;

fn golden() -> (Vec<i64>, Tensors) {
    let bytes = std::fs::read(fixture("rwkv6_tiny_a_golden.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tokens = Vec::new();
    let mut map = HashMap::new();
    for (k, v) in st.tensors() {
        if k == "tokens" {
            tokens = v.data().chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap())).collect();
        } else {
            let d = v.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
            map.insert(k, (v.shape().to_vec(), d));
        }
    }
    (tokens, map)
}

fn vals<const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec::<f32>().unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn tokens_tensor(ids: &[i64]) -> Tensor<B, 2, Int> {
    Tensor::from_data(TensorData::new(ids.to_vec(), [1, ids.len()]), &Default::default())
}

fn check_state(state: &State<B>, g: &Tensors, prefix: &str) {
    for (l, s) in state.layers.iter().enumerate() {
        for (name, v) in [
            ("att_shift", vals(s.att_shift.clone())),
            ("wkv", vals(s.wkv.clone())),
            ("ffn_shift", vals(s.ffn_shift.clone())),
        ] {
            let d = max_diff(&v, &g[&format!("{prefix}.{l}.{name}")].1);
            assert!(d <= TOL, "{prefix}.{l}.{name}: max diff {d:e}");
        }
    }
}

#[test]
fn config_is_inferred_from_shapes() {
    let map = TensorMap::read_safetensors(fixture("rwkv6_tiny_a_weights.safetensors")).unwrap();
    let cfg = RwkvConfig::from_checkpoint(&map).unwrap();
    assert_eq!(
        cfg,
        RwkvConfig {
            n_layer: 2,
            n_embd: 128,
            n_head: 2,
            head_size: 64,
            dim_ffn: 256,
            vocab_size: 256,
            d_mix: 32,
            d_decay: 64
        }
    );
}

#[test]
fn logits_and_states_match_the_official_package() {
    let model = load_safetensors::<B>(fixture("rwkv6_tiny_a_weights.safetensors"), &Default::default()).unwrap();
    let (tokens, g) = golden();
    let out = model.forward(tokens_tensor(&tokens), None).unwrap();
    let d = max_diff(&vals(out.logits), &g["logits"].1);
    assert!(d <= TOL, "logits max diff {d:e}");
    check_state(&out.state, &g, "state");
}

#[test]
fn mid_sequence_state_and_resume_match() {
    let model = load_safetensors::<B>(fixture("rwkv6_tiny_a_weights.safetensors"), &Default::default()).unwrap();
    let (tokens, g) = golden();
    let t_mid = 13;
    let first = model.forward(tokens_tensor(&tokens[..t_mid]), None).unwrap();
    check_state(&first.state, &g, "state_mid");
    let rest = model.forward(tokens_tensor(&tokens[t_mid..]), Some(&first.state)).unwrap();
    let v = g["logits"].0[1];
    let d = max_diff(&vals(rest.logits), &g["logits"].1[t_mid * v..]);
    assert!(d <= TOL, "resumed logits max diff {d:e}");
    check_state(&rest.state, &g, "state");
}

#[test]
fn token_by_token_matches_sequence_mode_and_goldens() {
    let model = load_safetensors::<B>(fixture("rwkv6_tiny_a_weights.safetensors"), &Default::default()).unwrap();
    let (tokens, g) = golden();
    let v = g["logits"].0[1];
    let mut state = None;
    for (t, &id) in tokens.iter().enumerate() {
        let out = model.forward(tokens_tensor(&[id]), state.as_ref()).unwrap();
        let d = max_diff(&vals(out.logits), &g["logits"].1[t * v..(t + 1) * v]);
        assert!(d <= TOL, "step {t}: logits max diff {d:e}");
        state = Some(out.state);
    }
    check_state(&state.unwrap(), &g, "state");
}

#[test]
fn per_layer_hidden_states_match_the_f64_reference() {
    let model = load_safetensors::<B>(fixture("rwkv6_tiny_a_weights.safetensors"), &Default::default()).unwrap();
    let (tokens, g) = golden();
    let mut x = model.input_norm(model.embed(tokens_tensor(&tokens)).unwrap());
    let d = max_diff(&vals(x.clone()), &g["hidden_ref64.0"].1);
    assert!(d <= TOL, "hidden 0 (ln0 of emb): {d:e}");
    let mut state = model.zero_state(1);
    for l in 0..2 {
        let out = model.forward_layer(l, x, state.layers[l].clone()).unwrap();
        state.layers[l] = out.state;
        x = out.x;
        let d = max_diff(&vals(x.clone()), &g[&format!("hidden_ref64.{}", l + 1)].1);
        assert!(d <= TOL, "hidden {} (after block {l}): {d:e}", l + 1);
    }
}

#[test]
fn save_then_load_round_trips_exactly() {
    let model = load_safetensors::<B>(fixture("rwkv6_tiny_a_weights.safetensors"), &Default::default()).unwrap();
    let dir = std::env::temp_dir().join(format!("visualrwkv-rwkv-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tiny.safetensors");
    model.save_safetensors(&path).unwrap();
    let a = TensorMap::read_safetensors(fixture("rwkv6_tiny_a_weights.safetensors")).unwrap();
    let b = TensorMap::read_safetensors(&path).unwrap();
    assert_eq!(a.tensors.len(), b.tensors.len());
    for (k, (shape, v)) in &a.tensors {
        assert_eq!(&b.tensors[k].0, shape, "{k}");
        assert_eq!(&b.tensors[k].1, v, "{k}");
    }
    std::fs::remove_dir_all(dir).ok();
}

/// The fused CPU decoder (f32 weights) reproduces the official logits token by token, its state
/// equals the official final state, and it resumes from a state prefilled by the burn model.
#[test]
fn fused_decoder_matches_the_official_package() {
    use visualrwkv_rwkv::{Decoder, HostState, WeightDtype};
    let model = load_safetensors::<B>(fixture("rwkv6_tiny_a_weights.safetensors"), &Default::default()).unwrap();
    let (tokens, g) = golden();
    let v = g["logits"].0[1];
    let dec = Decoder::new(&model, WeightDtype::F32).unwrap();
    let mut state = dec.zero_state();
    for (t, &id) in tokens.iter().enumerate() {
        let logits = dec.step(id as u32, &mut state).unwrap();
        let d = max_diff(&logits, &g["logits"].1[t * v..(t + 1) * v]);
        assert!(d <= TOL, "decoder step {t}: logits max diff {d:e}");
    }
    check_state(&state.to_state::<B>(&model.config(), &Default::default()).unwrap(), &g, "state");

    // Prefill the first half with the burn model (sequence mode), decode the rest here.
    let t_mid = 13;
    let first = model.forward(tokens_tensor(&tokens[..t_mid]), None).unwrap();
    let mut state = HostState::from_state(&first.state, 0).unwrap();
    for (t, &id) in tokens.iter().enumerate().skip(t_mid) {
        let logits = dec.step(id as u32, &mut state).unwrap();
        let d = max_diff(&logits, &g["logits"].1[t * v..(t + 1) * v]);
        assert!(d <= TOL, "resumed decoder step {t}: logits max diff {d:e}");
    }
}

/// The decoder's sequence mode (`Decoder::prefill`, GEMMs + the CPU WKV kernel) reproduces the
/// official logits of the last token and the official final state, in one call and in two calls
/// with the state carried (each split point's last logits too).
#[test]
fn fused_prefill_matches_the_official_package() {
    use visualrwkv_rwkv::{Decoder, WeightDtype};
    let model = load_safetensors::<B>(fixture("rwkv6_tiny_a_weights.safetensors"), &Default::default()).unwrap();
    let (tokens, g) = golden();
    let v = g["logits"].0[1];
    let ids: Vec<u32> = tokens.iter().map(|&t| t as u32).collect();
    let dec = Decoder::new(&model, WeightDtype::F32).unwrap();
    let last = ids.len() - 1;
    let mut state = dec.zero_state();
    let logits = dec.prefill(&ids, &mut state).unwrap();
    let d = max_diff(&logits, &g["logits"].1[last * v..]);
    assert!(d <= TOL, "prefill: last logits max diff {d:e}");
    check_state(&state.to_state::<B>(&model.config(), &Default::default()).unwrap(), &g, "state");
    for split in [1, 13, last] {
        let mut state = dec.zero_state();
        let first = dec.prefill(&ids[..split], &mut state).unwrap();
        let d = max_diff(&first, &g["logits"].1[(split - 1) * v..split * v]);
        assert!(d <= TOL, "prefill of {split} tokens: logits max diff {d:e}");
        let logits = dec.prefill(&ids[split..], &mut state).unwrap();
        let d = max_diff(&logits, &g["logits"].1[last * v..]);
        assert!(d <= TOL, "prefill split at {split}: last logits max diff {d:e}");
        check_state(&state.to_state::<B>(&model.config(), &Default::default()).unwrap(), &g, "state");
    }
}
