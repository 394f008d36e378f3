//! The vision-language model: cached generation == full recompute for every scan × prompt
//! strategy, batches == samples alone, the uni scan == the plain RWKV forward, scans that are
//! the reference's row reversals, and the bad-input errors.

use burn::backend::NdArray;
use burn::tensor::{Distribution, Tensor};
use visualrwkv::Engine;
use visualrwkv::{GenerateOptions, ImageRows, Sample, VisionOptions, VisualRwkv, VlmError};
use visualrwkv_projector::{ProjectorConfig, ProjectorKind};
use visualrwkv_prompt::{Conversation, IMAGE_TOKEN, build};
use visualrwkv_rwkv::SamplingOptions;
use visualrwkv_scan::{BiDirectional, ImageLayout, Scan, UniDirectional};
use visualrwkv_tokenizer::Tokenizer;

type B = NdArray;

mod common;

fn model(layers: usize) -> VisualRwkv<B> {
    common::tiny_vlm(layers, 16)
}

fn image(m: &VisualRwkv<B>, seed: u64) -> ImageRows<B> {
    let dev = Default::default();
    let px = visualrwkv_rwkv::seeded::<B, _>(&dev, seed, || {
        Tensor::<B, 4>::random([1, 3, 32, 32], Distribution::Normal(0.0, 1.0), &dev)
    });
    m.encode_images(px).unwrap().remove(0)
}

fn sample(m: &VisualRwkv<B>, strategy: &str, question: &str) -> Sample<B> {
    sample_with_image(m, strategy, question, 7)
}

fn sample_with_image(m: &VisualRwkv<B>, strategy: &str, question: &str, image_seed: u64) -> Sample<B> {
    let prompt = build(
        &Conversation::question(question),
        visualrwkv_prompt::by_name(strategy).unwrap().as_ref(),
        Tokenizer::world(),
        true,
        true,
    )
    .unwrap();
    Sample::new(&prompt, Some(image(m, image_seed)))
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn host(t: Tensor<B, 2>) -> Vec<f32> {
    t.into_data().into_vec::<f32>().unwrap()
}

fn check_cached_equals_recompute(layers: usize, question: &str, image_seed: u64) {
    let m = model(layers);
    let greedy = GenerateOptions {
        sampling: SamplingOptions { temperature: 0.0, ..Default::default() },
        max_tokens: 4,
        stop_tokens: vec![],
        ..Default::default()
    };
    for scan_name in ["uni", "bi", "multi"] {
        let scan = visualrwkv_scan::by_name(scan_name).unwrap();
        for strategy in ["first", "last", "sandwich"] {
            let s = sample_with_image(&m, strategy, question, image_seed);
            // The cached path: one prefill, then single steps.
            let (mut logits, mut state) = m.prefill(&s, scan.as_ref()).unwrap();
            let generation = m.generate(&s, scan.as_ref(), Tokenizer::world(), &greedy, Engine::Model, |_| {}).unwrap();
            assert_eq!(generation.tokens.len(), 4);
            for k in 0..=generation.tokens.len() {
                let full = m.recompute_next_logits(&s, &generation.tokens[..k], scan.as_ref()).unwrap();
                let d = max_diff(&logits, &full);
                assert!(d <= 1e-4, "{scan_name} × {strategy}, step {k}: cached vs recompute differ by {d}");
                if k < generation.tokens.len() {
                    (logits, state) = m.step(generation.tokens[k], &state).unwrap();
                }
            }
        }
    }
}

#[test]
fn cached_generation_equals_full_recompute_for_every_scan_and_prompt() {
    check_cached_equals_recompute(4, "What is left of the red square?", 7);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 3, ..Default::default() })]
    #[test]
    fn cached_generation_equals_recompute_on_random_prompts(
        layers in 1usize..6, question in "[A-Za-z ,]{1,24}\\?", seed in 0u64..1000,
    ) {
        check_cached_equals_recompute(layers, &question, seed);
    }
}

#[test]
fn image_state_cache_equals_starting_over() {
    let m = model(3);
    let img = image(&m, 3);
    for scan_name in ["uni", "bi", "multi"] {
        let scan = visualrwkv_scan::by_name(scan_name).unwrap();
        let mut cached = None;
        for q in ["What colour is the square?", "How many shapes?", "Is there a circle left of the triangle?"] {
            let prompt =
                build(&Conversation::question(q), &visualrwkv_prompt::ImageFirst, Tokenizer::world(), true, true)
                    .unwrap();
            let at = prompt.image_position().unwrap();
            // The state after "User: " + image, computed once and reused for every question.
            let state = cached.get_or_insert_with(|| {
                let head = Sample { tokens: prompt.tokens[..=at].to_vec(), image: Some(img.clone()) };
                m.prefill(&head, scan.as_ref()).unwrap().1
            });
            let (reused, _) = m.extend(state, &prompt.tokens[at + 1..]).unwrap();
            let (fresh, _) = m.prefill(&Sample::new(&prompt, Some(img.clone())), scan.as_ref()).unwrap();
            let d = max_diff(&reused, &fresh);
            assert!(d <= 1e-4, "{scan_name}, {q:?}: image-state cache vs starting over differ by {d}");
        }
    }
}

#[test]
fn a_batch_gives_each_sample_its_result_alone() {
    let m = model(2);
    let scan = BiDirectional;
    let text_only = {
        let p = build(
            &Conversation::default().push(visualrwkv_prompt::Role::User, "Hi there"),
            &visualrwkv_prompt::ImageFirst,
            Tokenizer::world(),
            false,
            true,
        )
        .unwrap();
        Sample::new(&p, None)
    };
    let samples = vec![
        sample(&m, "first", "Which shape is blue?"),
        sample(&m, "sandwich", "How many circles are there in the picture?"),
        text_only,
        sample(&m, "last", "Why?"),
    ];
    let batched = m.forward(&samples, &scan).unwrap();
    for (i, s) in samples.iter().enumerate() {
        let alone = m.forward(std::slice::from_ref(s), &scan).unwrap().remove(0);
        assert_eq!(batched[i].dims(), [s.len(), 65536]);
        let d = max_diff(&host(batched[i].clone()), &host(alone));
        assert!(d <= 1e-5, "sample {i}: batched vs alone differ by {d}");
    }
}

#[test]
fn uni_scan_is_the_plain_rwkv_forward_and_bi_reverses_odd_layers() {
    let m = model(2);
    let s = sample(&m, "first", "Name the colour.");
    let (start, end) = s.image_span().unwrap();
    // Assemble the rows by hand: emb(prefix) | image rows | emb(suffix).
    let dev = Default::default();
    let img = s.image.as_ref().unwrap().rows.clone();
    let emb = |ids: &[i64]| {
        let t = Tensor::<B, 2, burn::tensor::Int>::from_data(
            burn::tensor::TensorData::new(ids.to_vec(), [1, ids.len()]),
            &dev,
        );
        m.rwkv.embed(t).unwrap().reshape([ids.len(), 16])
    };
    let at = s.tokens.iter().position(|&t| t == IMAGE_TOKEN).unwrap();
    let rows = Tensor::cat(vec![emb(&s.tokens[..at]), img, emb(&s.tokens[at + 1..])], 0);
    let t = rows.dims()[0];
    assert_eq!((t, end - start), (s.len(), 17));
    let plain = m.rwkv.forward_embeddings(rows.clone().unsqueeze_dim(0), None).unwrap().logits.reshape([t, 65536]);
    let uni = m.forward(std::slice::from_ref(&s), &UniDirectional).unwrap().remove(0);
    assert!(max_diff(&host(plain), &host(uni)) <= 1e-5);
    // Bi by hand (docs/model.md §4): in layer 1 reverse the 16 patch rows (CLS stays), run, reverse back.
    let x = m.rwkv.input_norm(rows.unsqueeze_dim(0));
    let state = m.rwkv.zero_state(1);
    let x = m.rwkv.forward_layer(0, x, state.layers[0].clone(), None).unwrap().x;
    let reverse = |x: Tensor<B, 3>| {
        let span = x.clone().slice([0..1, start..start + 16, 0..16]).flip([1]);
        x.slice_assign([0..1, start..start + 16, 0..16], span)
    };
    let x = m.rwkv.forward_layer(1, reverse(x), state.layers[1].clone(), None).unwrap().x;
    let by_hand = m.rwkv.logits(reverse(x)).reshape([t, 65536]);
    let bi = m.forward(std::slice::from_ref(&s), &BiDirectional).unwrap().remove(0);
    assert!(max_diff(&host(by_hand), &host(bi.clone())) <= 1e-5);
    // And the scan matters: bi differs from uni after the image.
    let uni = m.forward(std::slice::from_ref(&s), &UniDirectional).unwrap().remove(0);
    assert!(max_diff(&host(uni), &host(bi)) > 1e-4);
}

#[test]
fn bad_inputs_are_errors() {
    let m = model(2);
    let img = image(&m, 1);
    let prompt =
        build(&Conversation::question("Hi"), &visualrwkv_prompt::ImageFirst, Tokenizer::world(), true, true).unwrap();
    // Placeholder without an image, image without a placeholder, two placeholders.
    let e = m.forward(&[Sample::new(&prompt, None)], &UniDirectional).unwrap_err();
    assert!(matches!(&e, VlmError::PlaceholderWithoutImage), "{e}");
    let text = Sample { tokens: vec![24281, 59], image: Some(img.clone()) };
    assert!(matches!(m.forward(&[text], &UniDirectional), Err(VlmError::ImageWithoutPlaceholder)));
    let two = Sample { tokens: vec![IMAGE_TOKEN, 11, IMAGE_TOKEN], image: Some(img.clone()) };
    assert!(matches!(m.forward(&[two], &UniDirectional), Err(VlmError::Placeholders(2))));
    // A non-square grid under the multi-directional scan.
    let odd = ImageRows { rows: Tensor::zeros([7, 16], &Default::default()), layout: ImageLayout::new(2, 3, 1) };
    let s = Sample { tokens: vec![24281, IMAGE_TOKEN, 11], image: Some(odd) };
    let multi = visualrwkv_scan::MultiDirectional;
    assert!(matches!(m.forward(std::slice::from_ref(&s), &multi), Err(VlmError::Scan(_))));
    assert!(m.forward(&[s], &UniDirectional).is_ok());
    // Projector width not matching RWKV.
    let dev = Default::default();
    let wrong = ProjectorConfig::new(ProjectorKind::Linear, 24, 32).init::<B>(&dev);
    let e = VisualRwkv::new(m.rwkv.clone(), m.vision.clone(), wrong, VisionOptions::default()).unwrap_err();
    assert!(e.to_string().contains("projector"), "{e}");
    // A scan that returns a non-permutation.
    #[derive(Debug)]
    struct Broken;
    impl Scan for Broken {
        fn name(&self) -> String {
            "broken".into()
        }
        fn permutation(
            &self,
            _: usize,
            _: usize,
            l: &ImageLayout,
        ) -> Result<Option<Vec<usize>>, visualrwkv_scan::ScanError> {
            Ok(Some(vec![0; l.len()]))
        }
    }
    let s = sample(&m, "first", "Hi");
    assert!(matches!(m.forward(&[s], &Broken), Err(VlmError::Scan(_))));
}
