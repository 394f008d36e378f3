//! The ViT vision tower (CLIP and SigLIP, Hugging Face conventions).
//!
//! # Shapes
//!
//! Pixels `[B, C, H, W]` (already normalised, NCHW) → patches `[B, (H/P)·(W/P), C·P·P]` →
//! tokens `[B, T, D]` with `T` = patches (+1 class token for CLIP, at position 0) → every
//! encoder layer keeps `[B, T, D]`. `pooler_output` is `[B, D]`.

use burn::module::{Module, Param};
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::activation::{gelu, gelu_approximate, sigmoid, softmax};
use burn::tensor::{DType, Tensor, TensorData, backend::Backend};

use crate::VisionError;
use crate::config::{Activation, TowerKind, VisionConfig};

/// The MLP of an encoder layer: `fc1` → activation → `fc2`.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    /// `fc1` D → F (with bias).
    pub fc1: Linear<B>,
    /// `fc2` F → D (with bias).
    pub fc2: Linear<B>,
    /// The activation.
    #[module(skip)]
    pub act: Activation,
}

impl<B: Backend> Mlp<B> {
    /// `[.., D]` → `[.., D]`.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let h = self.fc1.forward(x);
        let h = match self.act {
            Activation::QuickGelu => h.clone() * sigmoid(h * 1.702),
            Activation::Gelu => gelu(h),
            Activation::GeluTanh => gelu_approximate(h),
        };
        self.fc2.forward(h)
    }
}

/// Multi-head attention with separate q/k/v/out projections (HF `self_attn`), scale
/// `head_dim^-0.5`, no mask (every image token sees every other).
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    /// `q_proj` D → D.
    pub q_proj: Linear<B>,
    /// `k_proj` D → D.
    pub k_proj: Linear<B>,
    /// `v_proj` D → D.
    pub v_proj: Linear<B>,
    /// `out_proj` D → D.
    pub out_proj: Linear<B>,
    /// Number of heads.
    pub heads: usize,
}

/// Scaled dot-product attention of `q` `[B, Tq, D]` over `k`, `v` `[B, Tk, D]` with `heads`
/// heads; returns `[B, Tq, D]` (before the output projection).
fn attend<B: Backend>(q: Tensor<B, 3>, k: Tensor<B, 3>, v: Tensor<B, 3>, heads: usize) -> Tensor<B, 3> {
    let [b, tq, d] = q.dims();
    let tk = k.dims()[1];
    let hd = d / heads;
    let split = |x: Tensor<B, 3>, t: usize| x.reshape([b, t, heads, hd]).swap_dims(1, 2);
    let (q, k, v) = (split(q, tq), split(k, tk), split(v, tk));
    let scores = q.matmul(k.swap_dims(2, 3)) * (hd as f64).powf(-0.5);
    let probs = softmax(scores, 3);
    probs.matmul(v).swap_dims(1, 2).reshape([b, tq, d])
}

impl<B: Backend> Attention<B> {
    /// Self-attention `[B, T, D]` → `[B, T, D]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let y =
            attend(self.q_proj.forward(x.clone()), self.k_proj.forward(x.clone()), self.v_proj.forward(x), self.heads);
        self.out_proj.forward(y)
    }
}

/// A pre-LN encoder layer: `x + attn(ln1(x))`, then `x + mlp(ln2(x))`.
#[derive(Module, Debug)]
pub struct EncoderLayer<B: Backend> {
    /// Norm before the attention.
    pub layer_norm1: LayerNorm<B>,
    /// Multi-head self-attention.
    pub self_attn: Attention<B>,
    /// Norm before the MLP.
    pub layer_norm2: LayerNorm<B>,
    /// The two-layer MLP.
    pub mlp: Mlp<B>,
}

impl<B: Backend> EncoderLayer<B> {
    /// `[B, T, D]` → `[B, T, D]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let x = x.clone() + self.self_attn.forward(self.layer_norm1.forward(x));
        x.clone() + self.mlp.forward(self.layer_norm2.forward(x))
    }
}

/// SigLIP's attention-pooling head (`head.*`): a learned probe attends over the sequence
/// (`nn.MultiheadAttention` with packed `in_proj`), then a residual MLP after a LayerNorm.
#[derive(Module, Debug)]
pub struct PoolingHead<B: Backend> {
    /// `head.probe` `[1, 1, D]`.
    pub probe: Param<Tensor<B, 3>>,
    /// q/k/v projections unpacked from `in_proj_weight` / `in_proj_bias`.
    pub q_proj: Linear<B>,
    /// Key projection.
    pub k_proj: Linear<B>,
    /// Value projection.
    pub v_proj: Linear<B>,
    /// Output projection of the attention (`attention.out_proj`).
    pub out_proj: Linear<B>,
    /// Norm before the residual MLP.
    pub layernorm: LayerNorm<B>,
    /// The residual MLP.
    pub mlp: Mlp<B>,
    /// Number of heads.
    pub heads: usize,
}

impl<B: Backend> PoolingHead<B> {
    /// `[B, T, D]` → `[B, D]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 2> {
        let [b, _, d] = x.dims();
        let probe = self.probe.val().expand([b, 1, d]);
        let h = attend(self.q_proj.forward(probe), self.k_proj.forward(x.clone()), self.v_proj.forward(x), self.heads);
        let h = self.out_proj.forward(h);
        let h = h.clone() + self.mlp.forward(self.layernorm.forward(h));
        h.reshape([b, d])
    }
}

/// A CLIP or SigLIP vision tower.
#[derive(Module, Debug)]
pub struct VisionTower<B: Backend> {
    /// The patch conv as a linear map over flattened `[C, P, P]` patches (weight
    /// `[C·P·P, D]`; bias for SigLIP only). Exactly the stride-P, kernel-P convolution.
    pub patch_embedding: Linear<B>,
    /// CLIP's class token `[D]`.
    pub class_embedding: Option<Param<Tensor<B, 1>>>,
    /// Learned position embedding `[positions, D]` (class token first for CLIP).
    pub position_embedding: Param<Tensor<B, 2>>,
    /// CLIP's `pre_layrnorm`.
    pub pre_layrnorm: Option<LayerNorm<B>>,
    /// Encoder layers.
    pub layers: Vec<EncoderLayer<B>>,
    /// `post_layernorm`: CLIP applies it to the pooled CLS only; SigLIP to the sequence.
    pub post_layernorm: LayerNorm<B>,
    /// SigLIP's attention-pooling head.
    pub head: Option<PoolingHead<B>>,
    /// The configuration.
    #[module(skip)]
    pub config: VisionConfig,
}

/// What a forward pass returns.
#[derive(Debug, Clone)]
pub struct VisionOutput<B: Backend> {
    /// `hidden_states[0]` = embeddings (after `pre_layrnorm` for CLIP), `hidden_states[i]` = the
    /// output of layer `i - 1`; `[B, T, D]` each, as far as the pass went.
    pub hidden_states: Vec<Tensor<B, 3>>,
    /// The last layer's output; SigLIP applies `post_layernorm`, CLIP does not. `None` when the
    /// pass stopped early ([`VisionTower::forward_layers`]).
    pub last_hidden_state: Option<Tensor<B, 3>>,
    /// CLIP: `post_layernorm` of the last layer's class token; SigLIP: the pooling head's output
    /// (when the tower has one). `[B, D]`.
    pub pooler_output: Option<Tensor<B, 2>>,
    /// Patch grid height and width of this input.
    pub grid: (usize, usize),
}

fn layer_norm<B: Backend>(d: usize, eps: f64, device: &B::Device) -> LayerNorm<B> {
    LayerNormConfig::new(d).with_epsilon(eps).init(device)
}

impl VisionConfig {
    /// A randomly initialised tower of this configuration.
    pub fn init<B: Backend>(&self, device: &B::Device) -> VisionTower<B> {
        let (d, f, p, c) = (self.hidden_size, self.intermediate_size, self.patch_size, self.num_channels);
        let eps = self.layer_norm_eps;
        let lin = |i: usize, o: usize, bias: bool| LinearConfig::new(i, o).with_bias(bias).init(device);
        let mlp = || Mlp { fc1: lin(d, f, true), fc2: lin(f, d, true), act: self.hidden_act };
        let clip = self.kind == TowerKind::Clip;
        let normal = |shape: Vec<usize>| {
            Tensor::<B, 1>::random(
                [shape.iter().product::<usize>()],
                burn::tensor::Distribution::Normal(0.0, 0.02),
                device,
            )
        };
        let layers = (0..self.num_hidden_layers)
            .map(|_| EncoderLayer {
                layer_norm1: layer_norm(d, eps, device),
                self_attn: Attention {
                    q_proj: lin(d, d, true),
                    k_proj: lin(d, d, true),
                    v_proj: lin(d, d, true),
                    out_proj: lin(d, d, true),
                    heads: self.num_attention_heads,
                },
                layer_norm2: layer_norm(d, eps, device),
                mlp: mlp(),
            })
            .collect();
        let head = (self.kind == TowerKind::Siglip && self.use_head).then(|| PoolingHead {
            probe: Param::from_tensor(normal(vec![d]).reshape([1, 1, d])),
            q_proj: lin(d, d, true),
            k_proj: lin(d, d, true),
            v_proj: lin(d, d, true),
            out_proj: lin(d, d, true),
            layernorm: layer_norm(d, eps, device),
            mlp: mlp(),
            heads: self.num_attention_heads,
        });
        VisionTower {
            patch_embedding: lin(c * p * p, d, !clip),
            class_embedding: clip.then(|| Param::from_tensor(normal(vec![d]))),
            position_embedding: Param::from_tensor(
                normal(vec![self.num_positions(), d]).reshape([self.num_positions(), d]),
            ),
            pre_layrnorm: clip.then(|| layer_norm(d, eps, device)),
            layers,
            post_layernorm: layer_norm(d, eps, device),
            head,
            config: self.clone(),
        }
    }
}

/// Bicubic resampling of a `[h, w, d]` grid (row-major, channels last) to `[oh, ow, d]`, with
/// PyTorch's `interpolate(mode="bicubic", align_corners=False)` conventions: source coordinate
/// `(dst + 0.5)·in/out − 0.5`, cubic convolution with A = −0.75, indices clamped at the border,
/// no antialiasing. Hugging Face's `interpolate_pos_encoding` does exactly this.
/// Errors when `grid` does not hold `h·w·d` values or a size is zero.
pub fn bicubic_resize_grid(
    grid: &[f32],
    (h, w): (usize, usize),
    d: usize,
    (oh, ow): (usize, usize),
) -> Result<Vec<f32>, VisionError> {
    if grid.len() != h * w * d || h == 0 || w == 0 || d == 0 {
        return Err(VisionError::Shape {
            what: "grid to resample".into(),
            expected: format!("{h}x{w}x{d} = {} values, all sizes positive", h * w * d),
            found: vec![grid.len()],
        });
    }
    const A: f64 = -0.75;
    let cubic = |t: f64| -> [f64; 4] {
        let c1 = |x: f64| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
        let c2 = |x: f64| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
        [c2(t + 1.0), c1(t), c1(1.0 - t), c2(2.0 - t)]
    };
    let taps = |out: usize, inp: usize| -> Vec<([usize; 4], [f64; 4])> {
        let scale = inp as f64 / out as f64;
        (0..out)
            .map(|o| {
                let real = scale * (o as f64 + 0.5) - 0.5;
                let base = real.floor();
                let idx = [-1i64, 0, 1, 2].map(|k| (base as i64 + k).clamp(0, inp as i64 - 1) as usize);
                (idx, cubic(real - base))
            })
            .collect()
    };
    let (ty, tx) = (taps(oh, h), taps(ow, w));
    let mut out = vec![0f32; oh * ow * d];
    for (oy, (iy, wy)) in ty.iter().enumerate() {
        for (ox, (ix, wx)) in tx.iter().enumerate() {
            let dst = &mut out[(oy * ow + ox) * d..(oy * ow + ox + 1) * d];
            for (c, o) in dst.iter_mut().enumerate() {
                let mut acc = 0f64;
                for a in 0..4 {
                    let mut row = 0f64;
                    for b in 0..4 {
                        row += wx[b] * grid[(iy[a] * w + ix[b]) * d + c] as f64;
                    }
                    acc += wy[a] * row;
                }
                *o = acc as f32;
            }
        }
    }
    Ok(out)
}

impl<B: Backend> VisionTower<B> {
    /// The position embedding for a `gh × gw` patch grid `[T, D]`: the trained one when the grid
    /// matches, otherwise its patch rows resampled bicubically (see [`bicubic_resize_grid`]),
    /// the class row kept.
    pub fn position_embedding_for(&self, (gh, gw): (usize, usize)) -> Result<Tensor<B, 2>, VisionError> {
        let side = self.config.grid_side();
        let pos = self.position_embedding.val();
        if (gh, gw) == (side, side) {
            return Ok(pos);
        }
        let d = self.config.hidden_size;
        let device = pos.device();
        let cls = usize::from(self.config.kind == TowerKind::Clip);
        let host = pos.clone().into_data().convert::<f32>().into_vec::<f32>().expect("f32 position embedding");
        let resized = bicubic_resize_grid(&host[cls * d..], (side, side), d, (gh, gw))?;
        let patches =
            Tensor::<B, 2>::from_data(TensorData::new(resized, [gh * gw, d]), (&device, DType::F32)).cast(pos.dtype());
        Ok(if cls == 1 { Tensor::cat(vec![pos.slice([0..1, 0..d]), patches], 0) } else { patches })
    }

    /// Embeddings `[B, T, D]` of pixels `[B, C, H, W]` (after `pre_layrnorm` for CLIP), and the
    /// patch grid. Images whose size differs from the trained one get an interpolated position
    /// embedding; pixels beyond the last whole patch are dropped, as by the strided conv.
    pub fn embed(&self, pixels: Tensor<B, 4>) -> Result<(Tensor<B, 3>, (usize, usize)), VisionError> {
        let [b, c, h, w] = pixels.dims();
        let (p, d) = (self.config.patch_size, self.config.hidden_size);
        if c != self.config.num_channels || h < p || w < p || b == 0 {
            return Err(VisionError::Shape {
                what: "pixel_values".into(),
                expected: format!("[B ≥ 1, {}, H ≥ {p}, W ≥ {p}]", self.config.num_channels),
                found: vec![b, c, h, w],
            });
        }
        let (gh, gw) = (h / p, w / p);
        let pixels = if (gh * p, gw * p) == (h, w) { pixels } else { pixels.slice([0..b, 0..c, 0..gh * p, 0..gw * p]) };
        let patches: Tensor<B, 3> =
            pixels.reshape([b, c, gh, p, gw, p]).permute([0, 2, 4, 1, 3, 5]).reshape([b, gh * gw, c * p * p]);
        let mut x = self.patch_embedding.forward(patches);
        if let Some(cls) = &self.class_embedding {
            x = Tensor::cat(vec![cls.val().reshape([1, 1, d]).expand([b, 1, d]), x], 1);
        }
        x = x + self.position_embedding_for((gh, gw))?.unsqueeze_dim(0);
        if let Some(ln) = &self.pre_layrnorm {
            x = ln.forward(x);
        }
        Ok((x, (gh, gw)))
    }

    /// The full forward pass: every hidden state, `last_hidden_state` and `pooler_output`.
    pub fn forward(&self, pixels: Tensor<B, 4>) -> Result<VisionOutput<B>, VisionError> {
        let mut out = self.forward_layers(pixels, self.config.num_hidden_layers)?;
        let last = out.hidden_states.last().expect("embeddings present").clone();
        let [b, _, d] = last.dims();
        match self.config.kind {
            TowerKind::Clip => {
                let cls = last.clone().slice([0..b, 0..1, 0..d]).reshape([b, d]);
                out.pooler_output = Some(self.post_layernorm.forward(cls));
                out.last_hidden_state = Some(last);
            }
            TowerKind::Siglip => {
                let normed = self.post_layernorm.forward(last);
                out.pooler_output = self.head.as_ref().map(|h| h.forward(normed.clone()));
                out.last_hidden_state = Some(normed);
            }
        }
        Ok(out)
    }

    /// Runs the embeddings and the first `layers` encoder layers only (`hidden_states` has
    /// `layers + 1` entries; no `last_hidden_state`, no pooling).
    pub fn forward_layers(&self, pixels: Tensor<B, 4>, layers: usize) -> Result<VisionOutput<B>, VisionError> {
        if layers > self.layers.len() {
            return Err(VisionError::Layer { layer: layers as i64, layers: self.layers.len() });
        }
        let (mut x, grid) = self.embed(pixels)?;
        let mut hidden_states = Vec::with_capacity(layers + 1);
        hidden_states.push(x.clone());
        for layer in &self.layers[..layers] {
            x = layer.forward(x);
            hidden_states.push(x.clone());
        }
        Ok(VisionOutput { hidden_states, last_hidden_state: None, pooler_output: None, grid })
    }

    /// The hidden state VisualRWKV or LLaVA feeds on: `layer` indexes `hidden_states` like
    /// Python (`-1` = the last layer's output, without `post_layernorm` — VisualRWKV v6.0;
    /// `-2` = the penultimate layer — LLaVA-1.5; `0` = the embeddings). Runs only the layers
    /// needed. Returns `[B, T, D]` and the patch grid.
    pub fn features(&self, pixels: Tensor<B, 4>, layer: i64) -> Result<(Tensor<B, 3>, (usize, usize)), VisionError> {
        let n = self.layers.len() as i64;
        let index = if layer < 0 { n + 1 + layer } else { layer };
        if !(0..=n).contains(&index) {
            return Err(VisionError::Layer { layer, layers: n as usize });
        }
        let mut out = self.forward_layers(pixels, index as usize)?;
        Ok((out.hidden_states.pop().expect("at least the embeddings"), out.grid))
    }
}
