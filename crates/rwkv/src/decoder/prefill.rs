//! Sequence mode of [`Decoder`]: a whole prompt at once, for prefilling a state before decoding —
//! the layer code of `mix.rs` on all the prompt's rows ([`Gemm`], an [`Exec`]).
//!
//! Each projection runs as one GEMM over all the prompt's rows (the dense work, read once per
//! prompt instead of once per token), the recurrence through the CPU WKV6 / WKV7 kernels
//! ([`visualrwkv_wkv::cpu`], [`visualrwkv_wkv::wkv7::cpu`]), and the row-wise parts (norms, token shift, LoRAs' activations,
//! gating) in place, rows spread over rayon's pool. Only the last row goes through `ln_out` and
//! the head, as a generator needs (the official package's sequence mode does the same).
//!
//! # Shapes
//!
//! Prompt of `T` rows: token ids `[T]` or embedding rows `[T, C]` (row-major) → logits `[V]` of
//! the last row; the state as in [`super::HostState`].

use rayon::prelude::*;
use visualrwkv_wkv::reference::Dims;

use super::matrix::FEW_ROWS_MAX;
use super::mix::{self, Exec, Head, Pool, Recurrence, Shift};
use super::{Decoder, HostLayerState, HostState, Matrix, RowOrder, TokenId};
use crate::{LmDims, RwkvError};

/// Many rows on GEMMs and rayon's pool, as an [`Exec`].
#[derive(Default)]
pub(super) struct Gemm {
    pub(super) pool: Pool,
}

impl Gemm {
    /// `y_j = x_j · W_jᵀ` over `t` rows: one GEMM per job; a GEMV for one row, and each weight
    /// row read once for all rows up to [`FEW_ROWS_MAX`] (a batched decode step, a short prompt).
    pub(super) fn products<const K: usize>(&mut self, t: usize, jobs: [(&Matrix, &[f32]); K]) -> [Vec<f32>; K] {
        jobs.map(|(m, x)| {
            let mut y = self.pool.take(t * m.out);
            match t {
                1 => m.matvec(x, &mut y),
                2..=FEW_ROWS_MAX => m.matmul_few(x, t, &mut y),
                _ => m.matmul(x, t, &mut y, &mut self.pool.weights),
            }
            y
        })
    }
}

/// `f(row index, row)` on every `width`-wide row of `buf`, rows spread over rayon's pool.
pub(super) fn par_rows(buf: &mut [f32], width: usize, f: impl Fn(usize, &mut [f32]) + Sync + Send) {
    buf.par_chunks_mut(width).enumerate().for_each(|(i, row)| f(i, row));
}

/// The shift row `which` of one layer's state.
pub(super) fn shift_row(s: &HostLayerState, which: Shift) -> &[f32] {
    match which {
        Shift::TimeMix => &s.att_shift,
        Shift::ChannelMix => &s.ffn_shift,
    }
}

/// Overwrites the shift row `which` of one layer's state with `row`.
pub(super) fn set_shift_row(s: &mut HostLayerState, which: Shift, row: &[f32]) {
    match which {
        Shift::TimeMix => s.att_shift.copy_from_slice(row),
        Shift::ChannelMix => s.ffn_shift.copy_from_slice(row),
    }
}

impl Exec for Gemm {
    type State = HostLayerState;

    fn pool(&mut self) -> &mut Pool {
        &mut self.pool
    }

    fn products<const K: usize>(&mut self, t: usize, jobs: [(&Matrix, &[f32]); K]) -> [Vec<f32>; K] {
        Gemm::products(self, t, jobs)
    }

    fn rows(&self, buf: &mut [f32], width: usize, f: impl Fn(usize, &mut [f32]) + Sync + Send) {
        par_rows(buf, width, f);
    }

    fn previous_rows<'s>(&self, s: &'s HostLayerState, which: Shift, x: &'s [f32], c: usize) -> Vec<&'s [f32]> {
        mix::carried_then_rows(shift_row(s, which), x, c)
    }

    fn store_shift(&self, s: &mut HostLayerState, which: Shift, x: &[f32], c: usize) {
        set_shift_row(s, which, &x[x.len() - c..]);
    }

    fn wkv(&mut self, s: &mut HostLayerState, d: &LmDims, t: usize, x: Recurrence<'_>) -> Result<Vec<f32>, RwkvError> {
        let mut y = self.pool.take(t * d.n_head * d.head_size);
        x.run(Dims::new(1, t, d.n_head, d.head_size), &mut s.wkv, &mut y)?;
        Ok(y)
    }
}

impl Decoder {
    /// Runs the prompt `tokens` from `state` in sequence mode (see the module docs): updates
    /// `state` and returns the logits `[V]` after the last token. Equal to [`Decoder::run`] up to
    /// rounding, several times faster on prompts of more than a few tokens.
    pub fn prefill(&self, tokens: &[TokenId], state: &mut HostState) -> Result<Vec<f32>, RwkvError> {
        if tokens.is_empty() {
            return Err(RwkvError::EmptyInput { what: "the prompt to prefill", shape: vec![0] });
        }
        self.prefill_embeddings(&self.embed(tokens)?, state)
    }

    /// Runs the embedding rows `x` `[T, C]` (before `ln0`; e.g. projected image features mixed
    /// with token embeddings) from `state` in sequence mode; updates `state` and returns the
    /// logits `[V]` after the last row.
    pub fn prefill_embeddings(&self, x: &[f32], state: &mut HostState) -> Result<Vec<f32>, RwkvError> {
        self.prefill_embeddings_ordered(x, state, &[])
    }

    /// [`Decoder::prefill_embeddings`] with layer `l` reading the rows in `orders[l]`'s order
    /// (identity where `orders` has `None` or no entry): a VisualRWKV prompt whose image span
    /// each layer scans in its own order. Returns the logits of the sequence's last row (every
    /// layer writes its rows back in place, as the burn model does); the state ends after the
    /// last row each layer read.
    pub fn prefill_embeddings_ordered(
        &self,
        x: &[f32],
        state: &mut HostState,
        orders: &[Option<RowOrder>],
    ) -> Result<Vec<f32>, RwkvError> {
        self.sequence(x, state, orders, Head::Last)
    }

    /// Every row's logits `[T, V]` (row-major) of the embedding rows `x` `[T, C]` run from
    /// `state` in sequence mode with the row `orders` of
    /// [`Decoder::prefill_embeddings_ordered`]; updates `state`.
    pub fn logits_ordered(
        &self,
        x: &[f32],
        state: &mut HostState,
        orders: &[Option<RowOrder>],
    ) -> Result<Vec<f32>, RwkvError> {
        self.sequence(x, state, orders, Head::All)
    }

    /// The checks and the pass behind the sequence-mode entry points.
    fn sequence(
        &self,
        x: &[f32],
        state: &mut HostState,
        orders: &[Option<RowOrder>],
        head: Head,
    ) -> Result<Vec<f32>, RwkvError> {
        let c = self.dims.n_embd;
        if x.is_empty() || !x.len().is_multiple_of(c) {
            return Err(RwkvError::Shape {
                what: "prefill embedding rows (flattened [T, C])".into(),
                expected: vec![x.len().div_ceil(c).max(1) * c],
                found: vec![x.len()],
            });
        }
        let t = x.len() / c;
        if orders.len() > self.dims.n_layer {
            return Err(RwkvError::LayerOutOfRange { layer: orders.len() - 1, layers: self.dims.n_layer });
        }
        if let Some((l, o)) =
            orders.iter().enumerate().find_map(|(l, o)| o.as_ref().filter(|o| o.len() != t).map(|o| (l, o)))
        {
            return Err(RwkvError::Shape {
                what: format!("row order of layer {l}"),
                expected: vec![t],
                found: vec![o.len()],
            });
        }
        state.check_for(&self.dims)?;
        mix::forward(&mut Gemm::default(), self, x, &mut state.layers, orders, head)
    }
}
