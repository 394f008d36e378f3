//! Loading for the fused engine: `Decoder::from_tensors` (the checkpoint's tensors moved into the
//! decoder, no burn model) computes exactly what `Decoder::new` of the loaded burn model computes,
//! and a model loaded with `Rwkv::from_tensors_lazily` holds no weights until something reads
//! them, then equals the eagerly loaded one.

use burn::backend::NdArray;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use visualrwkv_checkpoint::table::any_initialized;
use visualrwkv_rwkv::{Decoder, Rwkv, RwkvConfig, TensorMap, TensorSource, WeightDtype};

type B = NdArray;

fn config() -> RwkvConfig {
    RwkvConfig { n_layer: 3, n_embd: 64, n_head: 2, head_size: 32, dim_ffn: 224, vocab_size: 97, d_mix: 4, d_decay: 8 }
}

fn model(seed: u64) -> Rwkv<B> {
    <B as Backend>::seed(&Default::default(), seed);
    config().init::<B>(&Default::default())
}

/// A checkpoint file of `model` in a fresh temporary folder.
fn saved(model: &Rwkv<B>, name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("visualrwkv-lazy-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("rwkv.safetensors");
    model.save_safetensors(&path).unwrap();
    path
}

#[test]
fn decoder_from_tensors_equals_decoder_of_the_burn_model() {
    let model = model(7);
    let tokens = [3u32, 96, 0, 41, 41, 7, 12];
    for dtype in [WeightDtype::F32, WeightDtype::Bf16, WeightDtype::F16, WeightDtype::I8] {
        let direct = Decoder::from_tensors(model.to_tensor_map().unwrap(), dtype).unwrap();
        let via_burn = Decoder::new(&model, dtype).unwrap();
        assert_eq!(direct.config(), via_burn.config());
        assert_eq!(direct.bytes_per_token(), via_burn.bytes_per_token());
        let (mut a, mut b) = (direct.zero_state(), via_burn.zero_state());
        // Same stored weights, same arithmetic: equal to the bit.
        assert_eq!(direct.prefill(&tokens, &mut a).unwrap(), via_burn.prefill(&tokens, &mut b).unwrap(), "{dtype:?}");
        assert_eq!(direct.step(5, &mut a).unwrap(), via_burn.step(5, &mut b).unwrap(), "{dtype:?}");
        assert_eq!(a, b);
    }
}

#[test]
fn decoder_from_tensors_reports_a_missing_key() {
    let mut map = model(1).to_tensor_map().unwrap();
    map.tensors.remove("blocks.2.att.gate.weight");
    let err = Decoder::from_tensors(map, WeightDtype::F32).unwrap_err().to_string();
    assert!(err.contains("blocks.2.att.gate.weight"), "{err}");
}

#[test]
fn a_lazily_loaded_model_reads_nothing_until_used_then_equals_the_eager_one() {
    let original = model(3);
    let path = saved(&original, "rwkv");
    let source = TensorSource::open(&path).unwrap();
    let map = TensorMap::read(&path).unwrap();
    let dev = Default::default();
    let lazy = Rwkv::<B>::from_tensors_lazily(&map, &source, &dev).unwrap();
    // Config, device and zero state come from shapes alone.
    assert_eq!(lazy.config(), config());
    let _ = lazy.zero_state(2);
    let _ = lazy.device();
    assert!(!any_initialized(&lazy), "a parameter was read before use");
    // The map can now be taken apart (here: dropped); the model reads the file.
    drop(map);
    let eager = Rwkv::<B>::from_tensors(&TensorMap::read(&path).unwrap(), &dev).unwrap();
    let ids: Tensor<B, 2, Int> = Tensor::from_data(TensorData::new(vec![1i64, 50, 96, 4], [1, 4]), &dev);
    let a = lazy.forward(ids.clone(), None).unwrap().logits.into_data().into_vec::<f32>().unwrap();
    let b = eager.forward(ids, None).unwrap().logits.into_data().into_vec::<f32>().unwrap();
    assert!(any_initialized(&lazy));
    assert_eq!(a, b);
    std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
}

#[test]
fn a_lazily_loaded_model_checks_its_keys_at_load() {
    let original = model(4);
    let path = saved(&original, "keys");
    let source = TensorSource::open(&path).unwrap();
    let mut map = TensorMap::read(&path).unwrap();
    map.tensors.remove("blocks.1.ffn.value.weight");
    let err = Rwkv::<B>::from_tensors_lazily(&map, &source, &Default::default()).unwrap_err().to_string();
    assert!(err.contains("blocks.1.ffn.value.weight"), "{err}");
    std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
}
