//! Checkpoint files opened once and read tensor by tensor ([`TensorSource`]): what
//! [`crate::table::load_lazily`]'s parameters read their values from on first use, so that a
//! model whose weights live elsewhere (a fused CPU engine) holds no second copy of them.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use safetensors::{Dtype, SafeTensors};

use crate::quant::{BLOCK, Quant};
use crate::{CheckpointError, TensorMap, io, to_f32};

/// Where one safetensors tensor lies in its file.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    dtype: Dtype,
    /// The tensor's shape (a quantised matrix's `[out, in]`, not its codes').
    shape: Vec<usize>,
    /// Byte range in the file (a quantised matrix's codes).
    range: Range<usize>,
    /// For a quantised matrix: its format and the byte range of its f32 scales.
    quant: Option<(Quant, Range<usize>)>,
}

/// The safetensors metadata key that marks `key` as a quantised matrix; its value is
/// `"<format> <out> <in>"` (e.g. `"q4 65536 1024"`, see [`crate::quant`]), the codes are stored
/// under `key` and the scales under `key` + [`SCALES_SUFFIX`].
pub fn quantized_marker(key: &str) -> String {
    format!("quantized:{key}")
}

/// The suffix of a quantised matrix's scales tensor (`[out, ⌈in / 32⌉]`, F32).
pub const SCALES_SUFFIX: &str = ".scales";

/// The tensors listed in safetensors `bytes` (header parsed and every range bounds-checked), a
/// quantised matrix as one entry with its `[out, in]` shape and its scales.
pub(crate) fn safetensors_entries(bytes: &[u8], origin: &str) -> Result<Vec<(String, Entry)>, CheckpointError> {
    let bad = |why: String| CheckpointError::Format { path: origin.to_string(), why };
    let st = SafeTensors::deserialize(bytes).map_err(|e| bad(e.to_string()))?;
    let base = bytes.as_ptr() as usize;
    let mut entries: HashMap<String, Entry> = st
        .tensors()
        .into_iter()
        .map(|(key, view)| {
            let start = view.data().as_ptr() as usize - base;
            let (dtype, shape, range) = (view.dtype(), view.shape().to_vec(), start..start + view.data().len());
            (key, Entry { dtype, shape, range, quant: None })
        })
        .collect();
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| bad(e.to_string()))?;
    for (marker, value) in header.metadata().iter().flatten() {
        let Some(key) = marker.strip_prefix("quantized:") else { continue };
        let why = |what: &str| bad(format!("quantised tensor `{key}` ({value}): {what}"));
        let fields: Vec<&str> = value.split_whitespace().collect();
        let (quant, out, inp) = match fields.as_slice() {
            [q, o, i] => (
                Quant::parse(q).ok_or_else(|| why("unknown format"))?,
                o.parse::<usize>().map_err(|_| why("bad row count"))?,
                i.parse::<usize>().map_err(|_| why("bad column count"))?,
            ),
            _ => return Err(why("metadata is not `<format> <out> <in>`")),
        };
        let scales = entries.remove(&format!("{key}{SCALES_SUFFIX}")).ok_or_else(|| why("no scales tensor"))?;
        let codes = entries.get_mut(key).ok_or_else(|| why("no codes tensor"))?;
        let blocks = inp.div_ceil(BLOCK);
        if scales.dtype != Dtype::F32 || scales.range.len() != 4 * out * blocks {
            return Err(why(&format!(
                "scales must be F32 [{out}, {blocks}], found {:?} {:?}",
                scales.dtype, scales.shape
            )));
        }
        if codes.range.len() != out * quant.row_bytes(inp) || !matches!(codes.dtype, Dtype::U8 | Dtype::I8) {
            return Err(why(&format!(
                "codes must be {} bytes of U8/I8, found {:?} {:?}",
                out * quant.row_bytes(inp),
                codes.dtype,
                codes.shape
            )));
        }
        codes.shape = vec![out, inp];
        codes.quant = Some((quant, scales.range));
    }
    Ok(entries.into_iter().collect())
}

/// The f32 values of one entry of `bytes` (a quantised matrix dequantised).
fn entry_values(bytes: &[u8], key: &str, e: &Entry, origin: &str) -> Result<Vec<f32>, CheckpointError> {
    if let Some((quant, scales)) = &e.quant {
        let scales = to_f32(&bytes[scales.clone()], Dtype::F32).unwrap_or_default();
        let values = match e.shape[..] {
            [out, inp] => quant.dequantize(&bytes[e.range.clone()], &scales, inp, out),
            _ => None,
        };
        return values.ok_or_else(|| CheckpointError::Format {
            path: origin.to_string(),
            why: format!("quantised tensor `{key}`: codes or scales do not fit {:?}", e.shape),
        });
    }
    to_f32(&bytes[e.range.clone()], e.dtype).ok_or_else(|| CheckpointError::Dtype {
        path: origin.to_string(),
        key: key.to_string(),
        dtype: format!("{:?}", e.dtype),
    })
}

/// The entries of `bytes` for which `skip` is false, converted to f32 in parallel (each one a
/// sequential pass over its bytes: the page faults of the mapped file and of the new buffers
/// dominate, so cores help).
pub(crate) fn convert_entries(
    bytes: &[u8],
    entries: &[(String, Entry)],
    origin: &str,
    skip: impl Fn(&str) -> bool + Sync,
) -> Result<TensorMap, CheckpointError> {
    use rayon::prelude::*;
    let tensors = entries
        .par_iter()
        .filter(|(key, _)| !skip(key))
        .map(|(key, e)| Ok((key.clone(), (e.shape.clone(), entry_values(bytes, key, e, origin)?))))
        .collect::<Result<HashMap<_, _>, CheckpointError>>()?;
    Ok(TensorMap { origin: origin.to_string(), tensors })
}

/// burn-store's reader of a `.pth` file.
pub(crate) fn pth_reader(path: &Path) -> Result<burn_store::pytorch::PytorchReader, CheckpointError> {
    let origin = path.display().to_string();
    if !path.exists() {
        return Err(io(&origin, "no such file"));
    }
    burn_store::pytorch::PytorchReader::new(path)
        .map_err(|e| CheckpointError::Format { path: origin, why: format!("not a readable PyTorch checkpoint: {e}") })
}

/// The f32 values of one `.pth` tensor (F32, F16, BF16 or F64).
pub(crate) fn pth_values(
    origin: &str,
    key: &str,
    snap: &burn_store::TensorSnapshot,
) -> Result<Vec<f32>, CheckpointError> {
    use burn::tensor::DType;
    if !matches!(snap.dtype, DType::F32 | DType::F16 | DType::BF16 | DType::F64) {
        return Err(CheckpointError::Dtype {
            path: origin.into(),
            key: key.into(),
            dtype: format!("{:?}", snap.dtype),
        });
    }
    let bad = |e: &dyn std::fmt::Debug| CheckpointError::Format {
        path: origin.to_string(),
        why: format!("tensor `{key}`: {e:?}"),
    };
    let data = snap.to_data().map_err(|e| bad(&e))?;
    data.convert::<f32>().into_vec::<f32>().map_err(|e| bad(&e))
}

/// The file behind a [`TensorSource`].
#[derive(Clone)]
enum File {
    /// A memory-mapped safetensors file and its tensors' places.
    Safetensors { bytes: Arc<memmap2::Mmap>, entries: Arc<HashMap<String, Entry>> },
    /// A `.pth` pickle (re-opened for each read: the pickle's index is small, the tensor's bytes
    /// are read where they lie).
    Pth(PathBuf),
}

/// A checkpoint file opened for reading tensor by tensor, possibly restricted to the keys under
/// a prefix ([`TensorSource::with_prefix`]). Cheap to clone (the mapping is shared) and
/// `Send + Sync`, so lazily initialised parameters can each hold one.
///
/// The safetensors mapping stays open as long as a clone lives: what it costs is address space
/// and the page cache, not memory of the process's own.
#[derive(Clone)]
pub struct TensorSource {
    origin: String,
    prefix: String,
    file: File,
}

impl std::fmt::Debug for TensorSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TensorSource").field("origin", &self.origin).field("prefix", &self.prefix).finish()
    }
}

impl TensorSource {
    /// Opens a checkpoint by extension: `.pth` / `.pt` / `.bin` as PyTorch, anything else as
    /// safetensors (memory-mapped, header parsed and checked).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, CheckpointError> {
        let path = path.as_ref();
        match path.extension().and_then(|e| e.to_str()) {
            Some("pth" | "pt" | "bin") => {
                pth_reader(path)?;
                Ok(Self { origin: path.display().to_string(), prefix: String::new(), file: File::Pth(path.into()) })
            }
            _ => Self::open_safetensors(path),
        }
    }

    /// Opens a safetensors file (memory-mapped, header parsed and checked).
    pub fn open_safetensors(path: impl AsRef<Path>) -> Result<Self, CheckpointError> {
        let path = path.as_ref();
        let origin = path.display().to_string();
        let file = std::fs::File::open(path).map_err(|e| io(&origin, e))?;
        // SAFETY: the map is only read; a concurrent writer could change the bytes under us,
        // which yields wrong values, not undefined behaviour in the conversions (every range
        // was bounds-checked against the mapping's length when the header was parsed).
        let bytes = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| io(&origin, e))?;
        let entries = safetensors_entries(&bytes, &origin)?.into_iter().collect();
        Ok(Self {
            origin,
            prefix: String::new(),
            file: File::Safetensors { bytes: Arc::new(bytes), entries: Arc::new(entries) },
        })
    }

    /// The file's name, for messages.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The same file, its keys read under `prefix` (added to this source's own prefix): the
    /// source of one part of a checkpoint (`"rwkv."`, `"vit.vision_model."`).
    pub fn with_prefix(&self, prefix: &str) -> Self {
        Self { prefix: format!("{}{prefix}", self.prefix), ..self.clone() }
    }

    /// Every tensor under this source's prefix (the prefix removed) for which `skip` is false,
    /// as f32, converted in parallel.
    pub fn read_skipping(&self, skip: impl Fn(&str) -> bool + Sync) -> Result<TensorMap, CheckpointError> {
        let under = |key: &str| key.strip_prefix(self.prefix.as_str()).is_some_and(|k| !skip(k));
        let mut map = match &self.file {
            File::Safetensors { bytes, entries } => {
                let listed: Vec<(String, Entry)> =
                    entries.iter().filter(|(k, _)| under(k)).map(|(k, e)| (k.clone(), e.clone())).collect();
                convert_entries(bytes, &listed, &self.origin, |_| false)?
            }
            File::Pth(path) => TensorMap::read_pth_skipping(path, |k| !under(k))?,
        };
        map.origin = self.origin.clone();
        Ok(if self.prefix.is_empty() { map } else { map.take_prefix(&self.prefix) })
    }

    /// The shape and f32 values of `key` (under this source's prefix).
    pub fn values(&self, key: &str) -> Result<(Vec<usize>, Vec<f32>), CheckpointError> {
        let full = format!("{}{key}", self.prefix);
        let missing = || CheckpointError::Keys {
            path: self.origin.clone(),
            model: "the requested tensor".into(),
            problems: vec![crate::KeyProblem::Missing(full.clone())],
        };
        match &self.file {
            File::Safetensors { bytes, entries } => {
                let e = entries.get(&full).ok_or_else(missing)?;
                Ok((e.shape.clone(), entry_values(bytes, &full, e, &self.origin)?))
            }
            File::Pth(path) => {
                let mut tensors = pth_reader(path)?.into_tensors();
                let snap = tensors.remove(&full).ok_or_else(missing)?;
                Ok((snap.shape.to_vec(), pth_values(&self.origin, &full, &snap)?))
            }
        }
    }
}
