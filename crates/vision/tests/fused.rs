//! The fused CPU tower (`FusedTower`) computes the tower's features: against Hugging Face
//! transformers' hidden states on the official fixtures (CLIP, SigLIP, an interpolated image
//! size), and against the burn tower on random towers of every activation, several layers,
//! batch sizes and image sizes (1e-4).

use std::path::{Path, PathBuf};

use burn::backend::NdArray;
use burn::tensor::{Distribution, Tensor};
use proptest::prelude::*;
use visualrwkv_checkpoint::{TensorMap, TensorSource, table};
use visualrwkv_vision::{Activation, FusedTower, TowerKind, VisionConfig, VisionError, checkpoint, load};

type B = NdArray;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures").join(name)
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Every hidden state of the golden through `features(i)` of the fused tower.
fn check_golden(weights: &str, config: Option<&str>, golden: &str) {
    let config = config.map(fixture);
    let tower = load::<B>(fixture(weights), config.as_deref(), &Default::default()).unwrap();
    // Built from the burn tower, and straight from the checkpoint's tensors.
    let vcfg = config.as_deref().map(|c| VisionConfig::from_hf_json(c).unwrap());
    let map = checkpoint::into_vision_tensors(checkpoint::read_tensors(fixture(weights)).unwrap());
    let direct = FusedTower::from_tensors(map, vcfg).unwrap();
    assert_eq!(direct.config(), &tower.config);
    let golden = TensorMap::read_safetensors(fixture(golden)).unwrap();
    let (shape, pixels) = &golden.tensors["pixel_values"];
    let dims = [shape[0], shape[1], shape[2], shape[3]];
    for fused in [FusedTower::new(&tower), direct] {
        for i in 0..=tower.config.num_hidden_layers {
            let (got, _) = fused.features(pixels, dims, i as i64).unwrap();
            let want = golden.get(&format!("hidden_states.{i}")).unwrap();
            let d = max_diff(&got, want);
            assert!(d <= 1e-4, "{golden:?} hidden_states.{i}: {d}", golden = golden.origin);
        }
    }
}

#[test]
fn a_lazily_loaded_tower_reads_nothing_until_used_then_equals_the_eager_one() {
    let path = fixture("clip_tiny_weights.safetensors");
    let source = TensorSource::open(&path).unwrap();
    let map = checkpoint::into_vision_tensors(checkpoint::read_tensors(&path).unwrap());
    let dev = Default::default();
    let lazy =
        VisionConfig::tower_from_tensors_lazily::<B>(&map, None, &source.with_prefix("vision_model."), &dev).unwrap();
    assert!(!table::any_initialized(&lazy));
    drop(map);
    let eager = load::<B>(&path, None, &dev).unwrap();
    let pixels = Tensor::<B, 4>::random([1, 3, 32, 32], Distribution::Normal(0.0, 1.0), &dev);
    let (a, _) = lazy.features(pixels.clone(), -1).unwrap();
    let (b, _) = eager.features(pixels, -1).unwrap();
    assert!(table::any_initialized(&lazy));
    assert_eq!(a.into_data().into_vec::<f32>().unwrap(), b.into_data().into_vec::<f32>().unwrap());
}

#[test]
fn fused_tower_from_tensors_reports_a_missing_key() {
    let mut map =
        checkpoint::into_vision_tensors(checkpoint::read_tensors(fixture("clip_tiny_weights.safetensors")).unwrap());
    map.tensors.remove("encoder.layers.1.mlp.fc2.bias");
    let err = FusedTower::from_tensors(map, None).unwrap_err().to_string();
    assert!(err.contains("encoder.layers.1.mlp.fc2.bias"), "{err}");
}

#[test]
fn fused_clip_matches_transformers() {
    check_golden("clip_tiny_weights.safetensors", None, "clip_tiny_golden.safetensors");
    check_golden("clip_tiny_weights.safetensors", None, "clip_tiny_interp_golden.safetensors");
}

#[test]
fn fused_siglip_matches_transformers() {
    check_golden("siglip_tiny_weights.safetensors", Some("siglip_tiny_config.json"), "siglip_tiny_golden.safetensors");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn fused_tower_equals_the_tower(
        seed in 0u64..1000,
        siglip in any::<bool>(),
        act in prop::sample::select(vec![Activation::QuickGelu, Activation::Gelu, Activation::GeluTanh]),
        layers in 1usize..4,
        heads in prop::sample::select(vec![1usize, 2, 4]),
        batch in 1usize..3,
        side in prop::sample::select(vec![32usize, 40, 24]),
        layer in -3i64..4,
    ) {
        let kind = if siglip { TowerKind::Siglip } else { TowerKind::Clip };
        let cfg = VisionConfig::new(kind, 32, 8, 16, 40, layers, heads).with_hidden_act(act);
        let dev = Default::default();
        <B as burn::tensor::backend::Backend>::seed(&dev, seed);
        let tower = cfg.init::<B>(&dev);
        let fused = FusedTower::new(&tower);
        let pixels = Tensor::<B, 4>::random([batch, 3, side, side + 8], Distribution::Normal(0.0, 1.0), &dev);
        let dims = pixels.dims();
        let host = pixels.clone().into_data().into_vec::<f32>().unwrap();
        match (tower.features(pixels, layer), fused.features(&host, dims, layer)) {
            (Ok((want, grid)), Ok((got, fused_grid))) => {
                prop_assert_eq!(grid, fused_grid);
                prop_assert_eq!(want.dims().iter().product::<usize>(), got.len());
                let d = max_diff(&want.into_data().into_vec::<f32>().unwrap(), &got);
                prop_assert!(d <= 1e-4, "layer {}: {}", layer, d);
            }
            (Err(VisionError::Layer { .. }), Err(VisionError::Layer { .. })) => {}
            (want, got) => prop_assert!(false, "tower {:?} vs fused {:?}", want.map(|_| ()), got.map(|_| ())),
        }
    }
}

/// Pixels that do not fit are refused as the tower refuses them.
#[test]
fn fused_tower_refuses_bad_pixels() {
    let cfg = VisionConfig::new(TowerKind::Clip, 32, 8, 16, 40, 1, 2);
    let fused = FusedTower::new(&cfg.init::<B>(&Default::default()));
    assert!(matches!(fused.features(&[0.0; 10], [1, 3, 32, 32], -1), Err(VisionError::Shape { .. })));
    assert!(matches!(fused.features(&[0.0; 3 * 4 * 4], [1, 3, 4, 4], -1), Err(VisionError::Shape { .. })));
    assert!(matches!(fused.features(&vec![0.0; 3 * 32 * 32], [1, 3, 32, 32], 5), Err(VisionError::Layer { .. })));
}
