//! Helpers shared by the integration tests: fixture loading and tensor conversion.
#![allow(dead_code)]

use std::path::PathBuf;

use burn::tensor::{Tensor, TensorData, backend::Backend};
use safetensors::SafeTensors;

/// Path of a fixture in the workspace's `tests/fixtures/`.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures").join(name)
}

/// A named f32 tensor of a safetensors file, with its shape.
pub struct Loaded {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Reads every tensor of a safetensors fixture (all F32).
pub fn load(name: &str) -> std::collections::HashMap<String, Loaded> {
    let bytes = std::fs::read(fixture(name)).unwrap_or_else(|e| panic!("reading fixture {name}: {e}"));
    let st = SafeTensors::deserialize(&bytes).expect("valid safetensors fixture");
    st.tensors()
        .into_iter()
        .map(|(k, v)| {
            assert_eq!(v.dtype(), safetensors::Dtype::F32, "{k}");
            let data = v.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
            (k, Loaded { shape: v.shape().to_vec(), data })
        })
        .collect()
}

pub fn tensor<B: Backend, const D: usize>(v: &[f32], shape: [usize; D], dev: &B::Device) -> Tensor<B, D> {
    let dtype = <B::FloatElem as burn::tensor::Element>::dtype();
    Tensor::from_data(TensorData::new(v.to_vec(), shape).convert::<B::FloatElem>(), (dev, dtype))
}

pub fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec::<f32>().unwrap()
}

pub fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

pub fn to_f32(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

/// Largest absolute difference.
pub fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}
