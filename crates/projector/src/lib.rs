//! # visualrwkv-projector: from vision features to RWKV's residual width
//!
//! The projector maps pooled vision features into the embedding space of RWKV-6, where they are
//! treated like token embeddings (they pass through `ln0`). Built in ([`ProjectorKind`]):
//!
//! | kind | forward | keys (under `proj.`) | used by |
//! |---|---|---|---|
//! | [`ProjectorKind::Linear`] | `W·x`, no bias | `weight` `[C, D]` | VisualRWKV v6.0 |
//! | [`ProjectorKind::MirroredLinear`] | `W·[x_t ‖ x_{T−1−t}]`, no bias | `weight` `[C, 2D]` | VisualRWKV v6.01 |
//! | [`ProjectorKind::Mlp2xGelu`] | `W₂·GELU(W₁·x + b₁) + b₂` | `0.{weight,bias}`, `2.{weight,bias}` | LLaVA-1.5 |
//! | [`ProjectorKind::ContextGating`] | `p = P·x; O·(p ⊙ σ(G·p))`, no biases | `proj.weight`, `gate.weight`, `o_proj.weight` | VisualRWKV-HD |
//! | [`ProjectorKind::ContextGatingLn`] | `LN(O·(x ⊙ σ(G·x)))`, no biases in `G`, `O` | `gate.weight` `[D, D]`, `o_proj.weight` `[C, D]`, `ln_v.{weight,bias}` | VisualRWKV-7 v7.00 |
//!
//! The mirrored variant concatenates each row with the row at the mirrored position of the
//! *whole* feature sequence (the reference's `torch.cat((f, f.flip(1)), dim=2)`, class token
//! included). A new projector is any module implementing [`Project`]; the enum [`Projector`]
//! holds the built-in ones for loading and saving.
//!
//! # Shapes
//!
//! Input `[B, T, D]` (D = vision width), output `[B, T, C]` (C = RWKV's `n_embd`).

use std::path::Path;

use burn::config::Config;
use burn::module::Module;
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::activation::{gelu, sigmoid};
use burn::tensor::{Tensor, TensorData, backend::Backend};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use visualrwkv_checkpoint::table::{self, Layout, WeightKey};
use visualrwkv_checkpoint::{CheckpointError, TensorMap};

/// Errors building or loading a projector.
#[derive(Debug, Error)]
pub enum ProjectorError {
    /// Reading or checking the checkpoint failed (names the file and every bad key).
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The projector kind cannot be determined from the keys.
    #[error("{origin}: {why}")]
    Kind {
        /// The file.
        origin: String,
        /// What was found.
        why: String,
    },
    /// The input does not fit the projector.
    #[error("projector input: expected [B, T, {expected}], found {found:?}")]
    Shape {
        /// The input width the projector takes.
        expected: usize,
        /// The shape found.
        found: Vec<usize>,
    },
}

/// A projector: vision features `[B, T, D]` → embeddings `[B, T, C]`. Implement it to plug in a
/// new design.
pub trait Project<B: Backend> {
    /// Vision width D the projector takes.
    fn in_dim(&self) -> usize;
    /// Output width C.
    fn out_dim(&self) -> usize;
    /// Projects `[B, T, D]` to `[B, T, C]` (unchecked; see [`Projector::project`]).
    fn forward(&self, features: Tensor<B, 3>) -> Tensor<B, 3>;
}

/// The built-in projector designs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProjectorKind {
    /// `Linear(D → C)` without bias (VisualRWKV v6.0 `proj.weight`).
    Linear,
    /// Each feature concatenated with the mirrored-position feature, then `Linear(2D → C)`
    /// without bias (v6.01).
    MirroredLinear,
    /// `Linear(D → C)`, GELU, `Linear(C → C)`, with biases (LLaVA-1.5's `mlp2x_gelu`).
    Mlp2xGelu,
    /// VisualRWKV-HD's MLP with context gating: `p = proj(x)`, `o_proj(p ⊙ σ(gate(p)))`, no
    /// biases.
    ContextGating,
    /// VisualRWKV-7 v7.00's `MLPWithContextGating`: the gate acts on the input,
    /// `ln_v(o_proj(x ⊙ σ(gate(x))))`, `gate` `D → D` and `o_proj` `D → C` without biases,
    /// `ln_v` a LayerNorm (eps 1e-5) over C.
    ContextGatingLn,
}

/// Configuration of a built-in projector.
#[derive(Config, Debug, PartialEq)]
pub struct ProjectorConfig {
    /// The design.
    pub kind: ProjectorKind,
    /// Vision width D.
    pub in_dim: usize,
    /// RWKV width C.
    pub out_dim: usize,
}

/// A built-in projector.
// One projector per model, built once: the size difference between variants costs nothing, and
// boxing would hide the modules from burn's derive.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Projector<B: Backend> {
    /// See [`ProjectorKind::Linear`].
    Linear(Linear<B>),
    /// See [`ProjectorKind::MirroredLinear`].
    MirroredLinear(Linear<B>),
    /// See [`ProjectorKind::Mlp2xGelu`].
    Mlp2xGelu(Mlp2xGelu<B>),
    /// See [`ProjectorKind::ContextGating`].
    ContextGating(ContextGating<B>),
    /// See [`ProjectorKind::ContextGatingLn`].
    ContextGatingLn(ContextGatingLn<B>),
}

/// LLaVA-1.5's two-layer MLP with GELU (exact, erf).
#[derive(Module, Debug)]
pub struct Mlp2xGelu<B: Backend> {
    /// `proj.0`: D → C with bias.
    pub fc1: Linear<B>,
    /// `proj.2`: C → C with bias.
    pub fc2: Linear<B>,
}

/// VisualRWKV-HD's `MLPWithContextGating`.
#[derive(Module, Debug)]
pub struct ContextGating<B: Backend> {
    /// `proj.proj`: D → C, no bias.
    pub proj: Linear<B>,
    /// `proj.gate`: C → C, no bias.
    pub gate: Linear<B>,
    /// `proj.o_proj`: C → C, no bias.
    pub o_proj: Linear<B>,
}

/// VisualRWKV-7 v7.00's `MLPWithContextGating`.
#[derive(Module, Debug)]
pub struct ContextGatingLn<B: Backend> {
    /// `proj.gate`: D → D, no bias.
    pub gate: Linear<B>,
    /// `proj.o_proj`: D → C, no bias.
    pub o_proj: Linear<B>,
    /// `proj.ln_v`: LayerNorm over C, eps 1e-5.
    pub ln_v: LayerNorm<B>,
}

impl ProjectorConfig {
    /// A randomly initialised projector.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Projector<B> {
        let (d, c) = (self.in_dim, self.out_dim);
        let lin = |i: usize, o: usize, bias: bool| LinearConfig::new(i, o).with_bias(bias).init(device);
        match self.kind {
            ProjectorKind::Linear => Projector::Linear(lin(d, c, false)),
            ProjectorKind::MirroredLinear => Projector::MirroredLinear(lin(2 * d, c, false)),
            ProjectorKind::Mlp2xGelu => Projector::Mlp2xGelu(Mlp2xGelu { fc1: lin(d, c, true), fc2: lin(c, c, true) }),
            ProjectorKind::ContextGating => Projector::ContextGating(ContextGating {
                proj: lin(d, c, false),
                gate: lin(c, c, false),
                o_proj: lin(c, c, false),
            }),
            ProjectorKind::ContextGatingLn => Projector::ContextGatingLn(ContextGatingLn {
                gate: lin(d, d, false),
                o_proj: lin(d, c, false),
                ln_v: LayerNormConfig::new(c).with_epsilon(1e-5).init(device),
            }),
        }
    }

    /// Every key (without prefix) with its shape, PyTorch layout (`[out, in]`).
    pub fn expected_keys(&self) -> Vec<(String, Vec<usize>)> {
        table::expected_keys(&self.weight_keys())
    }

    /// The key table of this projector: each reference key (without prefix), its shape and the
    /// [`Projector`] parameter it fills (burn's module path, the enum variant first; every
    /// `nn.Linear` weight transposed).
    pub fn weight_keys(&self) -> Vec<WeightKey> {
        let (d, c) = (self.in_dim, self.out_dim);
        let linear = |official: &str, param: &str, out: usize, inp: usize, bias: bool| {
            let mut keys = vec![WeightKey::new(
                format!("{official}weight"),
                format!("{param}.weight"),
                vec![out, inp],
                Layout::Transposed,
            )];
            if bias {
                keys.push(WeightKey::new(format!("{official}bias"), format!("{param}.bias"), vec![out], Layout::Same));
            }
            keys
        };
        match self.kind {
            ProjectorKind::Linear => linear("", "Linear", c, d, false),
            ProjectorKind::MirroredLinear => linear("", "MirroredLinear", c, 2 * d, false),
            ProjectorKind::Mlp2xGelu => {
                [linear("0.", "Mlp2xGelu.fc1", c, d, true), linear("2.", "Mlp2xGelu.fc2", c, c, true)].concat()
            }
            ProjectorKind::ContextGating => [
                linear("proj.", "ContextGating.proj", c, d, false),
                linear("gate.", "ContextGating.gate", c, c, false),
                linear("o_proj.", "ContextGating.o_proj", c, c, false),
            ]
            .concat(),
            ProjectorKind::ContextGatingLn => {
                let norm = |official: &str, param: &str| {
                    WeightKey::new(
                        format!("ln_v.{official}"),
                        format!("ContextGatingLn.ln_v.{param}"),
                        vec![c],
                        Layout::Same,
                    )
                };
                let mut keys = [
                    linear("gate.", "ContextGatingLn.gate", d, d, false),
                    linear("o_proj.", "ContextGatingLn.o_proj", c, d, false),
                ]
                .concat();
                keys.extend([norm("weight", "gamma"), norm("bias", "beta")]);
                keys
            }
        }
    }

    /// Infers the design and sizes from the projector's tensors (prefix removed). A bare
    /// `weight` is [`ProjectorKind::Linear`], unless `vision_dim` is given and the weight takes
    /// twice that width ([`ProjectorKind::MirroredLinear`]).
    pub fn infer(map: &TensorMap, vision_dim: Option<usize>) -> Result<Self, ProjectorError> {
        let err = |why: String| ProjectorError::Kind { origin: map.origin.clone(), why };
        let two = |key: &str| -> Result<[usize; 2], ProjectorError> {
            match map.shape(key).as_deref() {
                Some(&[o, i]) => Ok([o, i]),
                Some(s) => Err(err(format!("`{key}` has shape {s:?}, expected [out, in]"))),
                None => Err(err(format!("no `{key}`"))),
            }
        };
        let (kind, [c, d]) = if map.shape("ln_v.weight").is_some() {
            (ProjectorKind::ContextGatingLn, two("o_proj.weight")?)
        } else if map.shape("0.weight").is_some() {
            (ProjectorKind::Mlp2xGelu, two("0.weight")?)
        } else if map.shape("gate.weight").is_some() {
            (ProjectorKind::ContextGating, two("proj.weight")?)
        } else if map.shape("weight").is_some() {
            let [c, i] = two("weight")?;
            match vision_dim {
                Some(v) if i == 2 * v => (ProjectorKind::MirroredLinear, [c, v]),
                _ => (ProjectorKind::Linear, [c, i]),
            }
        } else {
            let mut keys: Vec<&String> = map.tensors.keys().collect();
            keys.sort();
            return Err(err(format!(
                "no projector keys (`weight`, `0.weight`, `gate.weight` or `ln_v.weight` under the prefix); found {keys:?}"
            )));
        };
        Ok(Self::new(kind, d, c))
    }

    /// Builds the projector from its tensors (prefix removed), checking every key.
    pub fn from_tensors<B: Backend>(
        &self,
        map: &TensorMap,
        device: &B::Device,
    ) -> Result<Projector<B>, ProjectorError> {
        let model = format!("a {:?} projector", self.kind);
        map.check_keys(&self.expected_keys(), &model)?;
        Ok(table::load_into(self.init::<B>(device), map, &self.weight_keys(), &model, device)?)
    }
}

/// Loads the projector stored under `prefix` (e.g. `"proj."` in a VisualRWKV checkpoint, `""`
/// for a file holding only the projector), inferring its design ([`ProjectorConfig::infer`]).
pub fn load<B: Backend>(
    path: impl AsRef<Path>,
    prefix: &str,
    vision_dim: Option<usize>,
    device: &B::Device,
) -> Result<Projector<B>, ProjectorError> {
    let map = TensorMap::read(path)?.take_prefix(prefix);
    ProjectorConfig::infer(&map, vision_dim)?.from_tensors(&map, device)
}

impl<B: Backend> Projector<B> {
    /// The design of this projector.
    pub fn kind(&self) -> ProjectorKind {
        match self {
            Projector::Linear(_) => ProjectorKind::Linear,
            Projector::MirroredLinear(_) => ProjectorKind::MirroredLinear,
            Projector::Mlp2xGelu(_) => ProjectorKind::Mlp2xGelu,
            Projector::ContextGating(_) => ProjectorKind::ContextGating,
            Projector::ContextGatingLn(_) => ProjectorKind::ContextGatingLn,
        }
    }

    /// [`Project::forward`] with a check of the input width.
    pub fn project(&self, features: Tensor<B, 3>) -> Result<Tensor<B, 3>, ProjectorError> {
        let dims = features.dims();
        if dims[2] != self.in_dim() {
            return Err(ProjectorError::Shape { expected: self.in_dim(), found: dims.to_vec() });
        }
        Ok(self.forward(features))
    }

    /// The tensors under `prefix` with the reference's names (`[out, in]` weights), f32, from the
    /// key table ([`ProjectorConfig::weight_keys`]).
    pub fn to_tensor_map(&self, prefix: &str) -> Result<TensorMap, ProjectorError> {
        let config = ProjectorConfig::new(self.kind(), self.in_dim(), self.out_dim());
        let map = table::save_from(self, &config.weight_keys(), "projector")?;
        let tensors = map.tensors.into_iter().map(|(k, v)| (format!("{prefix}{k}"), v)).collect();
        Ok(TensorMap { origin: map.origin, tensors })
    }
}

impl<B: Backend> Project<B> for Projector<B> {
    fn in_dim(&self) -> usize {
        match self {
            Projector::Linear(l) => l.weight.dims()[0],
            Projector::MirroredLinear(l) => l.weight.dims()[0] / 2,
            Projector::Mlp2xGelu(m) => m.fc1.weight.dims()[0],
            Projector::ContextGating(g) => g.proj.weight.dims()[0],
            Projector::ContextGatingLn(g) => g.gate.weight.dims()[0],
        }
    }

    fn out_dim(&self) -> usize {
        match self {
            Projector::Linear(l) | Projector::MirroredLinear(l) => l.weight.dims()[1],
            Projector::Mlp2xGelu(m) => m.fc2.weight.dims()[1],
            Projector::ContextGating(g) => g.o_proj.weight.dims()[1],
            Projector::ContextGatingLn(g) => g.o_proj.weight.dims()[1],
        }
    }

    fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        match self {
            Projector::Linear(l) => l.forward(x),
            Projector::MirroredLinear(l) => l.forward(Tensor::cat(vec![x.clone(), x.flip([1])], 2)),
            Projector::Mlp2xGelu(m) => m.fc2.forward(gelu(m.fc1.forward(x))),
            Projector::ContextGating(g) => {
                let p = g.proj.forward(x);
                g.o_proj.forward(p.clone() * sigmoid(g.gate.forward(p)))
            }
            Projector::ContextGatingLn(g) => g.ln_v.forward(g.o_proj.forward(x.clone() * sigmoid(g.gate.forward(x)))),
        }
    }
}

/// Builds a projector input from host rows (tests and examples): `[B, T, D]`.
pub fn features<B: Backend>(values: Vec<f32>, shape: [usize; 3], device: &B::Device) -> Tensor<B, 3> {
    Tensor::from_data(TensorData::new(values, shape), device)
}
