//! The serving scheduler: requests decoded together equal each request generated alone, the
//! image-state cache changes nothing but the work done (and stays within its budget), stop
//! strings and `max_tokens` end sequences as OpenAI's API does, and bad requests are refused
//! without disturbing the others.

use burn::backend::NdArray;
use image::DynamicImage;
use visualrwkv::serving::{
    CacheUse, Event, FinishReason, ImageKey, RequestInput, Scheduler, SchedulerConfig, ServeError, ServeRequest,
};
use visualrwkv::{Engine, GenerateOptions, Sample, VisualRwkv};
use visualrwkv_prompt::{Conversation, PromptStrategy, Role, Turn};
use visualrwkv_rwkv::{Decoder, SamplingOptions, WeightDtype};
use visualrwkv_scan::BiDirectional;
use visualrwkv_tokenizer::Tokenizer;
use visualrwkv_vision::{FusedTower, ImageProcessor};

type B = NdArray;

mod common;
use common::picture;

fn model() -> VisualRwkv<B> {
    visualrwkv_rwkv::seeded::<B, _>(&Default::default(), 11, || common::tiny_vlm(2, 16))
}

fn options(max_tokens: usize) -> GenerateOptions {
    GenerateOptions { max_tokens, ..Default::default() }
}

fn config(cache_bytes: usize) -> SchedulerConfig {
    SchedulerConfig { max_batch: 8, max_context: 4096, cache_bytes }
}

fn question(q: &str) -> Conversation {
    Conversation::question(q)
}

/// `conversation` with `image` generated alone by `VisualRwkv::generate` (what `chat` runs).
fn alone(
    m: &VisualRwkv<B>,
    engine: Engine<'_>,
    layout: &dyn PromptStrategy,
    conversation: &Conversation,
    image: Option<&DynamicImage>,
    max_tokens: usize,
) -> (Vec<u32>, String) {
    let prompt = visualrwkv_prompt::build(conversation, layout, Tokenizer::world(), image.is_some(), true).unwrap();
    let rows = image.map(|i| {
        let p = ImageProcessor::for_tower(&m.vision.config);
        m.encode_images(p.batch(std::slice::from_ref(i), &Default::default()).unwrap()).unwrap().remove(0)
    });
    let g = m
        .generate(&Sample::new(&prompt, rows), &BiDirectional, Tokenizer::world(), &options(max_tokens), engine, |_| {})
        .unwrap();
    (g.tokens, g.text)
}

/// Steps until every sequence finished; each request's text, finish reason and usage.
fn drain(s: &mut Scheduler<'_, B>, n: usize) -> Vec<(String, FinishReason, usize)> {
    let mut out = vec![(String::new(), FinishReason::Stop, usize::MAX); n];
    while s.active() > 0 {
        for e in s.step().unwrap() {
            match e {
                Event::Text { id, text } => out[id as usize].0.push_str(&text),
                Event::Finished { id, reason, usage } => {
                    out[id as usize].1 = reason;
                    out[id as usize].2 = usage.completion_tokens;
                }
            }
        }
    }
    out
}

fn chat(conversation: Conversation, image: Option<DynamicImage>, max_tokens: usize) -> ServeRequest {
    ServeRequest { input: RequestInput::Chat { conversation, image }, options: options(max_tokens), stop: vec![] }
}

#[test]
fn requests_decoded_together_equal_each_alone_on_both_engines() {
    let m = model();
    let decoder = Decoder::new(m.rwkv.x060().unwrap(), WeightDtype::F32).unwrap();
    let tower = FusedTower::new(&m.vision);
    let layout = visualrwkv_prompt::by_name("sandwich").unwrap();
    let requests: Vec<(Conversation, Option<DynamicImage>)> = vec![
        (question("What is in the picture?"), Some(picture(3))),
        (question("How many shapes?"), Some(picture(9))),
        (
            Conversation { turns: vec![Turn { role: Role::User, text: "Hello there".into() }] }
                .push(Role::Assistant, "Hi")
                .push(Role::User, "Tell me more"),
            None,
        ),
        (question("What colour is it?"), Some(picture(3))),
    ];
    for (engine, fused_tower) in [(Engine::Model, None), (Engine::Fused(&decoder), Some(&tower))] {
        let mut s = Scheduler::new(
            &m,
            &BiDirectional,
            layout.as_ref(),
            Tokenizer::world(),
            engine,
            fused_tower,
            config(1 << 20),
        );
        // Two start together, one joins after three steps, the last after five.
        let mut events = Vec::new();
        for (id, (c, img)) in requests.iter().enumerate().take(2) {
            s.admit(id as u64, chat(c.clone(), img.clone(), 9)).unwrap();
        }
        for k in 0..5 {
            if k == 3 {
                s.admit(2, chat(requests[2].0.clone(), None, 9)).unwrap();
            }
            events.extend(s.step().unwrap());
        }
        s.admit(3, chat(requests[3].0.clone(), requests[3].1.clone(), 9)).unwrap();
        let mut rest = drain(&mut s, 4);
        let mut early = vec![String::new(); 4];
        for e in events {
            match e {
                Event::Text { id, text } => early[id as usize].push_str(&text),
                Event::Finished { id, reason, usage } => {
                    rest[id as usize].1 = reason;
                    rest[id as usize].2 = usage.completion_tokens;
                }
            }
        }
        for (r, e) in rest.iter_mut().zip(early) {
            r.0.insert_str(0, &e);
        }
        for (id, (c, img)) in requests.iter().enumerate() {
            let (tokens, text) = alone(&m, engine, layout.as_ref(), c, img.as_ref(), 9);
            assert_eq!(rest[id].0, text, "{engine:?} request {id}");
            assert_eq!(rest[id].2, tokens.len(), "{engine:?} request {id}");
            let reason = if tokens.len() == 9 { FinishReason::Length } else { FinishReason::Stop };
            assert_eq!(rest[id].1, reason, "{engine:?} request {id}");
        }
        assert_eq!(s.tokens_generated as usize, rest.iter().map(|r| r.2).sum::<usize>());
    }
}

#[test]
fn cache_hits_answer_exactly_as_misses_and_skip_the_work() {
    let m = model();
    let decoder = Decoder::new(m.rwkv.x060().unwrap(), WeightDtype::F32).unwrap();
    for layout_name in ["first", "sandwich"] {
        let layout = visualrwkv_prompt::by_name(layout_name).unwrap();
        let engine = Engine::Fused(&decoder);
        let mut cached =
            Scheduler::new(&m, &BiDirectional, layout.as_ref(), Tokenizer::world(), engine, None, config(1 << 20));
        let questions = ["What is it?", "Which colour?", "What is it?"];
        let mut uses = Vec::new();
        for (k, q) in questions.iter().enumerate() {
            let a = cached.admit(k as u64, chat(question(q), Some(picture(4)), 8)).unwrap();
            uses.push(a.cache);
            let got = drain(&mut cached, k + 1).remove(k);
            let mut fresh =
                Scheduler::new(&m, &BiDirectional, layout.as_ref(), Tokenizer::world(), engine, None, config(0));
            let miss = fresh.admit(0, chat(question(q), Some(picture(4)), 8)).unwrap();
            assert_eq!(miss.cache, CacheUse::Miss);
            assert_eq!(miss.prompt_tokens, a.prompt_tokens);
            let want = drain(&mut fresh, 1).remove(0);
            assert_eq!(got, want, "{layout_name} question {k}");
            assert!(fresh.cache.is_empty(), "a zero budget keeps nothing");
        }
        // `first` shares "User: " + image between questions: every later one continues from
        // the cached state; `sandwich` puts the question before the image, so a new question
        // reuses the rows only and a repeated one the state.
        let want = match layout_name {
            "first" => [CacheUse::Miss, CacheUse::State, CacheUse::State],
            _ => [CacheUse::Miss, CacheUse::Rows, CacheUse::State],
        };
        assert_eq!(uses, want, "{layout_name}");
        assert_eq!((cached.cache.counters.hits, cached.cache.counters.misses), (2, 1));
        // Another picture is a miss.
        let other = cached.admit(9, chat(question("What is it?"), Some(picture(5)), 2)).unwrap();
        assert_eq!(other.cache, CacheUse::Miss);
        assert_ne!(ImageKey::of(&picture(4)), ImageKey::of(&picture(5)));
        assert_eq!(ImageKey::of(&picture(4)), ImageKey::of(&picture(4)));
    }
}

#[test]
fn the_cache_stays_within_its_budget_evicting_the_least_recently_used() {
    let m = model();
    let decoder = Decoder::new(m.rwkv.x060().unwrap(), WeightDtype::F32).unwrap();
    let layout = visualrwkv_prompt::by_name("first").unwrap();
    // Room for about one image's rows and state.
    let probe = {
        let mut s = Scheduler::new(
            &m,
            &BiDirectional,
            layout.as_ref(),
            Tokenizer::world(),
            Engine::Fused(&decoder),
            None,
            config(1 << 30),
        );
        s.admit(0, chat(question("q"), Some(picture(1)), 1)).unwrap();
        s.cache.bytes()
    };
    let budget = probe * 3 / 2;
    let mut s = Scheduler::new(
        &m,
        &BiDirectional,
        layout.as_ref(),
        Tokenizer::world(),
        Engine::Fused(&decoder),
        None,
        config(budget),
    );
    for seed in 1..5u8 {
        s.admit(seed as u64, chat(question("q"), Some(picture(seed)), 1)).unwrap();
        assert!(s.cache.bytes() <= budget, "{} > {budget}", s.cache.bytes());
    }
    assert!(s.cache.counters.evictions > 0);
    // The most recent image is still there, the first one is gone.
    assert_eq!(s.admit(10, chat(question("q"), Some(picture(4)), 1)).unwrap().cache, CacheUse::State);
    assert_eq!(s.admit(11, chat(question("q"), Some(picture(1)), 1)).unwrap().cache, CacheUse::Miss);
}

#[test]
fn stop_strings_and_max_tokens_end_sequences() {
    let m = model();
    let decoder = Decoder::new(m.rwkv.x060().unwrap(), WeightDtype::F32).unwrap();
    let layout = visualrwkv_prompt::by_name("sandwich").unwrap();
    let engine = Engine::Fused(&decoder);
    let conv = question("Describe it.");
    let (tokens, text) = alone(&m, engine, layout.as_ref(), &conv, Some(&picture(2)), 12);
    assert!(text.chars().count() >= 4, "the reference answer is long enough to cut: {text:?}");
    // A stop string taken from the middle of the answer: the text ends right before it.
    let chars: Vec<char> = text.chars().collect();
    let stop: String = chars[2..4].iter().collect();
    let cut = &text[..text.find(&stop).unwrap()];
    let mut s = Scheduler::new(&m, &BiDirectional, layout.as_ref(), Tokenizer::world(), engine, None, config(0));
    let mut r = chat(conv.clone(), Some(picture(2)), 12);
    r.stop = vec!["\u{1F600}never".into(), stop.clone()];
    s.admit(0, r).unwrap();
    let out = drain(&mut s, 1).remove(0);
    assert_eq!((out.0.as_str(), out.1), (cut, FinishReason::Stop), "stop {stop:?}");
    // max_tokens = 3: the first three tokens' text, "length".
    s.admit(0, chat(conv, Some(picture(2)), 3)).unwrap();
    let out = drain(&mut s, 1).remove(0);
    let want = Tokenizer::world().decode_lossy(&tokens[..3.min(tokens.len())]).unwrap();
    assert_eq!(out.0, want);
    assert_eq!((out.1, out.2), (FinishReason::Length, 3));
}

#[test]
fn bad_requests_are_refused_and_the_others_go_on() {
    let m = model();
    let layout = visualrwkv_prompt::by_name("sandwich").unwrap();
    let cfg = SchedulerConfig { max_batch: 2, max_context: 40, cache_bytes: 1 << 20 };
    let mut s = Scheduler::new(&m, &BiDirectional, layout.as_ref(), Tokenizer::world(), Engine::Model, None, cfg);
    s.admit(0, chat(question("Hi?"), Some(picture(1)), 4)).unwrap();
    let bad_roles = Conversation { turns: vec![Turn { role: Role::Assistant, text: "x".into() }] };
    assert!(matches!(s.admit(1, chat(bad_roles, None, 4)), Err(ServeError::Prompt(_))));
    let long = "word ".repeat(60);
    let e = s.admit(1, chat(question(&long), Some(picture(1)), 4)).unwrap_err();
    assert!(matches!(e, ServeError::ContextTooLong { limit: 40, .. }), "{e}");
    assert!(e.is_client_error());
    let no_image = chat(question("Where is the image?"), None, 4);
    assert!(matches!(s.admit(1, no_image), Err(ServeError::Prompt(_))));
    let mut hot = chat(question("Hi?"), None, 4);
    hot.input = RequestInput::Text("Hello".into());
    hot.options.sampling = SamplingOptions { temperature: -1.0, ..Default::default() };
    assert!(matches!(s.admit(1, hot), Err(ServeError::Options(_))));
    let empty = ServeRequest { input: RequestInput::Text(String::new()), options: options(2), stop: vec![] };
    assert!(matches!(s.admit(1, empty), Err(ServeError::EmptyPrompt)));
    assert_eq!(s.active(), 1);
    let text = ServeRequest { input: RequestInput::Text("Once upon a time".into()), options: options(3), stop: vec![] };
    s.admit(1, text).unwrap();
    let full = ServeRequest { input: RequestInput::Text("More".into()), options: options(3), stop: vec![] };
    assert!(matches!(s.admit(2, full), Err(ServeError::Full(2))));
    assert!(s.cancel(1));
    assert!(!s.cancel(1));
    let out = drain(&mut s, 1).remove(0);
    let (_, want) = alone(&m, Engine::Model, layout.as_ref(), &question("Hi?"), Some(&picture(1)), 4);
    assert_eq!(out.0, want);
}
