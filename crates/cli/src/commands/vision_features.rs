//! `visualrwkv vision-features`: a CLIP or SigLIP tower on an image, every hidden state written.

use std::collections::HashMap;
use std::path::PathBuf;

use burn::tensor::Tensor;
use visualrwkv_rwkv::RwkvBackend;
use visualrwkv_rwkv::TensorMap;
use visualrwkv_rwkv::checkpoint::write_safetensors;
use visualrwkv_vision::{GridPooling, ImageProcessor, TowerKind, grid_pool};

use crate::Res;
use crate::args::read_pixels;
use crate::device::{DeviceArgs, DeviceSpec, Job};

/// Flags of `vision-features`.
#[derive(clap::Args)]
pub struct Args {
    /// Tower weights: HF safetensors (with or without `vision_model.`) or a VisualRWKV
    /// checkpoint (`vit.vision_model.`).
    #[arg(long)]
    weights: PathBuf,
    /// Hugging Face `config.json` (default: the one next to the weights, else inferred).
    #[arg(long)]
    config: Option<PathBuf>,
    /// An image file (PNG, JPEG, WebP, BMP), preprocessed as the tower's HF processor does.
    #[arg(long, required_unless_present = "pixels", conflicts_with = "pixels")]
    image: Option<PathBuf>,
    /// A safetensors file with `pixel_values` [B, 3, H, W], already normalised.
    #[arg(long)]
    pixels: Option<PathBuf>,
    /// Hidden layer to pool, Python-style (-1 = last, VisualRWKV; -2 = penultimate, LLaVA).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    layer: i64,
    /// VisualRWKV grid size: -1 all patches then CLS, 0 CLS only, 1 mean + CLS, g >= 2 g x g.
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    grid: i64,
    /// Output safetensors file.
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    device: DeviceArgs,
}

impl Job for Args {
    type Output = ();

    fn device_args(&self) -> &DeviceArgs {
        &self.device
    }

    fn run<B: RwkvBackend>(self, dev: B::Device, _: &DeviceSpec) -> Res<()> {
        let pooling = GridPooling::from_grid_size(self.grid)?;
        let tower = visualrwkv_vision::load::<B>(&self.weights, self.config.as_deref(), &dev)?;
        let pixel_values: Tensor<B, 4> = match (&self.image, &self.pixels) {
            (Some(image), _) => {
                let processor = ImageProcessor::for_tower(&tower.config);
                processor.batch(&[processor.open(image)?], &dev)?
            }
            (None, Some(path)) => read_pixels(path, &dev)?,
            (None, None) => return Err("give --image or --pixels".into()),
        };
        let n = tower.layers.len() as i64;
        let index = if self.layer < 0 { n + 1 + self.layer } else { self.layer };
        if !(0..=n).contains(&index) {
            return Err(format!("--layer {} out of range for a tower with {n} layers", self.layer).into());
        }
        let output = tower.forward(pixel_values)?;
        let mut map = TensorMap { origin: self.out.display().to_string(), tensors: HashMap::new() };
        let selected = output.hidden_states[index as usize].clone();
        for (i, h) in output.hidden_states.into_iter().enumerate() {
            map.insert(format!("hidden_states.{i}"), h);
        }
        if let Some(last) = output.last_hidden_state {
            map.insert("last_hidden_state", last);
        }
        if let Some(pooler) = output.pooler_output {
            map.insert("pooler_output", pooler);
        }
        let has_cls = tower.config.kind == TowerKind::Clip;
        let pooled = grid_pool(selected, output.grid, has_cls, pooling)?;
        let grid_info = [pooled.grid_h, pooled.grid_w, pooled.extra].map(|v| v as f32);
        map.tensors.insert("pooled_grid".into(), (vec![3], grid_info.to_vec()));
        eprintln!(
            "pooled: {} rows ({}x{} grid + {} extra) of width {}",
            pooled.len(),
            pooled.grid_h,
            pooled.grid_w,
            pooled.extra,
            tower.config.hidden_size
        );
        map.insert("pooled", pooled.features);
        write_safetensors(&map, &self.out)?;
        Ok(())
    }
}
