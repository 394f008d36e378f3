//! # visualrwkv-vision: the vision side of VisualRWKV
//!
//! Turns an image into the sequence of vectors VisualRWKV splices into RWKV-6's input (docs/model.md
//! §2): preprocessing → a frozen ViT tower → grid pooling. Generic over `B: Backend`.
//!
//! - [`preprocess`]: decoding (PNG, JPEG, WebP, BMP; any colour type), Pillow-exact bicubic
//!   resize, centre crop, rescale, normalise ([`ImageProcessor`] presets for CLIP, SigLIP and
//!   ImageNet), with a decompression-bomb guard.
//! - [`VisionTower`]: CLIP and SigLIP encoders (Hugging Face conventions), every hidden state,
//!   any layer selectable, bicubic position-embedding interpolation for other image sizes.
//! - [`VisionConfig`]: from a Hugging Face `config.json` or inferred from tensor shapes.
//! - [`checkpoint`]: loading from HF safetensors with or without the `vision_model.` prefix, or
//!   from a VisualRWKV checkpoint (`vit.vision_model.`), with strict key checks.
//! - [`FusedTower`]: the same tower's features on the CPU with GEMMs over host buffers (AVX-512
//!   where the CPU has it), the tower as its oracle.
//! - [`pooling`]: VisualRWKV's grid pooling (−1, 0, 1, g ≥ 2) and a patches-only mode; the
//!   result carries its grid height and width for the scans.
//!
//! # Shapes
//!
//! Pixels `[B, 3, H, W]` → tower tokens `[B, T, D]` (CLIP: class token first, then the
//! `H/P × W/P` patches row-major; SigLIP: patches only) → pooled `[B, T', D]` (grid rows, then
//! the class token).

pub mod checkpoint;
mod config;
mod error;
pub mod fused;
pub mod pooling;
pub mod preprocess;
pub mod tower;

pub use checkpoint::load;
pub use config::{Activation, TowerKind, VisionConfig};
pub use error::VisionError;
pub use fused::FusedTower;
pub use pooling::{GridPooling, PooledFeatures, grid_pool};
pub use preprocess::{AlphaMode, ImageProcessor, Resize, decode_jpeg, save_image};
pub use tower::{VisionOutput, VisionTower};
