//! Image preprocessing as Hugging Face's `CLIPImageProcessor` / `SiglipImageProcessor` do it:
//! decode (JPEG bit-identical to Pillow through libjpeg-turbo, see [`decode_jpeg`]; PNG, GIF,
//! WebP, BMP through the `image` crate) → RGB → resize (Pillow's antialiased bicubic, reimplemented
//! bit for bit: same filter, same fixed-point arithmetic, same uint8 rounding between the
//! horizontal and the vertical pass) → centre crop → rescale 1/255 → normalise.
//!
//! # Shapes
//!
//! One image becomes `[3, H, W]` f32 (channel-major); a batch `[B, 3, H, W]`.
//!
//! Colour conversion: grayscale is replicated to three channels; images with alpha are composited
//! over white with Pillow's integer `alpha_composite` (what Hugging Face's `convert_to_rgb` does
//! for CLIP and SigLIP) or, with [`AlphaMode::Drop`], lose their alpha like Pillow's
//! `convert("RGB")`; 16-bit samples are scaled to 8 bits with rounding (Pillow instead truncates
//! 16-bit grayscale; 8-bit inputs — almost all real images — are unaffected).

use std::io::Cursor;
use std::path::Path;

use burn::tensor::{Tensor, TensorData, backend::Backend};
use image::{DynamicImage, ImageReader, RgbImage};

use crate::VisionError;

/// CLIP's normalisation mean (OpenAI; the processor's published digits).
#[allow(clippy::excessive_precision)]
pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
/// CLIP's normalisation standard deviation (the processor's published digits).
#[allow(clippy::excessive_precision)]
pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_1];
/// SigLIP's normalisation mean (and standard deviation): 0.5 per channel.
pub const SIGLIP_MEAN: [f32; 3] = [0.5, 0.5, 0.5];
/// ImageNet mean (DINOv2, SAM in VisualRWKV-HD).
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet standard deviation.
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];
/// Default decompression-bomb guard: the largest width or height accepted.
pub const DEFAULT_MAX_SIDE: u32 = 16_384;

/// How an image is resized before cropping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resize {
    /// Keep the aspect ratio; the shorter side becomes this many pixels (the longer side is
    /// `⌊n·long/short⌋`, as Hugging Face computes it).
    ShortestEdge(u32),
    /// Stretch to exactly `height × width`.
    Exact {
        /// Output height.
        height: u32,
        /// Output width.
        width: u32,
    },
    /// No resizing.
    None,
}

/// What happens to an alpha channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlphaMode {
    /// Composite over an opaque white background (Hugging Face's `convert_to_rgb`).
    CompositeWhite,
    /// Drop alpha (Pillow's `convert("RGB")`, timm's loaders).
    Drop,
}

/// A preprocessing recipe.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageProcessor {
    /// The resize step.
    pub resize: Resize,
    /// Centre crop to `(height, width)` after resizing (zero-padded when the image is smaller).
    pub crop: Option<(u32, u32)>,
    /// Per-channel mean subtracted after rescaling by 1/255.
    pub mean: [f32; 3],
    /// Per-channel standard deviation divided by.
    pub std: [f32; 3],
    /// Decompression-bomb guard: images whose width or height exceeds this are rejected before
    /// decoding.
    pub max_side: u32,
    /// How an alpha channel becomes RGB.
    pub alpha: AlphaMode,
}

impl ImageProcessor {
    /// `openai/clip-vit-large-patch14-336`: shortest edge 336, centre crop 336×336, CLIP mean/std.
    pub fn clip_336() -> Self {
        Self::clip(336)
    }

    /// CLIP's recipe at another size (224 for most CLIP checkpoints).
    pub fn clip(size: u32) -> Self {
        Self {
            resize: Resize::ShortestEdge(size),
            crop: Some((size, size)),
            mean: CLIP_MEAN,
            std: CLIP_STD,
            max_side: DEFAULT_MAX_SIDE,
            alpha: AlphaMode::CompositeWhite,
        }
    }

    /// SigLIP's recipe: stretch to `size × size`, mean = std = 0.5.
    pub fn siglip(size: u32) -> Self {
        Self {
            resize: Resize::Exact { height: size, width: size },
            crop: None,
            mean: SIGLIP_MEAN,
            std: SIGLIP_MEAN,
            max_side: DEFAULT_MAX_SIDE,
            alpha: AlphaMode::CompositeWhite,
        }
    }

    /// The HD towers' DINOv2/SAM recipe: stretch to `size × size`, ImageNet mean/std.
    pub fn imagenet(size: u32) -> Self {
        Self {
            resize: Resize::Exact { height: size, width: size },
            crop: None,
            mean: IMAGENET_MEAN,
            std: IMAGENET_STD,
            max_side: DEFAULT_MAX_SIDE,
            alpha: AlphaMode::CompositeWhite,
        }
    }

    /// The Hugging Face processor recipe of a tower at its trained size: CLIP's (shortest edge,
    /// centre crop, CLIP mean/std) or SigLIP's (stretch, 0.5/0.5).
    pub fn for_tower(config: &crate::VisionConfig) -> Self {
        let size = config.image_size as u32;
        match config.kind {
            crate::TowerKind::Clip => Self::clip(size),
            crate::TowerKind::Siglip => Self::siglip(size),
        }
    }

    /// Decodes an image file (format from its content), refusing images larger than
    /// [`ImageProcessor::max_side`] before decoding them.
    pub fn open(&self, path: impl AsRef<Path>) -> Result<DynamicImage, VisionError> {
        let path = path.as_ref();
        let origin = path.display().to_string();
        let bytes =
            std::fs::read(path).map_err(|e| VisionError::Image { origin: origin.clone(), why: e.to_string() })?;
        self.decode(&bytes, &origin)
    }

    /// Decodes image bytes (see [`ImageProcessor::open`]); `origin` names them in errors.
    pub fn decode(&self, bytes: &[u8], origin: &str) -> Result<DynamicImage, VisionError> {
        let bad = |e: &dyn std::fmt::Display| VisionError::Image { origin: origin.to_string(), why: e.to_string() };
        if bytes.starts_with(&[0xFF, 0xD8, 0xFF])
            && let Some(image) = decode_jpeg(bytes, origin, self.max_side)?
        {
            return Ok(image);
        }
        let reader = || ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|e| bad(&e));
        let (width, height) = reader()?.into_dimensions().map_err(|e| bad(&e))?;
        if width > self.max_side || height > self.max_side {
            return Err(VisionError::ImageTooLarge { origin: origin.to_string(), width, height, limit: self.max_side });
        }
        if width == 0 || height == 0 {
            return Err(bad(&"the image is empty"));
        }
        let mut r = reader()?;
        let mut limits = image::Limits::default();
        limits.max_image_width = Some(self.max_side);
        limits.max_image_height = Some(self.max_side);
        r.limits(limits);
        r.decode().map_err(|e| bad(&e))
    }

    /// Output `(height, width)` of the resize step for an input of `(height, width)`.
    pub fn resized_size(&self, (h, w): (u32, u32)) -> (u32, u32) {
        match self.resize {
            Resize::None => (h, w),
            Resize::Exact { height, width } => (height, width),
            Resize::ShortestEdge(n) => {
                let (short, long) = if w <= h { (w, h) } else { (h, w) };
                let new_long = (n as f64 * long as f64 / short as f64) as u32;
                if w <= h { (new_long.max(1), n) } else { (n, new_long.max(1)) }
            }
        }
    }

    /// Resizes and crops to 8-bit RGB (the image the model sees, before normalisation).
    pub fn prepare(&self, image: &DynamicImage) -> Result<RgbImage, VisionError> {
        let rgb = to_rgb(image, self.alpha);
        let (h, w) = (rgb.height(), rgb.width());
        if h == 0 || w == 0 {
            return Err(VisionError::Image { origin: "image".into(), why: "the image is empty".into() });
        }
        let (oh, ow) = self.resized_size((h, w));
        if oh == 0 || ow == 0 {
            return Err(VisionError::EmptyResize { height: oh, width: ow });
        }
        let resized = pil_bicubic_resize(&rgb, ow, oh);
        Ok(match self.crop {
            Some((ch, cw)) => center_crop(&resized, ch, cw),
            None => resized,
        })
    }

    /// Normalises 8-bit RGB to `[3, H, W]` f32: `(v·(1/255) − mean) / std`, rescaled in f64 and
    /// rounded to f32 before normalising in f32, as Hugging Face's processors compute it.
    pub fn normalize(&self, image: &RgbImage) -> Vec<f32> {
        let (w, h) = (image.width() as usize, image.height() as usize);
        let mut out = vec![0f32; 3 * h * w];
        for (i, px) in image.pixels().enumerate() {
            for c in 0..3 {
                let x = (px.0[c] as f64 * (1.0 / 255.0)) as f32;
                out[c * h * w + i] = (x - self.mean[c]) / self.std[c];
            }
        }
        out
    }

    /// [`ImageProcessor::prepare`] then [`ImageProcessor::normalize`]: `([3·H·W], (H, W))`.
    pub fn preprocess(&self, image: &DynamicImage) -> Result<(Vec<f32>, (usize, usize)), VisionError> {
        let prepared = self.prepare(image)?;
        let size = (prepared.height() as usize, prepared.width() as usize);
        Ok((self.normalize(&prepared), size))
    }

    /// Preprocesses a batch into `pixel_values` `[B, 3, H, W]`; every image must come out the
    /// same size (always true with a crop or an exact resize).
    pub fn batch<B: Backend>(&self, images: &[DynamicImage], device: &B::Device) -> Result<Tensor<B, 4>, VisionError> {
        if images.is_empty() {
            return Err(VisionError::EmptyBatch);
        }
        let mut values = Vec::new();
        let mut size = None;
        for (i, image) in images.iter().enumerate() {
            let (v, hw) = self.preprocess(image)?;
            if *size.get_or_insert(hw) != hw {
                return Err(VisionError::BatchSizes { index: i, expected: size.unwrap_or(hw), found: hw });
            }
            values.extend(v);
        }
        let (h, w) = size.unwrap_or((0, 0));
        Ok(Tensor::from_data(TensorData::new(values, [images.len(), 3, h, w]), (device, burn::tensor::DType::F32)))
    }
}

/// Writes `image` to `path` atomically in the format its extension names (`png`, `jpg`, …):
/// encoded in memory, written to a temporary file beside `path`, then renamed into place, so a
/// killed writer leaves the previous file or the new one, never a part.
pub fn save_image(image: &RgbImage, path: &Path) -> Result<(), VisionError> {
    let origin = path.display().to_string();
    let failed = |why: String| VisionError::Image { origin: origin.clone(), why };
    let format = image::ImageFormat::from_path(path).map_err(|e| failed(e.to_string()))?;
    let mut bytes = Vec::new();
    image.write_to(&mut Cursor::new(&mut bytes), format).map_err(|e| failed(e.to_string()))?;
    Ok(visualrwkv_checkpoint::write_atomic(path, &bytes)?)
}

/// Decodes a JPEG exactly as Pillow does: libjpeg-turbo's default decompression (accurate integer
/// IDCT, fancy upsampling), through the `mozjpeg` crate's libjpeg-turbo build. YCbCr and RGB
/// files come out as RGB, greyscale as luma. `Ok(None)` for colour spaces Pillow converts with
/// its own formulas (CMYK, YCCK), which the caller then decodes with the `image` crate.
/// Corrupt data is an error (libjpeg's fatal errors unwind; they are caught here).
pub fn decode_jpeg(bytes: &[u8], origin: &str, max_side: u32) -> Result<Option<DynamicImage>, VisionError> {
    use mozjpeg::ColorSpace;
    let bad = |why: String| VisionError::Image { origin: origin.to_string(), why };
    let decoded = std::panic::catch_unwind(|| -> Result<Option<DynamicImage>, VisionError> {
        let d = mozjpeg::Decompress::new_mem(bytes).map_err(|e| bad(e.to_string()))?;
        let (width, height) = (d.width() as u32, d.height() as u32);
        if width > max_side || height > max_side {
            return Err(VisionError::ImageTooLarge { origin: origin.to_string(), width, height, limit: max_side });
        }
        if width == 0 || height == 0 {
            return Err(bad("the image is empty".into()));
        }
        let image = match d.color_space() {
            ColorSpace::JCS_GRAYSCALE => {
                let mut started = d.grayscale().map_err(|e| bad(e.to_string()))?;
                let luma: Vec<u8> = started.read_scanlines().map_err(|e| bad(e.to_string()))?;
                started.finish().map_err(|e| bad(e.to_string()))?;
                image::GrayImage::from_raw(width, height, luma).map(DynamicImage::ImageLuma8)
            }
            ColorSpace::JCS_YCbCr | ColorSpace::JCS_RGB => {
                let mut started = d.rgb().map_err(|e| bad(e.to_string()))?;
                let rgb: Vec<u8> = started.read_scanlines().map_err(|e| bad(e.to_string()))?;
                started.finish().map_err(|e| bad(e.to_string()))?;
                RgbImage::from_raw(width, height, rgb).map(DynamicImage::ImageRgb8)
            }
            _ => return Ok(None),
        };
        image.map(Some).ok_or_else(|| bad("the decoder returned fewer pixels than the header declares".into()))
    });
    match decoded {
        Ok(result) => result,
        Err(payload) => {
            let why = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "corrupt JPEG data".into());
            Err(bad(why))
        }
    }
}

/// Converts any colour type to 8-bit RGB (see the module documentation).
pub fn to_rgb(image: &DynamicImage, alpha: AlphaMode) -> RgbImage {
    if !image.color().has_alpha() || alpha == AlphaMode::Drop {
        return image.to_rgb8();
    }
    let rgba = image.to_rgba8();
    RgbImage::from_fn(rgba.width(), rgba.height(), |x, y| {
        let p = rgba.get_pixel(x, y).0;
        image::Rgb([0, 1, 2].map(|c| composite_over_white(p[c], p[3])))
    })
}

/// One channel of Pillow's `alpha_composite(white, src)` (integer arithmetic with 7 extra bits
/// and rounded divisions by 255).
fn composite_over_white(value: u8, alpha: u8) -> u8 {
    if alpha == 0 {
        return 255;
    }
    const BITS: u32 = 7;
    let (v, a) = (value as u32, alpha as u32);
    let outa255 = a * 255 + 255 * (255 - a);
    let coef1 = a * 255 * 255 * (1 << BITS) / outa255;
    let coef2 = 255 * (1 << BITS) - coef1;
    let t = v * coef1 + 255 * coef2 + (0x80 << BITS);
    let div255 = ((t >> 8) + t) >> 8;
    (div255 >> BITS) as u8
}

/// Centre crop to `ch × cw` with Hugging Face's offsets (`(in − out) // 2`), zero-padding
/// (centred the same way) where the image is smaller.
pub fn center_crop(image: &RgbImage, ch: u32, cw: u32) -> RgbImage {
    let (h, w) = (image.height() as i64, image.width() as i64);
    // Source offset of output pixel (0, 0): positive = crop, negative = pad.
    let off = |inp: i64, out: i64| if inp >= out { (inp - out) / 2 } else { -((out - inp) / 2) };
    let (top, left) = (off(h, ch as i64), off(w, cw as i64));
    RgbImage::from_fn(cw, ch, |x, y| {
        let (sx, sy) = (x as i64 + left, y as i64 + top);
        if (0..w).contains(&sx) && (0..h).contains(&sy) {
            *image.get_pixel(sx as u32, sy as u32)
        } else {
            image::Rgb([0, 0, 0])
        }
    })
}

/// Pillow's fixed-point precision for 8-bit resampling.
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Pillow's bicubic kernel (a = −0.5, support 2).
fn bicubic_filter(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// For each output index: the first input index and the fixed-point weights (Pillow's
/// `precompute_coeffs` + `normalize_coeffs_8bpc`).
fn coefficients(in_size: u32, out_size: u32) -> Vec<(usize, Vec<i32>)> {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = 2.0 * filterscale;
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            let xmin = ((center - support + 0.5) as i64).max(0);
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) - xmin;
            let mut k: Vec<f64> = (0..xmax.max(0))
                .map(|x| bicubic_filter((x as f64 + xmin as f64 - center + 0.5) / filterscale))
                .collect();
            let ww: f64 = k.iter().sum();
            if ww != 0.0 {
                k.iter_mut().for_each(|w| *w /= ww);
            }
            let one = (1u32 << PRECISION_BITS) as f64;
            let fixed =
                k.iter().map(|&w| if w < 0.0 { (-0.5 + w * one) as i32 } else { (0.5 + w * one) as i32 }).collect();
            (xmin as usize, fixed)
        })
        .collect()
}

fn clip8(v: i64) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Pillow's `Image.resize((w, h), Image.BICUBIC)` on 8-bit RGB, bit for bit: a horizontal pass
/// to uint8, then a vertical pass, each skipped when that side keeps its size. Downscaling
/// widens the kernel by the scale factor (antialiasing).
pub fn pil_bicubic_resize(image: &RgbImage, out_w: u32, out_h: u32) -> RgbImage {
    let (in_w, in_h) = (image.width(), image.height());
    let mut current = image.clone();
    if out_w != in_w {
        current = resample_pass(&current, out_w, in_h, &coefficients(in_w, out_w), true);
    }
    if out_h != in_h {
        current = resample_pass(&current, out_w, out_h, &coefficients(in_h, out_h), false);
    }
    current
}

/// One separable pass of Pillow's 8-bit resampling over `src` into a `w × h` image: along x
/// (`horizontal`) or along y, with the fixed-point taps of each output index.
fn resample_pass(src: &RgbImage, w: u32, h: u32, coeffs: &[(usize, Vec<i32>)], horizontal: bool) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        let (first, k) = &coeffs[if horizontal { x } else { y } as usize];
        let mut px = [0u8; 3];
        for (c, out) in px.iter_mut().enumerate() {
            let mut ss: i64 = 1 << (PRECISION_BITS - 1);
            for (i, &weight) in k.iter().enumerate() {
                let j = (first + i) as u32;
                let (sx, sy) = if horizontal { (j, y) } else { (x, j) };
                ss += src.get_pixel(sx, sy).0[c] as i64 * weight as i64;
            }
            *out = clip8(ss);
        }
        image::Rgb(px)
    })
}
