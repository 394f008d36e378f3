//! The one table of the official RWKV-6 (x060) weights: each official checkpoint key, its shape,
//! the [`Rwkv`] parameter it fills and how the two layouts differ ([`Layout`]). Loading
//! ([`load_official`]: [`RwkvConfig::init`]'s skeleton, then every parameter replaced by its
//! tensor), saving ([`official_tensors`]), the key check ([`RwkvConfig::expected_keys`]) and the
//! peers' renames all read it.
//!
//! # Shapes
//!
//! Official shapes (RWKV-LM's trainer): `nn.Linear` weights `[out, in]`, per-channel vectors
//! `[1, 1, C]`, the five ddlerp mixes as five keys. Module shapes: burn's `Linear` `[in, out]`,
//! vectors `[C]`, the five mixes stacked `[5, C]` (`w, k, v, r, g`).

use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Tensor, TensorData, backend::Backend};
use visualrwkv_checkpoint::{CheckpointError, KeyProblem, TensorMap};

use crate::{Rwkv, RwkvBackend, RwkvConfig, RwkvError};

/// How an official tensor is laid out relative to the module parameter it fills.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Same shape and element order.
    Same,
    /// Official `[out, in]` (`nn.Linear`), module `[in, out]` (burn's `Linear`).
    Transposed,
    /// Official `[1, 1, N]`, module `[N]`.
    Squeezed,
    /// Official `[1, 1, C]` is row `j` of the module's stacked `[5, C]`.
    Row(usize),
}

/// One official tensor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WeightKey {
    /// The official key (`blocks.3.att.time_maa_w`).
    pub official: String,
    /// The module path of the parameter it fills (`blocks.3.att.ddlerp.maa`).
    pub param: String,
    /// The official shape.
    pub shape: Vec<usize>,
    /// How the official tensor maps onto the parameter.
    pub layout: Layout,
}

/// A shape from the configuration.
type ShapeOf = fn(&RwkvConfig) -> Vec<usize>;

/// Keys outside the blocks: `(official, module path, layout, official shape)`.
const MODEL_KEYS: &[(&str, &str, Layout, ShapeOf)] = &[
    ("emb.weight", "emb.weight", Layout::Same, |c| vec![c.vocab_size, c.n_embd]),
    ("blocks.0.ln0.weight", "ln0.gamma", Layout::Same, |c| vec![c.n_embd]),
    ("blocks.0.ln0.bias", "ln0.beta", Layout::Same, |c| vec![c.n_embd]),
    ("ln_out.weight", "ln_out.gamma", Layout::Same, |c| vec![c.n_embd]),
    ("ln_out.bias", "ln_out.beta", Layout::Same, |c| vec![c.n_embd]),
    ("head.weight", "head.weight", Layout::Transposed, |c| vec![c.vocab_size, c.n_embd]),
];

/// Keys of block `l`, relative to `blocks.{l}.` on both sides.
const BLOCK_KEYS: &[(&str, &str, Layout, ShapeOf)] = &[
    ("ln1.weight", "ln1.gamma", Layout::Same, |c| vec![c.n_embd]),
    ("ln1.bias", "ln1.beta", Layout::Same, |c| vec![c.n_embd]),
    ("ln2.weight", "ln2.gamma", Layout::Same, |c| vec![c.n_embd]),
    ("ln2.bias", "ln2.beta", Layout::Same, |c| vec![c.n_embd]),
    ("att.time_maa_x", "att.ddlerp.maa_x", Layout::Squeezed, |c| vec![1, 1, c.n_embd]),
    ("att.time_maa_w", "att.ddlerp.maa", Layout::Row(0), |c| vec![1, 1, c.n_embd]),
    ("att.time_maa_k", "att.ddlerp.maa", Layout::Row(1), |c| vec![1, 1, c.n_embd]),
    ("att.time_maa_v", "att.ddlerp.maa", Layout::Row(2), |c| vec![1, 1, c.n_embd]),
    ("att.time_maa_r", "att.ddlerp.maa", Layout::Row(3), |c| vec![1, 1, c.n_embd]),
    ("att.time_maa_g", "att.ddlerp.maa", Layout::Row(4), |c| vec![1, 1, c.n_embd]),
    ("att.time_maa_w1", "att.ddlerp.w1", Layout::Same, |c| vec![c.n_embd, 5 * c.d_mix]),
    ("att.time_maa_w2", "att.ddlerp.w2", Layout::Same, |c| vec![5, c.d_mix, c.n_embd]),
    ("att.time_decay", "att.decay.base", Layout::Squeezed, |c| vec![1, 1, c.dim_att()]),
    ("att.time_decay_w1", "att.decay.w1", Layout::Same, |c| vec![c.n_embd, c.d_decay]),
    ("att.time_decay_w2", "att.decay.w2", Layout::Same, |c| vec![c.d_decay, c.dim_att()]),
    ("att.time_faaaa", "att.bonus", Layout::Same, |c| vec![c.n_head, c.head_size]),
    ("att.receptance.weight", "att.receptance.weight", Layout::Transposed, |c| vec![c.dim_att(), c.n_embd]),
    ("att.key.weight", "att.key.weight", Layout::Transposed, |c| vec![c.dim_att(), c.n_embd]),
    ("att.value.weight", "att.value.weight", Layout::Transposed, |c| vec![c.dim_att(), c.n_embd]),
    ("att.gate.weight", "att.gate.weight", Layout::Transposed, |c| vec![c.dim_att(), c.n_embd]),
    ("att.output.weight", "att.output.weight", Layout::Transposed, |c| vec![c.n_embd, c.dim_att()]),
    ("att.ln_x.weight", "att.ln_x.gamma", Layout::Same, |c| vec![c.dim_att()]),
    ("att.ln_x.bias", "att.ln_x.beta", Layout::Same, |c| vec![c.dim_att()]),
    ("ffn.time_maa_k", "ffn.maa_k", Layout::Squeezed, |c| vec![1, 1, c.n_embd]),
    ("ffn.time_maa_r", "ffn.maa_r", Layout::Squeezed, |c| vec![1, 1, c.n_embd]),
    ("ffn.key.weight", "ffn.key.weight", Layout::Transposed, |c| vec![c.dim_ffn, c.n_embd]),
    ("ffn.receptance.weight", "ffn.receptance.weight", Layout::Transposed, |c| vec![c.n_embd, c.n_embd]),
    ("ffn.value.weight", "ffn.value.weight", Layout::Transposed, |c| vec![c.n_embd, c.dim_ffn]),
];

/// Every official tensor of a model of configuration `cfg`, in checkpoint order (embedding, ln0,
/// the blocks, ln_out, head).
pub fn weight_keys(cfg: &RwkvConfig) -> Vec<WeightKey> {
    let key = |official: String, param: String, layout: Layout, shape: ShapeOf| WeightKey {
        official,
        param,
        shape: shape(cfg),
        layout,
    };
    let top = |range: std::ops::Range<usize>| {
        MODEL_KEYS[range]
            .iter()
            .map(|&(o, p, layout, shape)| key(o.into(), p.into(), layout, shape))
            .collect::<Vec<_>>()
    };
    let mut keys = top(0..3);
    for l in 0..cfg.n_layer {
        keys.extend(
            BLOCK_KEYS
                .iter()
                .map(|&(o, p, layout, shape)| key(format!("blocks.{l}.{o}"), format!("blocks.{l}.{p}"), layout, shape)),
        );
    }
    keys.extend(top(3..MODEL_KEYS.len()));
    keys
}

/// `[rows, cols]` row-major → `[cols, rows]`.
fn transpose(v: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0f32; v.len()];
    for (r, row) in v.chunks_exact(cols).enumerate() {
        for (c, &x) in row.iter().enumerate() {
            t[c * rows + r] = x;
        }
    }
    t
}

/// The parameter path that a visitor or mapper is at.
#[derive(Default)]
struct Path(Vec<String>);

impl Path {
    fn enter(&mut self, name: &str) {
        self.0.push(name.to_string());
    }
    fn exit(&mut self) {
        self.0.pop();
    }
    fn get(&self) -> String {
        self.0.join(".")
    }
}

/// Replaces every parameter with its tensor from an official checkpoint.
struct Loader<'a, B: Backend> {
    map: &'a TensorMap,
    /// Module path → the official keys that fill it.
    sources: HashMap<String, Vec<&'a WeightKey>>,
    device: B::Device,
    path: Path,
    /// Parameters the table does not fill, or filled with the wrong size.
    problems: Vec<KeyProblem>,
}

impl<B: Backend> Loader<'_, B> {
    /// The module-layout values of the parameter at `path` with module shape `shape`.
    fn values(&self, path: &str, shape: &[usize]) -> Option<Vec<f32>> {
        let sources = self.sources.get(path)?;
        let get = |k: &WeightKey| self.map.get(&k.official);
        match sources.as_slice() {
            [k] => {
                let v = get(k)?;
                Some(match k.layout {
                    Layout::Transposed => transpose(v, k.shape[0], k.shape[1]),
                    _ => v.to_vec(),
                })
            }
            rows => {
                let width: usize = shape.iter().skip(1).product();
                let mut out = vec![0f32; rows.len() * width];
                for k in rows {
                    let Layout::Row(j) = k.layout else { return None };
                    out.get_mut(j * width..(j + 1) * width)?.copy_from_slice(get(k)?.get(..width)?);
                }
                Some(out)
            }
        }
    }
}

impl<B: Backend> ModuleMapper<B> for Loader<'_, B> {
    fn enter_module(&mut self, name: &str, _container: &str) {
        self.path.enter(name);
    }

    fn exit_module(&mut self, _name: &str, _container: &str) {
        self.path.exit();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let path = self.path.get();
        let shape = param.lazy_shape().dims::<D>().to_vec();
        match self.values(&path, &shape) {
            Some(v) if v.len() == shape.iter().product::<usize>() => {
                let tensor = Tensor::<B, D>::from_data(TensorData::new(v, shape), &self.device);
                Param::initialized(param.id, tensor.require_grad())
            }
            Some(v) => {
                self.problems.push(KeyProblem::Shape { key: path, expected: shape, found: vec![v.len()] });
                param
            }
            None => {
                self.problems.push(KeyProblem::Missing(path));
                param
            }
        }
    }
}

/// Loads official checkpoint tensors into a model: the configuration is inferred and every key
/// checked ([`RwkvConfig::from_checkpoint`]), then each parameter of the (lazy, never drawn)
/// skeleton of that configuration is replaced by its tensor as the table says.
pub fn load_official<B: Backend>(map: &TensorMap, device: &B::Device) -> Result<Rwkv<B>, RwkvError> {
    let cfg = RwkvConfig::from_checkpoint(map)?;
    let keys = weight_keys(&cfg);
    let mut sources: HashMap<String, Vec<&WeightKey>> = HashMap::new();
    for k in &keys {
        sources.entry(k.param.clone()).or_default().push(k);
    }
    let mut loader = Loader { map, sources, device: device.clone(), path: Path::default(), problems: Vec::new() };
    let model = cfg.init_lazy::<B>(device).map(&mut loader);
    if loader.problems.is_empty() {
        Ok(model)
    } else {
        Err(RwkvError::Checkpoint(CheckpointError::Keys {
            path: map.origin.clone(),
            model: "the RWKV-6 module (parameters the key table does not fill)".into(),
            problems: loader.problems,
        }))
    }
}

/// Collects every parameter's host values by module path.
#[derive(Default)]
struct Collector {
    path: Path,
    /// Module path → (module shape, values).
    params: HashMap<String, (Vec<usize>, Vec<f32>)>,
}

impl<B: Backend> ModuleVisitor<B> for Collector {
    fn enter_module(&mut self, name: &str, _container: &str) {
        self.path.enter(name);
    }

    fn exit_module(&mut self, _name: &str, _container: &str) {
        self.path.exit();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let t = param.val();
        let shape = t.dims().to_vec();
        self.params.insert(self.path.get(), (shape, host_f32(t)));
    }
}

/// The values of a float tensor as f32 on the host.
pub(crate) fn host_f32<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    // `convert` makes the data f32, so reading it as f32 cannot fail.
    t.into_data().convert::<f32>().into_vec::<f32>().unwrap_or_default()
}

/// The tensors of `model` under the official keys and shapes (f32), as the table maps them.
pub fn official_tensors<B: RwkvBackend>(model: &Rwkv<B>) -> Result<TensorMap, RwkvError> {
    let cfg = model.config();
    let mut collector = Collector::default();
    model.visit(&mut collector);
    let mut tensors = HashMap::new();
    let mut problems = Vec::new();
    for k in weight_keys(&cfg) {
        let Some((shape, v)) = collector.params.get(&k.param) else {
            problems.push(KeyProblem::Missing(k.param.clone()));
            continue;
        };
        let values = match k.layout {
            Layout::Same | Layout::Squeezed => v.clone(),
            Layout::Transposed => transpose(v, shape[0], shape[1]),
            Layout::Row(j) => {
                let width = shape[1];
                v[j * width..(j + 1) * width].to_vec()
            }
        };
        tensors.insert(k.official, (k.shape, values));
    }
    if problems.is_empty() {
        Ok(TensorMap { origin: "model".into(), tensors })
    } else {
        Err(RwkvError::Checkpoint(CheckpointError::Keys {
            path: "model".into(),
            model: "the official RWKV-6 layout (module parameters absent)".into(),
            problems,
        }))
    }
}
