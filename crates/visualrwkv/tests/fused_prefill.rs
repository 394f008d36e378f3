//! The fused CPU decoder runs a VisualRWKV prompt exactly as the burn model does: over both
//! architectures (RWKV-6 and RWKV-7, whose first-block values follow each layer's scan order),
//! model shapes, scans (the built-in three and arbitrary per-layer permutations), prompt layouts and
//! images, its prefill gives the same last-row logits and per-layer states, every row's logits
//! equal the model's forward, and extending a cached image state and answering questions on
//! either engine agree (f32 matrices, 1e-4).

use burn::backend::NdArray;
use burn::tensor::{Distribution, Tensor};
use proptest::prelude::*;
use visualrwkv::answering::Answerer;
use visualrwkv::{Engine, GenerateOptions, ImageRows, PromptState, Sample, VisualRwkv, VlmError};
use visualrwkv_prompt::{Conversation, IMAGE_TOKEN, Role, Turn, build};
use visualrwkv_rwkv::{Decoder, HostState, RwkvError, SamplingOptions, WeightDtype};
use visualrwkv_scan::{ImageLayout, Scan, ScanError};
use visualrwkv_tokenizer::Tokenizer;

mod common;

type B = NdArray;

const TOL: f32 = 1e-4;

/// A scan reading the image span in a different pseudo-random order at every layer (and not at
/// all at some): what a user's own scan may do.
#[derive(Debug)]
struct Shuffled(u64);

impl Scan for Shuffled {
    fn name(&self) -> String {
        format!("shuffled-{}", self.0)
    }

    fn permutation(&self, layer: usize, _: usize, layout: &ImageLayout) -> Result<Option<Vec<usize>>, ScanError> {
        let mut state = self.0.wrapping_mul(6364136223846793005).wrapping_add(layer as u64 * 1442695040888963407 + 1);
        if state.is_multiple_of(3) {
            return Ok(None);
        }
        let mut perm: Vec<usize> = (0..layout.len()).collect();
        for i in (1..perm.len()).rev() {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            perm.swap(i, (state >> 33) as usize % (i + 1));
        }
        Ok(Some(perm))
    }
}

fn scan(which: usize, seed: u64) -> Box<dyn Scan> {
    match which {
        0..=2 => visualrwkv_scan::by_name(["uni", "bi", "multi"][which]).unwrap(),
        _ => Box::new(Shuffled(seed)),
    }
}

fn image(m: &VisualRwkv<B>, seed: u64) -> ImageRows<B> {
    let dev = Default::default();
    let px = visualrwkv_rwkv::seeded::<B, _>(&dev, seed, || {
        Tensor::<B, 4>::random([1, 3, 32, 32], Distribution::Normal(0.0, 1.0), &dev)
    });
    m.encode_images(px).unwrap().remove(0)
}

/// A question in layout `layout` (`first`, `last`, `sandwich`, or `none` for text only).
fn sample(m: &VisualRwkv<B>, layout: &str, question: &str, image_seed: u64) -> Sample<B> {
    let with_image = layout != "none";
    let strategy = visualrwkv_prompt::by_name(if with_image { layout } else { "first" }).unwrap();
    let conversation = if with_image {
        Conversation::question(question)
    } else {
        Conversation { turns: vec![Turn { role: Role::User, text: question.to_string() }] }
    };
    let prompt = build(&conversation, strategy.as_ref(), Tokenizer::world(), with_image, true).unwrap();
    Sample::new(&prompt, with_image.then(|| image(m, image_seed)))
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn state_diff(a: &HostState, b: &HostState) -> f32 {
    a.layers
        .iter()
        .zip(&b.layers)
        .map(|(x, y)| {
            max_diff(&x.att_shift, &y.att_shift).max(max_diff(&x.wkv, &y.wkv)).max(max_diff(&x.ffn_shift, &y.ffn_shift))
        })
        .fold(0.0, f32::max)
}

fn host(t: Tensor<B, 2>) -> Vec<f32> {
    t.into_data().into_vec::<f32>().unwrap()
}

/// The model seeded for a case (the backend's RNG is process-wide: one case at a time).
fn seeded_model(seed: u64, layers: usize, width: usize) -> VisualRwkv<B> {
    seeded_model_of(false, seed, layers, width)
}

/// [`seeded_model`] on RWKV-7 blocks when `x070`.
fn seeded_model_of(x070: bool, seed: u64, layers: usize, width: usize) -> VisualRwkv<B> {
    visualrwkv_rwkv::seeded::<B, _>(&Default::default(), seed, || common::tiny_vlm_of(x070, layers, width))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn fused_prefill_equals_the_model(
        x070 in any::<bool>(),
        seed in 0u64..1000,
        layers in 1usize..6,
        width in prop::sample::select(vec![16usize, 32]),
        which_scan in 0usize..4,
        layout in prop::sample::select(vec!["first", "last", "sandwich", "none"]),
        question in "[a-z][a-z ]{0,23}",
    ) {
        let m = seeded_model_of(x070, seed, layers, width);
        let scan = scan(which_scan, seed);
        let s = sample(&m, layout, &question, seed + 1);
        let decoder = Decoder::of_model(&m.rwkv, WeightDtype::F32).unwrap();

        let (want, want_state) = m.prefill(&s, scan.as_ref()).unwrap();
        let (got, got_state) = m.prefill_fused(&decoder, &s, scan.as_ref()).unwrap();
        let d = max_diff(&want, &got);
        prop_assert!(d <= TOL, "{} × {layout}: last-row logits differ by {d}", scan.name());
        let d = state_diff(&HostState::from_state(&want_state, 0).unwrap(), &got_state);
        prop_assert!(d <= TOL, "{} × {layout}: states differ by {d}", scan.name());

        let want = host(m.forward(std::slice::from_ref(&s), scan.as_ref()).unwrap().remove(0));
        let got = host(m.logits_fused(&decoder, &s, scan.as_ref()).unwrap());
        let d = max_diff(&want, &got);
        prop_assert!(d <= TOL, "{} × {layout}: every row's logits differ by {d}", scan.name());
    }
}

/// The image-state cache's path: prefill `[prefix | image]`, then extend by the question, on
/// either engine and from either kind of state.
#[test]
fn extending_an_image_state_agrees_across_engines() {
    let m = seeded_model(3, 4, 32);
    let decoder = Decoder::new(m.rwkv.x060().unwrap(), WeightDtype::F32).unwrap();
    for scan_name in ["uni", "bi", "multi"] {
        let scan = visualrwkv_scan::by_name(scan_name).unwrap();
        let full = sample(&m, "first", "what is in the picture?", 9);
        let at = full.tokens.iter().position(|&t| t == IMAGE_TOKEN).unwrap();
        let head = Sample { tokens: full.tokens[..=at].to_vec(), image: full.image.clone() };
        let suffix = &full.tokens[at + 1..];
        let (want, _) = m.prefill(&full, scan.as_ref()).unwrap();
        for prefill_engine in [Engine::Model, Engine::Fused(&decoder)] {
            let (_, state) = m.prefill_on(&head, scan.as_ref(), prefill_engine).unwrap();
            for extend_engine in [Engine::Model, Engine::Fused(&decoder)] {
                let (got, after) = m.extend_on(&state, suffix, extend_engine).unwrap();
                let d = max_diff(&want, &got);
                assert!(d <= TOL, "{scan_name}: extended logits differ by {d}");
                assert_eq!(matches!(after, PromptState::Host(_)), matches!(extend_engine, Engine::Fused(_)));
            }
        }
    }
}

/// Answering with the fused engine (tower, prefill, image-state cache and steps on the fused
/// CPU code) gives the model engine's answers.
#[test]
fn answers_agree_across_engines() {
    let m = seeded_model(5, 4, 32);
    let decoder = Decoder::new(m.rwkv.x060().unwrap(), WeightDtype::F32).unwrap();
    let tower = visualrwkv_vision::FusedTower::new(&m.vision);
    let scan = visualrwkv_scan::by_name("bi").unwrap();
    let options = GenerateOptions {
        sampling: SamplingOptions { temperature: 0.0, ..Default::default() },
        max_tokens: 6,
        stop_tokens: vec![],
        ..Default::default()
    };
    for layout in ["first", "sandwich", "last"] {
        let strategy = visualrwkv_prompt::by_name(layout).unwrap();
        let answers: Vec<Vec<(Vec<u32>, f64)>> = [Engine::Model, Engine::Fused(&decoder)]
            .into_iter()
            .map(|engine| {
                let mut a =
                    Answerer::new(&m, scan.as_ref(), strategy.as_ref(), Tokenizer::world(), options.clone(), engine, 4);
                if matches!(engine, Engine::Fused(_)) {
                    a = a.with_fused_tower(&tower);
                }
                ["<image>\nwhat colour?", "<image>\nhow many?", "<image>\nwhat colour?"]
                    .iter()
                    .map(|q| {
                        let mut load = || Ok(visualrwkv::answering::Picture::Image(common::picture(4)));
                        let got = a.answer(q, Some(("p", &mut load))).unwrap();
                        (got.tokens, got.avg_logit)
                    })
                    .collect()
            })
            .collect();
        for ((want, want_logit), (got, got_logit)) in answers[0].iter().zip(&answers[1]) {
            assert_eq!(want, got, "{layout}: answers differ");
            assert!((want_logit - got_logit).abs() <= 1e-4, "{layout}: avg logits {want_logit} vs {got_logit}");
        }
    }
}

/// The image rows through the fused tower equal the model's tower's, for every grid pooling the
/// model may use; a fused tower of another model is refused.
#[test]
fn fused_tower_encodes_images_like_the_model() {
    use visualrwkv_vision::{FusedTower, GridPooling};
    let mut m = seeded_model(6, 2, 32);
    let tower = FusedTower::new(&m.vision);
    for pooling in [GridPooling::All, GridPooling::ClsOnly, GridPooling::Mean, GridPooling::Grid(2)] {
        m.options.pooling = pooling;
        let dev = Default::default();
        let px = visualrwkv_rwkv::seeded::<B, _>(&dev, 8, || {
            Tensor::<B, 4>::random([2, 3, 32, 32], Distribution::Normal(0.0, 1.0), &dev)
        });
        let want = m.encode_images(px.clone()).unwrap();
        let got = m.encode_images_fused(&tower, px).unwrap();
        assert_eq!(want.len(), got.len());
        for (w, g) in want.into_iter().zip(got) {
            assert_eq!(w.layout, g.layout);
            let d = max_diff(&host(w.rows), &host(g.rows));
            assert!(d <= TOL, "{pooling:?}: image rows differ by {d}");
        }
    }
    let other = visualrwkv_vision::VisionConfig::new(visualrwkv_vision::TowerKind::Clip, 32, 8, 24, 48, 2, 2);
    let other = FusedTower::new(&other.init::<B>(&Default::default()));
    let px = Tensor::<B, 4>::zeros([1, 3, 32, 32], &Default::default());
    assert!(matches!(m.encode_images_fused(&other, px), Err(VlmError::FusedMismatch { part: "tower", .. })));
}

/// A decoder built from another model, or a token id outside the vocabulary, is an error.
#[test]
fn fused_prefill_refuses_what_does_not_fit() {
    let m = seeded_model(1, 2, 16);
    let other = seeded_model(2, 3, 16);
    let decoder = Decoder::new(other.rwkv.x060().unwrap(), WeightDtype::F32).unwrap();
    let scan = visualrwkv_scan::by_name("bi").unwrap();
    let s = sample(&m, "sandwich", "why?", 4);
    assert!(matches!(
        m.prefill_fused(&decoder, &s, scan.as_ref()),
        Err(VlmError::FusedMismatch { part: "decoder", .. })
    ));
    let decoder = Decoder::new(m.rwkv.x060().unwrap(), WeightDtype::F32).unwrap();
    let bad = Sample { tokens: vec![1, -5, 2], image: None };
    assert!(matches!(
        m.prefill_fused(&decoder, &bad, scan.as_ref()),
        Err(VlmError::Rwkv(RwkvError::TokenOutOfVocabulary { id: -5, .. }))
    ));
    let bad = Sample { tokens: vec![1, 70_000], image: None };
    assert!(matches!(
        m.prefill_fused(&decoder, &bad, scan.as_ref()),
        Err(VlmError::Rwkv(RwkvError::TokenOutOfVocabulary { id: 70_000, .. }))
    ));
}
