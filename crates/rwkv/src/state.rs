//! The recurrent state of an RWKV-6 model.
//!
//! # Shapes
//!
//! Per layer: `att_shift` `[B, C]` (the ln1 output of the last processed row), `wkv`
//! `[B, H, N, N]` (`[batch, head, key, value]`, as in spec §1.4), `ffn_shift` `[B, C]` (the ln2
//! output of the last processed row).

use burn::tensor::{Tensor, backend::Backend};

use crate::{RwkvConfig, RwkvError};

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
        let (c, h, n) = (config.n_embd, config.n_head, config.head_size);
        let layer = LayerState {
            att_shift: Tensor::zeros([batch, c], device),
            wkv: Tensor::zeros([batch, h, n, n], device),
            ffn_shift: Tensor::zeros([batch, c], device),
        };
        Self { layers: vec![layer; config.n_layer] }
    }

    /// Number of batch rows.
    pub fn batch_size(&self) -> usize {
        self.layers.first().map_or(0, |l| l.att_shift.dims()[0])
    }

    /// The rows `rows` of every tensor.
    pub fn batch_rows(&self, rows: std::ops::Range<usize>) -> Result<Self, RwkvError> {
        let b = self.batch_size();
        if rows.start >= rows.end || rows.end > b {
            return Err(RwkvError::Input(format!("batch rows {rows:?} out of range for a state of {b} rows")));
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
        if states.is_empty() || states.iter().any(|s| s.layers.len() != n_layer) {
            return Err(RwkvError::Input("cannot concatenate states with different layer counts".into()));
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

    /// Checks that this state fits `config` with `batch` rows.
    pub fn check(&self, config: &RwkvConfig, batch: usize) -> Result<(), RwkvError> {
        if self.layers.len() != config.n_layer {
            return Err(RwkvError::Shape {
                what: "state layers".into(),
                expected: vec![config.n_layer],
                found: vec![self.layers.len()],
            });
        }
        let (c, h, n) = (config.n_embd, config.n_head, config.head_size);
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
