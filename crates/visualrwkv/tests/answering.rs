//! Answering benchmark questions: the answer equals plain cached generation on the same prompt,
//! the image and image-state caches change nothing but the work done, and the averages are the
//! chosen tokens' logits and probabilities.

use burn::backend::NdArray;
use image::DynamicImage;
use visualrwkv::Engine;
use visualrwkv::answering::{Answerer, Picture};
use visualrwkv::{GenerateOptions, Sample, VisualRwkv, VlmError};
use visualrwkv_prompt::{Conversation, build};
use visualrwkv_scan::{BiDirectional, Scan};
use visualrwkv_tokenizer::Tokenizer;
use visualrwkv_vision::ImageProcessor;

type B = NdArray;

mod common;
use common::picture;

fn model() -> VisualRwkv<B> {
    visualrwkv_rwkv::seeded::<B, _>(&Default::default(), 3, || common::tiny_vlm(2, 16))
}

fn options() -> GenerateOptions {
    GenerateOptions { max_tokens: 6, ..Default::default() }
}

/// The same question through `VisualRwkv::generate` on a freshly built sample.
fn reference(m: &VisualRwkv<B>, strategy: &str, text: &str, img: Option<DynamicImage>) -> Vec<u32> {
    let conv = Conversation {
        turns: vec![visualrwkv_prompt::Turn { role: visualrwkv_prompt::Role::User, text: text.into() }],
    };
    let with_image = img.is_some();
    let prompt =
        build(&conv, visualrwkv_prompt::by_name(strategy).unwrap().as_ref(), Tokenizer::world(), with_image, true)
            .unwrap();
    let rows = img.map(|i| {
        let p = ImageProcessor::for_tower(&m.vision.config);
        m.encode_images(p.batch(&[i], &Default::default()).unwrap()).unwrap().remove(0)
    });
    let scan: &dyn Scan = &BiDirectional;
    m.generate(&Sample::new(&prompt, rows), scan, Tokenizer::world(), &options(), Engine::Model, |_| {}).unwrap().tokens
}

fn loader(seed: u8) -> impl FnMut() -> Result<Picture, VlmError> {
    move || Ok(Picture::Image(picture(seed)))
}

#[test]
fn answers_equal_plain_generation_and_the_caches_change_nothing() {
    let m = model();
    let scan = BiDirectional;
    for strategy in ["first", "sandwich", "last"] {
        let layout = visualrwkv_prompt::by_name(strategy).unwrap();
        let mut cached = Answerer::new(&m, &scan, layout.as_ref(), Tokenizer::world(), options(), Engine::Model, 4);
        let questions = ["<image>\nWhat colour is it?", "<image>\nHow many shapes?", "<image>\nWhat colour is it?"];
        for (k, q) in questions.iter().enumerate() {
            let mut load = loader(5);
            let got = cached.answer(q, Some(("a.png", &mut load))).unwrap();
            let want = reference(&m, strategy, q, Some(picture(5)));
            assert_eq!(got.tokens, want, "{strategy} question {k}");
            // A fresh answerer (no cache) gives the same answer and averages.
            let mut fresh = Answerer::new(&m, &scan, layout.as_ref(), Tokenizer::world(), options(), Engine::Model, 0);
            let mut load = loader(5);
            let alone = fresh.answer(q, Some(("a.png", &mut load))).unwrap();
            assert_eq!(alone.tokens, got.tokens);
            assert!((alone.avg_logit - got.avg_logit).abs() < 1e-4, "{} vs {}", alone.avg_logit, got.avg_logit);
            assert!((alone.avg_prob - got.avg_prob).abs() < 1e-6);
            assert!(!alone.image_cached && !alone.state_cached);
            assert_eq!(got.image_cached, k > 0, "{strategy} {k}");
            // `first` shares "User: " + image between questions; the others put text before it.
            let shares_prefix = strategy == "first" || k == 2;
            assert_eq!(got.state_cached, k > 0 && shares_prefix, "{strategy} {k}");
        }
        assert_eq!(cached.stats.images_encoded, 1);
    }
}

#[test]
fn another_image_is_encoded_again_and_text_only_questions_need_none() {
    let m = model();
    let scan = BiDirectional;
    let layout = visualrwkv_prompt::by_name("sandwich").unwrap();
    let mut a = Answerer::new(&m, &scan, layout.as_ref(), Tokenizer::world(), options(), Engine::Model, 4);
    let mut l1 = loader(5);
    let mut l2 = loader(9);
    let first = a.answer("<image>\nWhat is it?", Some(("a.png", &mut l1))).unwrap();
    let second = a.answer("<image>\nWhat is it?", Some(("b.png", &mut l2))).unwrap();
    assert!(!second.image_cached);
    assert_eq!(second.tokens, reference(&m, "sandwich", "<image>\nWhat is it?", Some(picture(9))));
    assert_eq!(a.stats.images_encoded, 2);
    let _ = first;
    let text = a.answer("What is two plus two?", None).unwrap();
    assert_eq!(text.tokens, reference(&m, "sandwich", "What is two plus two?", None));
    assert_eq!(text.prompt, "User: What is two plus two?\n\nAssistant:");
    // `<image>` with no image: all-zero pixels, as the official script feeds it.
    let zeros = a.answer("<image>\nWhat is it?", None).unwrap();
    assert!(zeros.prompt.contains("<image>"));
}

#[test]
fn the_averages_are_those_of_the_chosen_tokens() {
    let m = model();
    let scan = BiDirectional;
    let layout = visualrwkv_prompt::by_name("first").unwrap();
    let mut a = Answerer::new(&m, &scan, layout.as_ref(), Tokenizer::world(), options(), Engine::Model, 4);
    let mut l = loader(5);
    let q = "<image>\nWhat is it?";
    let got = a.answer(q, Some(("a.png", &mut l))).unwrap();
    assert_eq!(got.tokens.len(), 6, "no stop token within six steps");
    // Recompute every step from scratch (the reference's loop) and average its logit and
    // probability of the chosen token.
    let prompt =
        build(&Conversation::question("What is it?"), layout.as_ref(), Tokenizer::world(), true, true).unwrap();
    let p = ImageProcessor::for_tower(&m.vision.config);
    let rows = m.encode_images(p.batch(&[picture(5)], &Default::default()).unwrap()).unwrap().remove(0);
    let sample = Sample::new(&prompt, Some(rows));
    let (mut logit_sum, mut log_prob_sum) = (0.0f64, 0.0f64);
    for k in 0..got.tokens.len() {
        let logits = m.recompute_next_logits(&sample, &got.tokens[..k], &scan).unwrap();
        let id = got.tokens[k] as usize;
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        assert_eq!(logits[id], max, "greedy picks the argmax");
        let z: f64 = logits.iter().map(|&x| f64::from(x - max).exp()).sum();
        logit_sum += f64::from(logits[id]);
        log_prob_sum += f64::from(logits[id] - max) - z.ln();
    }
    assert!((got.avg_logit - logit_sum / 6.0).abs() < 1e-4, "{} vs {}", got.avg_logit, logit_sum / 6.0);
    assert!((got.avg_prob - (log_prob_sum / 6.0).exp()).abs() < 1e-5);
}
