//! # visualrwkv-checkpoint: checkpoint tensors shared by every VisualRWKV component
//!
//! A [`TensorMap`] holds the tensors of a checkpoint converted to f32 (`key -> (shape, values)`),
//! read from safetensors (F32, F16, BF16, F64) or from a PyTorch `.pth` pickle (burn-store's
//! reader). Models check it against the keys and shapes they expect with
//! [`TensorMap::check_keys`], which reports **every** missing, unexpected and mis-shaped key at
//! once, and build their modules from it. [`write_safetensors`] saves a map as F32.
//!
//! # Shapes
//!
//! Tensors keep the shapes of the file (PyTorch conventions, e.g. `nn.Linear` weights
//! `[out, in]`); [`table`] converts them to a module's layout from the model's key table.

pub mod quant;
pub mod source;
pub mod table;

pub use source::TensorSource;
use source::{convert_entries, pth_reader, pth_values, safetensors_entries};

use std::collections::{HashMap, HashSet};
use std::path::Path;

use burn::tensor::{Tensor, TensorData, backend::Backend};
use safetensors::Dtype;
use thiserror::Error;

/// Errors reading, checking or writing checkpoint tensors. Each names the file.
#[derive(Debug, Error)]
pub enum CheckpointError {
    /// The file could not be read or written.
    #[error("{path}: {why}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        why: String,
    },
    /// The file is not a valid checkpoint (bad header, truncated data, not a pickle, ...).
    #[error("{path}: not a valid checkpoint file: {why}")]
    Format {
        /// The file.
        path: String,
        /// What the parser said.
        why: String,
    },
    /// A tensor is stored in a dtype that is not a float type.
    #[error("{path}: tensor `{key}` has dtype {dtype}, expected F32, F16 or BF16")]
    Dtype {
        /// The file.
        path: String,
        /// The tensor.
        key: String,
        /// Its dtype.
        dtype: String,
    },
    /// Keys are missing, unexpected or have the wrong shape; every offending key is listed.
    #[error("{path}: checkpoint does not match {model}:{}", format_problems(.problems))]
    Keys {
        /// The file.
        path: String,
        /// What the keys were checked against (e.g. "a CLIP vision tower").
        model: String,
        /// One entry per offending key.
        problems: Vec<KeyProblem>,
    },
}

/// One problem with a checkpoint key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyProblem {
    /// A key the model needs is absent.
    Missing(String),
    /// A key the model does not use is present.
    Unexpected(String),
    /// A key has the wrong shape.
    Shape {
        /// The key.
        key: String,
        /// The shape the model needs.
        expected: Vec<usize>,
        /// The shape in the file.
        found: Vec<usize>,
    },
}

/// Formats problems one per line (used in error messages).
pub fn format_problems(p: &[KeyProblem]) -> String {
    p.iter()
        .map(|p| match p {
            KeyProblem::Missing(k) => format!("\n  missing key `{k}`"),
            KeyProblem::Unexpected(k) => format!("\n  unexpected key `{k}`"),
            KeyProblem::Shape { key, expected, found } => {
                format!("\n  key `{key}` has shape {found:?}, expected {expected:?}")
            }
        })
        .collect()
}

/// `[rows, cols]` row-major → `[cols, rows]` (with `rows = v.len() / cols`): copied in 32×32
/// tiles so that reads and writes both stay in cache, blocks of output rows spread over rayon's
/// pool. A naive strided copy runs at a fraction of memory speed on the large matrices a
/// checkpoint holds; this is what loading them costs instead.
pub fn transpose(v: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = Vec::new();
    transpose_map_into(v, rows, cols, &mut t, |x| x);
    t
}

/// [`transpose`] into `dst`, resized to `[cols, rows]` (with `rows` clamped to
/// `v.len() / cols`, as there), each element converted by `f` on the way (e.g. half-precision
/// bits to f32). Reuses `dst`'s allocation.
pub fn transpose_map_into<T: Copy + Sync>(
    v: &[T],
    rows: usize,
    cols: usize,
    dst: &mut Vec<f32>,
    f: impl Fn(T) -> f32 + Sync,
) {
    use rayon::prelude::*;
    const TILE: usize = 32;
    let rows = v.len().checked_div(cols).map_or(rows, |fit| rows.min(fit));
    dst.resize(rows * cols, 0.0);
    if rows == 0 || cols == 0 {
        return;
    }
    // Block `b` holds output rows (input columns) `b·TILE ..`, each `rows` long.
    dst[..rows * cols].par_chunks_mut(TILE * rows).enumerate().for_each(|(b, block)| {
        let (c0, nc) = (b * TILE, block.len() / rows);
        for r0 in (0..rows).step_by(TILE) {
            for r in r0..(r0 + TILE).min(rows) {
                for (j, &x) in v[r * cols + c0..r * cols + c0 + nc].iter().enumerate() {
                    block[j * rows + r] = f(x);
                }
            }
        }
    });
}

/// A tensor's values as f32 on the host (row-major). burn-ndarray 0.21 reads back a tensor whose
/// buffer is shared — every parameter's, as `Param::val` hands out another handle to it — one
/// element at a time through dynamic indexing (about 12 M elements/s here, seconds per large
/// matrix); the product by one is a new buffer, computed as one pass over contiguous memory and
/// handed over without a copy. Backends that copy anyway pay one extra elementwise pass.
pub fn host_values<B: Backend, const D: usize>(tensor: Tensor<B, D>) -> Vec<f32> {
    // `convert` makes the data f32, so reading it as f32 cannot fail.
    tensor.mul_scalar(1.0).into_data().convert::<f32>().into_vec::<f32>().unwrap_or_default()
}

/// The values of one safetensors tensor as f32.
fn to_f32(data: &[u8], dtype: Dtype) -> Option<Vec<f32>> {
    Some(match dtype {
        Dtype::F32 => data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        Dtype::F16 => data.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        Dtype::BF16 => data.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        Dtype::F64 => data
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32)
            .collect(),
        _ => return None,
    })
}

/// Tensors of a checkpoint, converted to f32: `key -> (shape, values)`.
#[derive(Clone, Debug, Default)]
pub struct TensorMap {
    /// Where the tensors came from (for error messages).
    pub origin: String,
    /// The tensors.
    pub tensors: HashMap<String, (Vec<usize>, Vec<f32>)>,
}

fn io(path: &str, e: impl std::fmt::Display) -> CheckpointError {
    CheckpointError::Io { path: path.to_string(), why: e.to_string() }
}

impl TensorMap {
    /// Reads every tensor of a safetensors file (F32, F16, BF16 or F64).
    pub fn read_safetensors(path: impl AsRef<Path>) -> Result<Self, CheckpointError> {
        Self::read_safetensors_skipping(path, |_| false)
    }

    /// Reads a safetensors file, leaving out the keys for which `skip` is true before looking at
    /// their dtype (for integer buffers a model recomputes, such as HF CLIP's
    /// `embeddings.position_ids`).
    pub fn read_safetensors_skipping(
        path: impl AsRef<Path>,
        skip: impl Fn(&str) -> bool + Sync,
    ) -> Result<Self, CheckpointError> {
        TensorSource::open_safetensors(path)?.read_skipping(skip)
    }

    /// Reads every tensor of a PyTorch `.pth` checkpoint (a pickled state dict, as saved by
    /// `torch.save`), converting F32/F16/BF16/F64 to f32.
    pub fn read_pth(path: impl AsRef<Path>) -> Result<Self, CheckpointError> {
        Self::read_pth_skipping(path, |_| false)
    }

    /// [`TensorMap::read_pth`] leaving out the keys for which `skip` is true.
    pub fn read_pth_skipping(path: impl AsRef<Path>, skip: impl Fn(&str) -> bool) -> Result<Self, CheckpointError> {
        let path = path.as_ref();
        let origin = path.display().to_string();
        let mut tensors = HashMap::new();
        for (key, snap) in pth_reader(path)?.into_tensors() {
            if skip(&key) {
                continue;
            }
            let values = pth_values(&origin, &key, &snap)?;
            tensors.insert(key, (snap.shape.to_vec(), values));
        }
        Ok(Self { origin, tensors })
    }

    /// Reads a checkpoint by extension: `.pth` / `.pt` / `.bin` as PyTorch, anything else as
    /// safetensors.
    pub fn read(path: impl AsRef<Path>) -> Result<Self, CheckpointError> {
        Self::read_skipping(path, |_| false)
    }

    /// [`TensorMap::read`] leaving out the keys for which `skip` is true.
    pub fn read_skipping(path: impl AsRef<Path>, skip: impl Fn(&str) -> bool + Sync) -> Result<Self, CheckpointError> {
        let path = path.as_ref();
        match path.extension().and_then(|e| e.to_str()) {
            Some("pth" | "pt" | "bin") => Self::read_pth_skipping(path, skip),
            _ => Self::read_safetensors_skipping(path, skip),
        }
    }

    /// Parses safetensors bytes.
    pub fn from_safetensors_bytes(bytes: &[u8], origin: &str) -> Result<Self, CheckpointError> {
        Self::from_safetensors_bytes_skipping(bytes, origin, |_| false)
    }

    /// Parses safetensors bytes, leaving out the keys for which `skip` is true.
    pub fn from_safetensors_bytes_skipping(
        bytes: &[u8],
        origin: &str,
        skip: impl Fn(&str) -> bool + Sync,
    ) -> Result<Self, CheckpointError> {
        let entries = safetensors_entries(bytes, origin)?;
        convert_entries(bytes, &entries, origin, skip)
    }

    /// The tensors whose key starts with `prefix`, with the prefix removed (e.g. `"rwkv."` for a
    /// VisualRWKV checkpoint).
    pub fn strip_prefix(&self, prefix: &str) -> Self {
        let tensors = self
            .tensors
            .iter()
            .filter_map(|(k, v)| k.strip_prefix(prefix).map(|k| (k.to_string(), v.clone())))
            .collect();
        Self { origin: self.origin.clone(), tensors }
    }

    /// Moves the tensors whose key starts with `prefix` out of this map, with the prefix removed
    /// ([`TensorMap::strip_prefix`] without copying their values).
    pub fn take_prefix(&mut self, prefix: &str) -> Self {
        let keys: Vec<String> = self.tensors.keys().filter(|k| k.starts_with(prefix)).cloned().collect();
        let tensors = keys
            .into_iter()
            .filter_map(|k| self.tensors.remove_entry(&k))
            .map(|(k, v)| (k[prefix.len()..].to_string(), v))
            .collect();
        Self { origin: self.origin.clone(), tensors }
    }

    /// Whether any key starts with `prefix`.
    pub fn has_prefix(&self, prefix: &str) -> bool {
        self.tensors.keys().any(|k| k.starts_with(prefix))
    }

    /// The shape of `key`, if present.
    pub fn shape(&self, key: &str) -> Option<Vec<usize>> {
        self.tensors.get(key).map(|(s, _)| s.clone())
    }

    /// The values of `key` (row-major), if present.
    pub fn get(&self, key: &str) -> Option<&[f32]> {
        self.tensors.get(key).map(|(_, v)| v.as_slice())
    }

    /// Compares the map with the keys and shapes a model expects: every missing key, every key
    /// with another shape and every key the model does not use, sorted by key within each kind.
    pub fn key_problems(&self, expected: &[(String, Vec<usize>)]) -> Vec<KeyProblem> {
        let mut problems = Vec::new();
        for (key, shape) in expected {
            match self.tensors.get(key) {
                None => problems.push(KeyProblem::Missing(key.clone())),
                Some((found, _)) if found != shape => {
                    problems.push(KeyProblem::Shape { key: key.clone(), expected: shape.clone(), found: found.clone() })
                }
                Some(_) => {}
            }
        }
        let known: HashSet<&str> = expected.iter().map(|(k, _)| k.as_str()).collect();
        let mut unexpected: Vec<&String> = self.tensors.keys().filter(|k| !known.contains(k.as_str())).collect();
        unexpected.sort();
        problems.extend(unexpected.into_iter().map(|k| KeyProblem::Unexpected(k.clone())));
        problems
    }

    /// [`TensorMap::key_problems`] as a `Result`: `Err(Keys)` naming `model` when any key is off.
    pub fn check_keys(&self, expected: &[(String, Vec<usize>)], model: &str) -> Result<(), CheckpointError> {
        let problems = self.key_problems(expected);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(CheckpointError::Keys { path: self.origin.clone(), model: model.to_string(), problems })
        }
    }

    /// The values of `key` as a tensor of shape `shape` (the caller has checked the keys; a
    /// missing key or a size mismatch is reported as a `Keys` error rather than a panic).
    pub fn tensor<B: Backend, const D: usize>(
        &self,
        key: &str,
        shape: [usize; D],
        device: &B::Device,
    ) -> Result<Tensor<B, D>, CheckpointError> {
        let keys_error = |problem| CheckpointError::Keys {
            path: self.origin.clone(),
            model: "the requested tensor".into(),
            problems: vec![problem],
        };
        let (found, values) = self.tensors.get(key).ok_or_else(|| keys_error(KeyProblem::Missing(key.into())))?;
        if values.len() != shape.iter().product::<usize>() {
            return Err(keys_error(KeyProblem::Shape {
                key: key.into(),
                expected: shape.to_vec(),
                found: found.clone(),
            }));
        }
        Ok(Tensor::from_data(TensorData::new(values.clone(), shape), (device, burn::tensor::DType::F32)))
    }

    /// Inserts a tensor read back from the device (converted to f32).
    pub fn insert<B: Backend, const D: usize>(&mut self, key: impl Into<String>, tensor: Tensor<B, D>) {
        let shape = tensor.dims().to_vec();
        self.tensors.insert(key.into(), (shape, host_values(tensor)));
    }
}

/// Writes a [`TensorMap`] as F32 safetensors.
pub fn write_safetensors(map: &TensorMap, path: impl AsRef<Path>) -> Result<(), CheckpointError> {
    write_safetensors_with_ints(map, &[], path)
}

/// Writes a [`TensorMap`] as F32 safetensors plus integer tensors stored as I64
/// (`(key, shape, values)`, e.g. token ids).
pub fn write_safetensors_with_ints(
    map: &TensorMap,
    ints: &[(String, Vec<usize>, Vec<i64>)],
    path: impl AsRef<Path>,
) -> Result<(), CheckpointError> {
    let mut tensors = f32_tensors(map, |_, _| true);
    for (k, s, v) in ints {
        tensors.push(Raw::owned(k.clone(), Dtype::I64, s.clone(), v.iter().flat_map(|x| x.to_le_bytes()).collect()));
    }
    write_tensors(path.as_ref(), tensors, None)
}

/// Writes a [`TensorMap`] as safetensors with the matrices for which `quantize` (given the key
/// and shape) names a format stored block-quantised ([`quant`]: codes under the key, f32
/// scales under the key + [`source::SCALES_SUFFIX`], the format and `[out, in]` in the header's
/// metadata), every other tensor as F32. [`TensorMap::read`] and [`TensorSource`] read such a
/// file back as f32 (each quantised weight its dequantised value).
pub fn write_safetensors_quantized(
    map: &TensorMap,
    quantize: impl Fn(&str, &[usize]) -> Option<quant::Quant>,
    path: impl AsRef<Path>,
) -> Result<(), CheckpointError> {
    let choice = |k: &str, s: &[usize]| match s {
        [_, _] => quantize(k, s),
        _ => None,
    };
    let mut tensors = f32_tensors(map, |k, s| choice(k, s).is_none());
    let mut metadata = HashMap::new();
    let mut keys: Vec<&String> = map.tensors.keys().collect();
    keys.sort();
    for k in keys {
        let (shape, values) = &map.tensors[k];
        let Some(q) = choice(k, shape) else { continue };
        let (out, inp) = (shape[0], shape[1]);
        let (codes, scales) = q.quantize(values, inp, out);
        let dtype = if q == quant::Quant::Q8 { Dtype::I8 } else { Dtype::U8 };
        tensors.push(Raw::owned(k.clone(), dtype, vec![out, q.row_bytes(inp)], codes));
        let scale_bytes = scales.iter().flat_map(|x| x.to_le_bytes()).collect();
        let scale_shape = vec![out, inp.div_ceil(quant::BLOCK)];
        tensors.push(Raw::owned(format!("{k}{}", source::SCALES_SUFFIX), Dtype::F32, scale_shape, scale_bytes));
        metadata.insert(source::quantized_marker(k), format!("{} {out} {inp}", q.name()));
    }
    write_tensors(path.as_ref(), tensors, Some(metadata))
}

/// One tensor to write: its key, type, shape and little-endian bytes (borrowed from the map's
/// values where they already are little-endian f32).
struct Raw<'a> {
    key: String,
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: std::borrow::Cow<'a, [u8]>,
}

impl Raw<'_> {
    fn owned(key: String, dtype: Dtype, shape: Vec<usize>, bytes: Vec<u8>) -> Self {
        Self { key, dtype, shape, bytes: std::borrow::Cow::Owned(bytes) }
    }
}

impl safetensors::View for &Raw<'_> {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

/// The f32 `values` as little-endian bytes: borrowed on little-endian targets (no copy of a
/// model's weights while it is written), converted elsewhere.
fn f32_bytes(values: &[f32]) -> std::borrow::Cow<'_, [u8]> {
    if cfg!(target_endian = "little") {
        // SAFETY: any initialised f32 is 4 initialised bytes; u8 has alignment 1; the slice
        // borrows `values` for its lifetime.
        std::borrow::Cow::Borrowed(unsafe {
            std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), 4 * values.len())
        })
    } else {
        std::borrow::Cow::Owned(values.iter().flat_map(|x| x.to_le_bytes()).collect())
    }
}

/// The tensors of `map` for which `keep` (key, shape) is true, as F32, sorted by key.
fn f32_tensors(map: &TensorMap, keep: impl Fn(&str, &[usize]) -> bool) -> Vec<Raw<'_>> {
    let mut keys: Vec<&String> = map.tensors.keys().filter(|k| keep(k, &map.tensors[*k].0)).collect();
    keys.sort();
    keys.into_iter()
        .map(|k| {
            let (s, v) = &map.tensors[k];
            Raw { key: k.clone(), dtype: Dtype::F32, shape: s.clone(), bytes: f32_bytes(v) }
        })
        .collect()
}

/// Writes `tensors` and the header `metadata` as a safetensors file, atomically, streaming each
/// tensor's bytes to the file (a model is never held twice in memory for writing).
fn write_tensors(
    path: &Path,
    tensors: Vec<Raw<'_>>,
    metadata: Option<HashMap<String, String>>,
) -> Result<(), CheckpointError> {
    let origin = path.display().to_string();
    for t in &tensors {
        let expected = t.shape.iter().product::<usize>() * t.dtype.bitsize() / 8;
        if t.bytes.len() != expected {
            return Err(CheckpointError::Format {
                path: origin,
                why: format!("`{}`: {} bytes for shape {:?} of {:?}", t.key, t.bytes.len(), t.shape, t.dtype),
            });
        }
    }
    write_atomic_with(path, |tmp| {
        safetensors::serialize_to_file(tensors.iter().map(|t| (t.key.as_str(), t)), metadata, tmp)
            .map_err(std::io::Error::other)
    })
}

/// Writes `bytes` to `path` atomically: into a temporary file beside it (same directory, so the
/// rename cannot cross file systems), flushed to disk, then renamed over `path`. A process
/// killed at any moment leaves either the previous file or the complete new one, never a part.
pub fn write_atomic(path: impl AsRef<Path>, bytes: &[u8]) -> Result<(), CheckpointError> {
    write_atomic_with(path.as_ref(), |tmp| std::fs::write(tmp, bytes))
}

/// [`write_atomic`] for a file written by `write` into the temporary path it is given (then
/// flushed to disk and renamed over `path`; removed if anything fails).
pub fn write_atomic_with(
    path: impl AsRef<Path>,
    write: impl FnOnce(&Path) -> std::io::Result<()>,
) -> Result<(), CheckpointError> {
    let path = path.as_ref();
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "file".into());
    // Unique per process and per call, so concurrent writers (threads of one process included)
    // never share a temporary file.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_file_name(format!(".{name}.tmp-{}-{n}", std::process::id()));
    let origin = path.display().to_string();
    let result = (|| {
        write(&tmp)?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(&origin, e));
    }
    Ok(())
}

#[cfg(test)]
mod atomic_tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_whole_files_and_leaves_no_temporary() {
        let dir = std::env::temp_dir().join(format!("vrwkv-atomic-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f.bin");
        write_atomic(&path, b"first").unwrap();
        write_atomic(&path, b"second, longer").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second, longer");
        let names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 1, "{names:?}");
        // A write that cannot complete (the target is a directory) keeps what was there.
        std::fs::create_dir_all(dir.join("d")).unwrap();
        assert!(write_atomic(dir.join("d"), b"x").is_err());
        assert!(dir.join("d").is_dir());
        // Threads writing the same file at once each replace it whole.
        let same = dir.join("same.bin");
        std::thread::scope(|s| {
            for t in 0..8u8 {
                let same = &same;
                s.spawn(move || write_atomic(same, &vec![t; 1000]).unwrap());
            }
        });
        let bytes = std::fs::read(&same).unwrap();
        assert!(bytes.len() == 1000 && bytes.iter().all(|&b| b == bytes[0]));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;

    /// The tiled transpose equals the plain definition on shapes around and across the tile
    /// size (and on empty ones).
    #[test]
    fn tiled_transpose_is_the_transpose() {
        for (rows, cols) in [(0, 5), (5, 0), (1, 1), (1, 70), (70, 1), (31, 33), (32, 32), (65, 97), (128, 40)] {
            let v: Vec<f32> = (0..rows * cols).map(|i| i as f32 * 0.5 - 7.0).collect();
            let t = transpose(&v, rows, cols);
            assert_eq!(t.len(), rows * cols);
            for r in 0..rows {
                for c in 0..cols {
                    assert_eq!(t[c * rows + r], v[r * cols + c], "{rows}×{cols} at ({r}, {c})");
                }
            }
        }
    }

    /// `take_prefix` moves exactly the prefixed tensors, renamed; `host_values` reads a shared
    /// parameter's values in order.
    #[test]
    fn take_prefix_moves_and_host_values_reads() {
        let mut map = TensorMap::default();
        for k in ["a.x", "a.y", "b.x"] {
            map.tensors.insert(k.into(), (vec![1], vec![k.len() as f32]));
        }
        let a = map.take_prefix("a.");
        let mut keys: Vec<_> = a.tensors.keys().cloned().collect();
        keys.sort();
        assert_eq!(keys, ["x", "y"]);
        assert_eq!(map.tensors.keys().collect::<Vec<_>>(), ["b.x"]);
        let t = Tensor::<NdArray, 2>::from_data(
            TensorData::new(vec![1f32, 2., 3., 4., 5., 6.], [2, 3]),
            &Default::default(),
        );
        let shared = t.clone();
        assert_eq!(host_values(t), [1., 2., 3., 4., 5., 6.]);
        assert_eq!(host_values(shared.transpose()), [1., 4., 2., 5., 3., 6.]);
    }

    /// Quantised safetensors: the chosen matrices are stored as codes + scales and read back
    /// (whole file, by key, lazily) as their dequantised values, the rest unchanged; a file whose
    /// scales are missing or of the wrong size is an error naming the tensor.
    #[test]
    fn quantised_safetensors_read_back_dequantised() {
        use quant::Quant;
        let mut map = TensorMap::default();
        let w: Vec<f32> = (0..3 * 45).map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.01).collect();
        map.tensors.insert("m4".into(), (vec![3, 45], w.clone()));
        map.tensors.insert("m8".into(), (vec![3, 45], w.clone()));
        map.tensors.insert("keep".into(), (vec![3, 45], w.clone()));
        map.tensors.insert("bias".into(), (vec![45], w[..45].to_vec()));
        let dir = std::env::temp_dir().join(format!("vrwkv-quantised-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("q.safetensors");
        let choose = |k: &str, _: &[usize]| match k {
            "m4" | "bias" => Some(Quant::Q4),
            "m8" => Some(Quant::Q8),
            _ => None,
        };
        write_safetensors_quantized(&map, choose, &path).unwrap();
        let back = TensorMap::read(&path).unwrap();
        for (key, quant) in [("m4", Some(Quant::Q4)), ("m8", Some(Quant::Q8)), ("keep", None), ("bias", None)] {
            let (shape, values) = &back.tensors[key];
            assert_eq!(shape, &map.tensors[key].0, "{key}");
            let want = match quant {
                Some(q) => {
                    let (codes, scales) = q.quantize(&w, 45, 3);
                    q.dequantize(&codes, &scales, 45, 3).unwrap()
                }
                // Rank-1 tensors are never quantised.
                None => map.tensors[key].1.clone(),
            };
            assert_eq!(values, &want, "{key}");
            assert_eq!(&TensorSource::open(&path).unwrap().values(key).unwrap().1, values, "{key}");
        }
        assert_ne!(back.tensors["m4"].1, w);
        assert_eq!(back.tensors.len(), 4, "scales are not tensors of their own");

        // A file that marks a tensor quantised without its scales.
        let mut broken = std::collections::HashMap::new();
        broken.insert(source::quantized_marker("m"), "q4 3 45".to_string());
        let codes = vec![0u8; 3 * 32];
        let view = safetensors::tensor::TensorView::new(Dtype::U8, vec![3, 32], &codes).unwrap();
        let bytes = safetensors::serialize([("m", view)], Some(broken)).unwrap();
        let err = TensorMap::from_safetensors_bytes(&bytes, "broken").unwrap_err().to_string();
        assert!(err.contains("`m`") && err.contains("scales"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
