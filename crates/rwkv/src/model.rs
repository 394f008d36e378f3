//! The RWKV-6 language model: `emb`, `ln0` on every input row, blocks, `ln_out`, `head`.
//!
//! # Shapes
//!
//! Token ids `[B, T]` (Int) or embedding rows `[B, T, C]`; logits `[B, T, V]`; state as in
//! [`crate::state`].

use crate::dense::{RwkvBackend, linear};
use burn::module::{Module, ModuleVisitor, Param};
use burn::nn::{Embedding, EmbeddingConfig, Initializer, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::{Int, Tensor, backend::Backend};

use crate::layers::{Block, BlockConfig, BlockOutput, ChannelMixConfig, TimeMixConfig};
use crate::state::{LayerState, State};
use crate::{RwkvConfig, RwkvError};

/// The RWKV-6 (x060) model.
#[derive(Module, Debug)]
pub struct Rwkv<B: Backend> {
    /// `emb` `[V, C]` (raw rows; `ln0` is applied in [`Rwkv::forward_embeddings`]).
    pub emb: Embedding<B>,
    /// `blocks.0.ln0`, applied to every input row (text and image alike).
    pub ln0: LayerNorm<B>,
    /// The blocks.
    pub blocks: Vec<Block<B>>,
    /// Norm before the head.
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
    /// The configuration of block `layer` (its depth `layer / n_layer` sets the initial decays).
    pub fn block(&self, layer: usize) -> BlockConfig {
        let depth = layer as f64 / self.n_layer.max(1) as f64;
        BlockConfig::new(
            TimeMixConfig::new(self.n_embd, self.n_head, self.head_size, self.d_mix, self.d_decay).with_depth(depth),
            ChannelMixConfig::new(self.n_embd, self.dim_ffn),
        )
    }

    /// A model of this configuration with random weights in the official trainer's ranges
    /// (uniform token-shift mixes, decays, LoRAs; burn's default for the projections), drawn in
    /// parameter order from the backend's seed.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Rwkv<B> {
        let model = self.init_lazy(device);
        materialize(&model);
        model
    }

    /// A model initialised as the official trainer initialises one trained from scratch
    /// (docs/model.md §1.6), drawn in parameter order from the backend's seed:
    ///
    /// - token-shift mixes graded by depth and channel (`1 − (i/C)^{1 − l/L}`, …), decays from
    ///   −6 (fast) to −1 (slow) across channels, the bonus graded by channel; the first matrix of
    ///   both LoRAs at zero and the second in ±0.01, so they start inactive;
    /// - `emb` in ±1e-4 (`ln0` normalises the rows);
    /// - the outputs of both mixes (`att.output`, `ffn.value`, `ffn.receptance`) at zero, so every
    ///   block starts as the identity of the residual stream;
    /// - the other projections orthogonal with gain `√(out/in)` when they widen (`att.key` and
    ///   `att.gate` at a tenth of it), `head` orthogonal at half of it.
    pub fn init_from_scratch<B: Backend>(&self, device: &B::Device) -> Rwkv<B> {
        let (c, a, f, v) = (self.n_embd, self.dim_att(), self.dim_ffn, self.vocab_size);
        let zeros2 = |shape: [usize; 2]| Param::from_tensor(Tensor::<B, 2>::zeros(shape, device));
        let vector = |values: Vec<f64>| Param::from_tensor(Tensor::<B, 1>::from_floats(values.as_slice(), device));
        let mut model = self.init_lazy(device);
        // Lazily drawn parameters are replaced before they are read: nothing is drawn twice.
        model.emb.weight = Initializer::Uniform { min: -1e-4, max: 1e-4 }.init([v, c], device);
        model.head.weight = orthogonal(c, v, 0.5, device);
        let layers = self.n_layer.max(1) as f64;
        for (l, block) in model.blocks.iter_mut().enumerate() {
            let r0 = if self.n_layer > 1 { l as f64 / (layers - 1.0) } else { 0.0 };
            let r1 = 1.0 - l as f64 / layers;
            let mix = |power: f64, shift: f64| -> Vec<f64> {
                (0..c).map(|i| 1.0 - ((i as f64 / c as f64).powf(power) + shift)).collect()
            };
            let across = |n: usize| n as f64 / (a.max(2) - 1) as f64;
            let att = &mut block.att;
            att.ddlerp.maa_x = vector(mix(r1, 0.0));
            let maa = [mix(r1, 0.0), mix(r1, 0.0), mix(r1, 0.3 * r0), mix(0.5 * r1, 0.0), mix(0.5 * r1, 0.0)];
            att.ddlerp.maa = Param::from_tensor(Tensor::from_data(
                burn::tensor::TensorData::new(maa.concat(), [5, c]).convert::<B::FloatElem>(),
                device,
            ));
            let [_, d_mix, _] = att.ddlerp.w2.dims();
            att.ddlerp.w1 = zeros2([c, 5 * d_mix]);
            att.ddlerp.w2 = Initializer::Uniform { min: -0.01, max: 0.01 }.init([5, d_mix, c], device);
            let d_decay = att.decay.w1.dims()[1];
            att.decay.base = vector((0..a).map(|n| -6.0 + 5.0 * across(n).powf(0.7 + 1.3 * r0)).collect());
            att.decay.w1 = zeros2([c, d_decay]);
            att.decay.w2 = Initializer::Uniform { min: -0.01, max: 0.01 }.init([d_decay, a], device);
            let bonus: Vec<f64> = (0..a).map(|n| r0 * (1.0 - across(n)) + 0.1 * (((n + 1) % 3) as f64 - 1.0)).collect();
            att.bonus = Param::from_tensor(Tensor::from_data(
                burn::tensor::TensorData::new(bonus, [self.n_head, self.head_size]).convert::<B::FloatElem>(),
                device,
            ));
            att.receptance.weight = orthogonal(c, a, 1.0, device);
            att.key.weight = orthogonal(c, a, 0.1, device);
            att.value.weight = orthogonal(c, a, 1.0, device);
            att.gate.weight = orthogonal(c, a, 0.1, device);
            att.output.weight = zeros2([a, c]);
            block.ffn.maa_k = vector(mix(r1, 0.0));
            block.ffn.maa_r = vector(mix(r1, 0.0));
            block.ffn.key.weight = orthogonal(c, f, 1.0, device);
            block.ffn.receptance.weight = zeros2([c, c]);
            block.ffn.value.weight = zeros2([f, c]);
        }
        materialize(&model);
        model
    }

    /// A model whose parameters are drawn only when first read: the skeleton that
    /// [`crate::weights`] loads a checkpoint into without drawing anything.
    pub(crate) fn init_lazy<B: Backend>(&self, device: &B::Device) -> Rwkv<B> {
        let ln = || LayerNormConfig::new(self.n_embd).init(device);
        Rwkv {
            emb: EmbeddingConfig::new(self.vocab_size, self.n_embd).init(device),
            ln0: ln(),
            blocks: (0..self.n_layer).map(|l| self.block(l).init(device)).collect(),
            ln_out: ln(),
            head: LinearConfig::new(self.n_embd, self.vocab_size).with_bias(false).init(device),
        }
    }
}

/// An orthogonal `[d_in, d_out]` projection weight with gain `scale · √(d_out / d_in)` when it
/// widens (`scale` otherwise), as the official trainer draws it (on PyTorch's `[out, in]`).
pub(crate) fn orthogonal<B: Backend>(d_in: usize, d_out: usize, scale: f64, device: &B::Device) -> Param<Tensor<B, 2>> {
    let widen = if d_out > d_in { (d_out as f64 / d_in as f64).sqrt() } else { 1.0 };
    Initializer::Orthogonal { gain: scale * widen }.init([d_in, d_out], device)
}

/// Reads every float parameter of `module` once, in module order, so that lazily initialised
/// values are drawn in a fixed order: the same model for the same seed whatever is read first
/// later, and clones that share their values.
pub fn materialize<B: Backend, M: Module<B>>(module: &M) {
    struct Touch;
    impl<B: Backend> ModuleVisitor<B> for Touch {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let _ = param.val();
        }
    }
    module.visit(&mut Touch);
}

impl<B: RwkvBackend> Rwkv<B> {
    /// The configuration, read off the parameter shapes.
    pub fn config(&self) -> RwkvConfig {
        // Shapes read without initialising a lazily loaded parameter.
        let dims = |p: &Param<Tensor<B, 2>>| p.lazy_shape().dims::<2>();
        let [v, c] = dims(&self.emb.weight);
        let b0 = &self.blocks[0].att;
        let [h, n] = dims(&b0.bonus);
        RwkvConfig {
            n_layer: self.blocks.len(),
            n_embd: c,
            n_head: h,
            head_size: n,
            dim_ffn: dims(&self.blocks[0].ffn.key.weight)[1],
            vocab_size: v,
            d_mix: b0.ddlerp.w2.lazy_shape().dims::<3>()[1],
            d_decay: dims(&b0.decay.w1)[1],
        }
    }

    /// The device the model's parameters are on (read without initialising a lazily loaded one).
    pub fn device(&self) -> B::Device {
        self.emb.weight.lazy_device()
    }

    /// The zero state for `batch` rows, on this model's device.
    pub fn zero_state(&self, batch: usize) -> State<B> {
        State::zeros(&self.config(), batch, &self.device())
    }

    /// Raw embedding rows `[B, T, C]` of `tokens` `[B, T]` (before `ln0`). Errors on ids outside
    /// the vocabulary.
    pub fn embed(&self, tokens: Tensor<B, 2, Int>) -> Result<Tensor<B, 3>, RwkvError> {
        check_tokens(&tokens, self.emb.weight.dims()[0])?;
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
        state: LayerState<B>,
    ) -> Result<BlockOutput<B>, RwkvError> {
        let layers = self.blocks.len();
        let block = self.blocks.get(layer).ok_or(RwkvError::LayerOutOfRange { layer, layers })?;
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
            return Err(RwkvError::EmptyInput { what: "input rows", shape: vec![b, t, c] });
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
            let out = block.forward(x, state.layers[l].clone())?;
            x = out.x;
            state.layers[l] = out.state;
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

/// Errors on a token id outside `0..vocab`.
pub(crate) fn check_tokens<B: Backend>(tokens: &Tensor<B, 2, Int>, vocab: usize) -> Result<(), RwkvError> {
    match tokens.to_data().iter::<i64>().find(|&id| id < 0 || id >= vocab as i64) {
        Some(id) => Err(RwkvError::TokenOutOfVocabulary { id, vocab }),
        None => Ok(()),
    }
}
