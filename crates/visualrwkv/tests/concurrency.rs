//! Thread-safe decoding: one loaded model (and one fused decoder built from it) serves several
//! independent generations from several threads at once, and each thread gets exactly what the
//! same request gives when it runs alone.

use burn::backend::NdArray;
use visualrwkv::{Engine, GenerateOptions, Sample, VisualRwkv};
use visualrwkv_prompt::{Conversation, Role, Turn, build};
use visualrwkv_rwkv::{Decoder, SamplingOptions, WeightDtype};
use visualrwkv_scan::{BiDirectional, MultiDirectional, Scan, UniDirectional};
use visualrwkv_tokenizer::Tokenizer;
use visualrwkv_vision::ImageProcessor;

type B = NdArray;

/// What the shared objects must be for a server to hand them to its worker threads.
fn shareable<T: Send + Sync>() {}

#[test]
fn the_model_decoder_and_tokenizer_can_be_shared_between_threads() {
    shareable::<VisualRwkv<B>>();
    shareable::<Decoder>();
    shareable::<Tokenizer>();
}

mod common;
use common::picture;

fn model() -> VisualRwkv<B> {
    visualrwkv_rwkv::seeded::<B, _>(&Default::default(), 11, || common::tiny_vlm(3, 32))
}

/// One request: a question, an image (or none), a prompt layout, a scan and a sampling seed.
struct Request {
    question: &'static str,
    image: Option<u8>,
    layout: &'static str,
    scan: Box<dyn Scan + Send + Sync>,
    seed: u64,
}

fn requests() -> Vec<Request> {
    vec![
        Request {
            question: "What colour is it?",
            image: Some(3),
            layout: "sandwich",
            scan: Box::new(BiDirectional),
            seed: 1,
        },
        Request {
            question: "How many shapes?",
            image: Some(7),
            layout: "first",
            scan: Box::new(MultiDirectional),
            seed: 2,
        },
        Request {
            question: "Describe the picture.",
            image: Some(9),
            layout: "last",
            scan: Box::new(UniDirectional),
            seed: 3,
        },
        Request { question: "Say something.", image: None, layout: "sandwich", scan: Box::new(BiDirectional), seed: 4 },
        Request {
            question: "Is there a circle?",
            image: Some(3),
            layout: "sandwich",
            scan: Box::new(BiDirectional),
            seed: 5,
        },
    ]
}

/// Runs `r` on `m`: prompt, image encoding, and a sampled generation (temperature 1, top-p 0.9,
/// the request's seed) of 12 tokens. Returns the tokens and the chosen tokens' logits.
fn answer(m: &VisualRwkv<B>, engine: Engine, r: &Request) -> (Vec<u32>, Vec<f32>) {
    let text = if r.image.is_some() { format!("<image>\n{}", r.question) } else { r.question.to_string() };
    let conv = Conversation { turns: vec![Turn { role: Role::User, text }] };
    let layout = visualrwkv_prompt::by_name(r.layout).unwrap();
    let prompt = build(&conv, layout.as_ref(), Tokenizer::world(), r.image.is_some(), true).unwrap();
    let rows = r.image.map(|seed| {
        let p = ImageProcessor::for_tower(&m.vision.config);
        m.encode_images(p.batch(&[picture(seed)], &Default::default()).unwrap()).unwrap().remove(0)
    });
    let options = GenerateOptions {
        sampling: SamplingOptions { temperature: 1.0, top_p: 0.9, seed: r.seed, ..Default::default() },
        max_tokens: 12,
        stop_tokens: vec![],
        ..Default::default()
    };
    let g =
        m.generate(&Sample::new(&prompt, rows), r.scan.as_ref(), Tokenizer::world(), &options, engine, |_| {}).unwrap();
    (g.tokens, g.scores.iter().map(|s| s.logit).collect())
}

/// Each request alone, then all of them at once from their own threads (twice over, so that
/// ten generations share the model and the decoder): the same tokens and logits, bit for bit,
/// through the model's tensor ops and through the fused decoder stepping with a team of threads.
#[test]
fn concurrent_generations_equal_each_one_alone() {
    let m = model();
    let mut decoder = Decoder::new(m.rwkv.x060().unwrap(), WeightDtype::F32).unwrap();
    decoder.set_threads(Some(2));
    let requests = requests();
    for engine in [Engine::Model, Engine::Fused(&decoder)] {
        let alone: Vec<_> = requests.iter().map(|r| answer(&m, engine, r)).collect();
        assert!(alone.iter().all(|(tokens, _)| tokens.len() == 12));
        assert_ne!(alone[0].0, alone[4].0, "different seeds sample different answers");
        let together: Vec<Vec<_>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..2)
                .flat_map(|_| requests.iter().map(|r| scope.spawn(|| answer(&m, engine, r))))
                .collect::<Vec<_>>()
                .into_iter()
                .collect();
            let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
            results.chunks(requests.len()).map(|c| c.to_vec()).collect()
        });
        for round in &together {
            assert_eq!(round, &alone, "{engine:?}");
        }
    }
}
