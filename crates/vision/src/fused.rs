//! The vision tower fused for the CPU: the same function as [`VisionTower::features`] written
//! directly over host buffers, each matrix product one GEMM of the `gemm` crate (AVX-512 or
//! AVX2 kernels chosen at run time, the work spread over rayon's pool).
//!
//! burn-ndarray runs a tower's matmuls through `matrixmultiply`'s AVX2 kernels; on a CPU with
//! AVX-512 the `gemm` crate's kernels are about twice as fast per core, and a tower is almost
//! all matmul (CLIP-L/336: ≈ 350 GFLOP per image, of which attention scores ≈ 15 GFLOP). The
//! patch convolution is an im2col GEMM, q/k/v one GEMM over the concatenated weights, attention
//! per head two GEMMs around a row softmax, the norms, residuals and activations row-parallel
//! passes. The weights are copied once from the tower ([`FusedTower::new`]); the tower itself
//! stays the oracle (`tests/fused.rs`: equal to 1e-4 on CLIP and SigLIP shapes, the official
//! fixture's golden, other image sizes).
//!
//! # Shapes
//!
//! Pixels `[B, C, H, W]` (row-major, normalised) → patches `[N, C·P·P]` per image → tokens
//! `[T, D]` (CLIP: class token first) → every layer keeps `[T, D]`; q/k/v `[T, 3D]`, a head's
//! scores `[T, T]`, the MLP's hidden `[T, F]`. [`FusedTower::features`] returns `[B, T, D]`.

use burn::tensor::backend::Backend;
use rayon::prelude::*;
use visualrwkv_checkpoint::{TensorMap, host_values};
use visualrwkv_wkv::cpu::exp_f32;

use crate::VisionError;
use crate::config::{Activation, TowerKind, VisionConfig};
use crate::tower::{VisionTower, bicubic_resize_grid};

/// A linear map `x·W + b`: `W` `[in, out]` row-major (burn's `Linear` layout).
#[derive(Clone, Debug)]
struct Dense {
    w: Vec<f32>,
    b: Option<Vec<f32>>,
    inp: usize,
    out: usize,
}

impl Dense {
    fn from_linear<B: Backend>(l: &burn::nn::Linear<B>) -> Self {
        let [inp, out] = l.weight.dims();
        Self { w: host_values(l.weight.val()), b: l.bias.as_ref().map(|b| host_values(b.val())), inp, out }
    }

    /// A map from PyTorch's `nn.Linear` layout `w` `[out, in]` (transposed once: the GEMM runs
    /// fastest with `W` `[in, out]` row-major).
    fn from_out_in(w: &[f32], b: Option<Vec<f32>>, inp: usize, out: usize) -> Self {
        Self { w: visualrwkv_checkpoint::transpose(w, out, inp), b, inp, out }
    }

    /// Several maps of the same input side by side: `[in, Σ out]`.
    fn concat(parts: &[Dense]) -> Self {
        let inp = parts[0].inp;
        let out: usize = parts.iter().map(|p| p.out).sum();
        let mut w = Vec::with_capacity(inp * out);
        for i in 0..inp {
            for p in parts {
                w.extend_from_slice(&p.w[i * p.out..(i + 1) * p.out]);
            }
        }
        let b = parts
            .iter()
            .all(|p| p.b.is_some())
            .then(|| parts.iter().flat_map(|p| p.b.clone().unwrap_or_default()).collect());
        Self { w, b, inp, out }
    }

    /// `y = x·W + b` for the `t` rows of `x` `[t, in]`, into `y` `[t, out]`.
    fn apply(&self, x: &[f32], t: usize, y: &mut [f32]) {
        assert!(x.len() >= t * self.inp && y.len() >= t * self.out, "dense: slices shorter than [t, in] / [t, out]");
        if let Some(b) = &self.b {
            y[..t * self.out].par_chunks_mut(self.out).for_each(|row| row.copy_from_slice(b));
        }
        // SAFETY: lengths checked above; `x`, `W` and `y` do not overlap (`y` is a unique borrow).
        unsafe {
            gemm_f32(
                Product { m: t, n: self.out, k: self.inp },
                (y.as_mut_ptr(), self.out),
                self.b.is_some(),
                (x.as_ptr(), self.inp as isize, 1),
                (self.w.as_ptr(), self.out as isize, 1),
                1.0,
                gemm::Parallelism::Rayon(0),
            );
        }
    }
}

/// The sizes of a product `[m, k]·[k, n]`.
#[derive(Clone, Copy)]
struct Product {
    m: usize,
    n: usize,
    k: usize,
}

/// `dst = (dst if accumulate) + scale · lhs·rhs` with row-major `dst` `(pointer, row stride)`
/// and `(pointer, row stride, column stride)` operands.
///
/// # Safety
/// Every element addressed by the sizes and strides lies inside its allocation and `dst` does
/// not overlap the operands.
unsafe fn gemm_f32(
    p: Product,
    (dst, dst_rs): (*mut f32, usize),
    accumulate: bool,
    (lhs, lhs_rs, lhs_cs): (*const f32, isize, isize),
    (rhs, rhs_rs, rhs_cs): (*const f32, isize, isize),
    scale: f32,
    parallelism: gemm::Parallelism,
) {
    // SAFETY: the caller's contract.
    unsafe {
        gemm::gemm(
            p.m,
            p.n,
            p.k,
            dst,
            1,
            dst_rs as isize,
            accumulate,
            lhs,
            lhs_cs,
            lhs_rs,
            rhs,
            rhs_cs,
            rhs_rs,
            if accumulate { 1.0 } else { 0.0 },
            scale,
            false,
            false,
            false,
            parallelism,
        )
    }
}

/// A pointer handed to the threads of a parallel loop that write disjoint parts of its buffer.
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);

// SAFETY: only used to write disjoint ranges of a buffer that outlives the loop (see its uses).
unsafe impl Send for SendPtr {}
// SAFETY: as above.
unsafe impl Sync for SendPtr {}

impl SendPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// A layer norm's weight, bias and epsilon.
#[derive(Clone, Debug)]
struct Norm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
    eps: f32,
}

impl Norm {
    fn from_layer_norm<B: Backend>(l: &burn::nn::LayerNorm<B>, eps: f64) -> Self {
        let d = l.gamma.dims()[0];
        Self {
            gamma: host_values(l.gamma.val()),
            beta: l.beta.as_ref().map_or_else(|| vec![0.0; d], |b| host_values(b.val())),
            eps: eps as f32,
        }
    }

    /// The norm of every row of `x` (width `gamma.len()`) into `y`.
    fn apply(&self, x: &[f32], y: &mut [f32]) {
        let d = self.gamma.len();
        y.par_chunks_mut(d).zip(x.par_chunks(d)).for_each(|(y, x)| {
            let n = d as f32;
            let mean = x.iter().sum::<f32>() / n;
            let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
            let inv = 1.0 / (var + self.eps).sqrt();
            for (((y, x), g), b) in y.iter_mut().zip(x).zip(&self.gamma).zip(&self.beta) {
                *y = (x - mean) * inv * g + b;
            }
        });
    }
}

/// One pre-LN encoder layer.
#[derive(Clone, Debug)]
struct Layer {
    ln1: Norm,
    /// q, k and v side by side: `D → 3D`.
    qkv: Dense,
    out: Dense,
    ln2: Norm,
    fc1: Dense,
    fc2: Dense,
}

/// The error function, for exact GELU: `1 − erfc(|x|)` with the Chebyshev-fitted `erfc` of
/// Numerical Recipes (`erfcc`, fractional error below 1.2e-7), odd-extended.
fn erf(x: f32) -> f32 {
    let z = f64::from(x.abs());
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t
        * (-z * z - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07
                                + t * (-1.135_203_98
                                    + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
            .exp();
    let erf = 1.0 - r;
    (if x < 0.0 { -erf } else { erf }) as f32
}

impl Activation {
    /// The activation of one value (as [`crate::tower::Mlp`] applies it).
    fn apply(self, x: f32) -> f32 {
        match self {
            Activation::QuickGelu => x / (1.0 + exp_f32(-1.702 * x)),
            Activation::Gelu => 0.5 * x * (1.0 + erf(x / std::f32::consts::SQRT_2)),
            Activation::GeluTanh => {
                let c = (2.0 / std::f32::consts::PI).sqrt();
                0.5 * x * (1.0 + (c * (x + 0.044_715 * x * x * x)).tanh())
            }
        }
    }

    /// [`Activation::apply`] over every value of `values`, vectorised (see [`vectorised`]).
    fn apply_all(self, values: &mut [f32]) {
        vectorised(|| values.iter_mut().for_each(|v| *v = self.apply(*v)));
    }
}

/// Each row of `scores` (rows of `width` values) replaced by its softmax, with the vectorising
/// `exp` of the WKV kernel (2 ulp) — the tower's attention spends most of its non-GEMM time here.
fn softmax_rows(scores: &mut [f32], width: usize) {
    vectorised(|| {
        for row in scores.chunks_mut(width) {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0.0;
            for s in row.iter_mut() {
                *s = exp_f32(*s - max);
                sum += *s;
            }
            let inv = 1.0 / sum;
            row.iter_mut().for_each(|s| *s *= inv);
        }
    })
}

/// Runs `f` compiled for AVX2 + FMA when the CPU has them (the loops inlined into it then use
/// 8-wide vectors instead of the x86-64 baseline's 4), plainly elsewhere.
#[inline(always)]
fn vectorised(f: impl FnOnce()) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        #[target_feature(enable = "avx2,fma")]
        fn with_avx2(f: impl FnOnce()) {
            f()
        }
        // SAFETY: the CPU has the features `with_avx2` is compiled for.
        unsafe { with_avx2(f) };
        return;
    }
    f()
}

/// A [`VisionTower`]'s weights on the host, run with GEMMs (see the module docs).
#[derive(Clone, Debug)]
pub struct FusedTower {
    config: VisionConfig,
    patch: Dense,
    class: Option<Vec<f32>>,
    /// `[positions, D]` (the class row first for CLIP).
    position: Vec<f32>,
    pre: Option<Norm>,
    layers: Vec<Layer>,
}

impl FusedTower {
    /// Copies the weights of `tower` to the host (q/k/v concatenated per layer).
    pub fn new<B: Backend>(tower: &VisionTower<B>) -> Self {
        let eps = tower.config.layer_norm_eps;
        Self {
            config: tower.config.clone(),
            patch: Dense::from_linear(&tower.patch_embedding),
            class: tower.class_embedding.as_ref().map(|c| host_values(c.val())),
            position: host_values(tower.position_embedding.val()),
            pre: tower.pre_layrnorm.as_ref().map(|l| Norm::from_layer_norm(l, eps)),
            layers: tower
                .layers
                .iter()
                .map(|l| Layer {
                    ln1: Norm::from_layer_norm(&l.layer_norm1, eps),
                    qkv: Dense::concat(&[
                        Dense::from_linear(&l.self_attn.q_proj),
                        Dense::from_linear(&l.self_attn.k_proj),
                        Dense::from_linear(&l.self_attn.v_proj),
                    ]),
                    out: Dense::from_linear(&l.self_attn.out_proj),
                    ln2: Norm::from_layer_norm(&l.layer_norm2, eps),
                    fc1: Dense::from_linear(&l.mlp.fc1),
                    fc2: Dense::from_linear(&l.mlp.fc2),
                })
                .collect(),
        }
    }

    /// The fused tower of a checkpoint's tower tensors (`map` with the prefix removed, as
    /// [`crate::checkpoint::into_vision_tensors`] gives it), taking the map apart: the
    /// configuration (`config`, else inferred) and every key are checked as
    /// [`VisionConfig::tower_from_tensors`] does, then the tensors are moved in — linear and
    /// patch weights are already `[out, in]` — with no burn tower built and nothing transposed.
    /// Keys the features do not use (post-LN, a SigLIP head) are checked and dropped.
    pub fn from_tensors(map: TensorMap, config: Option<VisionConfig>) -> Result<Self, VisionError> {
        let (config, _) = VisionConfig::checked(&map, config)?;
        let mut map = map;
        let mut take = |key: &str| -> Result<Vec<f32>, VisionError> {
            map.tensors.remove(key).map(|(_, v)| v).ok_or_else(|| {
                visualrwkv_checkpoint::CheckpointError::Keys {
                    path: map.origin.clone(),
                    model: "the fused vision tower".into(),
                    problems: vec![visualrwkv_checkpoint::KeyProblem::Missing(key.into())],
                }
                .into()
            })
        };
        let (d, f, c, p) = (config.hidden_size, config.intermediate_size, config.num_channels, config.patch_size);
        let eps = config.layer_norm_eps as f32;
        let mut norm = |key: &str| -> Result<Norm, VisionError> {
            Ok(Norm { gamma: take(&format!("{key}.weight"))?, beta: take(&format!("{key}.bias"))?, eps })
        };
        let clip = config.kind == TowerKind::Clip;
        let pre = if clip { Some(norm("pre_layrnorm")?) } else { None };
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for l in 0..config.num_hidden_layers {
            let o = format!("encoder.layers.{l}");
            let mut dense = |key: &str, inp: usize, out: usize| -> Result<Dense, VisionError> {
                let w = take(&format!("{o}.{key}.weight"))?;
                Ok(Dense::from_out_in(&w, Some(take(&format!("{o}.{key}.bias"))?), inp, out))
            };
            let (q, k, v) =
                (dense("self_attn.q_proj", d, d)?, dense("self_attn.k_proj", d, d)?, dense("self_attn.v_proj", d, d)?);
            let (out, fc1, fc2) =
                (dense("self_attn.out_proj", d, d)?, dense("mlp.fc1", d, f)?, dense("mlp.fc2", f, d)?);
            let mut norm = |key: &str| -> Result<Norm, VisionError> {
                Ok(Norm { gamma: take(&format!("{o}.{key}.weight"))?, beta: take(&format!("{o}.{key}.bias"))?, eps })
            };
            let (ln1, ln2) = (norm("layer_norm1")?, norm("layer_norm2")?);
            layers.push(Layer { ln1, qkv: Dense::concat(&[q, k, v]), out, ln2, fc1, fc2 });
        }
        let patch_bias = if clip { None } else { Some(take("embeddings.patch_embedding.bias")?) };
        let patch = Dense::from_out_in(&take("embeddings.patch_embedding.weight")?, patch_bias, c * p * p, d);
        let class = if clip { Some(take("embeddings.class_embedding")?) } else { None };
        let position = take("embeddings.position_embedding.weight")?;
        Ok(Self { config, patch, class, position, pre, layers })
    }

    /// The tower's configuration.
    pub fn config(&self) -> &VisionConfig {
        &self.config
    }

    /// [`VisionTower::features`] of pixels `[B, C, H, W]` (`dims`, row-major `pixels`): the hidden
    /// state `layer` (Python-style, −1 = the last layer's output) `[B, T, D]` row-major, and the
    /// patch grid. The same checks and errors as the tower's.
    pub fn features(
        &self,
        pixels: &[f32],
        dims: [usize; 4],
        layer: i64,
    ) -> Result<(Vec<f32>, (usize, usize)), VisionError> {
        let [b, c, h, w] = dims;
        let (p, d) = (self.config.patch_size, self.config.hidden_size);
        if c != self.config.num_channels || h < p || w < p || b == 0 || pixels.len() != b * c * h * w {
            return Err(VisionError::Shape {
                what: "pixel_values".into(),
                expected: format!("[B ≥ 1, {}, H ≥ {p}, W ≥ {p}] with B·C·H·W values", self.config.num_channels),
                found: vec![b, c, h, w, pixels.len()],
            });
        }
        let n = self.layers.len() as i64;
        let index = if layer < 0 { n + 1 + layer } else { layer };
        if !(0..=n).contains(&index) {
            return Err(VisionError::Layer { layer, layers: n as usize });
        }
        let grid = (h / p, w / p);
        let position = self.position_for(grid)?;
        let mut out = Vec::new();
        for image in pixels.chunks(c * h * w) {
            let mut x = self.embed(image, (h, w), grid, &position);
            for l in &self.layers[..index as usize] {
                self.layer(l, &mut x);
            }
            out.extend(x);
        }
        debug_assert_eq!(out.len() % d, 0);
        Ok((out, grid))
    }

    /// The position embedding for a `gh × gw` grid (resampled as the tower does off its trained
    /// size).
    fn position_for(&self, (gh, gw): (usize, usize)) -> Result<Vec<f32>, VisionError> {
        let (side, d) = (self.config.grid_side(), self.config.hidden_size);
        if (gh, gw) == (side, side) {
            return Ok(self.position.clone());
        }
        let cls = usize::from(self.config.kind == TowerKind::Clip);
        let mut pos = self.position[..cls * d].to_vec();
        pos.extend(bicubic_resize_grid(&self.position[cls * d..], (side, side), d, (gh, gw))?);
        Ok(pos)
    }

    /// One image `[C, H, W]` → embeddings `[T, D]` (patches, class token, positions, pre-LN).
    fn embed(&self, image: &[f32], (_, w): (usize, usize), (gh, gw): (usize, usize), position: &[f32]) -> Vec<f32> {
        let (c, p, d) = (self.config.num_channels, self.config.patch_size, self.config.hidden_size);
        let h = image.len() / (c * w);
        let k = c * p * p;
        // im2col: patch (gy, gx) → row gy·gw + gx, features ordered (channel, y, x).
        let mut cols = vec![0f32; gh * gw * k];
        cols.par_chunks_mut(k).enumerate().for_each(|(i, row)| {
            let (gy, gx) = (i / gw, i % gw);
            for ch in 0..c {
                for y in 0..p {
                    let src = (ch * h + gy * p + y) * w + gx * p;
                    row[(ch * p + y) * p..(ch * p + y + 1) * p].copy_from_slice(&image[src..src + p]);
                }
            }
        });
        let cls = usize::from(self.class.is_some());
        let t = cls + gh * gw;
        let mut x = vec![0f32; t * d];
        if let Some(class) = &self.class {
            x[..d].copy_from_slice(class);
        }
        self.patch.apply(&cols, gh * gw, &mut x[cls * d..]);
        x.par_chunks_mut(d)
            .zip(position.par_chunks(d))
            .for_each(|(x, pos)| x.iter_mut().zip(pos).for_each(|(x, p)| *x += p));
        if let Some(pre) = &self.pre {
            let input = x.clone();
            pre.apply(&input, &mut x);
        }
        x
    }

    /// `x += attn(ln1(x))`, then `x += mlp(ln2(x))`, over the rows of `x` `[T, D]`.
    fn layer(&self, l: &Layer, x: &mut [f32]) {
        let d = self.config.hidden_size;
        let t = x.len() / d;
        let heads = self.config.num_attention_heads;
        let hd = d / heads;
        let mut h = vec![0f32; t * d];
        l.ln1.apply(x, &mut h);
        let mut qkv = vec![0f32; t * 3 * d];
        l.qkv.apply(&h, t, &mut qkv);
        let scale = (hd as f32).powf(-0.5);
        // Heads run side by side, each on one thread with single-threaded GEMMs: a head's
        // products ([t, hd]·[hd, t], [t, t]·[t, hd]) are too small to split well.
        let out = SendPtr(h.as_mut_ptr());
        (0..heads).into_par_iter().for_each_init(
            || vec![0f32; t * t],
            |scores, head| {
                let (q, k, v) = (head * hd, d + head * hd, 2 * d + head * hd);
                // SAFETY: q/k/v columns `[col, col + hd)` of the `t` rows of `qkv` (row stride
                // 3D) and `scores` `[t, t]` (this thread's own) are in bounds.
                unsafe {
                    gemm_f32(
                        Product { m: t, n: t, k: hd },
                        (scores.as_mut_ptr(), t),
                        false,
                        (qkv.as_ptr().add(q), 3 * d as isize, 1),
                        (qkv.as_ptr().add(k), 1, 3 * d as isize),
                        scale,
                        gemm::Parallelism::None,
                    );
                }
                softmax_rows(scores, t);
                // SAFETY: `h`'s columns `[head·hd, +hd)` of its `t` rows (row stride D) are in
                // bounds; each head writes only its own columns, and `h` is not read meanwhile.
                unsafe {
                    gemm_f32(
                        Product { m: t, n: hd, k: t },
                        (out.get().add(head * hd), d),
                        false,
                        (scores.as_ptr(), t as isize, 1),
                        (qkv.as_ptr().add(v), 3 * d as isize, 1),
                        1.0,
                        gemm::Parallelism::None,
                    );
                }
            },
        );
        let mut y = vec![0f32; t * d];
        l.out.apply(&h, t, &mut y);
        x.par_iter_mut().zip(&y).for_each(|(x, y)| *x += y);
        l.ln2.apply(x, &mut h);
        let mut f = vec![0f32; t * l.fc1.out];
        l.fc1.apply(&h, t, &mut f);
        let act = self.config.hidden_act;
        f.par_chunks_mut(4096).for_each(|c| act.apply_all(c));
        l.fc2.apply(&f, t, &mut y);
        x.par_iter_mut().zip(&y).for_each(|(x, y)| *x += y);
    }
}
