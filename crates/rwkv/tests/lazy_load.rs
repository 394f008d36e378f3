//! Loading for the fused engine: `Decoder::from_tensors` (the checkpoint's tensors moved into the
//! decoder, no burn model) computes exactly what `Decoder::new` of the loaded burn model computes,
//! and a model loaded with `Rwkv::from_tensors_lazily` holds no weights until something reads
//! them, then equals the eagerly loaded one.

use burn::backend::NdArray;
use burn::tensor::{Int, Tensor, TensorData};
use visualrwkv_checkpoint::table::any_initialized;
use visualrwkv_rwkv::checkpoint::write_safetensors_quantized;
use visualrwkv_rwkv::{Decoder, Rwkv, RwkvConfig, TensorMap, TensorSource, WeightDtype, load_fused, seeded};

type B = NdArray;

fn config() -> RwkvConfig {
    RwkvConfig { n_layer: 3, n_embd: 64, n_head: 2, head_size: 32, dim_ffn: 224, vocab_size: 97, d_mix: 4, d_decay: 8 }
}

fn model(seed: u64) -> Rwkv<B> {
    let dev = Default::default();
    seeded::<B, _>(&dev, seed, || config().init::<B>(&dev))
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
    for dtype in [WeightDtype::F32, WeightDtype::Bf16, WeightDtype::F16, WeightDtype::I8, WeightDtype::Q4] {
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

/// A checkpoint saved with the decoder's matrices quantised (`convert --quantize`) is a fraction
/// of the f32 file and loads into the decoder the f32 checkpoint gives in that type (same codes;
/// scales to an ulp); the burn model loaded beside it runs the dequantised weights, so it agrees
/// with the f32 decoder of that file, and the quantised decoder (int8 activations) stays close.
#[test]
fn quantised_checkpoints_load_into_the_same_decoder() {
    let original = model(5);
    let f32_path = saved(&original, "quantised");
    let f32_len = std::fs::metadata(&f32_path).unwrap().len() as f64;
    let tokens = [4u32, 90, 17, 17, 0, 63];
    let dev = Default::default();
    for (dtype, most) in [(WeightDtype::I8, 0.45), (WeightDtype::Q4, 0.35)] {
        let path = f32_path.with_file_name(format!("rwkv-{dtype:?}.safetensors"));
        write_safetensors_quantized(&original.to_tensor_map().unwrap(), dtype, &path).unwrap();
        let len = std::fs::metadata(&path).unwrap().len() as f64;
        assert!(len < most * f32_len, "{dtype:?}: {len} bytes against {f32_len} in f32");
        let (lazy, dec) = load_fused::<B>(&path, dtype, &dev).unwrap();
        let want = Decoder::new(&original, dtype).unwrap();
        let (mut a, mut b) = (dec.zero_state(), want.zero_state());
        let (got, expected) = (dec.prefill(&tokens, &mut a).unwrap(), want.prefill(&tokens, &mut b).unwrap());
        assert!(max_diff(&got, &expected) < 1e-5, "{dtype:?}: {}", max_diff(&got, &expected));
        // The burn model holds the dequantised weights: its logits are the quantised decoder's.
        let ids =
            Tensor::<B, 2, Int>::from_data(TensorData::new(tokens.map(i64::from).to_vec(), [1, tokens.len()]), &dev);
        let burn = lazy.forward(ids, None).unwrap().logits;
        let last: Vec<f32> =
            burn.slice([0..1, tokens.len() - 1..tokens.len(), 0..97]).into_data().convert::<f32>().into_vec().unwrap();
        // The f32 decoder of the same file runs those weights too; the quantised one multiplies
        // by activations rounded to int8 blocks as well, a small extra error.
        let (_, deq) = load_fused::<B>(&path, WeightDtype::F32, &dev).unwrap();
        let dequantised = deq.prefill(&tokens, &mut deq.zero_state()).unwrap();
        assert!(max_diff(&last, &dequantised) < 1e-4, "{dtype:?}: burn vs fused {}", max_diff(&last, &dequantised));
        assert!(
            max_diff(&dequantised, &got) < 0.05,
            "{dtype:?}: activations' rounding {}",
            max_diff(&dequantised, &got)
        );
        // Not the f32 weights: the f32 model's logits differ by the quantisation error.
        let f32_dec = Decoder::new(&original, WeightDtype::F32).unwrap();
        let exact = f32_dec.prefill(&tokens, &mut f32_dec.zero_state()).unwrap();
        assert!(max_diff(&exact, &got) > 1e-6, "{dtype:?}: quantisation left no trace");
    }
    std::fs::remove_dir_all(f32_path.parent().unwrap()).unwrap();
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}
