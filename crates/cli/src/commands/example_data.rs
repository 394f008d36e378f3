//! `visualrwkv example-data`: a small LLaVA-format dataset (JPEG and PNG photos of coloured
//! shapes, multi-turn and text-only samples) and tiny randomly initialised checkpoints in the
//! official layouts (RWKV-6 and RWKV-7 World-vocabulary models, a CLIP vision tower with its
//! `config.json`) and benchmark-style question files with their annotations, so the fine-tuning
//! and evaluation commands run on a fresh machine without downloads.

use std::path::{Path, PathBuf};

use burn::backend::NdArray;
use burn::tensor::backend::Backend;
use image::{Rgb, RgbImage};
use visualrwkv_rwkv::{Rwkv7Config, RwkvConfig};
use visualrwkv_vision::{TowerKind, VisionConfig};

use crate::Res;

/// Flags of `example-data`.
#[derive(clap::Args)]
pub struct Args {
    /// Output folder: llava.json, images/, rwkv.safetensors (RWKV-6), rwkv7.safetensors (RWKV-7),
    /// clip/{model.safetensors,config.json},
    /// and eval/ (benchmark-style question files with TextVQA- and POPE-format annotations).
    #[arg(long)]
    out: PathBuf,
    /// Images (each with a caption sample and a question sample).
    #[arg(long, default_value_t = 24)]
    images: usize,
    /// RWKV width of the tiny language model.
    #[arg(long, default_value_t = 64)]
    width: usize,
    /// RWKV layers.
    #[arg(long, default_value_t = 2)]
    layers: usize,
    /// Seed of the images and the initialisation.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

const COLORS: [(&str, [u8; 3]); 4] =
    [("red", [220, 30, 30]), ("green", [30, 170, 60]), ("blue", [40, 60, 220]), ("yellow", [235, 210, 40])];

/// A photo-like scene: a noisy gradient background and a filled square or disc of one colour.
fn scene(i: usize, seed: u64, w: u32, h: u32) -> (RgbImage, &'static str, &'static str) {
    let (name, rgb) = COLORS[i % COLORS.len()];
    let shape = if (i / COLORS.len()).is_multiple_of(2) { "square" } else { "circle" };
    let mut state =
        seed.wrapping_mul(6364136223846793005).wrapping_add((i as u64).wrapping_mul(1442695040888963407) | 1);
    let mut noise = move || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((state >> 33) % 24) as i32 - 12
    };
    let (cx, cy, r) = (w as i32 / 2, h as i32 / 2, (w.min(h) / 3) as i32);
    let img = RgbImage::from_fn(w, h, |x, y| {
        let (x, y) = (x as i32, y as i32);
        let inside = match shape {
            "square" => (x - cx).abs() <= r && (y - cy).abs() <= r,
            _ => (x - cx).pow(2) + (y - cy).pow(2) <= r * r,
        };
        let base = if inside { rgb.map(i32::from) } else { [120 + x % 40, 120 + y % 40, 130] };
        Rgb(base.map(|v| (v + noise()).clamp(0, 255) as u8))
    });
    (img, name, shape)
}

fn turn(from: &str, value: String) -> serde_json::Value {
    serde_json::json!({ "from": from, "value": value })
}

/// Writes the dataset and checkpoints into `out` and returns the dataset file.
pub fn write(out: &Path, images: usize, width: usize, layers: usize, seed: u64) -> Res<PathBuf> {
    let image_dir = out.join("images");
    std::fs::create_dir_all(&image_dir)?;
    let mut samples = Vec::new();
    let (mut vqa_q, mut vqa_ann, mut pope_q, mut pope_labels) =
        (String::new(), Vec::new(), String::new(), String::new());
    for i in 0..images {
        let (w, h) = (48 + (i as u32 % 3) * 16, 40 + (i as u32 % 2) * 24);
        let (img, color, shape) = scene(i, seed, w, h);
        let file = if i.is_multiple_of(2) { format!("{i:03}.jpg") } else { format!("{i:03}.png") };
        visualrwkv_vision::save_image(&img, &image_dir.join(&file))?;
        samples.push(serde_json::json!({
            "id": format!("caption-{i}"),
            "image": file,
            "conversations": [
                turn("human", "<image>\nDescribe the image briefly.".into()),
                turn("gpt", format!("A {color} {shape}.")),
            ],
        }));
        samples.push(serde_json::json!({
            "id": format!("qa-{i}"),
            "image": file,
            "conversations": [
                turn("human", "What color is the shape?\n<image>\nAnswer the question using a single word or phrase.".into()),
                turn("gpt", color[..1].to_uppercase() + &color[1..]),
                turn("human", "And which shape is it?\n\n".into()),
                turn("gpt", format!("It is a {shape}.")),
            ],
        }));
        // Benchmark-style questions on the same images: a short-answer colour question
        // (TextVQA layout: the image's id as question_id) and a POPE yes/no question.
        let stem = format!("{i:03}");
        let q = "What color is the shape?";
        let line = serde_json::json!({"question_id": stem, "image": file,
            "text": format!("{q}\nAnswer the question using a single word or phrase.")});
        vqa_q.push_str(&format!("{line}\n"));
        vqa_ann.push(serde_json::json!({"image_id": stem, "question": q.to_lowercase(), "answers": vec![color; 10]}));
        let (asked, label) = if (i / 2).is_multiple_of(2) {
            (shape, "yes")
        } else {
            (if shape == "square" { "circle" } else { "square" }, "no")
        };
        let text = format!("Is there a {asked} in the image?");
        pope_q.push_str(&format!(
            "{}\n",
            serde_json::json!({"question_id": i + 1, "image": file, "text": text, "category": "example"})
        ));
        pope_labels.push_str(&format!(
            "{}\n",
            serde_json::json!({"question_id": i + 1, "image": file, "text": text, "label": label})
        ));
    }
    let eval = out.join("eval");
    std::fs::create_dir_all(eval.join("pope"))?;
    visualrwkv_checkpoint::write_atomic(eval.join("vqa_questions.jsonl"), vqa_q.as_bytes())?;
    let ann = serde_json::json!({"dataset_name": "example", "data": vqa_ann});
    visualrwkv_checkpoint::write_atomic(eval.join("vqa_annotations.json"), serde_json::to_string(&ann)?.as_bytes())?;
    visualrwkv_checkpoint::write_atomic(eval.join("pope_questions.jsonl"), pope_q.as_bytes())?;
    visualrwkv_checkpoint::write_atomic(eval.join("pope/coco_pope_example.json"), pope_labels.as_bytes())?;
    for (q, a) in [("What is 2+2?", "4"), ("Say hello.", "Hello!")] {
        samples.push(serde_json::json!({
            "id": format!("text-{}", samples.len()),
            "conversations": [turn("human", q.into()), turn("gpt", a.into())],
        }));
    }
    let data = out.join("llava.json");
    visualrwkv_checkpoint::write_atomic(&data, serde_json::to_string_pretty(&samples)?.as_bytes())?;

    type B = NdArray<f32>;
    let device = Default::default();
    B::seed(&device, seed);
    let head_size = 16;
    let rwkv = RwkvConfig {
        n_layer: layers,
        n_embd: width,
        n_head: (width / head_size).max(1),
        head_size,
        dim_ffn: (width * 7 / 2) / 32 * 32,
        vocab_size: 65536,
        d_mix: 8,
        d_decay: 16,
    }
    .init::<B>(&device);
    rwkv.save_safetensors(out.join("rwkv.safetensors"))?;
    let rwkv7 = Rwkv7Config {
        n_layer: layers,
        n_embd: width,
        n_head: (width / head_size).max(1),
        head_size,
        dim_ffn: 4 * width,
        vocab_size: 65536,
        d_decay: 16,
        d_aaa: 16,
        d_mv: 8,
        d_gate: 16,
    }
    .init::<B>(&device);
    rwkv7.save_safetensors(out.join("rwkv7.safetensors"))?;
    let clip = VisionConfig::new(TowerKind::Clip, 32, 8, 32, 64, 1, 2);
    let tower = clip.init::<B>(&device);
    std::fs::create_dir_all(out.join("clip"))?;
    visualrwkv_checkpoint::write_safetensors(
        &tower.to_tensor_map("vision_model.")?,
        out.join("clip/model.safetensors"),
    )?;
    visualrwkv_checkpoint::write_atomic(
        out.join("clip/config.json"),
        serde_json::to_string_pretty(&clip.to_hf_json())?.as_bytes(),
    )?;
    Ok(data)
}

/// Runs `example-data`.
pub fn run(a: Args) -> Res<()> {
    if a.images == 0 {
        return Err("--images must be at least 1".into());
    }
    let data = write(&a.out, a.images, a.width, a.layers, a.seed)?;
    println!(
        "wrote {} ({} samples), {}/images, {}/rwkv.safetensors and rwkv7.safetensors (RWKV-6 and RWKV-7 {}x{}, World vocabulary), {}/clip (tiny CLIP tower) and {}/eval (questions and annotations)",
        data.display(),
        2 * a.images + 2,
        a.out.display(),
        a.out.display(),
        a.layers,
        a.width,
        a.out.display(),
        a.out.display()
    );
    Ok(())
}
