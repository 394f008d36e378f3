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

use std::borrow::Cow;
use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Shape, Tensor, TensorData, backend::Backend};

use crate::{CheckpointError, KeyProblem, TensorMap, TensorSource, transpose};

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

/// The official tensors that fill one parameter, each with the number of parameters sharing it.
#[derive(Clone, Debug)]
struct Plan(Vec<(WeightKey, usize)>);

impl Plan {
    /// The parameter's values (module shape `shape`, module layout) from the official tensors
    /// `fetch` returns; `None` when one is missing or too small.
    fn values<'v>(&self, shape: &[usize], fetch: impl Fn(&str) -> Option<Cow<'v, [f32]>>) -> Option<Vec<f32>> {
        if let [(k, n)] = self.0.as_slice()
            && !matches!(k.layout, Layout::Row(_))
        {
            let v = fetch(&k.official)?;
            let (rows, cols) = as_matrix(&k.shape);
            let block = |j: usize| v.get(j * v.len() / n..(j + 1) * v.len() / n);
            return Some(match k.layout {
                Layout::Same => v.into_owned(),
                Layout::Transposed => transpose(&v, rows, cols),
                Layout::Part(j) => block(j)?.to_vec(),
                Layout::TransposedPart(j) => transpose(block(j)?, rows / n, cols),
                Layout::Row(_) => return None,
            });
        }
        let width: usize = shape.iter().skip(1).product();
        let mut out = vec![0f32; shape.iter().product()];
        for (k, _) in &self.0 {
            let Layout::Row(j) = k.layout else { return None };
            out.get_mut(j * width..(j + 1) * width)?.copy_from_slice(fetch(&k.official)?.get(..width)?);
        }
        Some(out)
    }

    /// The number of values [`Plan::values`] would produce from tensors of lengths `len`, or
    /// `None` when one is missing or too small — the check of a lazy load, without the values.
    fn size(&self, shape: &[usize], len: impl Fn(&str) -> Option<usize>) -> Option<usize> {
        if let [(k, n)] = self.0.as_slice()
            && !matches!(k.layout, Layout::Row(_))
        {
            let v = len(&k.official)?;
            return Some(match k.layout {
                Layout::Part(_) | Layout::TransposedPart(_) => v / n,
                _ => v,
            });
        }
        let width: usize = shape.iter().skip(1).product();
        for (k, _) in &self.0 {
            let Layout::Row(j) = k.layout else { return None };
            if j >= shape.first().copied().unwrap_or(0) || len(&k.official)? < width {
                return None;
            }
        }
        Some(shape.iter().product())
    }
}

/// Replaces every parameter with its values from an official checkpoint: now (from `map`), or,
/// with a `lazy` source, when the parameter is first read (the values checked against `map`'s
/// shapes now, read from the source then).
struct Loader<'a, B: Backend> {
    map: &'a TensorMap,
    /// Module path → the keys that fill it.
    plans: HashMap<&'a str, Plan>,
    lazy: Option<TensorSource>,
    device: B::Device,
    path: Path,
    problems: Vec<KeyProblem>,
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
        let want = shape.iter().product::<usize>();
        let Some(plan) = self.plans.get(path.as_str()) else {
            self.problems.push(KeyProblem::Missing(path));
            return param;
        };
        let map = self.map;
        let found = match &self.lazy {
            None => plan.values(&shape, |k| map.get(k).map(Cow::Borrowed)).map(Ok),
            Some(source) => plan.size(&shape, |k| map.get(k).map(<[f32]>::len)).map(|n| Err((n, source.clone()))),
        };
        match found {
            Some(Ok(v)) if v.len() == want => {
                let tensor = Tensor::<B, D>::from_data(TensorData::new(v, shape), &self.device);
                Param::initialized(param.id, tensor.require_grad())
            }
            Some(Err((n, source))) if n == want => {
                let plan = plan.clone();
                let dims = shape.clone();
                let init = move |device: &B::Device, require_grad: bool| {
                    let values = plan
                        .values(&dims, |k| source.values(k).ok().map(|(_, v)| Cow::Owned(v)))
                        .filter(|v| v.len() == dims.iter().product::<usize>())
                        .unwrap_or_else(|| {
                            panic!(
                                "{}: a lazily loaded parameter's tensor is gone or changed since it was checked",
                                source.origin()
                            )
                        });
                    let tensor = Tensor::<B, D>::from_data(TensorData::new(values, dims.clone()), device);
                    if require_grad { tensor.require_grad() } else { tensor }
                };
                Param::uninitialized(param.id, init, self.device.clone(), true, Shape::from(shape))
            }
            Some(Ok(v)) => {
                self.problems.push(KeyProblem::Shape { key: path, expected: shape, found: vec![v.len()] });
                param
            }
            Some(Err((n, _))) => {
                self.problems.push(KeyProblem::Shape { key: path, expected: shape, found: vec![n] });
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
    load(module, map, None, keys, model, device)
}

/// [`load_into`] with every parameter left unread until first used, then read from `source`
/// (the file `map` was read from, under the same prefix): the checks are made now against
/// `map`, which the caller may then take apart (hand its values to another engine) — the module
/// holds no copy of the weights until something reads them.
///
/// A parameter read after its file was deleted or rewritten with other shapes panics with the
/// file's name (it cannot return an error: burn initialises parameters inside infallible calls).
pub fn load_lazily<B: Backend, M: Module<B>>(
    module: M,
    map: &TensorMap,
    source: &TensorSource,
    keys: &[WeightKey],
    model: &str,
    device: &B::Device,
) -> Result<M, CheckpointError> {
    load(module, map, Some(source.clone()), keys, model, device)
}

fn load<B: Backend, M: Module<B>>(
    module: M,
    map: &TensorMap,
    lazy: Option<TensorSource>,
    keys: &[WeightKey],
    model: &str,
    device: &B::Device,
) -> Result<M, CheckpointError> {
    let parts = parts(keys);
    let mut plans: HashMap<&str, Plan> = HashMap::new();
    for k in keys {
        let n = parts.get(k.official.as_str()).copied().unwrap_or(1);
        plans.entry(k.param.as_str()).or_insert_with(|| Plan(Vec::new())).0.push((k.clone(), n));
    }
    let mut loader = Loader { map, plans, lazy, device: device.clone(), path: Path::default(), problems: Vec::new() };
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

/// Whether any float parameter of `module` has been read (initialised) — false for a module
/// fresh from [`load_lazily`] that nothing has used yet.
pub fn any_initialized<B: Backend, M: Module<B>>(module: &M) -> bool {
    struct Seen(bool);
    impl<B: Backend> ModuleVisitor<B> for Seen {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            self.0 |= param.is_initialized();
        }
    }
    let mut seen = Seen(false);
    module.visit(&mut seen);
    seen.0
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
