//! The towers against Hugging Face transformers' outputs (fixtures made by the official code:
//! `clip_tiny_*` from the shared fixtures, `siglip_tiny_*` and `clip_tiny_interp_*` by
//! `scripts/make-vision-fixtures.py`): every hidden state, `last_hidden_state` and
//! `pooler_output` to abs 1e-4.

use std::path::{Path, PathBuf};

use burn::backend::NdArray;
use burn::tensor::{Tensor, TensorData};
use visualrwkv_checkpoint::TensorMap;
use visualrwkv_vision::{VisionConfig, VisionTower, load};

type B = NdArray;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures").join(name)
}

fn values<const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec::<f32>().unwrap()
}

fn pixels(golden: &TensorMap, key: &str) -> Tensor<B, 4> {
    let (shape, v) = &golden.tensors[key];
    Tensor::from_data(TensorData::new(v.clone(), [shape[0], shape[1], shape[2], shape[3]]), &Default::default())
}

fn assert_close(what: &str, got: Vec<f32>, golden: &TensorMap, key: &str) {
    let (_, want) = &golden.tensors[key];
    assert_eq!(got.len(), want.len(), "{what}: length");
    let max = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(max <= 1e-4, "{what} vs `{key}`: max abs diff {max}");
}

/// Runs `tower` on the golden's pixels and compares every output under `prefix`.
fn check_all(tower: &VisionTower<B>, golden: &TensorMap, prefix: &str) {
    let out = tower.forward(pixels(golden, &format!("{prefix}pixel_values"))).unwrap();
    let n = tower.config.num_hidden_layers;
    assert_eq!(out.hidden_states.len(), n + 1);
    for (i, h) in out.hidden_states.into_iter().enumerate() {
        assert_close(&format!("hidden_states[{i}]"), values(h), golden, &format!("{prefix}hidden_states.{i}"));
    }
    assert_close(
        "last_hidden_state",
        values(out.last_hidden_state.unwrap()),
        golden,
        &format!("{prefix}last_hidden_state"),
    );
    let key = format!("{prefix}pooler_output");
    match out.pooler_output {
        Some(p) => assert_close("pooler_output", values(p), golden, &key),
        None => assert!(!golden.tensors.contains_key(&key), "the golden has a pooler output"),
    }
}

#[test]
fn clip_tiny_matches_transformers_with_inferred_config() {
    let tower = load::<B>(fixture("clip_tiny_weights.safetensors"), None, &Default::default()).unwrap();
    let golden = TensorMap::read_safetensors(fixture("clip_tiny_golden.safetensors")).unwrap();
    check_all(&tower, &golden, "");
    // The penultimate layer (LLaVA-1.5's choice) through `features`.
    let (m2, grid) = tower.features(pixels(&golden, "pixel_values"), -2).unwrap();
    assert_eq!(grid, (4, 4));
    assert_close("features(-2)", values(m2), &golden, "hidden_states_m2");
    let (last, _) = tower.features(pixels(&golden, "pixel_values"), -1).unwrap();
    assert_close("features(-1)", values(last), &golden, "last_hidden_state");
}

#[test]
fn clip_tiny_matches_with_config_json() {
    let config = fixture("clip_tiny_config.json");
    let tower = load::<B>(fixture("clip_tiny_weights.safetensors"), Some(&config), &Default::default()).unwrap();
    assert_eq!(tower.config, VisionConfig::from_hf_json(&config).unwrap());
    check_all(&tower, &TensorMap::read_safetensors(fixture("clip_tiny_golden.safetensors")).unwrap(), "");
}

#[test]
fn clip_tiny_interpolates_position_embeddings_like_transformers() {
    let tower = load::<B>(fixture("clip_tiny_weights.safetensors"), None, &Default::default()).unwrap();
    let golden = TensorMap::read_safetensors(fixture("clip_tiny_interp_golden.safetensors")).unwrap();
    check_all(&tower, &golden, "");
}

#[test]
fn siglip_tiny_matches_transformers() {
    let config = fixture("siglip_tiny_config.json");
    let tower = load::<B>(fixture("siglip_tiny_weights.safetensors"), Some(&config), &Default::default()).unwrap();
    assert!(tower.head.is_some(), "the tiny SigLIP has the attention-pooling head");
    let golden = TensorMap::read_safetensors(fixture("siglip_tiny_golden.safetensors")).unwrap();
    check_all(&tower, &golden, "");
    check_all(&tower, &golden, "interp.");
    // Inferred from the shapes: SigLIP conventions and 4 heads for a tiny width.
    let inferred = load::<B>(fixture("siglip_tiny_weights.safetensors"), None, &Default::default()).unwrap();
    assert_eq!(inferred.config, tower.config);
}

#[test]
fn visualrwkv_prefix_and_bare_keys_load_the_same_tower() {
    let map = TensorMap::read_safetensors(fixture("clip_tiny_weights.safetensors")).unwrap();
    let dir = std::env::temp_dir().join(format!("visualrwkv-vision-prefix-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let golden = TensorMap::read_safetensors(fixture("clip_tiny_golden.safetensors")).unwrap();
    for (name, prefix) in [("vit.safetensors", "vit."), ("bare.safetensors", "")] {
        let mut tensors: std::collections::HashMap<_, _> = map
            .tensors
            .iter()
            .map(|(k, v)| {
                (
                    format!("{prefix}{}", if prefix.is_empty() { k.strip_prefix("vision_model.").unwrap() } else { k }),
                    v.clone(),
                )
            })
            .collect();
        // A VisualRWKV checkpoint also holds the language model and the projector.
        tensors.insert("rwkv.emb.weight".into(), (vec![2, 2], vec![0.0; 4]));
        tensors.insert("proj.weight".into(), (vec![2, 64], vec![0.0; 128]));
        if prefix.is_empty() {
            tensors.retain(|k, _| !k.starts_with("rwkv.") && !k.starts_with("proj."));
        }
        let path = dir.join(name);
        visualrwkv_checkpoint::write_safetensors(&TensorMap { origin: name.into(), tensors }, &path).unwrap();
        let tower = load::<B>(&path, None, &Default::default()).unwrap();
        check_all(&tower, &golden, "");
    }
}
