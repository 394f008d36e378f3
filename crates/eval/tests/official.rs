//! The scorers against the official VisualRWKV v6.0 scripts: `tests/fixtures/eval/expected.json`
//! holds what `m4c_evaluator.py`, `eval_textvqa.py`, `eval_pope.py`, `eval_science_qa.py` and
//! `eval_gqa.py` computed on the fixture inputs (`make_expected.py` beside them); MME's values
//! are worked out by hand there.

use std::path::{Path, PathBuf};

use serde_json::Value;
use visualrwkv_eval::annotations::{JoinOptions, join, read_answer_rows};
use visualrwkv_eval::metrics::{Item, Metric, read_items, score};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/eval")
}

fn expected() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("expected.json")).unwrap()).unwrap()
}

fn items(metric: Metric, file: &str) -> Vec<Item> {
    read_items(&fixtures().join("items").join(file), metric).unwrap().into_iter().map(|(_, i)| i).collect()
}

fn joined(metric: Metric, annotations: &str, answers: &str, options: JoinOptions) -> Vec<Item> {
    let rows = read_answer_rows(&fixtures().join(answers)).unwrap();
    join(metric, &fixtures().join(annotations), rows, &options).unwrap().items
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[test]
fn vqa_soft_accuracy_and_normalisation_equal_m4c() {
    let want = &expected()["vqa"];
    let items = items(Metric::Vqa, "vqa.jsonl");
    let (scored, summary) = score(Metric::Vqa, &items).unwrap();
    for (k, s) in scored.iter().enumerate() {
        assert!(close(s.score, want["scores"][k].as_f64().unwrap()), "item {k}: {} vs {}", s.score, want["scores"][k]);
        assert_eq!(s.parsed, want["normalized"][k].as_str().unwrap(), "item {k}");
    }
    assert!(close(summary["accuracy"].as_f64().unwrap(), want["accuracy"].as_f64().unwrap()));
    assert_eq!(summary["count"], 15);
}

#[test]
fn textvqa_from_its_annotation_file_equals_eval_textvqa() {
    let items = joined(Metric::Vqa, "textvqa/TextVQA_0.5.1_val.json", "textvqa/answers.jsonl", JoinOptions::default());
    assert_eq!(items.len(), 4);
    let (_, summary) = score(Metric::Vqa, &items).unwrap();
    let want = expected()["textvqa"]["accuracy"].as_f64().unwrap();
    assert!(close(summary["accuracy"].as_f64().unwrap(), want), "{summary}");
    // The official script printed it with two decimals.
    assert!(expected()["textvqa_official_output"].as_str().unwrap().ends_with(&format!("{want:.2}%")));
}

fn check_pope(summary: &Value, scored: &[visualrwkv_eval::Scored]) {
    let want = &expected()["pope"];
    let parsed: Vec<&str> = scored.iter().map(|s| s.parsed.as_str()).collect();
    let want_parsed: Vec<&str> = want["parsed"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(parsed, want_parsed);
    let mut f1s = Vec::new();
    for (cat, w) in want["categories"].as_object().unwrap() {
        let got = &summary["categories"][cat];
        for k in ["tp", "fp", "tn", "fn"] {
            assert_eq!(got[k], w[k], "{cat} {k}");
        }
        for (ours, theirs) in [
            ("accuracy", "Accuracy"),
            ("precision", "Precision"),
            ("recall", "Recall"),
            ("f1", "F1 score"),
            ("yes_ratio", "Yes ratio"),
        ] {
            assert_eq!(round3(got[ours].as_f64().unwrap()), w["printed"][theirs].as_f64().unwrap(), "{cat} {ours}");
        }
        f1s.push(got["f1"].as_f64().unwrap());
    }
    assert!(close(summary["f1_mean"].as_f64().unwrap(), f1s.iter().sum::<f64>() / f1s.len() as f64));
}

#[test]
fn pope_reading_and_counts_equal_eval_pope() {
    let items = items(Metric::Pope, "pope.jsonl");
    let (scored, summary) = score(Metric::Pope, &items).unwrap();
    check_pope(&summary, &scored);
}

#[test]
fn pope_from_label_files_and_the_question_file_equals_eval_pope() {
    let options = JoinOptions { questions: Some(fixtures().join("pope/questions.jsonl")), split: None };
    let items = joined(Metric::Pope, "pope/coco", "pope/answers.jsonl", options);
    let (scored, summary) = score(Metric::Pope, &items).unwrap();
    check_pope(&summary, &scored);
}

#[test]
fn pope_label_files_that_do_not_match_the_answers_are_an_error() {
    // Without the question file the answers have no category: none is matched.
    let rows = read_answer_rows(&fixtures().join("pope/answers.jsonl")).unwrap();
    let err = join(Metric::Pope, &fixtures().join("pope/coco"), rows, &JoinOptions::default()).unwrap_err().to_string();
    assert!(err.contains("6 labels but 0 answers of category `adversarial`"), "{err}");
}

#[test]
fn scienceqa_from_problems_equals_eval_science_qa() {
    let want = &expected()["scienceqa"];
    let items = joined(Metric::ScienceQa, "scienceqa/problems.json", "scienceqa/answers.jsonl", JoinOptions::default());
    let (scored, summary) = score(Metric::ScienceQa, &items).unwrap();
    assert_eq!(summary["count"], want["count"]);
    assert_eq!(summary["correct"], want["correct"]);
    assert!(close(summary["accuracy"].as_f64().unwrap(), want["acc"].as_f64().unwrap()));
    assert_eq!(summary["img_correct"], want["img_correct"]);
    assert_eq!(summary["img_count"], want["img_count"]);
    // The official parse, except that an out-of-range letter counts as FAILED either way.
    let pids: Vec<&String> = want["results"].as_object().unwrap().keys().collect();
    for (pid, s) in pids.iter().zip(&scored) {
        let official = want["results"][pid.as_str()].as_i64().unwrap();
        let ours = if s.parsed == "FAILED" { -1 } else { (s.parsed.as_bytes()[0] - b'A') as i64 };
        assert_eq!(ours, official, "{pid}");
    }
}

#[test]
fn scienceqa_items_accept_a_letter_or_the_option_text() {
    let (scored, summary) = score(Metric::ScienceQa, &items(Metric::ScienceQa, "scienceqa.jsonl")).unwrap();
    let got: Vec<f64> = scored.iter().map(|s| s.score).collect();
    assert_eq!(got, [1.0, 1.0, 1.0, 0.0, 1.0, 0.0]);
    assert_eq!(summary["correct"], 4);
}

#[test]
fn gqa_from_its_question_file_equals_eval_gqa() {
    let want = &expected()["gqa"];
    let items = joined(Metric::Gqa, "gqa/testdev_balanced_questions.json", "gqa/answers.jsonl", JoinOptions::default());
    let (_, summary) = score(Metric::Gqa, &items).unwrap();
    assert!(close(summary["accuracy"].as_f64().unwrap(), want["accuracy"].as_f64().unwrap()), "{summary}");
    assert!(close(summary["by"]["type"]["binary"]["accuracy"].as_f64().unwrap(), want["binary"].as_f64().unwrap()));
    assert!(close(summary["by"]["type"]["open"]["accuracy"].as_f64().unwrap(), want["open"].as_f64().unwrap()));
    for dim in ["structural", "semantic"] {
        for (t, v) in want[dim].as_object().unwrap() {
            let got = &summary["by"][dim][t];
            assert!(close(got["accuracy"].as_f64().unwrap(), v[0].as_f64().unwrap()), "{dim} {t}");
            assert_eq!(got["count"], v[1], "{dim} {t}");
        }
    }
}

#[test]
fn gqa_items_strip_trailing_periods_and_case() {
    let (scored, summary) = score(Metric::Gqa, &items(Metric::Gqa, "gqa.jsonl")).unwrap();
    assert_eq!(scored.iter().map(|s| s.score).collect::<Vec<_>>(), [1.0, 0.0, 1.0, 1.0]);
    assert!(close(summary["accuracy"].as_f64().unwrap(), 75.0));
}

fn check_mme(summary: &Value, scored: &[visualrwkv_eval::Scored]) {
    let want = &expected()["mme"];
    let parsed: Vec<&str> = scored.iter().map(|s| s.parsed.as_str()).collect();
    let want_parsed: Vec<&str> = want["parsed"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(parsed, want_parsed);
    for (cat, w) in want["categories"].as_object().unwrap() {
        for k in ["acc", "acc_plus", "score"] {
            assert!(close(summary["categories"][cat][k].as_f64().unwrap(), w[k].as_f64().unwrap()), "{cat} {k}");
        }
    }
    assert!(close(summary["perception"].as_f64().unwrap(), want["perception"].as_f64().unwrap()));
    assert!(close(summary["cognition"].as_f64().unwrap(), want["cognition"].as_f64().unwrap()));
}

#[test]
fn mme_items_and_the_benchmark_folder_give_the_hand_computed_scores() {
    let (scored, summary) = score(Metric::Mme, &items(Metric::Mme, "mme.jsonl")).unwrap();
    check_mme(&summary, &scored);
    let items = joined(Metric::Mme, "mme/MME_Benchmark_release_version", "mme/answers.jsonl", JoinOptions::default());
    let (scored, summary) = score(Metric::Mme, &items).unwrap();
    check_mme(&summary, &scored);
}

#[test]
fn unmatched_answers_and_bad_items_are_errors_naming_the_line_and_field() {
    let dir = tempdir();
    let answers = dir.join("answers.jsonl");
    std::fs::write(
        &answers,
        "{\"question_id\": \"img9\", \"prompt\": \"User: <image>\\nwhat?\\n\\nAssistant:\", \"text\": \"x\"}\n",
    )
    .unwrap();
    let rows = read_answer_rows(&answers).unwrap();
    let err = join(Metric::Vqa, &fixtures().join("textvqa/TextVQA_0.5.1_val.json"), rows, &JoinOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("1 answers match no (image_id, question)") && err.contains("img9"), "{err}");

    let bad = dir.join("items.jsonl");
    std::fs::write(&bad, "{\"prediction\": \"yes\", \"label\": \"yes\"}\n{\"prediction\": \"no\"}\n").unwrap();
    let err = read_items(&bad, Metric::Pope).unwrap_err().to_string();
    assert!(err.contains("items.jsonl:2: field `label`: missing"), "{err}");
    std::fs::write(&bad, "{\"prediction\": \"yes\", \"answers\": \"yes\"}\n").unwrap();
    let err = read_items(&bad, Metric::Vqa).unwrap_err().to_string();
    assert!(err.contains(":1: field `answers`: expected a list of strings"), "{err}");
    std::fs::write(&bad, "{\"prediction\": \"yes\"\n").unwrap();
    let err = read_items(&bad, Metric::Vqa).unwrap_err().to_string();
    assert!(err.contains("items.jsonl:1:"), "{err}");
    assert!(Metric::from_name("bleu").unwrap_err().to_string().contains("unknown metric `bleu`"));
}

fn tempdir() -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "visualrwkv-eval-test-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}
