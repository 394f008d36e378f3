//! The VisualRWKV model: vision tower → grid pooling → projector → `[prefix | image | suffix]`
//! → `ln0` → blocks, each wrapped by the scan's permutation of the image span → `ln_out` →
//! head (docs/model.md §2–§4), with exact state-cached generation (§5).
//!
//! # Shapes
//!
//! Pixels `[B, 3, H, W]` → image rows `[B, n, C]` (n = pooled grid rows + CLS) → a sample's
//! sequence `[T, C]` with `T = prefix + n + suffix` → logits `[T, V]`. Batches of samples with
//! different lengths and image positions are right-padded to `[B, T_max, C]`; because every
//! block is causal and the padding comes last, each row's logits equal the ones it gets alone.

use std::path::Path;

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use visualrwkv_checkpoint::{CheckpointError, KeyProblem, TensorMap, TensorSource};
use visualrwkv_projector::{Project, Projector, ProjectorConfig, ProjectorError};
use visualrwkv_prompt::{IMAGE_TOKEN, Prompt};
use visualrwkv_rwkv::{
    Decoder, HostState, LanguageModel, RowOrder, RwkvBackend, RwkvError, State, TokenId, WeightDtype,
};
use visualrwkv_scan::{ImageLayout, Scan, ScanError, checked_permutation, inverse};
use visualrwkv_tokenizer::Tokenizer;
use visualrwkv_vision::{FusedTower, GridPooling, TowerKind, VisionConfig, VisionError, VisionTower, grid_pool};

use crate::generate::{Engine, GenerateOptions, Generation, PromptState, decode_prompt_state, ids_tensor, last_logits};

/// The file name of the tower's Hugging Face config saved beside a checkpoint.
pub const VISION_CONFIG_FILE: &str = "vision_config.json";

/// Errors of the vision-language model.
#[derive(Debug, thiserror::Error)]
pub enum VlmError {
    /// The language model failed (checkpoint, shapes, token ids).
    #[error(transparent)]
    Rwkv(#[from] RwkvError),
    /// The vision tower failed (checkpoint, pixels).
    #[error(transparent)]
    Vision(#[from] VisionError),
    /// The projector failed.
    #[error(transparent)]
    Projector(#[from] ProjectorError),
    /// Reading a checkpoint failed.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The scan returned something unusable.
    #[error(transparent)]
    Scan(#[from] ScanError),
    /// The prompt could not be built.
    #[error(transparent)]
    Prompt(#[from] visualrwkv_prompt::PromptError),
    /// The projector's widths do not join the tower to the language model.
    #[error(
        "the projector maps {projector_in} → {projector_out}, but the vision tower is {vision} wide and RWKV {rwkv}"
    )]
    ProjectorWidths {
        /// Projector input width.
        projector_in: usize,
        /// Projector output width.
        projector_out: usize,
        /// The tower's hidden size.
        vision: usize,
        /// RWKV's `n_embd`.
        rwkv: usize,
    },
    /// Image rows whose shape does not fit their layout and the model.
    #[error("image rows are {found:?}, expected {expected:?} for their layout")]
    ImageRows {
        /// `[layout rows, n_embd]`.
        expected: [usize; 2],
        /// The rows' shape.
        found: [usize; 2],
    },
    /// An image without an image placeholder in the prompt.
    #[error("an image is given but the prompt has no image placeholder")]
    ImageWithoutPlaceholder,
    /// An image placeholder without an image.
    #[error("the prompt has an image placeholder but no image is given")]
    PlaceholderWithoutImage,
    /// More than one image placeholder.
    #[error("{0} image placeholders: VisualRWKV takes one image")]
    Placeholders(usize),
    /// A fused decoder or tower built for another model than the one it is used with.
    #[error("the fused {part} was built for {built_for}, but the model's is {model}")]
    FusedMismatch {
        /// `decoder` or `tower`.
        part: &'static str,
        /// The configuration it was built for.
        built_for: String,
        /// The model's configuration.
        model: String,
    },
    /// An input with nothing in it.
    #[error("{0} is empty")]
    Empty(&'static str),
    /// An image placeholder where only text tokens may go.
    #[error("{0} takes text tokens only (no image placeholder)")]
    PlaceholderInText(&'static str),
}

/// Which hidden layer feeds the projector and how it is pooled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VisionOptions {
    /// Hidden layer, Python-style (−1 = last: VisualRWKV v6.0).
    pub layer: i64,
    /// Grid pooling (VisualRWKV's `grid_size`; −1 = all patches then CLS).
    pub pooling: GridPooling,
}

impl Default for VisionOptions {
    fn default() -> Self {
        Self { layer: -1, pooling: GridPooling::All }
    }
}

/// The VisualRWKV model: a language model (RWKV-6 or RWKV-7), a vision tower and a projector.
///
/// On the CPU backend (and any backend whose tensors are `Sync`) it is `Send + Sync`: encoding,
/// prefill and generation take `&self` and keep every per-request value (state, sampler,
/// caches) in the caller's hands, so one loaded model serves generations from several threads at
/// once, each giving exactly what it gives alone (`tests/concurrency.rs`).
#[derive(Module, Debug)]
pub struct VisualRwkv<B: RwkvBackend> {
    /// The language model (RWKV-6 x060 or RWKV-7 x070).
    pub rwkv: LanguageModel<B>,
    /// The (frozen) vision tower.
    pub vision: VisionTower<B>,
    /// Vision width → RWKV width.
    pub projector: Projector<B>,
    /// Layer and pooling of the image features.
    #[module(skip)]
    pub options: VisionOptions,
}

/// Projected image rows of one image and their layout.
#[derive(Clone, Debug)]
pub struct ImageRows<B: Backend> {
    /// `[n, C]`: pooled grid rows (row-major), then the non-grid rows (CLS).
    pub rows: Tensor<B, 2>,
    /// How the rows are laid out (scans need it).
    pub layout: ImageLayout,
}

/// One sequence to run: token ids with at most one [`IMAGE_TOKEN`], and the image's rows.
#[derive(Clone, Debug)]
pub struct Sample<B: Backend> {
    /// Ids, [`IMAGE_TOKEN`] where the image goes.
    pub tokens: Vec<i64>,
    /// The image (required when `tokens` holds the placeholder, refused otherwise).
    pub image: Option<ImageRows<B>>,
}

/// The logits of a batch, padded ([`VisualRwkv::forward_padded`]).
#[derive(Clone, Debug)]
pub struct PaddedLogits<B: Backend> {
    /// `[B, T_max, V]`: sample `i`'s logits in rows `0..lengths[i]`, padding after.
    pub logits: Tensor<B, 3>,
    /// Rows of each sample.
    pub lengths: Vec<usize>,
}

/// Flattened row indices applying a layer's permutations, and the ones undoing them.
type RowGather = (Vec<i64>, Vec<i64>);

/// A sample's runs ([`VisualRwkv::parts`]).
struct Parts<'s, B: Backend> {
    /// Tokens before the image (all of them without an image).
    prefix: &'s [i64],
    /// The image.
    image: Option<&'s ImageRows<B>>,
    /// Tokens after the image.
    suffix: &'s [i64],
}

/// The assembled input of one sample.
struct Assembled<B: Backend> {
    /// Embedding rows `[T, C]` before `ln0`.
    rows: Tensor<B, 2>,
    /// Image span: first row and layout (None without an image).
    span: Option<(usize, ImageLayout)>,
}

impl<B: Backend> Sample<B> {
    /// A sample from a built prompt and the image rows (if any).
    pub fn new(prompt: &Prompt, image: Option<ImageRows<B>>) -> Self {
        Self { tokens: prompt.tokens.clone(), image }
    }

    /// Total rows of the assembled sequence.
    pub fn len(&self) -> usize {
        let img = self.image.as_ref().map_or(0, |i| i.layout.len());
        self.tokens.len() - usize::from(self.tokens.contains(&IMAGE_TOKEN)) + img
    }

    /// Whether the sample is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The sequence's token ids with [`IMAGE_TOKEN`] at every image row (`T` entries).
    pub fn row_tokens(&self) -> Vec<i64> {
        let n = self.image.as_ref().map_or(0, |i| i.layout.len());
        self.tokens.iter().flat_map(|&t| if t == IMAGE_TOKEN { vec![IMAGE_TOKEN; n] } else { vec![t] }).collect()
    }

    /// `[start, end)` of the image rows in the sequence (CLS included), if any.
    pub fn image_span(&self) -> Option<(usize, usize)> {
        let start = self.tokens.iter().position(|&t| t == IMAGE_TOKEN)?;
        Some((start, start + self.image.as_ref()?.layout.len()))
    }
}

/// Model token ids as the fused decoder's ids; a negative id is out of the vocabulary (the
/// decoder checks the upper end).
fn token_ids(ids: &[i64], vocab: usize) -> Result<Vec<TokenId>, RwkvError> {
    ids.iter().map(|&id| TokenId::try_from(id).map_err(|_| RwkvError::TokenOutOfVocabulary { id, vocab })).collect()
}

/// A VisualRWKV checkpoint's tensors split into its parts — `rwkv.*`, `vit.vision_model.*`,
/// `proj.*`, each with the prefix removed; any other key is an error.
fn checkpoint_parts(mut map: TensorMap) -> Result<(TensorMap, TensorMap, TensorMap), VlmError> {
    let stray: Vec<KeyProblem> = {
        let mut keys: Vec<&String> =
            map.tensors.keys().filter(|k| !["rwkv.", "vit.", "proj."].iter().any(|p| k.starts_with(p))).collect();
        keys.sort();
        keys.into_iter().map(|k| KeyProblem::Unexpected(k.clone())).collect()
    };
    if !stray.is_empty() {
        return Err(CheckpointError::Keys {
            path: map.origin.clone(),
            model: "a VisualRWKV checkpoint".into(),
            problems: stray,
        }
        .into());
    }
    Ok((map.take_prefix("rwkv."), map.take_prefix("vit.vision_model."), map.take_prefix("proj.")))
}

/// The tower's configuration for a checkpoint at `path`: `given`, else [`VISION_CONFIG_FILE`]
/// beside it when there is one, else `None` (inferred from the shapes).
fn tower_config_beside(path: &Path, given: Option<&Path>) -> Result<Option<VisionConfig>, VlmError> {
    let beside = path.with_file_name(VISION_CONFIG_FILE);
    let file = given.or_else(|| beside.is_file().then_some(beside.as_path()));
    Ok(file.map(VisionConfig::from_hf_json).transpose()?)
}

/// A projector file's tensors, keys under `proj.` or bare.
fn projector_tensors(path: &Path) -> Result<TensorMap, VlmError> {
    let mut map = TensorMap::read(path)?;
    Ok(if map.has_prefix("proj.") { map.take_prefix("proj.") } else { map })
}

/// A VisualRWKV model loaded for the fused CPU engines ([`VisualRwkv::load_checkpoint_fused`]):
/// the decoder and the tower hold the weights; the model beside them reads its RWKV and tower
/// parameters from the checkpoint only if something uses them (its projector is loaded).
#[derive(Debug)]
pub struct FusedVisualRwkv<B: RwkvBackend> {
    /// The model (RWKV and tower parameters loaded lazily).
    pub model: VisualRwkv<B>,
    /// The fused decoder of its RWKV.
    pub decoder: Decoder,
    /// The fused CPU tower of its vision tower.
    pub tower: FusedTower,
}

impl<B: RwkvBackend> FusedVisualRwkv<B> {
    /// The model, and the decoder with the tower.
    pub fn into_parts(self) -> (VisualRwkv<B>, Option<(Decoder, FusedTower)>) {
        (self.model, Some((self.decoder, self.tower)))
    }
}

impl<B: RwkvBackend> VisualRwkv<B> {
    /// Puts the parts together, checking that the projector maps the tower's width to RWKV's.
    pub fn new(
        rwkv: impl Into<LanguageModel<B>>,
        vision: VisionTower<B>,
        projector: Projector<B>,
        options: VisionOptions,
    ) -> Result<Self, VlmError> {
        let rwkv = rwkv.into();
        let (d, c) = (vision.config.hidden_size, rwkv.dims().n_embd);
        if projector.in_dim() != d || projector.out_dim() != c {
            return Err(VlmError::ProjectorWidths {
                projector_in: projector.in_dim(),
                projector_out: projector.out_dim(),
                vision: d,
                rwkv: c,
            });
        }
        Ok(Self { rwkv, vision, projector, options })
    }

    /// The model's tensors in the official VisualRWKV layout: `rwkv.*` (RWKV-LM x060 or x070
    /// names and shapes, `ln0` unfolded), `vit.vision_model.*` (Hugging Face names) and `proj.*`, as f32.
    pub fn to_tensor_map(&self) -> Result<TensorMap, VlmError> {
        let mut map = self.vision.to_tensor_map("vit.vision_model.")?;
        for (k, v) in self.rwkv.to_tensor_map()?.tensors {
            map.tensors.insert(format!("rwkv.{k}"), v);
        }
        map.tensors.extend(self.projector.to_tensor_map("proj.")?.tensors);
        map.origin = "VisualRWKV".into();
        Ok(map)
    }

    /// Saves the model as an official-layout safetensors checkpoint at `path` (see
    /// [`VisualRwkv::to_tensor_map`]) and the tower's Hugging Face config as
    /// [`VISION_CONFIG_FILE`] beside it, each written atomically (temporary name, then rename).
    /// [`VisualRwkv::load_checkpoint`] reads both back.
    pub fn save_checkpoint(&self, path: impl AsRef<Path>) -> Result<(), VlmError> {
        let path = path.as_ref();
        let config = serde_json::to_string_pretty(&self.vision.config.to_hf_json()).unwrap_or_default();
        visualrwkv_checkpoint::write_atomic(path.with_file_name(VISION_CONFIG_FILE), config.as_bytes())?;
        visualrwkv_checkpoint::write_safetensors(&self.to_tensor_map()?, path)?;
        Ok(())
    }

    /// Loads an official VisualRWKV checkpoint (`rwkv.*`, `vit.vision_model.*`, `proj.*` in one
    /// `.pth` or safetensors file); every other key is an error. `vision_config`: a Hugging Face
    /// `config.json` for the tower (default: [`VISION_CONFIG_FILE`] beside the checkpoint when
    /// there is one, else inferred from shapes).
    pub fn load_checkpoint(
        path: impl AsRef<Path>,
        vision_config: Option<&Path>,
        options: VisionOptions,
        device: &B::Device,
    ) -> Result<Self, VlmError> {
        let path = path.as_ref();
        let (rwkv, vit, proj) = checkpoint_parts(visualrwkv_vision::checkpoint::read_tensors(path)?)?;
        let rwkv = LanguageModel::from_tensors(&rwkv, device)?;
        let vcfg = tower_config_beside(path, vision_config)?;
        let vision = VisionConfig::tower_from_tensors(&vit, vcfg, device)?;
        Self::with_projector(rwkv, vision, &proj, options, device)
    }

    /// Loads an official VisualRWKV checkpoint as [`VisualRwkv::load_checkpoint`] does, for the
    /// fused CPU engines: the RWKV tensors go straight into a [`Decoder`] with its matrices in
    /// `dtype` and the tower's into a [`FusedTower`] (moved, not copied: the checkpoint is read
    /// once), while the model's RWKV and tower parameters stay unread until something uses them
    /// and are then read from the file ([`visualrwkv_checkpoint::table::load_lazily`]). The
    /// process holds one copy of the weights; the burn model still computes everything it did.
    pub fn load_checkpoint_fused(
        path: impl AsRef<Path>,
        vision_config: Option<&Path>,
        options: VisionOptions,
        dtype: WeightDtype,
        device: &B::Device,
    ) -> Result<FusedVisualRwkv<B>, VlmError> {
        let path = path.as_ref();
        let source = TensorSource::open(path)?;
        let (rwkv, vit, proj) = checkpoint_parts(visualrwkv_vision::checkpoint::read_source(&source)?)?;
        let vcfg = tower_config_beside(path, vision_config)?;
        let lazy_rwkv = LanguageModel::from_tensors_lazily(&rwkv, &source.with_prefix("rwkv."), device)?;
        let vit_source = source.with_prefix("vit.vision_model.");
        let lazy_vision = VisionConfig::tower_from_tensors_lazily(&vit, vcfg, &vit_source, device)?;
        let model = Self::with_projector(lazy_rwkv, lazy_vision, &proj, options, device)?;
        model.fused_from(rwkv, vit, dtype)
    }

    /// Loads the parts from separate files: an RWKV-6 or RWKV-7 checkpoint, a vision tower (HF layout,
    /// optional `config.json`) and a projector (keys under `proj.` or bare).
    pub fn load_parts(
        rwkv: impl AsRef<Path>,
        vision: impl AsRef<Path>,
        vision_config: Option<&Path>,
        projector: impl AsRef<Path>,
        options: VisionOptions,
        device: &B::Device,
    ) -> Result<Self, VlmError> {
        let rwkv = LanguageModel::load(rwkv, device)?;
        let vision = visualrwkv_vision::load(vision, vision_config, device)?;
        Self::with_projector(rwkv, vision, &projector_tensors(projector.as_ref())?, options, device)
    }

    /// [`VisualRwkv::load_parts`] for the fused CPU engines, as
    /// [`VisualRwkv::load_checkpoint_fused`] loads one checkpoint.
    pub fn load_parts_fused(
        rwkv: impl AsRef<Path>,
        vision: impl AsRef<Path>,
        vision_config: Option<&Path>,
        projector: impl AsRef<Path>,
        options: VisionOptions,
        dtype: WeightDtype,
        device: &B::Device,
    ) -> Result<FusedVisualRwkv<B>, VlmError> {
        let rwkv_source = TensorSource::open(rwkv.as_ref())?;
        let rwkv_map = rwkv_source.read_skipping(|_| false)?;
        let lazy_rwkv = LanguageModel::from_tensors_lazily(&rwkv_map, &rwkv_source, device)?;
        let vision_source = TensorSource::open(vision.as_ref())?;
        let (vit, prefix) = visualrwkv_vision::checkpoint::tower_tensors(&vision_source)?;
        let vcfg = visualrwkv_vision::checkpoint::config_beside(vision.as_ref(), vision_config)?;
        let lazy_vision =
            VisionConfig::tower_from_tensors_lazily(&vit, vcfg, &vision_source.with_prefix(prefix), device)?;
        let proj = projector_tensors(projector.as_ref())?;
        let model = Self::with_projector(lazy_rwkv, lazy_vision, &proj, options, device)?;
        model.fused_from(rwkv_map, vit, dtype)
    }

    /// The model with a projector read from `proj` (keys without prefix).
    fn with_projector(
        rwkv: impl Into<LanguageModel<B>>,
        vision: VisionTower<B>,
        proj: &TensorMap,
        options: VisionOptions,
        device: &B::Device,
    ) -> Result<Self, VlmError> {
        let projector = ProjectorConfig::infer(proj, Some(vision.config.hidden_size))?.from_tensors(proj, device)?;
        Self::new(rwkv, vision, projector, options)
    }

    /// This (lazily loaded) model with the fused decoder and tower built from its tensors, both
    /// at once.
    fn fused_from(self, rwkv: TensorMap, vit: TensorMap, dtype: WeightDtype) -> Result<FusedVisualRwkv<B>, VlmError> {
        let config = self.vision.config.clone();
        let (decoder, tower) =
            rayon::join(|| Decoder::from_tensors(rwkv, dtype), || FusedTower::from_tensors(vit, Some(config)));
        Ok(FusedVisualRwkv { model: self, decoder: decoder?, tower: tower? })
    }

    /// Encodes pixels `[B, 3, H, W]` into projected image rows, one [`ImageRows`] per image.
    pub fn encode_images(&self, pixels: Tensor<B, 4>) -> Result<Vec<ImageRows<B>>, VlmError> {
        let (features, grid) = self.vision.features(pixels, self.options.layer)?;
        self.image_rows(features, grid)
    }

    /// [`VisualRwkv::encode_images`] with the tower's features computed by `tower`, the fused
    /// CPU tower built from this model's tower ([`FusedTower::new`]); pooling and projector as
    /// usual. Equal to [`VisualRwkv::encode_images`] to 1e-4 (`tests/fused_prefill.rs`).
    pub fn encode_images_fused(&self, tower: &FusedTower, pixels: Tensor<B, 4>) -> Result<Vec<ImageRows<B>>, VlmError> {
        if tower.config() != &self.vision.config {
            return Err(VlmError::FusedMismatch {
                part: "tower",
                built_for: format!("{:?}", tower.config()),
                model: format!("{:?}", self.vision.config),
            });
        }
        let dims = pixels.dims();
        let device = pixels.device();
        let host = pixels.into_data().convert::<f32>().into_vec::<f32>().map_err(|e| VisionError::Shape {
            what: format!("pixel_values ({e:?})"),
            expected: "f32 values".into(),
            found: dims.to_vec(),
        })?;
        let (features, grid) = tower.features(&host, dims, self.options.layer)?;
        let d = self.vision.config.hidden_size;
        let t = features.len() / (dims[0] * d);
        let features = Tensor::from_data(TensorData::new(features, [dims[0], t, d]), &device);
        self.image_rows(features, grid)
    }

    /// Pooled and projected rows of tower features `[B, T, D]` on a `grid`.
    fn image_rows(&self, features: Tensor<B, 3>, grid: (usize, usize)) -> Result<Vec<ImageRows<B>>, VlmError> {
        let has_cls = self.vision.config.kind == TowerKind::Clip;
        let pooled = grid_pool(features, grid, has_cls, self.options.pooling)?;
        let layout = ImageLayout::new(pooled.grid_h, pooled.grid_w, pooled.extra);
        let rows = self.projector.project(pooled.features)?;
        let [b, n, c] = rows.dims();
        Ok((0..b)
            .map(|i| ImageRows { rows: rows.clone().slice([i..i + 1, 0..n, 0..c]).reshape([n, c]), layout })
            .collect())
    }

    /// The sample's text and image runs, checked: the tokens before the image, the image and
    /// the tokens after it (all tokens in `prefix` when there is no image).
    fn parts<'s>(&self, sample: &'s Sample<B>) -> Result<Parts<'s, B>, VlmError> {
        let places: Vec<usize> =
            sample.tokens.iter().enumerate().filter(|(_, t)| **t == IMAGE_TOKEN).map(|(i, _)| i).collect();
        let c = self.rwkv.dims().n_embd;
        let parts = match (places.as_slice(), &sample.image) {
            ([], None) => Parts { prefix: &sample.tokens, image: None, suffix: &[] },
            ([at], Some(img)) => {
                let [n, w] = img.rows.dims();
                if w != c || n != img.layout.len() {
                    return Err(VlmError::ImageRows { expected: [img.layout.len(), c], found: [n, w] });
                }
                Parts { prefix: &sample.tokens[..*at], image: Some(img), suffix: &sample.tokens[at + 1..] }
            }
            ([], Some(_)) => return Err(VlmError::ImageWithoutPlaceholder),
            ([_], None) => return Err(VlmError::PlaceholderWithoutImage),
            (many, _) => return Err(VlmError::Placeholders(many.len())),
        };
        if parts.prefix.is_empty() && parts.image.is_none() {
            return Err(VlmError::Empty("the sample"));
        }
        Ok(parts)
    }

    fn assemble(&self, sample: &Sample<B>) -> Result<Assembled<B>, VlmError> {
        let parts = self.parts(sample)?;
        let device = self.rwkv.device();
        let c = self.rwkv.dims().n_embd;
        let embed = |ids: &[i64]| -> Result<Option<Tensor<B, 2>>, VlmError> {
            if ids.is_empty() {
                return Ok(None);
            }
            let t = Tensor::<B, 2, Int>::from_data(TensorData::new(ids.to_vec(), [1, ids.len()]), &device);
            Ok(Some(self.rwkv.embed(t)?.reshape([ids.len(), c])))
        };
        let rows: Vec<Tensor<B, 2>> =
            [embed(parts.prefix)?, parts.image.map(|img| img.rows.clone()), embed(parts.suffix)?]
                .into_iter()
                .flatten()
                .collect();
        let span = parts.image.map(|img| (parts.prefix.len(), img.layout));
        Ok(Assembled { rows: Tensor::cat(rows, 0), span })
    }

    /// The order in which block `layer` reads the `t` rows of a sequence whose image span is
    /// `span` (`order[q]` = row read at position `q`); `None` when no row moves.
    fn row_order(
        &self,
        span: Option<(usize, ImageLayout)>,
        t: usize,
        layer: usize,
        scan: &dyn Scan,
    ) -> Result<Option<Vec<usize>>, VlmError> {
        let Some((start, layout)) = span else { return Ok(None) };
        let Some(perm) = checked_permutation(scan, layer, self.rwkv.dims().n_layer, &layout)? else {
            return Ok(None);
        };
        let mut order: Vec<usize> = (0..t).collect();
        for (q, p) in perm.into_iter().enumerate() {
            order[start + q] = start + p;
        }
        Ok(Some(order))
    }

    /// Row indices (over the flattened `[B·T]` batch) that apply each sample's scan permutation
    /// for `layer`, and their inverse; `None` when no row moves.
    fn layer_gather(
        &self,
        spans: &[Option<(usize, ImageLayout)>],
        t: usize,
        layer: usize,
        scan: &dyn Scan,
    ) -> Result<Option<RowGather>, VlmError> {
        let (mut fwd, mut back, mut moved) =
            (Vec::with_capacity(spans.len() * t), Vec::with_capacity(spans.len() * t), false);
        for (b, span) in spans.iter().enumerate() {
            let base = b * t;
            let order = self.row_order(*span, t, layer, scan)?;
            moved |= order.is_some();
            let order = order.unwrap_or_else(|| (0..t).collect());
            back.extend(inverse(&order).into_iter().map(|i| (i + base) as i64));
            fwd.extend(order.into_iter().map(|i| (i + base) as i64));
        }
        Ok(moved.then_some((fwd, back)))
    }

    /// Runs every block over `x` `[B, T, C]` (after `ln0`) from zero states, each wrapped by the
    /// scan's permutation of the image spans; returns the residual stream after the last block
    /// and the per-layer states after the last row.
    fn run_blocks(
        &self,
        mut x: Tensor<B, 3>,
        spans: &[Option<(usize, ImageLayout)>],
        scan: &dyn Scan,
    ) -> Result<(Tensor<B, 3>, State<B>), VlmError> {
        let [b, t, c] = x.dims();
        let device = x.device();
        let mut state = self.rwkv.zero_state(b);
        let rows = |x: Tensor<B, 3>, idx: &[i64]| -> Tensor<B, 3> {
            let idx = Tensor::<B, 1, Int>::from_data(TensorData::new(idx.to_vec(), [idx.len()]), &device);
            x.reshape([b * t, c]).select(0, idx).reshape([b, t, c])
        };
        // RWKV-7's first-block values, kept in the rows' own order and permuted with them.
        let mut v_first: Option<Tensor<B, 2>> = None;
        for l in 0..self.rwkv.dims().n_layer {
            let gather = self.layer_gather(spans, t, l, scan)?;
            if let Some((fwd, _)) = &gather {
                x = rows(x, fwd);
                v_first = v_first.map(|v| rows(v.reshape([b, t, c]), fwd).reshape([b * t, c]));
            }
            let out = self.rwkv.forward_layer(l, x, state.layers[l].clone(), v_first)?;
            (x, v_first) = match &gather {
                Some((_, back)) => {
                    (rows(out.x, back), out.v_first.map(|v| rows(v.reshape([b, t, c]), back).reshape([b * t, c])))
                }
                None => (out.x, out.v_first),
            };
            state.layers[l] = out.state;
        }
        Ok((x, state))
    }

    /// Logits `[T_i, V]` of every row of every sample (a batch of any lengths and image
    /// positions; each sample's result equals its result alone).
    pub fn forward(&self, samples: &[Sample<B>], scan: &dyn Scan) -> Result<Vec<Tensor<B, 2>>, VlmError> {
        let PaddedLogits { logits, lengths } = self.forward_padded(samples, scan)?;
        let v = logits.dims()[2];
        Ok(lengths
            .iter()
            .enumerate()
            .map(|(i, &n)| logits.clone().slice([i..i + 1, 0..n, 0..v]).reshape([n, v]))
            .collect())
    }

    /// The logits of a batch as one padded tensor `[B, T_max, V]` (sample `i`'s rows first, then
    /// padding), with each sample's length: what a training loss reads without slicing samples
    /// out (`visualrwkv_train::loss::padded_batch_loss`).
    pub fn forward_padded(&self, samples: &[Sample<B>], scan: &dyn Scan) -> Result<PaddedLogits<B>, VlmError> {
        if samples.is_empty() {
            return Err(VlmError::Empty("the batch"));
        }
        let assembled = samples.iter().map(|s| self.assemble(s)).collect::<Result<Vec<_>, _>>()?;
        let t = assembled.iter().map(|a| a.rows.dims()[0]).max().unwrap_or(0);
        let c = self.rwkv.dims().n_embd;
        let device = self.rwkv.device();
        let lengths: Vec<usize> = assembled.iter().map(|a| a.rows.dims()[0]).collect();
        let spans: Vec<_> = assembled.iter().map(|a| a.span).collect();
        let padded: Vec<Tensor<B, 3>> = assembled
            .into_iter()
            .map(|a| {
                let n = a.rows.dims()[0];
                let rows =
                    if n < t { Tensor::cat(vec![a.rows, Tensor::zeros([t - n, c], &device)], 0) } else { a.rows };
                rows.unsqueeze_dim(0)
            })
            .collect();
        let x = self.rwkv.input_norm(Tensor::cat(padded, 0));
        let (x, _) = self.run_blocks(x, &spans, scan)?;
        Ok(PaddedLogits { logits: self.rwkv.logits(x), lengths })
    }

    /// Runs the prompt of one sample layer by layer (docs/model.md §5): the last row's
    /// logits and the per-layer states to continue from.
    pub fn prefill(&self, sample: &Sample<B>, scan: &dyn Scan) -> Result<(Vec<f32>, State<B>), VlmError> {
        let (x, state) = self.prefill_rows(sample, scan)?;
        let [_, t, c] = x.dims();
        let logits = self.rwkv.logits(x.slice([0..1, t - 1..t, 0..c]));
        Ok((last_logits(logits), state))
    }

    /// [`VisualRwkv::prefill`] without the head: only the per-layer states after the last row
    /// (to continue with [`VisualRwkv::extend`], e.g. after `[prefix | image]`).
    pub fn prefill_state(&self, sample: &Sample<B>, scan: &dyn Scan) -> Result<State<B>, VlmError> {
        Ok(self.prefill_rows(sample, scan)?.1)
    }

    /// The residual stream `[1, T, C]` after the last block and the states, from zero states.
    fn prefill_rows(&self, sample: &Sample<B>, scan: &dyn Scan) -> Result<(Tensor<B, 3>, State<B>), VlmError> {
        let a = self.assemble(sample)?;
        let [t, c] = a.rows.dims();
        let x = self.rwkv.input_norm(a.rows.reshape([1, t, c]));
        self.run_blocks(x, &[a.span], scan)
    }

    /// Generates an answer after the prompt with the cached state: one prefill, then one
    /// single-step pass per token (O(1) per token, exact: docs/model.md §5).
    pub fn generate(
        &self,
        sample: &Sample<B>,
        scan: &dyn Scan,
        tokenizer: &Tokenizer,
        options: &GenerateOptions,
        engine: Engine<'_>,
        on_text: impl FnMut(&str),
    ) -> Result<Generation<B>, VlmError> {
        let (logits, state) = self.prefill_on(sample, scan, engine)?;
        Ok(decode_prompt_state(&self.rwkv, tokenizer, logits, state, options, engine, on_text)?)
    }

    /// [`VisualRwkv::generate`] as VisualRWKV-7 v7.00's `generate` computes it: the whole
    /// sequence left-padded with "\n\n" tokens to a multiple of 16 rows, the pad count
    /// following the sequence's length ([`crate::decode_v700_padded`]). Prefills the sample
    /// once per pad count (16 prefills) and steps 16 states per token, so it costs about 16x
    /// [`VisualRwkv::generate`]: for reproducing v7.00's answers exactly, not for speed.
    pub fn generate_v700_padded(
        &self,
        sample: &Sample<B>,
        scan: &dyn Scan,
        tokenizer: &Tokenizer,
        options: &GenerateOptions,
        on_text: impl FnMut(&str),
    ) -> Result<Generation<B>, VlmError> {
        options.sampling.validate().map_err(RwkvError::from)?;
        let prompts = (0..crate::V700_CHUNK_LEN)
            .map(|k| {
                let mut padded = sample.clone();
                padded.tokens.splice(0..0, std::iter::repeat_n(i64::from(crate::V700_PAD_TOKEN), k));
                self.prefill(&padded, scan)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(crate::decode_v700_padded(&self.rwkv, tokenizer, prompts, sample.len(), options, on_text)?)
    }

    /// The logits of the next token after `sample` followed by `generated`, recomputed from
    /// scratch over the whole sequence (what the reference does at every step): the oracle of
    /// cached generation.
    pub fn recompute_next_logits(
        &self,
        sample: &Sample<B>,
        generated: &[u32],
        scan: &dyn Scan,
    ) -> Result<Vec<f32>, VlmError> {
        let mut s = sample.clone();
        s.tokens.extend(generated.iter().map(|&g| g as i64));
        let logits = self.forward(&[s], scan)?.remove(0);
        let [t, v] = logits.dims();
        Ok(logits.slice([t - 1..t, 0..v]).into_data().convert::<f32>().into_vec::<f32>().expect("f32 logits"))
    }

    /// Runs text `tokens` (no placeholder) in sequence mode from a cached `state` — e.g. the
    /// state after `[prefix | image]` from [`VisualRwkv::prefill`] of a sample cut after the
    /// image, reused for many questions (an image-state cache; exact, as the text comes after
    /// the whole image span). Returns the last row's logits and the new state.
    pub fn extend(&self, state: &State<B>, tokens: &[i64]) -> Result<(Vec<f32>, State<B>), VlmError> {
        if tokens.is_empty() {
            return Err(VlmError::Empty("the run of tokens to extend by"));
        }
        if tokens.contains(&IMAGE_TOKEN) {
            return Err(VlmError::PlaceholderInText("extend"));
        }
        let device = self.rwkv.device();
        let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(tokens.to_vec(), [1, tokens.len()]), &device);
        let out = self.rwkv.forward_last(ids, Some(state))?;
        Ok((last_logits(out.logits), out.state))
    }

    /// The fused decoder's input for `sample`: the assembled rows `[T, C]` on the host (text
    /// through the decoder's own embedding, image rows as given) and each block's row order.
    /// Errors when `decoder` was built for another shape of model.
    fn fused_input(
        &self,
        decoder: &Decoder,
        sample: &Sample<B>,
        scan: &dyn Scan,
    ) -> Result<(Vec<f32>, Vec<Option<RowOrder>>), VlmError> {
        let config = self.rwkv.config();
        if decoder.config() != &config {
            return Err(VlmError::FusedMismatch {
                part: "decoder",
                built_for: format!("{:?}", decoder.config()),
                model: format!("{config:?}"),
            });
        }
        let parts = self.parts(sample)?;
        let vocab = decoder.dims().vocab_size;
        let mut x = decoder.embed(&token_ids(parts.prefix, vocab)?)?;
        if let Some(img) = parts.image {
            x.extend(visualrwkv_checkpoint::host_values(img.rows.clone()));
        }
        x.extend(decoder.embed(&token_ids(parts.suffix, vocab)?)?);
        let t = x.len() / decoder.dims().n_embd;
        let span = parts.image.map(|img| (parts.prefix.len(), img.layout));
        let orders = (0..config.dims().n_layer)
            .map(|l| self.row_order(span, t, l, scan)?.map(RowOrder::new).transpose().map_err(VlmError::from))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((x, orders))
    }

    /// [`VisualRwkv::prefill`] on the fused CPU decoder built from this model's language model
    /// ([`Decoder::new`]): the assembled rows in its sequence mode (each projection one GEMM over
    /// all rows), every block reading the image span in the scan's order. Returns the last row's
    /// logits and the host state to decode from. Equal to [`VisualRwkv::prefill`] to 1e-4 with f32
    /// matrices (`tests/fused_prefill.rs`).
    pub fn prefill_fused(
        &self,
        decoder: &Decoder,
        sample: &Sample<B>,
        scan: &dyn Scan,
    ) -> Result<(Vec<f32>, HostState), VlmError> {
        let (x, orders) = self.fused_input(decoder, sample, scan)?;
        let mut state = decoder.zero_state();
        let logits = decoder.prefill_embeddings_ordered(&x, &mut state, &orders)?;
        Ok((logits, state))
    }

    /// Every row's logits `[T, V]` of `sample` on the fused CPU decoder (as
    /// [`VisualRwkv::forward`] gives them for one sample).
    pub fn logits_fused(
        &self,
        decoder: &Decoder,
        sample: &Sample<B>,
        scan: &dyn Scan,
    ) -> Result<Tensor<B, 2>, VlmError> {
        let (x, orders) = self.fused_input(decoder, sample, scan)?;
        let t = x.len() / decoder.dims().n_embd;
        let logits = decoder.logits_ordered(&x, &mut decoder.zero_state(), &orders)?;
        let v = logits.len() / t;
        Ok(Tensor::from_data(TensorData::new(logits, [t, v]), &self.rwkv.device()))
    }

    /// [`VisualRwkv::prefill`] on `engine`: the burn model's, or the fused decoder's
    /// ([`VisualRwkv::prefill_fused`]); the state stays where the engine keeps it.
    pub fn prefill_on(
        &self,
        sample: &Sample<B>,
        scan: &dyn Scan,
        engine: Engine<'_>,
    ) -> Result<(Vec<f32>, PromptState<B>), VlmError> {
        Ok(match engine {
            Engine::Model => {
                let (logits, state) = self.prefill(sample, scan)?;
                (logits, PromptState::Model(state))
            }
            Engine::Fused(decoder) => {
                let (logits, state) = self.prefill_fused(decoder, sample, scan)?;
                (logits, PromptState::Host(state))
            }
        })
    }

    /// [`VisualRwkv::extend`] on `engine` from a state of either kind.
    pub fn extend_on(
        &self,
        state: &PromptState<B>,
        tokens: &[i64],
        engine: Engine<'_>,
    ) -> Result<(Vec<f32>, PromptState<B>), VlmError> {
        match engine {
            Engine::Model => {
                let (logits, state) = self.extend(&state.to_state(&self.rwkv)?, tokens)?;
                Ok((logits, PromptState::Model(state)))
            }
            Engine::Fused(decoder) => {
                if tokens.is_empty() {
                    return Err(VlmError::Empty("the run of tokens to extend by"));
                }
                if tokens.contains(&IMAGE_TOKEN) {
                    return Err(VlmError::PlaceholderInText("extend"));
                }
                let ids = token_ids(tokens, decoder.dims().vocab_size)?;
                let mut host = state.to_host()?;
                let logits = decoder.prefill(&ids, &mut host)?;
                Ok((logits, PromptState::Host(host)))
            }
        }
    }

    /// Logits after one generated token from a cached state (a single-step pass).
    pub fn step(&self, token: u32, state: &State<B>) -> Result<(Vec<f32>, State<B>), VlmError> {
        let device = self.rwkv.device();
        let out = self.rwkv.forward(ids_tensor::<B>(&[token], &device), Some(state))?;
        Ok((last_logits(out.logits), out.state))
    }
}
