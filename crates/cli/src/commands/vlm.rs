//! What `chat` and `vlm-logits` share: the model, image and prompt flags, and loading them.

use std::path::PathBuf;

use burn::tensor::Tensor;
use visualrwkv::{Sample, VisionOptions, VisualRwkv};
use visualrwkv_prompt::PromptStrategy;
use visualrwkv_rwkv::{Arch, Decoder, RwkvBackend, WeightDtype};
use visualrwkv_scan::Scan;
use visualrwkv_tokenizer::Tokenizer;
use visualrwkv_vision::{FusedTower, ImageProcessor};

use crate::Res;
use crate::args::{PromptArg, ScanArg, read_pixels};

/// The model flags of the vision-language commands: the checkpoint (or its parts), scan,
/// prompt layout, vision options and tokenizer.
#[derive(clap::Args, Clone)]
pub struct ModelArgs {
    /// An official VisualRWKV checkpoint (`rwkv.*`, `vit.vision_model.*`, `proj.*`; .pth or
    /// safetensors).
    #[arg(long, conflicts_with_all = ["rwkv", "vision", "proj"], required_unless_present_all = ["rwkv", "vision", "proj"])]
    pub checkpoint: Option<PathBuf>,
    /// RWKV-6 (x060) or RWKV-7 (x070) checkpoint (with --vision and --proj).
    #[arg(long, requires_all = ["vision", "proj"])]
    pub rwkv: Option<PathBuf>,
    /// The language model's architecture the command expects (x060 or x070); the checkpoint's
    /// keys must agree. Default: whatever the checkpoint is.
    #[arg(long, value_parser = crate::args::parse_arch)]
    pub arch: Option<Arch>,
    /// Vision tower (HF safetensors).
    #[arg(long)]
    pub vision: Option<PathBuf>,
    /// Projector (`proj.*` or bare keys).
    #[arg(long)]
    pub proj: Option<PathBuf>,
    /// Hugging Face `config.json` of the vision tower (default: beside it, else inferred).
    #[arg(long)]
    pub vision_config: Option<PathBuf>,
    /// Image scan (bi: VisualRWKV v6.0).
    #[arg(long, value_enum, default_value_t = ScanArg::Bi)]
    pub scan: ScanArg,
    /// Image placement (sandwich: v6.0; sandwich-repeat: v5).
    #[arg(long, value_enum, default_value_t = PromptArg::Sandwich)]
    pub prompt: PromptArg,
    /// Grid pooling: -1, 0, 1 or g >= 2.
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub grid: i64,
    /// VisualRWKV-7 v7.00's token pooling: average the patch grid down to this many tokens (a
    /// square number; v7.00's default is 16). Replaces --grid.
    #[arg(long)]
    pub num_token_per_image: Option<usize>,
    /// Vision hidden layer (-1 = last).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub layer: i64,
    /// Tokenizer: `world` (the World vocabulary), `bytes` (its 256 single-byte tokens, id =
    /// byte + 1, for small byte-level models), `auto` (world when the model's vocabulary holds
    /// it, else bytes) or a vocabulary file in the World format (the demo's `vocab.txt`).
    #[arg(long, default_value = "auto")]
    pub tokenizer: String,
}

/// A loaded model with its scan, prompt layout and tokenizer.
pub struct LoadedModel<B: RwkvBackend> {
    /// The model (its RWKV and tower read lazily when loaded for the fused engines).
    pub model: VisualRwkv<B>,
    /// The fused decoder and tower holding the weights, when loaded for them.
    pub fused: Option<(Decoder, FusedTower)>,
    /// The scan.
    pub scan: Box<dyn Scan>,
    /// The prompt layout.
    pub strategy: Box<dyn PromptStrategy>,
    /// The tokenizer.
    pub tokenizer: &'static Tokenizer,
}

impl ModelArgs {
    /// The language model's architecture, read from the checkpoint's (or `--rwkv` file's) keys.
    pub fn arch(&self) -> Res<Arch> {
        let found = match (&self.checkpoint, &self.rwkv) {
            (Some(c), _) => Arch::of_file_under(c, "rwkv.")?,
            (None, Some(r)) => Arch::of_file(r)?,
            _ => return Err("give --checkpoint, or --rwkv, --vision and --proj".into()),
        };
        match self.arch {
            Some(want) if want != found => {
                Err(format!("--arch {}: the checkpoint's language model is {}", want.name(), found.name()).into())
            }
            _ => Ok(found),
        }
    }

    /// The fused decoder's matrix type for `kind` on `spec` ([`crate::args::DecoderKind::dtype`]),
    /// after checking the checkpoint's architecture against `--arch`.
    pub fn fused_dtype(
        &self,
        kind: crate::args::DecoderKind,
        spec: &crate::device::DeviceSpec,
    ) -> Res<Option<WeightDtype>> {
        self.arch()?;
        kind.dtype(spec)
    }

    /// Loads the model onto `dev` with the scan, layout and tokenizer the flags name; with
    /// `fused` (the matrix type of `--decoder` on the CPU), for the fused decoder and tower
    /// ([`VisualRwkv::load_checkpoint_fused`]: one copy of the weights, read once).
    pub fn load<B: RwkvBackend>(&self, dev: &B::Device, fused: Option<WeightDtype>) -> Res<LoadedModel<B>> {
        let (scan, strategy) = (self.scan.scan(), self.prompt.strategy());
        let options =
            VisionOptions { layer: self.layer, pooling: crate::args::pooling(self.grid, self.num_token_per_image)? };
        let vcfg = self.vision_config.as_deref();
        let loaded = match (&self.checkpoint, &self.rwkv, &self.vision, &self.proj, fused) {
            (Some(c), .., None) => (VisualRwkv::<B>::load_checkpoint(c, vcfg, options, dev)?, None),
            (Some(c), .., Some(dtype)) => {
                VisualRwkv::<B>::load_checkpoint_fused(c, vcfg, options, dtype, dev)?.into_parts()
            }
            (None, Some(r), Some(v), Some(p), None) => {
                (VisualRwkv::<B>::load_parts(r, v, vcfg, p, options, dev)?, None)
            }
            (None, Some(r), Some(v), Some(p), Some(dtype)) => {
                VisualRwkv::<B>::load_parts_fused(r, v, vcfg, p, options, dtype, dev)?.into_parts()
            }
            _ => return Err("give --checkpoint, or --rwkv, --vision and --proj".into()),
        };
        let (model, fused) = loaded;
        let tokenizer = crate::args::pick_tokenizer(&self.tokenizer, model.rwkv.dims().vocab_size)?;
        Ok(LoadedModel { model, fused, scan, strategy, tokenizer })
    }

    /// The model's name as the official `evaluate.py` gives it: the checkpoint's folder name
    /// (the projector's, for separate parts), else the file's stem.
    pub fn model_id(&self) -> String {
        let path = self.checkpoint.as_ref().or(self.proj.as_ref());
        let Some(path) = path else { return "visualrwkv".into() };
        let folder = path.parent().and_then(|p| p.file_name()).and_then(|n| n.to_str());
        folder.or_else(|| path.file_stem().and_then(|n| n.to_str())).unwrap_or("visualrwkv").to_string()
    }
}

/// Model, image and prompt flags of the vision-language commands.
#[derive(clap::Args, Clone)]
pub struct VlmArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The image (PNG, JPEG, WebP, BMP).
    #[arg(long, required_unless_present = "pixels", conflicts_with = "pixels")]
    image: Option<PathBuf>,
    /// Ready `pixel_values` [1, 3, H, W] in a safetensors file (instead of --image).
    #[arg(long)]
    pixels: Option<PathBuf>,
    /// The question.
    #[arg(long)]
    question: String,
    /// Refuse prompts whose assembled sequence is longer than this many rows (0 = no limit).
    #[arg(long, default_value_t = 0)]
    max_context: usize,
}

/// What a VLM command runs: the model, the assembled sample, the scan and the tokenizer.
pub struct VlmInput<B: RwkvBackend> {
    /// The model.
    pub model: VisualRwkv<B>,
    /// The fused decoder (and the image went through the fused tower), when loaded for them.
    pub decoder: Option<Decoder>,
    /// The prompt with the encoded image.
    pub sample: Sample<B>,
    /// The scan.
    pub scan: Box<dyn Scan>,
    /// The tokenizer.
    pub tokenizer: &'static Tokenizer,
}

impl VlmArgs {
    /// [`ModelArgs::fused_dtype`] of the model flags.
    pub fn fused_dtype(
        &self,
        kind: crate::args::DecoderKind,
        spec: &crate::device::DeviceSpec,
    ) -> Res<Option<WeightDtype>> {
        self.model.fused_dtype(kind, spec)
    }

    /// Loads the model onto `dev`, builds the prompt and encodes the image; with `fused` (the
    /// matrix type of `--decoder` on the CPU) the model is loaded for the fused decoder and
    /// tower ([`ModelArgs::load`]) and the image runs through the fused tower.
    pub fn load<B: RwkvBackend>(&self, dev: &B::Device, fused: Option<WeightDtype>) -> Res<VlmInput<B>> {
        let LoadedModel { model, fused, scan, strategy, tokenizer } = self.model.load::<B>(dev, fused)?;
        if self.question.trim().is_empty() {
            return Err("the question is empty".into());
        }
        let pixels: Tensor<B, 4> = match (&self.image, &self.pixels) {
            (Some(image), _) => {
                let processor = ImageProcessor::for_tower(&model.vision.config);
                processor.batch(&[processor.open(image)?], dev)?
            }
            (None, Some(path)) => read_pixels(path, dev)?,
            (None, None) => return Err("give --image or --pixels".into()),
        };
        if pixels.dims()[0] != 1 {
            return Err(format!("one image per conversation, got a batch of {}", pixels.dims()[0]).into());
        }
        let (image, decoder) = match fused {
            Some((decoder, tower)) => (model.encode_images_fused(&tower, pixels)?.remove(0), Some(decoder)),
            None => (model.encode_images(pixels)?.remove(0), None),
        };
        let prompt = visualrwkv_prompt::build(
            &visualrwkv_prompt::Conversation::question(&self.question),
            strategy.as_ref(),
            tokenizer,
            true,
            true,
        )?;
        let sample = Sample::new(&prompt, Some(image));
        if self.max_context > 0 && sample.len() > self.max_context {
            return Err(format!(
                "the prompt assembles to {} rows, more than --max-context {} (no truncation: it would cut the image span)",
                sample.len(),
                self.max_context
            )
            .into());
        }
        Ok(VlmInput { model, decoder, sample, scan, tokenizer })
    }
}
