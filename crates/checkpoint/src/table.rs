//! Key tables: how the tensors of an official checkpoint map onto a burn module's parameters.
//!
//! A model crate declares its table once — each official key with its shape, the module path of
//! the parameter it fills and a [`Layout`] — and this module loads a checkpoint into a module
//! ([`load_into`]: every parameter replaced by its tensor, the lazily initialised skeleton never
//! drawn), saves a module back under the official names ([`save_from`]) and lists the expected
//! keys ([`expected_keys`]). Module paths are burn's: field names joined by `.`, `Vec` entries
//! by index, `Option` fields without a level of their own (`blocks.3.att.ddlerp.maa`).
//!
//! # Shapes
//!
//! Official tensors are row-major with their checkpoint shape; [`Layout`] says how a module
//! parameter's values relate to them (burn's `Linear` holds `[in, out]`, `nn.Linear` `[out, in]`).

use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Tensor, TensorData, backend::Backend};

use crate::{CheckpointError, KeyProblem, TensorMap, transpose};

/// How an official tensor relates to the module parameter(s) it fills.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// The same values in the same order (shapes may differ by unit dimensions: `[1, 1, C]` vs
    /// `[C]`).
    Same,
    /// The parameter is the transpose of the official tensor read as `[rows, rest]` (an
    /// `nn.Linear` `[out, in]`, or a convolution `[out, c, p, p]`, held as `[in, out]`).
    Transposed,
    /// The official tensor is row `j` of the parameter, which stacks several keys (`[K, …]`).
    Row(usize),
    /// The parameter is block `j` of the official tensor's rows, which several parameters share
    /// (a packed bias: `in_proj_bias` `[3D]` → three `[D]`).
    Part(usize),
    /// As [`Layout::Part`], transposed (a packed `nn.Linear`: `in_proj_weight` `[3D, D]` → three
    /// `[D, D]` held as `[in, out]`).
    TransposedPart(usize),
}

/// One official tensor of a key table.
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

impl WeightKey {
    /// A key of the table.
    pub fn new(official: impl Into<String>, param: impl Into<String>, shape: Vec<usize>, layout: Layout) -> Self {
        Self { official: official.into(), param: param.into(), shape, layout }
    }
}

/// The `(official key, shape)` pairs of a table, for [`TensorMap::check_keys`].
pub fn expected_keys(keys: &[WeightKey]) -> Vec<(String, Vec<usize>)> {
    let mut seen = std::collections::HashSet::new();
    keys.iter().filter(|k| seen.insert(k.official.clone())).map(|k| (k.official.clone(), k.shape.clone())).collect()
}

/// `(rows, rest)` of a shape read as a matrix.
fn as_matrix(shape: &[usize]) -> (usize, usize) {
    (shape.first().copied().unwrap_or(1), shape.iter().skip(1).product())
}

/// The module path a visitor or mapper is at.
#[derive(Default)]
struct Path(Vec<String>);

impl Path {
    fn get(&self) -> String {
        self.0.join(".")
    }
}

/// How many keys share each official name (the parts of a packed tensor).
fn parts(keys: &[WeightKey]) -> HashMap<&str, usize> {
    let mut n = HashMap::new();
    for k in keys {
        *n.entry(k.official.as_str()).or_insert(0) += 1;
    }
    n
}

/// Replaces every parameter with its values from an official checkpoint.
struct Loader<'a, B: Backend> {
    map: &'a TensorMap,
    /// Module path → the keys that fill it.
    sources: HashMap<&'a str, Vec<&'a WeightKey>>,
    parts: HashMap<&'a str, usize>,
    device: B::Device,
    path: Path,
    problems: Vec<KeyProblem>,
}

impl<B: Backend> Loader<'_, B> {
    /// The values of the parameter at `path`, of module shape `shape`, in module layout.
    fn values(&self, path: &str, shape: &[usize]) -> Option<Vec<f32>> {
        let sources = self.sources.get(path)?;
        if let [k] = sources.as_slice()
            && !matches!(k.layout, Layout::Row(_))
        {
            let v = self.map.get(&k.official)?;
            let (rows, cols) = as_matrix(&k.shape);
            let n = self.parts.get(k.official.as_str()).copied().unwrap_or(1);
            let block = |j: usize| v.get(j * v.len() / n..(j + 1) * v.len() / n);
            return Some(match k.layout {
                Layout::Same => v.to_vec(),
                Layout::Transposed => transpose(v, rows, cols),
                Layout::Part(j) => block(j)?.to_vec(),
                Layout::TransposedPart(j) => transpose(block(j)?, rows / n, cols),
                Layout::Row(_) => return None,
            });
        }
        let width: usize = shape.iter().skip(1).product();
        let mut out = vec![0f32; shape.iter().product()];
        for k in sources {
            let Layout::Row(j) = k.layout else { return None };
            out.get_mut(j * width..(j + 1) * width)?.copy_from_slice(self.map.get(&k.official)?.get(..width)?);
        }
        Some(out)
    }
}

impl<B: Backend> ModuleMapper<B> for Loader<'_, B> {
    fn enter_module(&mut self, name: &str, _container: &str) {
        self.path.0.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container: &str) {
        self.path.0.pop();
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

/// Loads the checkpoint tensors `map` (keys already checked against the table) into `module`:
/// each float parameter is replaced by its tensor as `keys` say, keeping its id. Errors name the
/// module paths the table does not fill or fills with the wrong size (`model` describes the
/// module in the error).
pub fn load_into<B: Backend, M: Module<B>>(
    module: M,
    map: &TensorMap,
    keys: &[WeightKey],
    model: &str,
    device: &B::Device,
) -> Result<M, CheckpointError> {
    let mut sources: HashMap<&str, Vec<&WeightKey>> = HashMap::new();
    for k in keys {
        sources.entry(k.param.as_str()).or_default().push(k);
    }
    let mut loader = Loader {
        map,
        sources,
        parts: parts(keys),
        device: device.clone(),
        path: Path::default(),
        problems: Vec::new(),
    };
    let module = module.map(&mut loader);
    if loader.problems.is_empty() {
        Ok(module)
    } else {
        Err(CheckpointError::Keys {
            path: map.origin.clone(),
            model: format!("{model} (module parameters the key table does not fill)"),
            problems: loader.problems,
        })
    }
}

/// Collects every float parameter's host values by module path.
#[derive(Default)]
struct Collector {
    path: Path,
    /// Module path → (module shape, values).
    params: HashMap<String, (Vec<usize>, Vec<f32>)>,
}

impl<B: Backend> ModuleVisitor<B> for Collector {
    fn enter_module(&mut self, name: &str, _container: &str) {
        self.path.0.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container: &str) {
        self.path.0.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let t = param.val();
        let shape = t.dims().to_vec();
        self.params.insert(self.path.get(), (shape, crate::host_values(t)));
    }
}

/// The tensors of `module` under the official keys and shapes of `keys` (f32); `origin` names
/// the map. Errors name the parameters the module lacks.
pub fn save_from<B: Backend, M: Module<B>>(
    module: &M,
    keys: &[WeightKey],
    origin: &str,
) -> Result<TensorMap, CheckpointError> {
    let mut collector = Collector::default();
    module.visit(&mut collector);
    let mut tensors: HashMap<String, (Vec<usize>, Vec<f32>)> = HashMap::new();
    let mut problems = Vec::new();
    // Packed tensors are assembled part by part, in part order.
    let mut ordered: Vec<&WeightKey> = keys.iter().collect();
    ordered.sort_by_key(|k| match k.layout {
        Layout::Part(j) | Layout::TransposedPart(j) => j,
        _ => 0,
    });
    for k in ordered {
        let Some((shape, v)) = collector.params.get(&k.param) else {
            problems.push(KeyProblem::Missing(k.param.clone()));
            continue;
        };
        let (rows, cols) = as_matrix(shape);
        let values = match k.layout {
            Layout::Same | Layout::Part(_) => v.clone(),
            Layout::Transposed | Layout::TransposedPart(_) => transpose(v, rows, cols),
            Layout::Row(j) => v[j * cols..(j + 1) * cols].to_vec(),
        };
        tensors.entry(k.official.clone()).or_insert_with(|| (k.shape.clone(), Vec::new())).1.extend(values);
    }
    if problems.is_empty() {
        Ok(TensorMap { origin: origin.into(), tensors })
    } else {
        Err(CheckpointError::Keys {
            path: origin.into(),
            model: format!("{origin} (module parameters absent)"),
            problems,
        })
    }
}
