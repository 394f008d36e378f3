//! The RWKV-6 language model: `emb`, `ln0` on every input row, blocks, `ln_out`, `head`.
//!
//! # Shapes
//!
//! Token ids `[B, T]` (Int) or embedding rows `[B, T, C]`; logits `[B, T, V]`; state as in
//! [`crate::state`].

use crate::dense::{RwkvBackend, linear};
use burn::module::{Module, Param};
use burn::nn::{Embedding, EmbeddingConfig, GroupNormConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::{Distribution, Int, Tensor, backend::Backend};

use crate::layers::{Block, ChannelMix, TimeMix};
use crate::state::State;
use crate::{RwkvConfig, RwkvError};

/// Epsilon of `ln_x` (`1e-5 · head_size_divisor²`, divisor 8).
pub const LN_X_EPS: f64 = 64e-5;

/// The RWKV-6 (x060) model.
#[derive(Module, Debug)]
pub struct Rwkv<B: Backend> {
    /// `emb` `[V, C]` (raw rows; `ln0` is applied in [`Rwkv::forward_embeddings`]).
    pub emb: Embedding<B>,
    /// `blocks.0.ln0`, applied to every input row (text and image alike).
    pub ln0: LayerNorm<B>,
    /// The blocks.
    pub blocks: Vec<Block<B>>,
    /// `ln_out`.
    pub ln_out: LayerNorm<B>,
    /// `head` `C → V`, no bias.
    pub head: Linear<B>,
}

/// Output of a forward pass: logits and the state after the last row.
#[derive(Clone, Debug)]
pub struct RwkvOutput<B: Backend> {
    /// Logits `[B, T, V]` (row t predicts token t + 1).
    pub logits: Tensor<B, 3>,
    /// State after the last row.
    pub state: State<B>,
}

impl RwkvConfig {
    /// A randomly initialised model of this configuration (for tests and training from scratch).
    /// Token-shift and decay parameters follow the official trainer's ranges; weights are uniform.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Rwkv<B> {
        let (c, a, f, v) = (self.n_embd, self.dim_att(), self.dim_ffn, self.vocab_size);
        let uni = |lo: f64, hi: f64| Distribution::Uniform(lo, hi);
        let p1 = |n: usize, d| Param::from_tensor(Tensor::<B, 1>::random([n], d, device));
        let p2 = |s: [usize; 2], d| Param::from_tensor(Tensor::<B, 2>::random(s, d, device));
        let linear = |i: usize, o: usize| LinearConfig::new(i, o).with_bias(false).init(device);
        let ln = || LayerNormConfig::new(c).init(device);
        let blocks = (0..self.n_layer)
            .map(|l| {
                let depth = l as f64 / self.n_layer.max(1) as f64;
                let att = TimeMix {
                    maa_x: p1(c, uni(0.0, 1.0)),
                    maa: p2([5, c], uni(0.0, 1.0)),
                    maa_w1: p2([c, 5 * self.d_mix], uni(-0.1, 0.1)),
                    maa_w2: Param::from_tensor(Tensor::random([5, self.d_mix, c], uni(-0.1, 0.1), device)),
                    decay: p1(a, uni(-6.0, -1.0 + depth)),
                    decay_w1: p2([c, self.d_decay], uni(-0.1, 0.1)),
                    decay_w2: p2([self.d_decay, a], uni(-0.1, 0.1)),
                    bonus: p2([self.n_head, self.head_size], uni(-0.5, 0.5)),
                    receptance: linear(c, a),
                    key: linear(c, a),
                    value: linear(c, a),
                    gate: linear(c, a),
                    output: linear(a, c),
                    ln_x: GroupNormConfig::new(self.n_head, a).with_epsilon(LN_X_EPS).init(device),
                };
                let ffn = ChannelMix {
                    maa_k: p1(c, uni(0.0, 1.0)),
                    maa_r: p1(c, uni(0.0, 1.0)),
                    key: linear(c, f),
                    receptance: linear(c, c),
                    value: linear(f, c),
                };
                Block { ln1: ln(), ln2: ln(), att, ffn }
            })
            .collect();
        Rwkv { emb: EmbeddingConfig::new(v, c).init(device), ln0: ln(), blocks, ln_out: ln(), head: linear(c, v) }
    }
}

impl<B: RwkvBackend> Rwkv<B> {
    /// The configuration, read off the parameter shapes.
    pub fn config(&self) -> RwkvConfig {
        let [v, c] = self.emb.weight.dims();
        let b0 = &self.blocks[0].att;
        let [h, n] = b0.bonus.dims();
        RwkvConfig {
            n_layer: self.blocks.len(),
            n_embd: c,
            n_head: h,
            head_size: n,
            dim_ffn: self.blocks[0].ffn.key.weight.dims()[1],
            vocab_size: v,
            d_mix: b0.maa_w2.dims()[1],
            d_decay: b0.decay_w1.dims()[1],
        }
    }

    /// The zero state for `batch` rows, on this model's device.
    pub fn zero_state(&self, batch: usize) -> State<B> {
        State::zeros(&self.config(), batch, &self.emb.weight.device())
    }

    /// Raw embedding rows `[B, T, C]` of `tokens` `[B, T]` (before `ln0`). Errors on ids outside
    /// the vocabulary.
    pub fn embed(&self, tokens: Tensor<B, 2, Int>) -> Result<Tensor<B, 3>, RwkvError> {
        let v = self.emb.weight.dims()[0] as i64;
        let data = tokens.to_data();
        let ids = data.iter::<i64>();
        if let Some(bad) = ids.into_iter().find(|&id| id < 0 || id >= v) {
            return Err(RwkvError::Input(format!("token id {bad} is outside the vocabulary 0..{v}")));
        }
        Ok(self.emb.forward(tokens))
    }

    /// `ln0` over rows `[B, T, C]`: the input of block 0. Image features go through it too.
    pub fn input_norm(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.ln0.forward(x)
    }

    /// Block `layer` over `x` `[B, T, C]` from that layer's state: the per-layer entry point used
    /// by scans that permute rows between layers.
    pub fn forward_layer(
        &self,
        layer: usize,
        x: Tensor<B, 3>,
        state: crate::LayerState<B>,
    ) -> Result<(Tensor<B, 3>, crate::LayerState<B>), RwkvError> {
        let block = self
            .blocks
            .get(layer)
            .ok_or_else(|| RwkvError::Input(format!("layer {layer} out of range (model has {})", self.blocks.len())))?;
        block.forward(x, state)
    }

    /// `ln_out` then `head`: logits `[B, T, V]` of the residual stream `x` `[B, T, C]`.
    pub fn logits(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        linear(&self.head, self.ln_out.forward(x))
    }

    fn check_rows(&self, x: &Tensor<B, 3>, state: Option<&State<B>>) -> Result<State<B>, RwkvError> {
        let [b, t, c] = x.dims();
        let cfg = self.config();
        if t == 0 || b == 0 {
            return Err(RwkvError::Input(format!("empty input: [B, T] = [{b}, {t}]")));
        }
        if c != cfg.n_embd {
            return Err(RwkvError::Shape {
                what: "input rows".into(),
                expected: vec![b, t, cfg.n_embd],
                found: vec![b, t, c],
            });
        }
        match state {
            Some(s) => {
                s.check(&cfg, b)?;
                Ok(s.clone())
            }
            None => Ok(self.zero_state(b)),
        }
    }

    /// Runs `ln0` and every block over embedding rows `x` `[B, T, C]` from `state` (zeros when
    /// `None`): the residual stream after the last block (before `ln_out`) and the new state.
    pub fn forward_hidden(
        &self,
        x: Tensor<B, 3>,
        state: Option<&State<B>>,
    ) -> Result<(Tensor<B, 3>, State<B>), RwkvError> {
        let mut state = self.check_rows(&x, state)?;
        let mut x = self.input_norm(x);
        for (l, block) in self.blocks.iter().enumerate() {
            let (y, s) = block.forward(x, state.layers[l].clone())?;
            x = y;
            state.layers[l] = s;
        }
        Ok((x, state))
    }

    /// Runs the model over embedding rows `x` `[B, T, C]` (raw `emb` rows or projected image
    /// features, before `ln0`) from `state` (zeros when `None`); logits for every row.
    ///
    /// `T > 1` runs each block in sequence mode (chunked WKV); `T = 1` is the single-step mode.
    pub fn forward_embeddings(&self, x: Tensor<B, 3>, state: Option<&State<B>>) -> Result<RwkvOutput<B>, RwkvError> {
        let (x, state) = self.forward_hidden(x, state)?;
        Ok(RwkvOutput { logits: self.logits(x), state })
    }

    /// As [`Rwkv::forward`], but computes the logits of the last row only (`[B, 1, V]`): what a
    /// prompt prefill needs, without the `T·C·V` head product of the other rows.
    pub fn forward_last(
        &self,
        tokens: Tensor<B, 2, Int>,
        state: Option<&State<B>>,
    ) -> Result<RwkvOutput<B>, RwkvError> {
        let (x, state) = self.forward_hidden(self.embed(tokens)?, state)?;
        let [b, t, c] = x.dims();
        Ok(RwkvOutput { logits: self.logits(x.slice([0..b, t - 1..t, 0..c])), state })
    }

    /// Runs the model over token ids `[B, T]` from `state` (zeros when `None`).
    pub fn forward(&self, tokens: Tensor<B, 2, Int>, state: Option<&State<B>>) -> Result<RwkvOutput<B>, RwkvError> {
        self.forward_embeddings(self.embed(tokens)?, state)
    }
}
