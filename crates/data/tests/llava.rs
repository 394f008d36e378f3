//! LLaVA-format preprocessing against the official VisualRWKV v6.0 dataset code
//! (`tests/fixtures/llava/`: six made-up samples × first / middle / last, token ids and labels
//! from `src/dataset.py` with its own tokenizer), the error paths, and the loader.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use visualrwkv_data::loader::{Loader, LoaderOptions};
use visualrwkv_data::{
    DataError, DatasetOptions, MissingImage, SkipReason, parse_llava, prepare, read_llava, tokenize,
};
use visualrwkv_tokenizer::Tokenizer;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/llava").join(name)
}

#[test]
fn matches_the_official_dataset_code() {
    let records = read_llava(fixture("llava_dev.json")).unwrap();
    assert_eq!(records.len(), 6);
    let golden = std::fs::read_to_string(fixture("llava_dev_golden.jsonl")).unwrap();
    let mut checked = 0;
    for line in golden.lines() {
        let g: serde_json::Value = serde_json::from_str(line).unwrap();
        let id = g["id"].as_str().unwrap();
        let position = g["position"].as_str().unwrap();
        let strategy = visualrwkv_prompt::by_name(position).unwrap();
        let record = records.iter().find(|r| r.id == id).unwrap();
        let got = tokenize(record, strategy.as_ref(), Tokenizer::world()).unwrap();
        let want = |k: &str| g[k].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect::<Vec<_>>();
        assert_eq!(got.input_ids, want("input_ids"), "{id} {position}: input_ids");
        assert_eq!(got.labels, want("labels"), "{id} {position}: labels");
        checked += 1;
    }
    assert_eq!(checked, 18);
}

fn parse_err(json: &str) -> DataError {
    parse_llava(json, Path::new("data.json")).expect_err("must be refused")
}

fn field_of(e: &DataError) -> (String, String) {
    match e {
        DataError::Sample { id, field, .. } => (id.clone(), field.clone()),
        other => panic!("expected a sample error, got {other}"),
    }
}

#[test]
fn bad_samples_name_the_sample_and_the_field() {
    let e = parse_err("[\n {\"id\": \"a\",\n  \"conversations\": [}\n]");
    match e {
        DataError::Json { line, column, .. } => assert_eq!((line, column), (3, 21)),
        other => panic!("expected a JSON error, got {other}"),
    }
    let turn = |from: &str, value: &str| format!("{{\"from\": \"{from}\", \"value\": \"{value}\"}}");
    let cases = [
        ("[{\"id\": \"a\", \"conversations\": \"hi\"}]".to_string(), ("a", "conversations")),
        (format!("[{{\"conversations\": [{}]}}]", turn("human", "hi")), ("#0", "id")),
        (format!("[{{\"id\": \"b\", \"extra\": 1, \"conversations\": [{}]}}]", turn("human", "hi")), ("b", "extra")),
        (
            format!("[{{\"id\": \"c\", \"conversations\": [{}, {}]}}]", turn("human", "hi"), turn("system", "x")),
            ("c", "conversations[1].from"),
        ),
        (
            format!(
                "[{{\"id\": \"d\", \"conversations\": [{}, {}]}}]",
                turn("human", "<image>\\nhi"),
                turn("gpt", "x")
            ),
            ("d", "conversations[0].value"),
        ),
        (
            format!(
                "[{{\"id\": \"e\", \"image\": \"e.png\", \"conversations\": [{}, {}]}}]",
                turn("human", "<image> <image>"),
                turn("gpt", "x")
            ),
            ("e", "conversations[0].value"),
        ),
        (
            format!(
                "[{{\"id\": \"f\", \"image\": \"f.png\", \"conversations\": [{}, {}]}}]",
                turn("human", "hi"),
                turn("gpt", "x")
            ),
            ("f", "image"),
        ),
        ("[{\"id\": \"g\", \"conversations\": []}]".to_string(), ("g", "conversations")),
        ("[{\"id\": \"h\", \"conversations\": [{\"from\": \"human\"}]}]".to_string(), ("h", "conversations[0].value")),
        (
            format!("[{{\"id\": 7, \"conversations\": [{}, {}]}}]", turn("gpt", "x"), turn("human", "hi")),
            ("7", "conversations[0].from"),
        ),
        (format!("[{{\"id\": \"i\", \"conversations\": [{}]}}]", turn("human", "  ")), ("i", "conversations")),
    ];
    for (json, (id, field)) in cases {
        let e = parse_err(&json);
        assert_eq!(field_of(&e), (id.to_string(), field.to_string()), "{json}: {e}");
        assert!(e.to_string().starts_with("data.json: sample "), "{e}");
    }
}

fn write_png(path: &Path, w: u32, h: u32) {
    image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 9) as u8, (y * 7) as u8, 90])).save(path).unwrap();
}

fn two_samples(dir: &Path) -> Vec<visualrwkv_data::Record> {
    let json = r#"[
      {"id": "img", "image": "a.png", "conversations": [{"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": "A square."}]},
      {"id": "gone", "image": "missing.png", "conversations": [{"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": "B"}]},
      {"id": "text", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello there."}]}
    ]"#;
    write_png(&dir.join("a.png"), 40, 30);
    parse_llava(json, &dir.join("data.json")).unwrap()
}

#[test]
fn missing_images_are_errors_or_counted_skips() {
    let dir = std::env::temp_dir().join(format!("vrwkv-data-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let records = two_samples(&dir);
    let strategy = || visualrwkv_prompt::by_name("first").unwrap();
    let options = DatasetOptions::new(&dir, strategy(), 17);
    match prepare(&records, Tokenizer::world(), &options) {
        Err(DataError::Image { id, image, .. }) => {
            assert_eq!(id, "gone");
            assert!(image.ends_with("missing.png"));
        }
        other => panic!("expected a missing image error, got {other:?}"),
    }
    let options = DatasetOptions { on_missing_image: MissingImage::Skip, ..DatasetOptions::new(&dir, strategy(), 17) };
    let prepared = prepare(&records, Tokenizer::world(), &options).unwrap();
    assert_eq!((prepared.report.samples, prepared.report.with_image, prepared.report.text_only), (3, 1, 1));
    assert_eq!(prepared.report.skipped_by_reason[SkipReason::MissingImage.name()], 1);
    // A context of 18 rows: "User: " (3 tokens) + 17 image rows ends the image at row 20 → skipped.
    let options = DatasetOptions {
        ctx_len: 18,
        on_missing_image: MissingImage::Skip,
        ..DatasetOptions::new(&dir, strategy(), 17)
    };
    let prepared = prepare(&records, Tokenizer::world(), &options).unwrap();
    assert_eq!(prepared.report.skipped_by_reason[SkipReason::ImageDoesNotFit.name()], 1);
    assert!(prepared.report.rows.iter().all(|&r| r <= 18));

    // The loader hands out samples in order with CLIP-32 pixels, and honours the skip policy.
    let processor = visualrwkv_vision::ImageProcessor::clip(32);
    let all: Vec<_> = records.iter().map(|r| tokenize(r, strategy().as_ref(), Tokenizer::world()).unwrap()).collect();
    let loader_options = |on_missing_image| LoaderOptions {
        image_folder: dir.clone(),
        processor: processor.clone(),
        workers: 2,
        window: 2,
        on_missing_image,
        origin: dir.join("data.json"),
    };
    let order = vec![2, 0, 1, 0, 2, 0];
    let loaded: Vec<_> = Loader::spawn(Arc::new(all.clone()), order.clone(), loader_options(MissingImage::Skip))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        loaded.iter().map(|l| l.sample.id.as_str()).collect::<Vec<_>>(),
        ["text", "img", "gone", "img", "text", "img"]
    );
    assert_eq!(loaded.iter().map(|l| l.position).collect::<Vec<_>>(), (0..6).collect::<Vec<_>>());
    assert!(loaded[2].skipped && loaded[2].pixels.is_none());
    let px = loaded[1].pixels.as_ref().unwrap();
    assert_eq!((px.len(), loaded[1].size), (3 * 32 * 32, (32, 32)));
    let want = processor.preprocess(&processor.open(dir.join("a.png")).unwrap()).unwrap().0;
    assert_eq!(px, &want);
    let mut strict = Loader::spawn(Arc::new(all), order, loader_options(MissingImage::Error)).unwrap();
    assert!(strict.next().unwrap().is_ok());
    assert!(strict.next().unwrap().is_ok());
    assert!(matches!(strict.next().unwrap(), Err(DataError::Image { id, .. }) if id == "gone"));
    drop(strict);
    std::fs::remove_dir_all(&dir).ok();
}
