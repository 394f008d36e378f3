//! Each malformed checkpoint gives its own specific error: truncated file, bad header, wrong
//! dtype, missing key, extra key, wrong shape, missing file.

use burn::backend::NdArray;
use visualrwkv_rwkv::checkpoint::write_safetensors;
use visualrwkv_rwkv::{CheckpointError, ConfigError, KeyProblem, RwkvError, TensorMap, load_safetensors};

type B = NdArray;

fn fixture() -> String {
    format!("{}/../../tests/fixtures/rwkv6_tiny_a_weights.safetensors", env!("CARGO_MANIFEST_DIR"))
}

fn tmp(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("visualrwkv-ckpt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn load(path: &std::path::Path) -> RwkvError {
    load_safetensors::<B>(path, &Default::default()).expect_err("loading must fail")
}

#[test]
fn missing_file() {
    assert!(matches!(
        load(std::path::Path::new("/nonexistent/x.safetensors")),
        RwkvError::Checkpoint(CheckpointError::Io { .. })
    ));
}

#[test]
fn truncated_file_and_bad_header() {
    let bytes = std::fs::read(fixture()).unwrap();
    let p = tmp("truncated.safetensors");
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    let e = load(&p);
    assert!(matches!(e, RwkvError::Checkpoint(CheckpointError::Format { .. })), "{e}");
    let p = tmp("header.safetensors");
    let mut bad = bytes.clone();
    bad[8..16].copy_from_slice(b"{garbage");
    std::fs::write(&p, &bad).unwrap();
    assert!(matches!(load(&p), RwkvError::Checkpoint(CheckpointError::Format { .. })));
    let p = tmp("empty.safetensors");
    std::fs::write(&p, b"").unwrap();
    assert!(matches!(load(&p), RwkvError::Checkpoint(CheckpointError::Format { .. })));
}

#[test]
fn wrong_dtype() {
    // A valid file holding an I32 tensor.
    let p = tmp("dtype.safetensors");
    let data = vec![0u8; 16];
    let view = safetensors::tensor::TensorView::new(safetensors::Dtype::I32, vec![4], &data).unwrap();
    safetensors::serialize_to_file(vec![("emb.weight".to_string(), view)], None, &p).unwrap();
    let e = load(&p);
    assert!(matches!(&e, RwkvError::Checkpoint(CheckpointError::Dtype { key, .. }) if key == "emb.weight"), "{e}");
}

fn edited(name: &str, edit: impl FnOnce(&mut TensorMap)) -> RwkvError {
    let mut map = TensorMap::read_safetensors(fixture()).unwrap();
    edit(&mut map);
    let p = tmp(name);
    write_safetensors(&map, &p).unwrap();
    load(&p)
}

#[test]
fn missing_extra_and_misshaped_keys_are_each_named() {
    let e = edited("missing.safetensors", |m| {
        m.tensors.remove("blocks.1.att.gate.weight");
    });
    match &e {
        RwkvError::Checkpoint(CheckpointError::Keys { problems, .. }) => {
            assert_eq!(problems, &[KeyProblem::Missing("blocks.1.att.gate.weight".into())])
        }
        other => panic!("{other}"),
    }
    assert!(e.to_string().contains("missing key `blocks.1.att.gate.weight`"), "{e}");

    let e = edited("extra.safetensors", |m| {
        m.tensors.insert("blocks.0.att.time_state".into(), (vec![2, 64, 64], vec![0.0; 2 * 64 * 64]));
    });
    assert!(
        matches!(&e, RwkvError::Checkpoint(CheckpointError::Keys { problems, .. }) if problems == &[KeyProblem::Unexpected("blocks.0.att.time_state".into())]),
        "{e}"
    );

    let e = edited("shape.safetensors", |m| {
        m.tensors.insert("blocks.0.ffn.value.weight".into(), (vec![128, 255], vec![0.0; 128 * 255]));
        m.tensors.remove("ln_out.bias");
    });
    match &e {
        RwkvError::Checkpoint(CheckpointError::Keys { problems, .. }) => {
            assert!(problems.contains(&KeyProblem::Shape {
                key: "blocks.0.ffn.value.weight".into(),
                expected: vec![128, 256],
                found: vec![128, 255]
            }));
            assert!(problems.contains(&KeyProblem::Missing("ln_out.bias".into())));
        }
        other => panic!("{other}"),
    }

    let e = edited("noemb.safetensors", |m| {
        m.tensors.remove("emb.weight");
    });
    assert!(matches!(&e, RwkvError::Config { why: ConfigError::MissingKey(k), .. } if k == "emb.weight"), "{e}");
}

#[test]
fn half_precision_checkpoints_load() {
    // The fixture re-saved as BF16 and F16 gives the same model up to rounding.
    let map = TensorMap::read_safetensors(fixture()).unwrap();
    for (dtype, name) in [(safetensors::Dtype::BF16, "bf16"), (safetensors::Dtype::F16, "f16")] {
        let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = map
            .tensors
            .iter()
            .map(|(k, (s, v))| {
                let b = v
                    .iter()
                    .flat_map(|&x| match name {
                        "bf16" => half::bf16::from_f32(x).to_le_bytes(),
                        _ => half::f16::from_f32(x).to_le_bytes(),
                    })
                    .collect();
                (k.clone(), s.clone(), b)
            })
            .collect();
        let views: Vec<_> = bytes
            .iter()
            .map(|(k, s, b)| (k.clone(), safetensors::tensor::TensorView::new(dtype, s.clone(), b).unwrap()))
            .collect();
        let p = tmp(&format!("{name}.safetensors"));
        safetensors::serialize_to_file(views, None, &p).unwrap();
        let loaded = TensorMap::read_safetensors(&p).unwrap();
        let tol = if name == "bf16" { 1e-2 } else { 1e-3 };
        for (k, (_, v)) in &map.tensors {
            let w = &loaded.tensors[k].1;
            for (a, b) in v.iter().zip(w) {
                assert!((a - b).abs() <= tol * a.abs().max(1e-3), "{name} {k}: {a} vs {b}");
            }
        }
        load_safetensors::<B>(&p, &Default::default()).unwrap();
    }
}
