//! Official `.pth` checkpoints (pickled state dicts, bf16) load through burn's PyTorch reader.
//! The fixture is the tiny model's weights cast to bf16 and saved by `torch.save`
//! (`scripts/make-pth-fixture.py`).

use burn::backend::NdArray;
use burn::tensor::{Int, Tensor, TensorData};
use visualrwkv_rwkv::{CheckpointError, RwkvConfig, TensorMap, load};

fn fixture(name: &str) -> String {
    format!("{}/../../tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn bf16_pth_matches_the_safetensors_weights_rounded_to_bf16() {
    let pth = TensorMap::read(fixture("rwkv6_tiny_a_weights_bf16.pth")).unwrap();
    let st = TensorMap::read(fixture("rwkv6_tiny_a_weights.safetensors")).unwrap();
    assert_eq!(pth.tensors.len(), st.tensors.len());
    for (k, (shape, v)) in &st.tensors {
        let (s2, v2) = &pth.tensors[k];
        assert_eq!(s2, shape, "{k}");
        for (a, b) in v.iter().zip(v2) {
            assert_eq!(half::bf16::from_f32(*a).to_f32(), *b, "{k}");
        }
    }
    assert_eq!(RwkvConfig::from_checkpoint(&pth).unwrap(), RwkvConfig::from_checkpoint(&st).unwrap());
}

#[test]
fn bf16_pth_model_runs_close_to_the_f32_goldens() {
    let dev = Default::default();
    let m16 = load::<NdArray>(fixture("rwkv6_tiny_a_weights_bf16.pth"), &dev).unwrap();
    let m32 = load::<NdArray>(fixture("rwkv6_tiny_a_weights.safetensors"), &dev).unwrap();
    let ids = Tensor::<NdArray, 2, Int>::from_data(TensorData::new(vec![22i64, 150, 73, 23, 147, 45], [1, 6]), &dev);
    let a = m16.forward(ids.clone(), None).unwrap().logits.into_data().into_vec::<f32>().unwrap();
    let b = m32.forward(ids, None).unwrap().logits.into_data().into_vec::<f32>().unwrap();
    let d = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    assert!(d < 0.1, "bf16 vs f32 logits differ by {d}");
}

#[test]
fn non_checkpoints_are_errors() {
    let p = std::env::temp_dir().join(format!("visualrwkv-pth-{}.pth", std::process::id()));
    std::fs::write(&p, b"this is not a zip or a pickle").unwrap();
    assert!(matches!(TensorMap::read(&p), Err(CheckpointError::Format { .. })));
    std::fs::remove_file(&p).ok();
    assert!(matches!(TensorMap::read("/nonexistent/model.pth"), Err(CheckpointError::Io { .. })));
}

/// A `.pth` and a safetensors file read tensor by tensor (`TensorSource`) give what reading
/// them whole gives, and a model loaded lazily from the `.pth` equals the eager one.
#[test]
fn tensor_sources_read_what_the_whole_file_holds() {
    use visualrwkv_rwkv::{Rwkv, TensorSource};
    for name in ["rwkv6_tiny_a_weights_bf16.pth", "rwkv6_tiny_a_weights.safetensors"] {
        let whole = TensorMap::read(fixture(name)).unwrap();
        let source = TensorSource::open(fixture(name)).unwrap();
        let read = source.read_skipping(|_| false).unwrap();
        assert_eq!(read.tensors, whole.tensors, "{name}");
        let (shape, values) = source.values("blocks.1.att.key.weight").unwrap();
        assert_eq!(&(shape, values), &whole.tensors["blocks.1.att.key.weight"], "{name}");
        let blocks = source.with_prefix("blocks.").read_skipping(|k| !k.starts_with("1.")).unwrap();
        assert_eq!(blocks.tensors["1.ln1.weight"], whole.tensors["blocks.1.ln1.weight"]);
        assert!(blocks.tensors.keys().all(|k| k.starts_with("1.")), "{name}: {:?}", blocks.tensors.keys());
        assert!(source.values("no.such.key").unwrap_err().to_string().contains("no.such.key"));
        let dev = Default::default();
        let lazy = Rwkv::<NdArray>::from_tensors_lazily(&whole, &source, &dev).unwrap();
        let eager = Rwkv::<NdArray>::from_tensors(&whole, &dev).unwrap();
        let ids = burn::tensor::Tensor::<NdArray, 2, burn::tensor::Int>::from_data(
            burn::tensor::TensorData::new(vec![1i64, 2, 3], [1, 3]),
            &dev,
        );
        let a = lazy.forward(ids.clone(), None).unwrap().logits.into_data().into_vec::<f32>().unwrap();
        let b = eager.forward(ids, None).unwrap().logits.into_data().into_vec::<f32>().unwrap();
        assert_eq!(a, b, "{name}");
    }
}
