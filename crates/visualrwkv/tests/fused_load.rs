//! Loading for the fused CPU engines (`VisualRwkv::load_checkpoint_fused`, `load_parts_fused`):
//! the checkpoint's tensors go into the decoder and the tower, the model's RWKV and tower stay
//! unread through a whole answer (one copy of the weights in the process), and the answers, the
//! logits and — when something does read them — the lazily loaded burn parts equal an eagerly
//! loaded model's.

use burn::backend::NdArray;
use visualrwkv::answering::{Answerer, Picture};
use visualrwkv::{Engine, FusedVisualRwkv, GenerateOptions, Sample, VisionOptions, VisualRwkv};
use visualrwkv_checkpoint::table::any_initialized;
use visualrwkv_prompt::{Conversation, build};
use visualrwkv_rwkv::{Decoder, SamplingOptions, WeightDtype};
use visualrwkv_tokenizer::Tokenizer;
use visualrwkv_vision::FusedTower;

mod common;

type B = NdArray;

/// A tiny VisualRWKV drawn from `seed` (one test at a time: the backend's seed is global).
fn seeded(seed: u64, layers: usize) -> VisualRwkv<B> {
    visualrwkv_rwkv::seeded::<B, _>(&Default::default(), seed, || common::tiny_vlm(layers, 32))
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("visualrwkv-fused-load-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Greedy answers (tokens, mean logit) to three questions on one picture.
fn answers(model: &VisualRwkv<B>, engine: Engine<'_>, tower: Option<&FusedTower>) -> Vec<(Vec<u32>, f64)> {
    let scan = visualrwkv_scan::by_name("bi").unwrap();
    let strategy = visualrwkv_prompt::by_name("sandwich").unwrap();
    let options = GenerateOptions {
        sampling: SamplingOptions { temperature: 0.0, ..Default::default() },
        max_tokens: 5,
        stop_tokens: vec![],
        ..Default::default()
    };
    let mut a = Answerer::new(model, scan.as_ref(), strategy.as_ref(), Tokenizer::world(), options, engine, 4);
    if let Some(tower) = tower {
        a = a.with_fused_tower(tower);
    }
    ["<image>\nwhat colour?", "<image>\nhow many?"]
        .iter()
        .map(|q| {
            let mut load = || Ok(Picture::Image(common::picture(3)));
            let got = a.answer(q, Some(("p", &mut load))).unwrap();
            (got.tokens, got.avg_logit)
        })
        .collect()
}

fn assert_same_answers(want: &[(Vec<u32>, f64)], got: &[(Vec<u32>, f64)]) {
    for ((wt, wl), (gt, gl)) in want.iter().zip(got) {
        assert_eq!(wt, gt);
        assert!((wl - gl).abs() <= 1e-4, "mean logits {wl} vs {gl}");
    }
}

#[test]
fn a_fused_load_answers_like_the_model_without_reading_its_weights() {
    let original = seeded(11, 3);
    let dir = temp_dir("checkpoint");
    let path = dir.join("model.safetensors");
    original.save_checkpoint(&path).unwrap();
    let dev = Default::default();
    let eager = VisualRwkv::<B>::load_checkpoint(&path, None, VisionOptions::default(), &dev).unwrap();
    let want = answers(&eager, Engine::Model, None);

    let FusedVisualRwkv { model, decoder, tower } =
        VisualRwkv::<B>::load_checkpoint_fused(&path, None, VisionOptions::default(), WeightDtype::F32, &dev).unwrap();
    assert_eq!(decoder.config(), &eager.rwkv.config());
    assert_eq!(tower.config(), &eager.vision.config);
    let got = answers(&model, Engine::Fused(&decoder), Some(&tower));
    assert_same_answers(&want, &got);
    assert!(!any_initialized(&model.rwkv), "the fused answer read the lazily loaded RWKV");
    assert!(!any_initialized(&model.vision), "the fused answer read the lazily loaded tower");

    // Reading the lazy parts (the model's own engine) gives the eager model's answers.
    let by_model = answers(&model, Engine::Model, None);
    assert_same_answers(&want, &by_model);
    assert!(any_initialized(&model.rwkv) && any_initialized(&model.vision));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn fused_loads_of_parts_and_of_int8_agree_with_the_model() {
    let original = seeded(12, 2);
    let dir = temp_dir("parts");
    let map = original.to_tensor_map().unwrap();
    let part = |prefix: &str, file: &str| {
        let mut m = map.clone();
        let p = dir.join(file);
        visualrwkv_checkpoint::write_safetensors(&m.take_prefix(prefix), &p).unwrap();
        p
    };
    // The tower under Hugging Face's `vision_model.` prefix, the others bare.
    let (rwkv, proj) = (part("rwkv.", "rwkv.safetensors"), part("proj.", "proj.safetensors"));
    let mut vit = map.clone().take_prefix("vit.");
    vit.origin = "tower".into();
    let vision = dir.join("tower.safetensors");
    visualrwkv_checkpoint::write_safetensors(&vit, &vision).unwrap();
    // Heads cannot be read off the shapes: the tower's `config.json` beside it says them.
    let hf = serde_json::to_string(&original.vision.config.to_hf_json()).unwrap();
    std::fs::write(dir.join("config.json"), hf).unwrap();
    let dev = Default::default();
    let options = VisionOptions::default();
    let fused = VisualRwkv::<B>::load_parts_fused(&rwkv, &vision, None, &proj, options, WeightDtype::I8, &dev).unwrap();
    assert_eq!(fused.tower.config(), &original.vision.config);
    let want_decoder = Decoder::new(original.rwkv.x060().unwrap(), WeightDtype::I8).unwrap();
    let prompt = build(
        &Conversation::question("what is it?"),
        visualrwkv_prompt::by_name("sandwich").unwrap().as_ref(),
        Tokenizer::world(),
        true,
        true,
    )
    .unwrap();
    let px = visualrwkv_vision::ImageProcessor::for_tower(&original.vision.config);
    let pixels = px.batch::<B>(&[common::picture(5)], &dev).unwrap();
    let scan = visualrwkv_scan::by_name("multi").unwrap();
    let logits = |m: &VisualRwkv<B>, d: &Decoder, t: &FusedTower| {
        let image = m.encode_images_fused(t, pixels.clone()).unwrap().remove(0);
        m.prefill_fused(d, &Sample::new(&prompt, Some(image)), scan.as_ref()).unwrap().0
    };
    let want = logits(&original, &want_decoder, &FusedTower::new(&original.vision));
    let got = logits(&fused.model, &fused.decoder, &fused.tower);
    let d = want.iter().zip(&got).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(d <= 1e-4, "int8 logits of the fused parts load differ by {d}");
    assert!(!any_initialized(&fused.model.rwkv) && !any_initialized(&fused.model.vision));
    std::fs::remove_dir_all(dir).unwrap();
}

/// `visualrwkv_rwkv::load_fused` (what `generate` loads on the CPU): text generation on the
/// decoder reads none of the model's parameters and gives the eagerly loaded model's tokens.
#[test]
fn a_fused_language_model_load_generates_like_the_model() {
    let original = seeded(13, 2).rwkv;
    let dir = temp_dir("lm");
    let path = dir.join("rwkv.safetensors");
    original.save_safetensors(&path).unwrap();
    let dev = Default::default();
    let options = GenerateOptions {
        sampling: SamplingOptions { temperature: 0.0, ..Default::default() },
        max_tokens: 6,
        stop_tokens: vec![],
        ..Default::default()
    };
    let eager = visualrwkv_rwkv::load::<B>(&path, &dev).unwrap();
    let want = visualrwkv::generate(&eager, Tokenizer::world(), "The cat", &options, Engine::Model, |_| {}).unwrap();
    let (lazy, decoder) = visualrwkv_rwkv::load_fused::<B>(&path, WeightDtype::F32, &dev).unwrap();
    let got =
        visualrwkv::generate(&lazy, Tokenizer::world(), "The cat", &options, Engine::Fused(&decoder), |_| {}).unwrap();
    assert_eq!(want.tokens, got.tokens);
    assert!(!any_initialized(&lazy), "generation on the decoder read the lazily loaded model");
    std::fs::remove_dir_all(dir).unwrap();
}
