//! RWKV-7 (x070, "Goose"): the language model of the official RWKV-7 releases and of
//! VisualRWKV-7, on the same backends, state and checkpoint machinery as RWKV-6.
//!
//! - [`Rwkv7Config`]: sizes, inferred from checkpoint shapes (LoRA ranks included).
//! - [`Rwkv7`]: the model: `forward` (token ids) and `forward_embeddings` (rows such as image
//!   features) from an optional [`State`]; `T = 1` is the single-step mode.
//! - [`weight_keys`]: the one table of official x070 keys ↔ module parameters; loading
//!   ([`load`], [`Rwkv7::from_tensors`]) and saving ([`Rwkv7::to_tensor_map`]) read it.
//! - [`layers`]: [`layers::Lora`], [`layers::TimeMix7`], [`layers::ChannelMix7`],
//!   [`layers::Block7`].
//!
//! # Shapes
//!
//! Tokens `[B, T]`, rows `[B, T, C]`, logits `[B, T, V]`; state per layer as RWKV-6's:
//! `att_shift` `[B, C]`, `wkv` `[B, H, N, N]` (`[key, value]`), `ffn_shift` `[B, C]`.

pub mod layers;

use std::path::Path;

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::{Int, Tensor, backend::Backend};
use visualrwkv_checkpoint::table::{self, Layout, WeightKey};
use visualrwkv_checkpoint::{CheckpointError, TensorMap};

use crate::dense::{RwkvBackend, linear};
use crate::state::State;
use crate::{ConfigError, RwkvError};
use layers::{Block7, Block7Config, ChannelMix7Config, TimeMix7Config};

/// Sizes of an RWKV-7 (x070) model, all read off a checkpoint's shapes ([`Rwkv7Config::infer`]).
#[derive(Config, Debug, PartialEq, Eq)]
pub struct Rwkv7Config {
    /// Number of blocks L.
    pub n_layer: usize,
    /// Residual width C (= H·N).
    pub n_embd: usize,
    /// Number of heads H.
    pub n_head: usize,
    /// Head size N.
    pub head_size: usize,
    /// Channel-mix hidden width F (4·C in the releases).
    pub dim_ffn: usize,
    /// Vocabulary size V.
    pub vocab_size: usize,
    /// Rank of the decay LoRA (`w1` `[C, D]`).
    pub d_decay: usize,
    /// Rank of the in-context learning rate LoRA (`a1`).
    pub d_aaa: usize,
    /// Rank of the value-residual LoRA (`v1`, blocks 1..L).
    pub d_mv: usize,
    /// Rank of the gate LoRA (`g1`).
    pub d_gate: usize,
}

impl Rwkv7Config {
    /// The official trainer's sizes for width `n_embd`: head size 64, `dim_ffn` 4·C, and the
    /// LoRA ranks it suggests (`max(32, round(k·C^p / 32)·32)` with `k·C^p` = 1.8·√C for decay
    /// and learning rate, 1.3·√C for the value residual, 0.6·C^0.8 for the gate).
    pub fn official(n_layer: usize, n_embd: usize, vocab_size: usize) -> Self {
        let rank = |x: f64| ((x / 32.0).round() as usize * 32).max(32);
        let c = n_embd as f64;
        Self {
            n_layer,
            n_embd,
            n_head: n_embd / 64,
            head_size: 64,
            dim_ffn: 4 * n_embd,
            vocab_size,
            d_decay: rank(1.8 * c.sqrt()),
            d_aaa: rank(1.8 * c.sqrt()),
            d_mv: rank(1.3 * c.sqrt()),
            d_gate: rank(0.6 * c.powf(0.8)),
        }
    }

    /// Infers the configuration from `shape_of(key)`; `keys` are the checkpoint's keys (the
    /// block count is the largest `blocks.{l}` plus one).
    pub fn infer(shape_of: impl Fn(&str) -> Option<Vec<usize>>, keys: &[String]) -> Result<Self, ConfigError> {
        let dims = |key: &str| -> Result<[usize; 2], ConfigError> {
            let shape = shape_of(key).ok_or_else(|| ConfigError::MissingKey(key.into()))?;
            match shape[..] {
                [a, b] => Ok([a, b]),
                _ => Err(ConfigError::Rank { key: key.into(), shape, rank: 2 }),
            }
        };
        let n_layer = keys
            .iter()
            .filter_map(|k| k.strip_prefix("blocks.")?.split('.').next()?.parse::<usize>().ok())
            .max()
            .map_or(0, |m| m + 1);
        if n_layer == 0 {
            return Err(ConfigError::NoBlocks);
        }
        let [vocab_size, n_embd] = dims("emb.weight")?;
        let [n_head, head_size] = dims("blocks.0.att.r_k")?;
        // Blocks 1.. carry the value-residual LoRA; a one-block model has none (rank unused).
        let d_mv = if n_layer > 1 { dims("blocks.1.att.v1")?[1] } else { 32 };
        Ok(Self {
            n_layer,
            n_embd,
            n_head,
            head_size,
            dim_ffn: dims("blocks.0.ffn.key.weight")?[0],
            vocab_size,
            d_decay: dims("blocks.0.att.w1")?[1],
            d_aaa: dims("blocks.0.att.a1")?[1],
            d_mv,
            d_gate: dims("blocks.0.att.g1")?[1],
        })
    }

    /// The configuration of block `layer`.
    pub fn block(&self, layer: usize) -> Block7Config {
        let att = TimeMix7Config::new(
            self.n_embd,
            self.n_head,
            self.head_size,
            self.d_decay,
            self.d_aaa,
            self.d_mv,
            self.d_gate,
        )
        .with_first(layer == 0);
        Block7Config::new(att, ChannelMix7Config::new(self.n_embd, self.dim_ffn))
    }

    /// A model of this configuration with random weights (see the layers' `init`).
    pub fn init<B: Backend>(&self, device: &B::Device) -> Rwkv7<B> {
        let model = self.init_lazy(device);
        crate::materialize(&model);
        model
    }

    /// A model initialised as the official VisualRWKV-7 code (v7.00 `src/model.py`) initialises
    /// its RWKV-7 blocks, drawn in parameter order from the backend's seed (docs/model.md §9.2).
    /// With `r0 = l/(L−1)` (0 when L = 1), `r1 = 1 − l/L` and `d_i = i/C` in block `l`:
    ///
    /// - token-shift mixes `x_r = x_g = 1 − d^{0.2·r1}`, `x_w = x_a = 1 − d^{0.9·r1}`,
    ///   `x_k = 1 − (d^{0.9·r1} + 0.4·r0)`, `x_v = 1 − (d^{0.4·r1} + 0.6·r0)`, and the channel
    ///   mix's `x_k = 1 − d^{r1⁴}`;
    /// - decay base `w0_n = −6.5 + 5·(n/(C−1))^{0.85 + √r0}`; learning-rate base `a0 = 0`,
    ///   value-residual base `v0 = 1`, `k_k = 0.85`, `k_a = 1`, `r_k = 0`;
    /// - every LoRA's first matrix zero and its second orthogonal with gain 0.1 (times
    ///   `√(D/C)` if the rank D exceeds C), so the LoRAs start inactive;
    /// - `receptance` and `value` uniform in `±0.5/√C`, `key` in `±0.05/√C`, the channel mix's
    ///   `key` in `±0.5/√C`; both mixes' outputs (`att.output`, `ffn.value`) zero, so every
    ///   block starts as the identity of the residual stream; norms at unit weight, zero bias.
    ///
    /// VisualRWKV-7 always starts from a pretrained language model and leaves `emb` and `head`
    /// at PyTorch's defaults; here they are drawn as RWKV-6's trainer draws them
    /// ([`crate::RwkvConfig::init_from_scratch`]: `emb` in ±1e-4, `head` orthogonal at half
    /// the widening gain), so a model trained from scratch starts the same way on both.
    pub fn init_from_scratch<B: Backend>(&self, device: &B::Device) -> Rwkv7<B> {
        use burn::module::Param;
        use burn::nn::Initializer;
        let (c, v) = (self.n_embd, self.vocab_size);
        let param = |values: Vec<f64>| Param::from_tensor(Tensor::<B, 1>::from_floats(values.as_slice(), device));
        let constant = |value: f64| param(vec![value; c]);
        let zeros = |shape: [usize; 2]| Param::from_tensor(Tensor::<B, 2>::zeros(shape, device));
        let uniform =
            |shape: [usize; 2], bound: f64| Initializer::Uniform { min: -bound, max: bound }.init(shape, device);
        let lora = |lora: &mut layers::Lora<B>| {
            let [d, _] = lora.up.lazy_shape().dims::<2>();
            let widen = if d > c { (d as f64 / c as f64).sqrt() } else { 1.0 };
            lora.down = zeros([c, d]);
            lora.up = Initializer::Orthogonal { gain: 0.1 * widen }.init([d, c], device);
        };
        let mut model = self.init_lazy(device);
        // Lazily drawn parameters are replaced before they are read: nothing is drawn twice.
        model.emb.weight = Initializer::Uniform { min: -1e-4, max: 1e-4 }.init([v, c], device);
        model.head.weight = crate::model::orthogonal(c, v, 0.5, device);
        let layers = self.n_layer as f64;
        let scale = (c as f64).sqrt().recip();
        for (l, block) in model.blocks.iter_mut().enumerate() {
            let r0 = if self.n_layer > 1 { l as f64 / (layers - 1.0) } else { 0.0 };
            let r1 = 1.0 - l as f64 / layers;
            let mix = |power: f64, shift: f64| {
                param((0..c).map(|i| 1.0 - ((i as f64 / c as f64).powf(power) + shift)).collect())
            };
            let att = &mut block.att;
            att.x_r = mix(0.2 * r1, 0.0);
            att.x_w = mix(0.9 * r1, 0.0);
            att.x_k = mix(0.9 * r1, 0.4 * r0);
            att.x_v = mix(0.4 * r1, 0.6 * r0);
            att.x_a = mix(0.9 * r1, 0.0);
            att.x_g = mix(0.2 * r1, 0.0);
            let across = |n: usize| n as f64 / (c.max(2) - 1) as f64;
            att.w0 = param((0..c).map(|n| -7.0 + 5.0 * across(n).powf(0.85 + r0.sqrt()) + 0.5).collect());
            lora(&mut att.w_lora);
            att.a0 = constant(0.0);
            lora(&mut att.a_lora);
            if let Some(v0) = att.v0.as_mut() {
                *v0 = constant(1.0);
            }
            if let Some(v_lora) = att.v_lora.as_mut() {
                lora(v_lora);
            }
            lora(&mut att.g_lora);
            att.k_k = constant(0.85);
            att.k_a = constant(1.0);
            att.r_k = zeros([self.n_head, self.head_size]);
            att.receptance.weight = uniform([c, c], 0.5 * scale);
            att.key.weight = uniform([c, c], 0.05 * scale);
            att.value.weight = uniform([c, c], 0.5 * scale);
            att.output.weight = zeros([c, c]);
            block.ffn.x_k = mix(r1.powi(4), 0.0);
            block.ffn.key.weight = uniform([c, self.dim_ffn], 0.5 * scale);
            block.ffn.value.weight = zeros([self.dim_ffn, c]);
        }
        crate::materialize(&model);
        model
    }

    /// The skeleton of [`Rwkv7Config::init`] with nothing drawn yet (for loading).
    fn init_lazy<B: Backend>(&self, device: &B::Device) -> Rwkv7<B> {
        let c = self.n_embd;
        Rwkv7 {
            emb: EmbeddingConfig::new(self.vocab_size, c).init(device),
            ln0: LayerNormConfig::new(c).init(device),
            blocks: (0..self.n_layer).map(|l| self.block(l).init(device)).collect(),
            ln_out: LayerNormConfig::new(c).init(device),
            head: LinearConfig::new(c, self.vocab_size).with_bias(false).init(device),
        }
    }

    /// Every key of a checkpoint of this configuration with its official shape.
    pub fn expected_keys(&self) -> Vec<(String, Vec<usize>)> {
        weight_keys(self).into_iter().map(|k| (k.official, k.shape)).collect()
    }

    /// Infers the configuration of checkpoint tensors and checks every key against it.
    pub fn from_checkpoint(map: &TensorMap) -> Result<Self, RwkvError> {
        let keys: Vec<String> = map.tensors.keys().cloned().collect();
        let config =
            Self::infer(|k| map.shape(k), &keys).map_err(|why| RwkvError::Config { path: map.origin.clone(), why })?;
        let problems = map.key_problems(&config.expected_keys());
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(RwkvError::Checkpoint(CheckpointError::Keys {
                path: map.origin.clone(),
                model: "an RWKV-7 x070 model".into(),
                problems,
            }))
        }
    }
}

/// The architecture of an official RWKV checkpoint, told from its keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    /// RWKV-6 "Finch" (`blocks.0.att.time_faaaa`).
    X060,
    /// RWKV-7 "Goose" (`blocks.0.att.r_k`).
    X070,
}

impl Arch {
    /// `x060` or `x070`, as the official code names them.
    pub fn name(self) -> &'static str {
        match self {
            Arch::X060 => "x060",
            Arch::X070 => "x070",
        }
    }

    /// The name reports use: `RWKV-6 (x060)` or `RWKV-7 (x070)`.
    pub fn label(self) -> &'static str {
        match self {
            Arch::X060 => "RWKV-6 (x060)",
            Arch::X070 => "RWKV-7 (x070)",
        }
    }

    /// The architecture of checkpoint tensors: x070 when `blocks.0.att.r_k` is present, x060
    /// when `blocks.0.att.time_faaaa` is; otherwise an error naming both keys.
    pub fn detect(map: &TensorMap) -> Result<Self, RwkvError> {
        if map.tensors.contains_key("blocks.0.att.r_k") {
            Ok(Arch::X070)
        } else if map.tensors.contains_key("blocks.0.att.time_faaaa") {
            Ok(Arch::X060)
        } else {
            Err(RwkvError::Config {
                path: map.origin.clone(),
                why: ConfigError::MissingKey("blocks.0.att.r_k (x070) or blocks.0.att.time_faaaa (x060)".into()),
            })
        }
    }
}

impl Arch {
    /// The architecture of a checkpoint file (`.pth` or safetensors), reading only the two
    /// tensors that tell them apart.
    pub fn of_file(path: impl AsRef<Path>) -> Result<Self, RwkvError> {
        Self::of_file_under(path, "")
    }

    /// [`Arch::of_file`] for a language model stored under `prefix` (`rwkv.` in a VisualRWKV
    /// checkpoint).
    pub fn of_file_under(path: impl AsRef<Path>, prefix: &str) -> Result<Self, RwkvError> {
        let keys = ["blocks.0.att.r_k", "blocks.0.att.time_faaaa"].map(|k| format!("{prefix}{k}"));
        let map = TensorMap::read_skipping(path, |k| !keys.iter().any(|want| want == k))?;
        Self::detect(&map.strip_prefix(prefix))
    }
}

impl std::str::FromStr for Arch {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "x060" => Ok(Arch::X060),
            "x070" => Ok(Arch::X070),
            other => Err(format!("unknown architecture `{other}` (expected x060 or x070)")),
        }
    }
}

type ShapeOf = fn(&Rwkv7Config) -> Vec<usize>;

const C1: ShapeOf = |c| vec![c.n_embd];
const C11: ShapeOf = |c| vec![1, 1, c.n_embd];
const CC: ShapeOf = |c| vec![c.n_embd, c.n_embd];

/// Keys outside the blocks: `(official, module path, layout, official shape)`.
const MODEL_KEYS: &[(&str, &str, Layout, ShapeOf)] = &[
    ("emb.weight", "emb.weight", Layout::Same, |c| vec![c.vocab_size, c.n_embd]),
    ("blocks.0.ln0.weight", "ln0.gamma", Layout::Same, C1),
    ("blocks.0.ln0.bias", "ln0.beta", Layout::Same, C1),
    ("ln_out.weight", "ln_out.gamma", Layout::Same, C1),
    ("ln_out.bias", "ln_out.beta", Layout::Same, C1),
    ("head.weight", "head.weight", Layout::Transposed, |c| vec![c.vocab_size, c.n_embd]),
];

/// Keys of every block, relative to `blocks.{l}.` on both sides.
const BLOCK_KEYS: &[(&str, &str, Layout, ShapeOf)] = &[
    ("ln1.weight", "ln1.gamma", Layout::Same, C1),
    ("ln1.bias", "ln1.beta", Layout::Same, C1),
    ("ln2.weight", "ln2.gamma", Layout::Same, C1),
    ("ln2.bias", "ln2.beta", Layout::Same, C1),
    ("att.x_r", "att.x_r", Layout::Same, C11),
    ("att.x_w", "att.x_w", Layout::Same, C11),
    ("att.x_k", "att.x_k", Layout::Same, C11),
    ("att.x_v", "att.x_v", Layout::Same, C11),
    ("att.x_a", "att.x_a", Layout::Same, C11),
    ("att.x_g", "att.x_g", Layout::Same, C11),
    ("att.w0", "att.w0", Layout::Same, C11),
    ("att.w1", "att.w_lora.down", Layout::Same, |c| vec![c.n_embd, c.d_decay]),
    ("att.w2", "att.w_lora.up", Layout::Same, |c| vec![c.d_decay, c.n_embd]),
    ("att.a0", "att.a0", Layout::Same, C11),
    ("att.a1", "att.a_lora.down", Layout::Same, |c| vec![c.n_embd, c.d_aaa]),
    ("att.a2", "att.a_lora.up", Layout::Same, |c| vec![c.d_aaa, c.n_embd]),
    ("att.g1", "att.g_lora.down", Layout::Same, |c| vec![c.n_embd, c.d_gate]),
    ("att.g2", "att.g_lora.up", Layout::Same, |c| vec![c.d_gate, c.n_embd]),
    ("att.k_k", "att.k_k", Layout::Same, C11),
    ("att.k_a", "att.k_a", Layout::Same, C11),
    ("att.r_k", "att.r_k", Layout::Same, |c| vec![c.n_head, c.head_size]),
    ("att.receptance.weight", "att.receptance.weight", Layout::Transposed, CC),
    ("att.key.weight", "att.key.weight", Layout::Transposed, CC),
    ("att.value.weight", "att.value.weight", Layout::Transposed, CC),
    ("att.output.weight", "att.output.weight", Layout::Transposed, CC),
    ("att.ln_x.weight", "att.ln_x.gamma", Layout::Same, C1),
    ("att.ln_x.bias", "att.ln_x.beta", Layout::Same, C1),
    ("ffn.x_k", "ffn.x_k", Layout::Same, C11),
    ("ffn.key.weight", "ffn.key.weight", Layout::Transposed, |c| vec![c.dim_ffn, c.n_embd]),
    ("ffn.value.weight", "ffn.value.weight", Layout::Transposed, |c| vec![c.n_embd, c.dim_ffn]),
];

/// Keys of blocks 1..L only: the value residual (the first block stores `v_first` instead).
const VALUE_RESIDUAL_KEYS: &[(&str, &str, Layout, ShapeOf)] = &[
    ("att.v0", "att.v0", Layout::Same, C11),
    ("att.v1", "att.v_lora.down", Layout::Same, |c| vec![c.n_embd, c.d_mv]),
    ("att.v2", "att.v_lora.up", Layout::Same, |c| vec![c.d_mv, c.n_embd]),
];

/// Every official tensor of an x070 model of configuration `cfg`, in checkpoint order.
pub fn weight_keys(cfg: &Rwkv7Config) -> Vec<WeightKey> {
    let key = |o: String, p: String, layout: Layout, shape: ShapeOf| WeightKey::new(o, p, shape(cfg), layout);
    let top =
        |range: std::ops::Range<usize>| MODEL_KEYS[range].iter().map(|&(o, p, l, s)| key(o.into(), p.into(), l, s));
    let mut keys: Vec<WeightKey> = top(0..3).collect();
    for l in 0..cfg.n_layer {
        let residual = if l > 0 { VALUE_RESIDUAL_KEYS } else { &[] };
        keys.extend(
            BLOCK_KEYS
                .iter()
                .chain(residual)
                .map(|&(o, p, layout, s)| key(format!("blocks.{l}.{o}"), format!("blocks.{l}.{p}"), layout, s)),
        );
    }
    keys.extend(top(3..MODEL_KEYS.len()));
    keys
}

/// Loads an official x070 checkpoint, `.pth` or safetensors by extension.
pub fn load<B: Backend>(path: impl AsRef<Path>, device: &B::Device) -> Result<Rwkv7<B>, RwkvError> {
    Rwkv7::from_tensors(&TensorMap::read(path)?, device)
}

/// The RWKV-7 (x070) model.
#[derive(Module, Debug)]
pub struct Rwkv7<B: Backend> {
    /// `emb` `[V, C]` (raw rows; `ln0` is applied in [`Rwkv7::forward_embeddings`]).
    pub emb: Embedding<B>,
    /// `blocks.0.ln0`, applied to every input row.
    pub ln0: LayerNorm<B>,
    /// The blocks.
    pub blocks: Vec<Block7<B>>,
    /// Norm before the head.
    pub ln_out: LayerNorm<B>,
    /// `head` `C → V`, no bias.
    pub head: Linear<B>,
}

impl<B: Backend> Rwkv7<B> {
    /// A model from official checkpoint tensors: the configuration inferred, every key checked,
    /// then the tensors loaded as [`weight_keys`] maps them.
    pub fn from_tensors(map: &TensorMap, device: &B::Device) -> Result<Self, RwkvError> {
        let cfg = Rwkv7Config::from_checkpoint(map)?;
        Ok(table::load_into(cfg.init_lazy::<B>(device), map, &weight_keys(&cfg), "the RWKV-7 module", device)?)
    }

    /// As [`Rwkv7::from_tensors`], with each parameter read from `source` (the file `map` was
    /// read from) only when first used: for a model whose weights the fused decoder holds, so
    /// that the two do not both keep a copy ([`crate::load_fused_model`]).
    pub fn from_tensors_lazily(
        map: &TensorMap,
        source: &visualrwkv_checkpoint::TensorSource,
        device: &B::Device,
    ) -> Result<Self, RwkvError> {
        let cfg = Rwkv7Config::from_checkpoint(map)?;
        let keys = weight_keys(&cfg);
        Ok(table::load_lazily(cfg.init_lazy::<B>(device), map, source, &keys, "the RWKV-7 module", device)?)
    }

    /// The model's sizes, read off its parameter shapes (without initialising a lazily loaded
    /// parameter).
    pub fn config(&self) -> Rwkv7Config {
        let dims = |p: &burn::module::Param<Tensor<B, 2>>| p.lazy_shape().dims::<2>();
        let [vocab_size, n_embd] = dims(&self.emb.weight);
        let first = &self.blocks[0].att;
        let [n_head, head_size] = dims(&first.r_k);
        let d_mv = self.blocks.get(1).and_then(|b| b.att.v_lora.as_ref()).map_or(32, |l| dims(&l.down)[1]);
        Rwkv7Config {
            n_layer: self.blocks.len(),
            n_embd,
            n_head,
            head_size,
            dim_ffn: dims(&self.blocks[0].ffn.key.weight)[1],
            vocab_size,
            d_decay: dims(&first.w_lora.down)[1],
            d_aaa: dims(&first.a_lora.down)[1],
            d_mv,
            d_gate: dims(&first.g_lora.down)[1],
        }
    }

    /// The device the parameters are on.
    pub fn device(&self) -> B::Device {
        self.emb.weight.lazy_device()
    }

    /// The zero state (the start of a sequence) for `batch` rows.
    pub fn zero_state(&self, batch: usize) -> State<B> {
        let cfg = self.config();
        State::zeros_sized(cfg.n_layer, cfg.n_embd, cfg.n_head, cfg.head_size, batch, &self.device())
    }

    /// `ln0` over rows `[B, T, C]`: the input of block 0 (image rows go through it too).
    pub fn input_norm(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.ln0.forward(x)
    }

    /// The raw embedding rows `[B, T, C]` of token ids `[B, T]`; errors on an id outside the
    /// vocabulary or an empty input.
    pub fn embed(&self, tokens: Tensor<B, 2, Int>) -> Result<Tensor<B, 3>, RwkvError> {
        crate::model::check_tokens(&tokens, self.emb.weight.dims()[0])?;
        Ok(self.emb.forward(tokens))
    }
}

/// Output of a forward pass: logits and the state after the last row.
pub type Rwkv7Output<B> = crate::RwkvOutput<B>;

impl<B: RwkvBackend> Rwkv7<B> {
    /// Runs `ln0` and every block over embedding rows `x` `[B, T, C]` from `state` (zeros when
    /// `None`): the residual stream after the last block and the new state.
    pub fn forward_hidden(
        &self,
        x: Tensor<B, 3>,
        state: Option<&State<B>>,
    ) -> Result<(Tensor<B, 3>, State<B>), RwkvError> {
        let [b, t, c] = x.dims();
        let cfg = self.config();
        if b == 0 || t == 0 {
            return Err(RwkvError::EmptyInput { what: "the input rows", shape: vec![b, t, c] });
        }
        if c != cfg.n_embd {
            return Err(RwkvError::Shape {
                what: "input rows".into(),
                expected: vec![b, t, cfg.n_embd],
                found: vec![b, t, c],
            });
        }
        let mut state = match state {
            Some(s) => {
                s.check_sized(cfg.n_layer, cfg.n_embd, cfg.n_head, cfg.head_size, b)?;
                s.clone()
            }
            None => self.zero_state(b),
        };
        let mut x = self.input_norm(x);
        let mut v_first = None;
        for l in 0..self.blocks.len() {
            let out = self.forward_layer(l, x, state.layers[l].clone(), v_first)?;
            x = out.x;
            state.layers[l] = out.state;
            v_first = Some(out.v_first);
        }
        Ok((x, state))
    }

    /// Block `layer` over `x` `[B, T, C]` from that layer's state, with the first block's
    /// values `v_first` `[B·T, C]` (`None` for block 0, which returns its own): the per-layer
    /// entry point of scans that permute rows between layers (which permute `v_first` with them).
    pub fn forward_layer(
        &self,
        layer: usize,
        x: Tensor<B, 3>,
        state: crate::LayerState<B>,
        v_first: Option<Tensor<B, 2>>,
    ) -> Result<layers::Block7Output<B>, RwkvError> {
        let layers = self.blocks.len();
        let block = self.blocks.get(layer).ok_or(RwkvError::LayerOutOfRange { layer, layers })?;
        block.forward(x, state, v_first)
    }

    /// `head(ln_out(x))` for rows `[B, T, C]`.
    pub fn logits(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        linear(&self.head, self.ln_out.forward(x))
    }

    /// Runs the model over embedding rows `x` `[B, T, C]` (before `ln0`) from `state`; logits
    /// for every row.
    pub fn forward_embeddings(&self, x: Tensor<B, 3>, state: Option<&State<B>>) -> Result<Rwkv7Output<B>, RwkvError> {
        let (x, state) = self.forward_hidden(x, state)?;
        Ok(crate::RwkvOutput { logits: self.logits(x), state })
    }

    /// Runs the model over token ids `[B, T]` from `state` (zeros when `None`).
    pub fn forward(&self, tokens: Tensor<B, 2, Int>, state: Option<&State<B>>) -> Result<Rwkv7Output<B>, RwkvError> {
        self.forward_embeddings(self.embed(tokens)?, state)
    }

    /// As [`Rwkv7::forward`], with the logits of the last row only (`[B, 1, V]`): a prompt's
    /// prefill, without the head product of the other rows.
    pub fn forward_last(
        &self,
        tokens: Tensor<B, 2, Int>,
        state: Option<&State<B>>,
    ) -> Result<Rwkv7Output<B>, RwkvError> {
        let (x, state) = self.forward_hidden(self.embed(tokens)?, state)?;
        let [b, t, c] = x.dims();
        Ok(crate::RwkvOutput { logits: self.logits(x.slice([0..b, t - 1..t, 0..c])), state })
    }

    /// The model's tensors under the official x070 keys and shapes (f32).
    pub fn to_tensor_map(&self) -> Result<TensorMap, RwkvError> {
        Ok(table::save_from(self, &weight_keys(&self.config()), "model")?)
    }

    /// Saves the model as an official x070 safetensors checkpoint (f32, written atomically).
    pub fn save_safetensors(&self, path: impl AsRef<Path>) -> Result<(), RwkvError> {
        crate::checkpoint::write_safetensors(&self.to_tensor_map()?, path)
    }
}
