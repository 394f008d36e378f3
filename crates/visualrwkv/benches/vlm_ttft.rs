//! Time to the first answer token of VisualRWKV on the CPU: one question about a 336×336 JPEG,
//! from the checkpoint on disk to the first generated token, then 32 decoded tokens — what a
//! user of `visualrwkv chat` waits for.
//!
//! `cargo bench -p visualrwkv --bench vlm_ttft`. For each shape, a random VisualRWKV (RWKV-6 of
//! the `0.4b` shape C=1024, L=24 or `1.6b` C=2048, L=24, V=65536; CLIP-L/336; a linear projector)
//! is saved as one official-layout safetensors checkpoint (f32), then timed:
//!
//! * **load**: `VisualRwkv::load_checkpoint_fused` (what `visualrwkv chat` loads on the CPU:
//!   the file read once from the page cache, its tensors moved into the fused decoder with f32
//!   matrices and the fused tower, the burn RWKV and tower left to read the file lazily);
//! * **first token**: JPEG decode + CLIP preprocessing, the fused tower and the projector, the
//!   sandwich prompt's prefill (the 577 image rows and the question, bi scan) on the fused
//!   decoder, and the greedy choice of the first token — once right after loading (cold) and
//!   once more (warm) — what `visualrwkv chat` runs on the CPU;
//! * **decode**: 32 greedy steps of the fused decoder.
//!
//! "Whole process to the first token" = load + the cold first token (process start-up excluded).
//! Environment: `VLM_TTFT_SHAPES` (default `0.4b,1.6b`), `VLM_TTFT_DIR` (where the checkpoints
//! and the JPEG go; default a directory under the system temp dir, kept for reuse: a checkpoint
//! already there with the right size is not rewritten), `VLM_TTFT_BURN=1` also times the tower
//! and the prefill on the burn model, `VLM_TTFT_DECODER=f32|bf16|f16|i8|q4` (default f32) picks the
//! fused decoder's matrix type (`--decoder` of `visualrwkv chat`), `VLM_TTFT_JSON=FILE` writes the results as JSON lines (for
//! `scripts/bench-vlm-official.py --ours FILE`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::backend::NdArray;
use image::{Rgb, RgbImage};
use visualrwkv::{FusedVisualRwkv, Sample, VisionOptions, VisualRwkv};
use visualrwkv_projector::{ProjectorConfig, ProjectorKind};
use visualrwkv_prompt::Conversation;
use visualrwkv_rwkv::{Decoder, HostState, RwkvConfig, WeightDtype};
use visualrwkv_scan::BiDirectional;
use visualrwkv_tokenizer::Tokenizer;
use visualrwkv_vision::{FusedTower, ImageProcessor, VisionConfig};

type B = NdArray;

const QUESTION: &str = "What is unusual about this image?";
const DECODE_STEPS: usize = 32;

fn rwkv_shape(name: &str) -> RwkvConfig {
    match name {
        "0.1b" => RwkvConfig::official(12, 768, 65536),
        "0.4b" => RwkvConfig::official(24, 1024, 65536),
        "1.6b" => RwkvConfig::official(24, 2048, 65536),
        other => panic!("VLM_TTFT_SHAPES: unknown shape {other} (0.1b, 0.4b, 1.6b)"),
    }
}

/// Writes a random VisualRWKV of `shape` to `path` unless a file of the expected size is there.
fn checkpoint(shape: &str, path: &Path) {
    let dev = Default::default();
    let cfg = rwkv_shape(shape);
    let vision = VisionConfig::clip_vit_large_336();
    let params = cfg.n_layer * (cfg.n_embd * cfg.n_embd * 5 + 2 * cfg.n_embd * cfg.dim_ffn + cfg.n_embd * cfg.n_embd)
        + 2 * cfg.vocab_size * cfg.n_embd;
    if std::fs::metadata(path).is_ok_and(|m| m.len() as usize > 4 * params) {
        return;
    }
    eprintln!("writing a random {shape} VisualRWKV to {}", path.display());
    <B as burn::tensor::backend::Backend>::seed(&dev, 42);
    let model = VisualRwkv::new(
        cfg.init::<B>(&dev),
        vision.init::<B>(&dev),
        ProjectorConfig::new(ProjectorKind::Linear, vision.hidden_size, cfg.n_embd).init::<B>(&dev),
        VisionOptions::default(),
    )
    .unwrap();
    model.save_checkpoint(path).unwrap();
}

/// A 336×336 picture with some structure, saved as a JPEG (quality 90).
fn jpeg(path: &Path) {
    let img = RgbImage::from_fn(336, 336, |x, y| {
        Rgb([(x * 3 % 256) as u8, (y * 5 % 256) as u8, (((x / 16) ^ (y / 16)) * 40 % 256) as u8])
    });
    let mut bytes = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 90).encode_image(&img).unwrap();
    visualrwkv_checkpoint::write_atomic(path, &bytes).unwrap();
}

/// Seconds since `t`.
fn secs(t: Instant) -> f64 {
    t.elapsed().as_secs_f64()
}

/// One question from the JPEG on disk to the first token: the times of preprocessing, tower and
/// prefill, the sequence's rows, the first token and the state to decode from.
fn first_token(
    model: &VisualRwkv<B>,
    (decoder, tower): (&Decoder, &FusedTower),
    jpeg: &Path,
) -> ([f64; 3], usize, u32, HostState) {
    let dev = Default::default();
    let t = Instant::now();
    let processor = ImageProcessor::for_tower(&model.vision.config);
    let picture = processor.open(jpeg).unwrap();
    let pixels = processor.batch(&[picture], &dev).unwrap();
    let preprocess = secs(t);
    let t = Instant::now();
    let rows = model.encode_images_fused(tower, pixels).unwrap().remove(0);
    let tower = secs(t);
    let t = Instant::now();
    let strategy = visualrwkv_prompt::by_name("sandwich").unwrap();
    let prompt =
        visualrwkv_prompt::build(&Conversation::question(QUESTION), strategy.as_ref(), Tokenizer::world(), true, true)
            .unwrap();
    let sample = Sample::new(&prompt, Some(rows));
    let (logits, state) = model.prefill_fused(decoder, &sample, &BiDirectional).unwrap();
    let prefill = secs(t);
    ([preprocess, tower, prefill], sample.len(), argmax(&logits), state)
}

fn argmax(v: &[f32]) -> u32 {
    v.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i as u32)
}

fn main() {
    let shapes = std::env::var("VLM_TTFT_SHAPES").unwrap_or_else(|_| "0.4b,1.6b".into());
    let dir = std::env::var("VLM_TTFT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir().join("visualrwkv-vlm-ttft"));
    std::fs::create_dir_all(&dir).unwrap();
    let picture = dir.join("question.jpg");
    jpeg(&picture);
    let burn_too = std::env::var("VLM_TTFT_BURN").is_ok_and(|v| v == "1");
    let decoder_name = std::env::var("VLM_TTFT_DECODER").unwrap_or_else(|_| "f32".into());
    let dtype = WeightDtype::parse(&decoder_name).expect("VLM_TTFT_DECODER: f32, bf16, f16, i8 or q4");
    let mut json = Vec::new();
    println!(
        "VisualRWKV time to first token on the CPU ({} threads), random weights, f32 tower, {decoder_name} decoder matrices, CLIP-L/336, sandwich prompt, bi scan\n",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "| shape | checkpoint | load | rows | preprocess | tower | prefill | first token (cold) | first token (warm) | whole process to first token | decode |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for shape in shapes.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let path = dir.join(format!("visualrwkv-{shape}.safetensors"));
        checkpoint(shape, &path);
        // Read the file once so that both sides of a comparison load from the page cache.
        let bytes = std::fs::read(&path).unwrap().len();
        let t = Instant::now();
        let FusedVisualRwkv { model, decoder, tower } =
            VisualRwkv::<B>::load_checkpoint_fused(&path, None, VisionOptions::default(), dtype, &Default::default())
                .unwrap();
        let load = secs(t);
        let (cold, _, _, _) = first_token(&model, (&decoder, &tower), &picture);
        let (warm, rows, token, mut state) = first_token(&model, (&decoder, &tower), &picture);
        let (cold_total, warm_total): (f64, f64) = (cold.iter().sum(), warm.iter().sum());
        let mut next = token;
        let t = Instant::now();
        for _ in 0..DECODE_STEPS {
            next = argmax(&decoder.step(next, &mut state).unwrap());
        }
        let decode = DECODE_STEPS as f64 / secs(t);
        println!(
            "| {shape} | {:.2} GB | {load:.2} s ({:.2} GB/s) | {rows} | {:.3} s | {:.2} s | {:.2} s | {cold_total:.2} s | {warm_total:.2} s | {:.2} s | {decode:.1} tok/s |",
            bytes as f64 / 1e9,
            bytes as f64 / 1e9 / load,
            warm[0],
            warm[1],
            warm[2],
            load + cold_total,
        );
        let mut line = format!(
            "{{\"shape\":\"{shape}\",\"checkpoint_bytes\":{bytes},\"load_s\":{load},\"rows\":{rows},\"preprocess_s\":{},\"tower_s\":{},\"prefill_s\":{},\"first_token_cold_s\":{cold_total},\"first_token_warm_s\":{warm_total},\"process_to_first_token_s\":{},\"decode_tok_s\":{decode},\"first_token\":{token},\"decoder\":\"{decoder_name}\"",
            warm[0],
            warm[1],
            warm[2],
            load + cold_total
        );
        if burn_too {
            // Read the lazily loaded parameters first: the burn timings are of the computation.
            visualrwkv_rwkv::materialize(&model);
            let processor = ImageProcessor::for_tower(&model.vision.config);
            let pixels = processor.batch(&[processor.open(&picture).unwrap()], &Default::default()).unwrap();
            let strategy = visualrwkv_prompt::by_name("sandwich").unwrap();
            let prompt = visualrwkv_prompt::build(
                &Conversation::question(QUESTION),
                strategy.as_ref(),
                Tokenizer::world(),
                true,
                true,
            )
            .unwrap();
            let t = Instant::now();
            let sample = Sample::new(&prompt, Some(model.encode_images(pixels).unwrap().remove(0)));
            let burn_tower = secs(t);
            let t = Instant::now();
            let _ = model.prefill(&sample, &BiDirectional).unwrap();
            let burn = secs(t);
            eprintln!(
                "  {shape}: on the burn model: tower {burn_tower:.2} s (fused {:.2} s), prefill {burn:.2} s (fused {:.2} s)",
                warm[1], warm[2]
            );
            line.push_str(&format!(",\"burn_tower_s\":{burn_tower},\"burn_prefill_s\":{burn}"));
        }
        line.push('}');
        json.push(line);
    }
    if let Ok(out) = std::env::var("VLM_TTFT_JSON") {
        visualrwkv_checkpoint::write_atomic(out, (json.join("\n") + "\n").as_bytes()).unwrap();
    }
}
