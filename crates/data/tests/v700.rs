//! VisualRWKV-7 v7.00's multi-image data format against its official `src/dataset.py`
//! (`tests/fixtures/v700/`: seven made-up samples × num_token_per_image 16 and 4; text, ids and
//! labels, unpadded and padded to 40, executed from the official file with the package
//! tokenizer), and the errors.

use std::path::{Path, PathBuf};

use visualrwkv_data::DataError;
use visualrwkv_data::v700::{V700_IMAGE_TOKEN, parse_v700, read_v700, tokenize_v700};
use visualrwkv_tokenizer::Tokenizer;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/v700").join(name)
}

fn ints(v: &serde_json::Value) -> Vec<i64> {
    v.as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect()
}

#[test]
fn matches_the_official_v700_dataset_code() {
    let records = read_v700(fixture("v700_dev.json")).unwrap();
    assert_eq!(records.len(), 7);
    assert_eq!(records[3].images, ["b/1.jpg", "b/2.jpg", "b/3.jpg"]);
    let golden: Vec<serde_json::Value> = std::fs::read_to_string(fixture("v700_dev_golden.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let find = |id: &str, nt: usize| {
        golden.iter().find(|g| g["id"] == id && g["num_token_per_image"] == nt).unwrap_or_else(|| panic!("{id} {nt}"))
    };
    let mut checked = 0;
    for record in &records {
        for nt in [16, 4] {
            let g = find(&record.id, nt);
            let got = tokenize_v700(record, Tokenizer::world(), nt);
            let case = format!("{} nt={nt}", record.id);
            assert_eq!(got.input_text, g["input_text"].as_str().unwrap(), "{case}: text");
            assert_eq!(got.input_ids, ints(&g["input_ids"]), "{case}: input_ids");
            assert_eq!(got.image_tokens(), record.images.len() * nt, "{case}");
            // The official masking compares roles case-sensitively (a bug not copied): the
            // capitalised sample's labels are those of its lowercase twin.
            let want = if record.id == "images_in_two_turns" { find("images_in_two_turns_lowercase", nt) } else { g };
            assert_eq!(got.labels, ints(&want["labels"]), "{case}: labels");
            let (ids, labels) = got.padded(40);
            assert_eq!(ids, ints(&want["padded_ids"]), "{case}: padded ids");
            assert_eq!(labels, ints(&want["padded_labels"]), "{case}: padded labels");
            checked += 1;
        }
    }
    assert_eq!(checked, 14);
    // The capitalised sample really differs in the official labels (the bug is exercised).
    assert_ne!(find("images_in_two_turns", 4)["labels"], find("images_in_two_turns_lowercase", 4)["labels"]);
    assert!(ints(&find("images_in_two_turns", 4)["labels"]).contains(&V700_IMAGE_TOKEN));
}

fn parse_err(json: &str) -> String {
    match parse_v700(json, Path::new("v7.json")) {
        Err(e @ DataError::Sample { .. }) => e.to_string(),
        other => panic!("expected a sample error, got {other:?}"),
    }
}

#[test]
fn bad_samples_name_the_sample_and_the_field() {
    let conv = r#""conversations": [{"from": "human", "value": "<image> <image> hi"}, {"from": "gpt", "value": "ok"}]"#;
    let e = parse_err(&format!(r#"[{{"id": "s1", "image": ["a.jpg"], {conv}}}]"#));
    assert!(e.contains("v7.json: sample s1: `image`") && e.contains("1 image path(s) but 2 `<image>`"), "{e}");
    let e = parse_err(&format!(r#"[{{"id": "s2", "image": ["a.jpg", ""], {conv}}}]"#));
    assert!(e.contains("sample s2: `image[1]`: empty path"), "{e}");
    let e = parse_err(&format!(r#"[{{"id": "s3", "image": 4, {conv}}}]"#));
    assert!(e.contains("sample s3: `image`: expected a path, found a number"), "{e}");
    let e = parse_err(
        r#"[{"sample_id": 9, "image": "a.jpg", "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "<image>"}]}]"#,
    );
    assert!(e.contains("sample 9: `conversations[1].value`: `<image>` in a gpt turn"), "{e}");
    let e = parse_err(&format!(r#"[{{"id": "s5", "extra": 1, {conv}}}]"#));
    assert!(e.contains("sample s5: `extra`: unknown field"), "{e}");
    let e = parse_err(r#"[{"conversations": [{"from": "human", "value": "q"}]}]"#);
    assert!(e.contains("sample #0: `id`: missing"), "{e}");
    assert!(matches!(parse_v700("[1,", Path::new("v7.json")), Err(DataError::Json { line: 1, .. })));
}
