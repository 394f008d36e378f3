//! Grid pooling token counts and values, random SigLIP/CLIP-shaped towers, checkpoint errors.

use std::path::{Path, PathBuf};

use burn::backend::NdArray;
use burn::tensor::{Distribution, Tensor, TensorData};
use visualrwkv_checkpoint::{CheckpointError, KeyProblem, TensorMap, write_safetensors};
use visualrwkv_vision::tower::bicubic_resize_grid;
use visualrwkv_vision::{Activation, GridPooling, TowerKind, VisionConfig, VisionError, grid_pool, load};

type B = NdArray;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures").join(name)
}

fn host<const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().into_vec::<f32>().unwrap()
}

/// v7.00's token pooling equals the official `VisualRWKV.adaptive_pooling` (PyTorch's
/// `AdaptiveAvgPool2d`, `scripts/make-v700-projector-fixtures.py`) on a 7×7 grid, to 3×3 and to
/// 4×4 (overlapping windows).
#[test]
fn adaptive_pooling_matches_the_official_v700_pooling() {
    let golden = TensorMap::read(fixture("v700/projector_golden.safetensors")).unwrap();
    let (shape, x) = golden.tensors["features"].clone();
    let feats = Tensor::<B, 3>::from_data(TensorData::new(x, [shape[0], shape[1], shape[2]]), &Default::default());
    for (side, key) in [(3, "pooled"), (4, "pooled16")] {
        let pooling = GridPooling::Adaptive(side);
        let pooled = grid_pool(feats.clone(), (7, 7), false, pooling).unwrap();
        assert_eq!((pooled.grid_h, pooled.grid_w, pooled.extra), (side, side, 0));
        assert_eq!(pooling.rows((7, 7), false).unwrap(), side * side);
        let (want_shape, want) = &golden.tensors[key];
        assert_eq!(pooled.features.dims().to_vec(), *want_shape);
        let diff = host(pooled.features).iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(diff <= 1e-6, "{key}: max diff {diff:e}");
    }
    assert_eq!(GridPooling::from_tokens_per_image(16).unwrap(), GridPooling::Adaptive(4));
    for bad in [0, 15] {
        assert!(matches!(GridPooling::from_tokens_per_image(bad), Err(VisionError::TokensPerImage(n)) if n == bad));
    }
    // A class token is dropped; a pool wider than the grid is an error.
    let with_cls = Tensor::cat(vec![Tensor::zeros([2, 1, 8], &Default::default()), feats.clone()], 1);
    let pooled = grid_pool(with_cls, (7, 7), true, GridPooling::Adaptive(3)).unwrap();
    assert_eq!(pooled.features.dims(), [2, 9, 8]);
    assert!(matches!(
        grid_pool(feats, (7, 7), false, GridPooling::Adaptive(8)),
        Err(VisionError::GridTooLarge { grid: 8, height: 7, width: 7 })
    ));
}

#[test]
fn grid_pooling_token_counts_match_table_9() {
    let dev = Default::default();
    let feats = Tensor::<B, 3>::random([1, 577, 8], Distribution::Normal(0.0, 1.0), &dev);
    for (g, tokens, side) in
        [(-1, 577, 24), (12, 145, 12), (8, 65, 8), (6, 37, 6), (4, 17, 4), (3, 10, 3), (2, 5, 2), (0, 1, 0)]
    {
        let pooling = GridPooling::from_grid_size(g).unwrap();
        let pooled = grid_pool(feats.clone(), (24, 24), true, pooling).unwrap();
        assert_eq!(pooled.features.dims(), [1, tokens, 8], "grid {g}");
        assert_eq!(pooling.rows((24, 24), true).unwrap(), tokens, "grid {g}: rows without pooling");
        assert_eq!((pooled.grid_h, pooled.grid_w, pooled.extra, pooled.len()), (side, side, 1, tokens), "grid {g}");
    }
    let mean = grid_pool(feats.clone(), (24, 24), true, GridPooling::Mean).unwrap();
    assert_eq!(mean.features.dims(), [1, 2, 8]);
    let patches = grid_pool(feats, (24, 24), true, GridPooling::PatchesOnly).unwrap();
    assert_eq!((patches.features.dims(), patches.extra), ([1, 576, 8], 0));
    assert_eq!(
        (GridPooling::Mean.rows((24, 24), true).unwrap(), GridPooling::PatchesOnly.rows((24, 24), true).unwrap()),
        (2, 576)
    );
    // g = 5: stride ⌊24/5⌋ = 4 keeps a 6×6 grid.
    assert_eq!(GridPooling::Grid(5).rows((24, 24), true).unwrap(), 37);
}

#[test]
fn grid_pooling_values() {
    // CLS = 100, patches of a 4x4 grid hold their row-major index p (one channel).
    let dev = Default::default();
    let mut v = vec![100.0];
    v.extend((0..16).map(|p| p as f32));
    let feats = Tensor::<B, 3>::from_data(TensorData::new(v, [1, 17, 1]), &dev);
    let pool = |g| host(grid_pool(feats.clone(), (4, 4), true, g).unwrap().features);
    assert_eq!(pool(GridPooling::All), [(0..16).map(|p| p as f32).collect::<Vec<_>>(), vec![100.0]].concat());
    assert_eq!(pool(GridPooling::ClsOnly), vec![100.0]);
    assert_eq!(pool(GridPooling::Mean), vec![7.5, 100.0]);
    // 2x2 average pooling: (0+1+4+5)/4 = 2.5, (2+3+6+7)/4 = 4.5, 10.5, 12.5; then CLS.
    assert_eq!(pool(GridPooling::Grid(2)), vec![2.5, 4.5, 10.5, 12.5, 100.0]);
    // Without a class token: patches only, and no CLS appended after pooling.
    let no_cls = feats.clone().slice([0..1, 1..17, 0..1]);
    let pooled = grid_pool(no_cls.clone(), (4, 4), false, GridPooling::Grid(2)).unwrap();
    assert_eq!((host(pooled.features), pooled.extra), (vec![2.5, 4.5, 10.5, 12.5], 0));
    assert!(matches!(grid_pool(no_cls.clone(), (4, 4), false, GridPooling::ClsOnly), Err(VisionError::NoClassToken)));
    assert!(matches!(
        grid_pool(no_cls.clone(), (4, 4), false, GridPooling::Grid(5)),
        Err(VisionError::GridTooLarge { grid: 5, .. })
    ));
    assert!(matches!(grid_pool(no_cls, (3, 5), false, GridPooling::All), Err(VisionError::Shape { .. })));
    assert!(GridPooling::from_grid_size(-2).is_err());
}

#[test]
fn siglip_shaped_random_tower_runs_with_the_right_shapes() {
    let dev = Default::default();
    // SigLIP conventions (so400m's 16 heads of 72 channels scaled down to 4 of 24).
    let cfg = VisionConfig::new(TowerKind::Siglip, 56, 14, 96, 160, 3, 4)
        .with_layer_norm_eps(1e-6)
        .with_hidden_act(Activation::GeluTanh)
        .with_use_head(true);
    let tower = cfg.init::<B>(&dev);
    let pixels = Tensor::<B, 4>::random([2, 3, 56, 56], Distribution::Normal(0.0, 1.0), &dev);
    let out = tower.forward(pixels.clone()).unwrap();
    assert_eq!(out.hidden_states.len(), 4);
    assert!(out.hidden_states.iter().all(|h| h.dims() == [2, 16, 96]));
    assert_eq!(out.last_hidden_state.as_ref().unwrap().dims(), [2, 16, 96]);
    assert_eq!(out.pooler_output.as_ref().unwrap().dims(), [2, 96]);
    assert_eq!(out.grid, (4, 4));
    // A larger image: 6x5 patches through the interpolated position embedding.
    let big = tower.forward(Tensor::random([1, 3, 84, 70], Distribution::Normal(0.0, 1.0), &dev)).unwrap();
    assert_eq!((big.grid, big.last_hidden_state.unwrap().dims()), ((6, 5), [1, 30, 96]));
    // Save under HF names, infer the configuration back (needs no config.json here: width 96 < 512
    // is taken as 4 heads), and reproduce the outputs.
    let dir = std::env::temp_dir().join(format!("visualrwkv-siglip-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("siglip.safetensors");
    write_safetensors(&tower.to_tensor_map("vision_model.").unwrap(), &path).unwrap();
    let loaded = load::<B>(&path, None, &dev).unwrap();
    assert_eq!(loaded.config, cfg);
    let again = loaded.forward(pixels).unwrap();
    let d = host(again.pooler_output.unwrap())
        .iter()
        .zip(host(out.pooler_output.unwrap()))
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(d < 1e-5, "{d}");
}

#[test]
fn hidden_layer_selection_and_bad_inputs() {
    let dev = Default::default();
    let tower = load::<B>(fixture("clip_tiny_weights.safetensors"), None, &dev).unwrap();
    let px = Tensor::<B, 4>::zeros([1, 3, 32, 32], &dev);
    for layer in [-3, -2, -1, 0, 1, 2] {
        assert_eq!(tower.features(px.clone(), layer).unwrap().0.dims(), [1, 17, 64], "layer {layer}");
    }
    assert!(matches!(tower.features(px.clone(), 3), Err(VisionError::Layer { layer: 3, .. })));
    assert!(matches!(tower.features(px, -4), Err(VisionError::Layer { layer: -4, .. })));
    let e = tower.forward(Tensor::zeros([1, 1, 32, 32], &dev)).unwrap_err();
    assert!(matches!(&e, VisionError::Shape { found, .. } if found == &vec![1, 1, 32, 32]), "{e}");
    assert!(matches!(tower.forward(Tensor::zeros([1, 3, 7, 32], &dev)), Err(VisionError::Shape { .. })));
    // Odd sizes drop the pixels past the last whole patch, like the strided conv.
    assert_eq!(tower.forward(Tensor::zeros([1, 3, 39, 47], &dev)).unwrap().grid, (4, 5));
}

#[test]
fn position_resampling_is_the_identity_at_the_trained_size() {
    let grid: Vec<f32> = (0..4 * 5 * 3).map(|i| (i as f32 * 0.37).sin()).collect();
    assert_eq!(bicubic_resize_grid(&grid, (4, 5), 3, (4, 5)).unwrap(), grid);
    // A constant grid stays constant at any size (the cubic weights sum to one).
    let ones = vec![2.0f32; 3 * 3 * 2];
    assert!(bicubic_resize_grid(&ones, (3, 3), 2, (7, 4)).unwrap().iter().all(|v| (v - 2.0).abs() < 1e-6));
    assert!(matches!(bicubic_resize_grid(&ones, (3, 4), 2, (7, 4)), Err(VisionError::Shape { .. })));
}

fn edited(name: &str, edit: impl FnOnce(&mut TensorMap)) -> VisionError {
    let mut map = TensorMap::read_safetensors(fixture("clip_tiny_weights.safetensors")).unwrap();
    edit(&mut map);
    let dir = std::env::temp_dir().join(format!("visualrwkv-vision-ckpt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    write_safetensors(&map, &path).unwrap();
    load::<B>(&path, Some(&fixture("clip_tiny_config.json")), &Default::default()).unwrap_err()
}

fn problems(e: VisionError) -> Vec<KeyProblem> {
    match e {
        VisionError::Checkpoint(CheckpointError::Keys { problems, .. }) => problems,
        other => panic!("expected a key error, got {other}"),
    }
}

#[test]
fn malformed_checkpoints_give_their_errors() {
    let key = "vision_model.encoder.layers.1.mlp.fc2.bias";
    assert_eq!(
        problems(edited("missing.safetensors", |m| {
            m.tensors.remove(key);
        })),
        vec![KeyProblem::Missing("encoder.layers.1.mlp.fc2.bias".into())]
    );
    assert_eq!(
        problems(edited("extra.safetensors", |m| {
            m.tensors.insert("vision_model.encoder.layers.2.mlp.fc2.bias".into(), (vec![64], vec![0.0; 64]));
        })),
        vec![KeyProblem::Unexpected("encoder.layers.2.mlp.fc2.bias".into())]
    );
    assert_eq!(
        problems(edited("shape.safetensors", |m| {
            m.tensors.insert(key.into(), (vec![63], vec![0.0; 63]));
        })),
        vec![KeyProblem::Shape { key: "encoder.layers.1.mlp.fc2.bias".into(), expected: vec![64], found: vec![63] }]
    );
    // Truncated file, not a checkpoint, missing file, and a config that is not JSON.
    let bytes = std::fs::read(fixture("clip_tiny_weights.safetensors")).unwrap();
    let dir = std::env::temp_dir().join(format!("visualrwkv-vision-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("truncated.safetensors");
    std::fs::write(&p, &bytes[..bytes.len() / 3]).unwrap();
    let e = load::<B>(&p, None, &Default::default()).unwrap_err();
    assert!(matches!(e, VisionError::Checkpoint(CheckpointError::Format { .. })), "{e}");
    let e = load::<B>("/nonexistent/clip.safetensors", None, &Default::default()).unwrap_err();
    assert!(matches!(e, VisionError::Checkpoint(CheckpointError::Io { .. })), "{e}");
    let cfg = dir.join("config.json");
    std::fs::write(&cfg, "{ not json").unwrap();
    let e = load::<B>(fixture("clip_tiny_weights.safetensors"), Some(&cfg), &Default::default()).unwrap_err();
    assert!(matches!(e, VisionError::Config { .. }), "{e}");
    // A checkpoint with no vision tower in it.
    let e = load::<B>(fixture("rwkv6_tiny_a_weights.safetensors"), None, &Default::default()).unwrap_err();
    assert!(matches!(e, VisionError::Config { .. }), "{e}");
}

#[test]
fn hf_config_json_variants() {
    let full = r#"{"model_type": "clip", "vision_config": {"hidden_size": 1024, "intermediate_size": 4096,
        "num_hidden_layers": 24, "num_attention_heads": 16, "image_size": 336, "patch_size": 14}}"#;
    assert_eq!(VisionConfig::from_hf_json_str(full, "c").unwrap(), VisionConfig::clip_vit_large_336());
    let siglip = r#"{"model_type": "siglip", "vision_config": {"model_type": "siglip_vision_model", "hidden_size": 1152,
        "intermediate_size": 4304, "num_hidden_layers": 27, "num_attention_heads": 16, "image_size": 384, "patch_size": 14}}"#;
    assert_eq!(VisionConfig::from_hf_json_str(siglip, "s").unwrap(), VisionConfig::siglip_so400m_384());
    for bad in
        [r#"{"hidden_act": "swish"}"#, r#"{"hidden_size": 100, "num_attention_heads": 3}"#, r#"{"model_type": "vit"}"#]
    {
        assert!(matches!(VisionConfig::from_hf_json_str(bad, "bad"), Err(VisionError::Config { .. })), "{bad}");
    }
}
