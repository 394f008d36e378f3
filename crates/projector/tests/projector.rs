//! Every projector design: shapes, hand-computed values, save → infer → load round trips, and
//! the errors for bad keys and inputs.

use burn::backend::NdArray;
use burn::tensor::Tensor;
use visualrwkv_checkpoint::{CheckpointError, KeyProblem, TensorMap};
use visualrwkv_projector::{Project, Projector, ProjectorConfig, ProjectorError, ProjectorKind, features};

type B = NdArray;

const KINDS: [ProjectorKind; 5] = [
    ProjectorKind::Linear,
    ProjectorKind::MirroredLinear,
    ProjectorKind::Mlp2xGelu,
    ProjectorKind::ContextGating,
    ProjectorKind::ContextGatingLn,
];

fn values(t: Tensor<B, 3>) -> Vec<f32> {
    t.into_data().into_vec::<f32>().unwrap()
}

fn map(entries: &[(&str, Vec<usize>, Vec<f32>)]) -> TensorMap {
    TensorMap {
        origin: "test".into(),
        tensors: entries.iter().map(|(k, s, v)| (k.to_string(), (s.clone(), v.clone()))).collect(),
    }
}

fn build(entries: &[(&str, Vec<usize>, Vec<f32>)], vision_dim: Option<usize>) -> Projector<B> {
    let m = map(entries);
    ProjectorConfig::infer(&m, vision_dim).unwrap().from_tensors(&m, &Default::default()).unwrap()
}

#[test]
fn shapes_and_round_trips_for_every_design() {
    let dev = Default::default();
    let x = Tensor::<B, 3>::random([2, 5, 6], burn::tensor::Distribution::Normal(0.0, 1.0), &dev);
    for kind in KINDS {
        let p = ProjectorConfig::new(kind, 6, 4).init::<B>(&dev);
        assert_eq!((p.kind(), p.in_dim(), p.out_dim()), (kind, 6, 4));
        let y = p.project(x.clone()).unwrap();
        assert_eq!(y.dims(), [2, 5, 4], "{kind:?}");
        // Save under `proj.`, infer the design back, load, and get the same output.
        let saved = p.to_tensor_map("proj.").unwrap().strip_prefix("proj.");
        let cfg = ProjectorConfig::infer(&saved, Some(6)).unwrap();
        assert_eq!(cfg, ProjectorConfig::new(kind, 6, 4));
        let q = cfg.from_tensors::<B>(&saved, &dev).unwrap();
        assert_eq!(values(q.project(x.clone()).unwrap()), values(y), "{kind:?}");
    }
}

#[test]
fn linear_is_a_matrix_product_without_bias() {
    let p = build(&[("weight", vec![3, 2], vec![1., 2., 3., 4., 5., 6.])], None);
    let y = values(p.project(features(vec![1., 1., 0., -1.], [1, 2, 2], &Default::default())).unwrap());
    assert_eq!(y, vec![3., 7., 11., -2., -4., -6.]);
}

#[test]
fn mirrored_linear_pairs_each_row_with_its_mirror() {
    let p = build(&[("weight", vec![1, 4], vec![1., 10., 100., 1000.])], Some(2));
    assert_eq!(p.kind(), ProjectorKind::MirroredLinear);
    let y = values(p.project(features(vec![1., 0., 0., 1., 2., 2.], [1, 3, 2], &Default::default())).unwrap());
    // Row t: x_t·[1, 10] + x_{2−t}·[100, 1000].
    assert_eq!(y, vec![2201., 1010., 122.]);
}

#[test]
fn mlp2x_gelu_uses_exact_gelu_and_biases() {
    let id = vec![1., 0., 0., 1.];
    let p = build(
        &[
            ("0.weight", vec![2, 2], id.clone()),
            ("0.bias", vec![2], vec![0., 0.]),
            ("2.weight", vec![2, 2], id),
            ("2.bias", vec![2], vec![1., 0.]),
        ],
        None,
    );
    let y = values(p.project(features(vec![1., -1.], [1, 1, 2], &Default::default())).unwrap());
    // GELU(1) = Φ(1) = 0.8413447, GELU(−1) = −(1 − Φ(1)) = −0.1586553.
    assert!((y[0] - 1.841_344_7).abs() < 1e-5 && (y[1] + 0.158_655_3).abs() < 1e-5, "{y:?}");
}

#[test]
fn context_gating_halves_with_a_zero_gate() {
    let id = vec![1., 0., 0., 1.];
    let p = build(
        &[
            ("proj.weight", vec![2, 2], id.clone()),
            ("gate.weight", vec![2, 2], vec![0.; 4]),
            ("o_proj.weight", vec![2, 2], id),
        ],
        None,
    );
    assert_eq!(p.kind(), ProjectorKind::ContextGating);
    let y = values(p.project(features(vec![3., -4.], [1, 1, 2], &Default::default())).unwrap());
    assert_eq!(y, vec![1.5, -2.0]);
}

/// VisualRWKV-7 v7.00's `MLPWithContextGating` equals the official module (its class executed
/// from `VisualRWKV-v7/v7.00/src/model.py`, `scripts/make-v700-projector-fixtures.py`) on
/// random weights, loaded from the official `proj.` keys.
#[test]
fn v700_context_gating_matches_the_official_module() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/v700/projector_golden.safetensors");
    let golden = TensorMap::read(path).unwrap();
    let p = visualrwkv_projector::load::<B>(path, "proj.", None, &Default::default()).unwrap();
    assert_eq!((p.kind(), p.in_dim(), p.out_dim()), (ProjectorKind::ContextGatingLn, 8, 12));
    for (input, expected) in [("pooled", "projected"), ("pooled16", "projected16")] {
        let (shape, x) = golden.tensors[input].clone();
        let y = values(p.project(features(x, [shape[0], shape[1], shape[2]], &Default::default())).unwrap());
        let want = &golden.tensors[expected].1;
        let diff = y.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(diff <= 1e-5, "{expected}: max diff {diff:e}");
    }
    // The same tensors saved back carry the official names and shapes.
    let saved = p.to_tensor_map("proj.").unwrap();
    let mut keys: Vec<_> = saved.tensors.iter().map(|(k, (s, _))| (k.clone(), s.clone())).collect();
    keys.sort();
    let names = ["proj.gate.weight", "proj.ln_v.bias", "proj.ln_v.weight", "proj.o_proj.weight"];
    let shapes = [vec![8, 8], vec![12], vec![12], vec![12, 8]];
    assert_eq!(keys, names.iter().map(|k| k.to_string()).zip(shapes).collect::<Vec<_>>());
}

#[test]
fn bad_keys_and_inputs_give_their_errors() {
    let dev = Default::default();
    // A missing bias and an extra key, each named.
    let m = map(&[
        ("0.weight", vec![2, 2], vec![0.; 4]),
        ("2.weight", vec![2, 2], vec![0.; 4]),
        ("2.bias", vec![2], vec![0.; 2]),
        ("extra", vec![1], vec![0.]),
    ]);
    let e = ProjectorConfig::infer(&m, None).unwrap().from_tensors::<B>(&m, &dev).unwrap_err();
    match e {
        ProjectorError::Checkpoint(CheckpointError::Keys { problems, .. }) => {
            assert!(problems.contains(&KeyProblem::Missing("0.bias".into())), "{problems:?}");
            assert!(problems.contains(&KeyProblem::Unexpected("extra".into())), "{problems:?}");
        }
        other => panic!("unexpected {other}"),
    }
    // A wrongly shaped gate.
    let m = map(&[
        ("proj.weight", vec![2, 3], vec![0.; 6]),
        ("gate.weight", vec![2, 3], vec![0.; 6]),
        ("o_proj.weight", vec![2, 2], vec![0.; 4]),
    ]);
    let e = ProjectorConfig::infer(&m, None).unwrap().from_tensors::<B>(&m, &dev).unwrap_err();
    assert!(
        matches!(&e, ProjectorError::Checkpoint(CheckpointError::Keys { problems, .. })
        if problems == &[KeyProblem::Shape { key: "gate.weight".into(), expected: vec![2, 2], found: vec![2, 3] }]),
        "{e}"
    );
    // No projector at all.
    assert!(matches!(ProjectorConfig::infer(&map(&[]), None), Err(ProjectorError::Kind { .. })));
    // Input of the wrong width.
    let p = ProjectorConfig::new(ProjectorKind::Linear, 4, 2).init::<B>(&dev);
    let e = p.project(Tensor::zeros([1, 3, 5], &dev)).unwrap_err();
    assert!(matches!(e, ProjectorError::Shape { expected: 4, .. }), "{e}");
}

#[test]
fn loads_the_projector_of_a_visualrwkv_checkpoint() {
    let dir = std::env::temp_dir().join(format!("visualrwkv-proj-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("visualrwkv.safetensors");
    let m =
        map(&[("proj.weight", vec![3, 2], vec![1., 2., 3., 4., 5., 6.]), ("rwkv.emb.weight", vec![1, 3], vec![0.; 3])]);
    visualrwkv_checkpoint::write_safetensors(&m, &path).unwrap();
    let p = visualrwkv_projector::load::<B>(&path, "proj.", Some(2), &Default::default()).unwrap();
    assert_eq!((p.kind(), p.in_dim(), p.out_dim()), (ProjectorKind::Linear, 2, 3));
}
