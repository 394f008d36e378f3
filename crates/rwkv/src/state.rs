//! The recurrent state of an RWKV-6 model.
//!
//! # Shapes
//!
//! Per layer: `att_shift` `[B, C]` (the ln1 output of the last processed row), `wkv`
//! `[B, H, N, N]` (`[batch, head, key, value]`, as in docs/model.md §1.4), `ffn_shift` `[B, C]` (the ln2
//! output of the last processed row).

use std::collections::HashMap;
use std::path::Path;

use burn::tensor::{Tensor, TensorData, backend::Backend};

use crate::checkpoint::{TensorMap, write_safetensors};
use crate::{RwkvConfig, RwkvError};
use visualrwkv_checkpoint::CheckpointError;

/// The state of one layer.
#[derive(Clone, Debug)]
pub struct LayerState<B: Backend> {
    /// Time-mix token-shift row `[B, C]`.
    pub att_shift: Tensor<B, 2>,
    /// WKV state `[B, H, N, N]`.
    pub wkv: Tensor<B, 4>,
    /// Channel-mix token-shift row `[B, C]`.
    pub ffn_shift: Tensor<B, 2>,
}

/// The state of a whole model: one [`LayerState`] per block. Clone it to branch a generation;
/// [`State::batch_rows`] slices batch rows, [`State::cat`] joins them.
#[derive(Clone, Debug)]
pub struct State<B: Backend> {
    /// Per-layer states, block order.
    pub layers: Vec<LayerState<B>>,
}

impl<B: Backend> State<B> {
    /// The zero state (the start of a sequence) for `batch` rows.
    pub fn zeros(config: &RwkvConfig, batch: usize, device: &B::Device) -> Self {
        Self::zeros_sized(config.n_layer, config.n_embd, config.n_head, config.head_size, batch, device)
    }

    /// The zero state of `n_layer` layers of width `c` with `h` heads of size `n` (any
    /// architecture with this state layout, RWKV-6 or -7).
    pub fn zeros_sized(n_layer: usize, c: usize, h: usize, n: usize, batch: usize, device: &B::Device) -> Self {
        let layer = LayerState {
            att_shift: Tensor::zeros([batch, c], device),
            wkv: Tensor::zeros([batch, h, n, n], device),
            ffn_shift: Tensor::zeros([batch, c], device),
        };
        Self { layers: vec![layer; n_layer] }
    }

    /// Number of batch rows.
    pub fn batch_size(&self) -> usize {
        self.layers.first().map_or(0, |l| l.att_shift.dims()[0])
    }

    /// The rows `rows` of every tensor.
    pub fn batch_rows(&self, rows: std::ops::Range<usize>) -> Result<Self, RwkvError> {
        let b = self.batch_size();
        if rows.start >= rows.end || rows.end > b {
            return Err(RwkvError::BatchRows { rows, batch: b });
        }
        let layers = self
            .layers
            .iter()
            .map(|l| {
                let [_, c] = l.att_shift.dims();
                let [_, h, n, _] = l.wkv.dims();
                LayerState {
                    att_shift: l.att_shift.clone().slice([rows.clone(), 0..c]),
                    wkv: l.wkv.clone().slice([rows.clone(), 0..h, 0..n, 0..n]),
                    ffn_shift: l.ffn_shift.clone().slice([rows.clone(), 0..c]),
                }
            })
            .collect();
        Ok(Self { layers })
    }

    /// Concatenates states along the batch axis.
    pub fn cat(states: Vec<Self>) -> Result<Self, RwkvError> {
        let n_layer = states.first().map_or(0, |s| s.layers.len());
        if states.is_empty() {
            return Err(RwkvError::EmptyInput { what: "the states to concatenate", shape: vec![0] });
        }
        if states.iter().any(|s| s.layers.len() != n_layer) {
            let found = states.iter().find(|s| s.layers.len() != n_layer).map_or(0, |s| s.layers.len());
            return Err(RwkvError::Shape {
                what: "state layers of `State::cat`".into(),
                expected: vec![n_layer],
                found: vec![found],
            });
        }
        let layers = (0..n_layer)
            .map(|l| LayerState {
                att_shift: Tensor::cat(states.iter().map(|s| s.layers[l].att_shift.clone()).collect(), 0),
                wkv: Tensor::cat(states.iter().map(|s| s.layers[l].wkv.clone()).collect(), 0),
                ffn_shift: Tensor::cat(states.iter().map(|s| s.layers[l].ffn_shift.clone()).collect(), 0),
            })
            .collect();
        Ok(Self { layers })
    }

    /// The state as tensors named like the official fixtures: `state.{l}.att_shift` `[B, C]`,
    /// `state.{l}.wkv` `[B, H, N, N]`, `state.{l}.ffn_shift` `[B, C]` (with `squeeze_batch` and
    /// one row: `[C]`, `[H, N, N]`, `[C]`, the fixtures' exact shapes).
    pub fn to_tensor_map(&self, squeeze_batch: bool) -> TensorMap {
        let host = |t: Vec<usize>, d: TensorData| {
            let shape = if squeeze_batch && t.first() == Some(&1) { t[1..].to_vec() } else { t };
            (shape, d.convert::<f32>().into_vec::<f32>().expect("f32"))
        };
        let mut tensors = HashMap::new();
        for (l, s) in self.layers.iter().enumerate() {
            tensors.insert(format!("state.{l}.att_shift"), host(s.att_shift.dims().to_vec(), s.att_shift.to_data()));
            tensors.insert(format!("state.{l}.wkv"), host(s.wkv.dims().to_vec(), s.wkv.to_data()));
            tensors.insert(format!("state.{l}.ffn_shift"), host(s.ffn_shift.dims().to_vec(), s.ffn_shift.to_data()));
        }
        TensorMap { origin: "state".into(), tensors }
    }

    /// Saves the state to safetensors (see [`State::to_tensor_map`]).
    pub fn save(&self, path: impl AsRef<Path>, squeeze_batch: bool) -> Result<(), RwkvError> {
        write_safetensors(&self.to_tensor_map(squeeze_batch), path)
    }

    /// Reads a state saved by [`State::save`] (batched or squeezed) for a model of `config`.
    /// Every missing or mis-shaped tensor is an error naming it.
    pub fn load(path: impl AsRef<Path>, config: &RwkvConfig, device: &B::Device) -> Result<Self, RwkvError> {
        Self::load_sized(path, config.n_layer, config.n_embd, config.n_head, config.head_size, device)
    }

    /// [`State::load`] for explicit sizes (`n_layer` layers, width `c`, `h` heads of size `n`):
    /// any architecture with this state layout, RWKV-6 or -7.
    pub fn load_sized(
        path: impl AsRef<Path>,
        n_layer: usize,
        c: usize,
        h: usize,
        n: usize,
        device: &B::Device,
    ) -> Result<Self, RwkvError> {
        let map = TensorMap::read_safetensors(path)?;
        let origin = map.origin.clone();
        let get = |key: String, tail: Vec<usize>| -> Result<(usize, Vec<f32>), RwkvError> {
            let keys_error = |problem| {
                RwkvError::Checkpoint(CheckpointError::Keys {
                    path: origin.clone(),
                    model: "an RWKV state".into(),
                    problems: vec![problem],
                })
            };
            let (shape, v) =
                map.tensors.get(&key).ok_or_else(|| keys_error(crate::KeyProblem::Missing(key.clone())))?;
            if shape == &tail {
                Ok((1, v.clone()))
            } else if shape.len() == tail.len() + 1 && shape[1..] == tail[..] && shape[0] > 0 {
                Ok((shape[0], v.clone()))
            } else {
                let mut expected = vec![1];
                expected.extend(&tail);
                Err(keys_error(crate::KeyProblem::Shape { key, expected, found: shape.clone() }))
            }
        };
        let mut layers = Vec::with_capacity(n_layer);
        let mut batch = None;
        for l in 0..n_layer {
            let (b1, att) = get(format!("state.{l}.att_shift"), vec![c])?;
            let (b2, wkv) = get(format!("state.{l}.wkv"), vec![h, n, n])?;
            let (b3, ffn) = get(format!("state.{l}.ffn_shift"), vec![c])?;
            let b = *batch.get_or_insert(b1);
            if b1 != b || b2 != b || b3 != b {
                return Err(RwkvError::Shape {
                    what: format!("{origin}: batch sizes of state.{l}.{{att_shift, wkv, ffn_shift}}"),
                    expected: vec![b, b, b],
                    found: vec![b1, b2, b3],
                });
            }
            layers.push(LayerState {
                att_shift: Tensor::from_data(TensorData::new(att, [b, c]), device),
                wkv: Tensor::from_data(TensorData::new(wkv, [b, h, n, n]), device),
                ffn_shift: Tensor::from_data(TensorData::new(ffn, [b, c]), device),
            });
        }
        Ok(Self { layers })
    }

    /// Checks that this state fits `config` with `batch` rows.
    pub fn check(&self, config: &RwkvConfig, batch: usize) -> Result<(), RwkvError> {
        self.check_sized(config.n_layer, config.n_embd, config.n_head, config.head_size, batch)
    }

    /// [`State::check`] against explicit sizes: `n_layer` layers of `[batch, c]` shifts and
    /// `[batch, h, n, n]` WKV states (any architecture with this state layout, RWKV-6 or -7).
    pub fn check_sized(&self, n_layer: usize, c: usize, h: usize, n: usize, batch: usize) -> Result<(), RwkvError> {
        if self.layers.len() != n_layer {
            return Err(RwkvError::Shape {
                what: "state layers".into(),
                expected: vec![n_layer],
                found: vec![self.layers.len()],
            });
        }
        for (l, s) in self.layers.iter().enumerate() {
            let check = |what: &str, found: Vec<usize>, expected: Vec<usize>| {
                if found == expected {
                    Ok(())
                } else {
                    Err(RwkvError::Shape { what: format!("state.{l}.{what}"), expected, found })
                }
            };
            check("att_shift", s.att_shift.dims().to_vec(), vec![batch, c])?;
            check("wkv", s.wkv.dims().to_vec(), vec![batch, h, n, n])?;
            check("ffn_shift", s.ffn_shift.dims().to_vec(), vec![batch, c])?;
        }
        Ok(())
    }
}
