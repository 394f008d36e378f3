//! One step of several independent sequences at once ([`Decoder::step_batch`]): the layer code
//! of `mix.rs` on a batch of rows, row `i` the next token of sequence `i` ([`Batch`], an
//! [`Exec`]).
//!
//! A decode step streams every weight once for a single row: memory-bound. With `n` sequences
//! stepped together each projection multiplies all `n` rows with each weight row while it is
//! in cache (`Matrix::matmul_few`; a GEMM above 64 rows), so the weights are read once for all
//! of them — what a server decoding many requests at once needs (continuous batching).
//! The rows share nothing else: each row's token shift reads its own sequence's carried rows,
//! its WKV step its own state (sequences spread over rayon's pool), and the head gives every
//! row's logits.
//!
//! # Shapes
//!
//! `n` token ids `[n]` and `n` states (each as [`super::HostState`]) → logits `[n][V]`; the
//! residual stream inside is `[n, C]`.

use rayon::prelude::*;
use visualrwkv_wkv::reference::Dims;

use super::mix::{self, Exec, Head, Pool, Recurrence, Shift};
use super::prefill::{Gemm, par_rows, set_shift_row, shift_row};
use super::{Decoder, HostLayerState, HostState, Matrix, TokenId};
use crate::{LmDims, RwkvError};

/// One row per sequence on the batched products and rayon's pool, as an [`Exec`]: a layer's state is the list
/// of that layer's states of the sequences, in row order.
#[derive(Default)]
struct Batch<'s> {
    gemm: Gemm,
    states: std::marker::PhantomData<&'s mut HostLayerState>,
}

impl<'s> Exec for Batch<'s> {
    type State = Vec<&'s mut HostLayerState>;

    fn pool(&mut self) -> &mut Pool {
        &mut self.gemm.pool
    }

    fn products<const K: usize>(&mut self, t: usize, jobs: [(&Matrix, &[f32]); K]) -> [Vec<f32>; K] {
        self.gemm.products(t, jobs)
    }

    fn rows(&self, buf: &mut [f32], width: usize, f: impl Fn(usize, &mut [f32]) + Sync + Send) {
        par_rows(buf, width, f);
    }

    fn previous_rows<'r>(&self, s: &'r Self::State, which: Shift, _x: &'r [f32], _c: usize) -> Vec<&'r [f32]> {
        s.iter().map(|layer| shift_row(layer, which)).collect()
    }

    fn store_shift(&self, s: &mut Self::State, which: Shift, x: &[f32], c: usize) {
        for (layer, row) in s.iter_mut().zip(x.chunks(c)) {
            set_shift_row(layer, which, row);
        }
    }

    fn wkv(&mut self, s: &mut Self::State, d: &LmDims, t: usize, x: Recurrence<'_>) -> Result<Vec<f32>, RwkvError> {
        let a = d.n_head * d.head_size;
        let mut y = self.gemm.pool.take(t * a);
        let dims = Dims::new(1, 1, d.n_head, d.head_size);
        y.par_chunks_mut(a)
            .zip(s.par_iter_mut())
            .enumerate()
            .try_for_each(|(i, (y, layer))| x.rows(i * a..(i + 1) * a).run(dims, &mut layer.wkv, y))?;
        Ok(y)
    }
}

impl Decoder {
    /// One step of each of several sequences at once: `tokens[i]` from `states[i]`, every
    /// projection one product over the batch (see the module docs). Updates each state and returns
    /// each sequence's logits `[V]`, equal to [`Decoder::step`] on each sequence alone up to
    /// rounding (a batch of one runs [`Decoder::step`] itself). Errors when the lengths differ,
    /// on an id outside the vocabulary or a state of another shape of model.
    pub fn step_batch(&self, tokens: &[TokenId], states: &mut [&mut HostState]) -> Result<Vec<Vec<f32>>, RwkvError> {
        if tokens.len() != states.len() {
            return Err(RwkvError::Shape {
                what: "states of a batched step (one per token)".into(),
                expected: vec![tokens.len()],
                found: vec![states.len()],
            });
        }
        match states {
            [] => return Ok(Vec::new()),
            [one] => return Ok(vec![self.step(tokens[0], one)?]),
            _ => {}
        }
        for s in states.iter() {
            s.check_for(&self.dims)?;
        }
        let x = self.embed(tokens)?;
        let mut layers: Vec<Vec<&mut HostLayerState>> =
            (0..self.dims.n_layer).map(|_| Vec::with_capacity(states.len())).collect();
        for s in states.iter_mut() {
            for (per_layer, layer) in layers.iter_mut().zip(s.layers.iter_mut()) {
                per_layer.push(layer);
            }
        }
        let logits = mix::forward(&mut Batch::default(), self, &x, &mut layers, &[], Head::All)?;
        Ok(logits.chunks(self.dims.vocab_size).map(<[f32]>::to_vec).collect())
    }
}
