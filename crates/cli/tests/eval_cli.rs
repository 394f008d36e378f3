//! Evaluation end to end through the binary: a tiny trained checkpoint (`example-data` →
//! `train --stage 1`) answers a question file the test writes (several questions per image,
//! JPEG and PNG, a text-only one), as `chat` answers each question alone; `score` reads the
//! answers with the benchmark's label files; an interrupted run resumes to the same bytes as one
//! run; chunks concatenate to the whole; MMBench TSV and the official JSON with conversations
//! load; bad input is an error naming the file, line and field.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use common::{bin, tmp};
use serde_json::{Value, json};

use common::ok_output as ok;

fn fails(cmd: &mut Command, needle: &str) {
    let out = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{cmd:?} succeeded");
    assert!(err.contains(needle), "{cmd:?}: expected {needle:?} in\n{err}");
    assert!(!err.contains("panicked"), "{cmd:?}: {err}");
}

/// The example data and a stage-1 checkpoint trained on it, made once per test process.
fn setup() -> &'static (PathBuf, PathBuf) {
    static SETUP: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    SETUP.get_or_init(|| {
        let data = tmp("eval-data");
        ok(bin().args(["example-data", "--images", "6", "--width", "32", "--out"]).arg(&data));
        let ck = data.join("ck");
        ok(bin()
            .args(["train", "--stage", "1", "--rwkv"])
            .arg(data.join("rwkv.safetensors"))
            .arg("--vision")
            .arg(data.join("clip"))
            .arg("--data")
            .arg(data.join("llava.json"))
            .arg("--image-folder")
            .arg(data.join("images"))
            .args(["--steps", "2", "--batch", "2", "--ctx-len", "96", "--out"])
            .arg(&ck));
        (data, ck.join("model.safetensors"))
    })
}

const QUESTIONS: &[(i64, Option<&str>, &str, &str)] = &[
    (1, Some("000.jpg"), "Is there a circle in the image?", "random"),
    (2, Some("000.jpg"), "What color is the shape?\nAnswer the question using a single word or phrase.", "random"),
    (3, Some("001.png"), "Is there a square in the image?", "adversarial"),
    (4, Some("001.png"), "Is the shape red?", "adversarial"),
    (5, Some("002.jpg"), "Is there a triangle in the image?", "random"),
    (6, None, "Is there a circle in the image?", "adversarial"),
];

fn question_file(dir: &Path) -> PathBuf {
    let path = dir.join("questions.jsonl");
    let mut text = String::new();
    for (id, image, q, cat) in QUESTIONS {
        let mut line = json!({"question_id": id, "text": q, "category": cat});
        if let Some(i) = image {
            line["image"] = json!(i);
        }
        text.push_str(&format!("{line}\n"));
    }
    std::fs::write(&path, text).unwrap();
    path
}

fn eval(questions: &Path, answers: &Path) -> Command {
    let (data, ck) = setup();
    let mut cmd = bin();
    cmd.args(["eval", "--checkpoint"]).arg(ck).arg("--questions").arg(questions);
    cmd.arg("--image-folder").arg(data.join("images")).arg("--answers").arg(answers).args(["--max-tokens", "6"]);
    cmd
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// One uninterrupted run over the question file, made once.
fn whole() -> &'static (PathBuf, PathBuf) {
    static WHOLE: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    WHOLE.get_or_init(|| {
        let dir = tmp("eval-whole");
        std::fs::create_dir_all(&dir).unwrap();
        let q = question_file(&dir);
        let answers = dir.join("answers.jsonl");
        let (_, err) = ok(&mut eval(&q, &answers));
        // Five questions on three images, one with `<image>` but no file (all-zero pixels, as
        // evaluate.py): four tower runs, two reuses.
        assert!(err.contains("images encoded 4, reused 2"), "{err}");
        assert!(err.contains("questions/s"), "{err}");
        (q, answers)
    })
}

#[test]
fn eval_writes_official_answers_that_chat_reproduces_and_score_reads() {
    let (data, ck) = setup();
    let (q, answers) = whole();
    let got = lines(answers);
    assert_eq!(got.len(), QUESTIONS.len());
    for (a, (id, image, text, cat)) in got.iter().zip(QUESTIONS) {
        assert_eq!(a["question_id"], json!(id));
        let first_line = text.lines().next().unwrap();
        let want_prompt = format!("User: {first_line}\n<image>\n{text}\n\nAssistant:");
        assert_eq!(a["prompt"], json!(want_prompt), "the sandwich prompt text");
        assert_eq!(a["model_id"], json!("ck"), "the checkpoint's folder, as evaluate.py");
        assert_eq!(a["metadata"]["image_file"], json!(image));
        assert_eq!(a["metadata"]["category"], json!(cat));
        assert_eq!(a["answer_id"].as_str().unwrap().len(), 22);
        for k in ["avg_logit", "avg_prob"] {
            let v: f64 = a[k].as_str().unwrap().parse().unwrap();
            assert!(v.is_finite(), "{k}");
        }
        let p: f64 = a["avg_prob"].as_str().unwrap().parse().unwrap();
        assert!((0.0..=1.0).contains(&p));
        assert!(!a["text"].as_str().unwrap().contains("\n\n"));
    }
    // `chat` answers a question alone (no cache) as `eval` did in its run (the image cached from
    // the question before).
    for k in [1, 3] {
        let (_, image, text, _) = QUESTIONS[k];
        let (out, _) = ok(bin()
            .args(["chat", "--checkpoint"])
            .arg(ck)
            .arg("--image")
            .arg(data.join("images").join(image.unwrap()))
            .args(["--question", text, "--temperature", "0", "--max-tokens", "6"]));
        let chat = out.split("\n\n").next().unwrap().trim();
        assert_eq!(got[k]["text"], json!(chat), "question {k}");
    }

    // POPE-style label files per category; `score` joins them with the answers by category.
    let dir = answers.parent().unwrap().join("coco");
    std::fs::create_dir_all(&dir).unwrap();
    let labels = ["yes", "no", "no", "yes", "yes", "no"];
    for cat in ["random", "adversarial"] {
        let text: String = QUESTIONS
            .iter()
            .zip(labels)
            .filter(|((_, _, _, c), _)| *c == cat)
            .map(|((id, image, _, _), l)| format!("{}\n", json!({"question_id": id, "image": image, "label": l})))
            .collect();
        std::fs::write(dir.join(format!("coco_pope_{cat}.json")), text).unwrap();
    }
    let scored = answers.with_file_name("pope_scored.jsonl");
    let summary = answers.with_file_name("pope_summary.json");
    let (stdout, _) = ok(bin()
        .args(["score", "--metric", "pope", "--annotations"])
        .arg(&dir)
        .arg("--answers")
        .arg(answers)
        .arg("--out")
        .arg(&scored)
        .arg("--summary")
        .arg(&summary));
    let s: Value = serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    assert_eq!(s, serde_json::from_str::<Value>(&stdout).unwrap(), "printed == written");
    // The official reading of each answer, recomputed here from the answer file.
    let mut right = 0;
    for (a, l) in got.iter().zip(labels) {
        let parsed = visualrwkv_eval::metrics::pope_answer(a["text"].as_str().unwrap());
        right += usize::from((parsed == "yes") == (l != "no"));
    }
    assert_eq!(s["count"], json!(6));
    assert!((s["accuracy"].as_f64().unwrap() - right as f64 / 6.0).abs() < 1e-12, "{s}");
    assert_eq!(s["categories"]["random"]["count"], json!(3));
    let scored = lines(&scored);
    assert_eq!(scored.len(), 6);
    let sum: f64 = scored.iter().map(|l| l["score"].as_f64().unwrap()).sum();
    assert_eq!(sum as usize, right);
    assert!(scored.iter().all(|l| l["prompt"].is_string() && l["parsed"].is_string()), "each line copied whole");

    // Generic items from the answers: a prediction scored against itself is right.
    let items = answers.with_file_name("items.jsonl");
    let text: String = got
        .iter()
        .map(|a| format!("{}\n", json!({"prediction": a["text"], "answers": vec![a["text"].clone(); 10]})))
        .collect();
    std::fs::write(&items, text).unwrap();
    let (stdout, _) = ok(bin().args(["score", "--metric", "vqa", "--input"]).arg(&items));
    let s: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(s["accuracy"], json!(100.0), "{s}");
    let _ = q;
}

#[test]
fn an_interrupted_eval_resumes_to_the_bytes_of_one_run() {
    let (q, whole_answers) = whole();
    let want = std::fs::read(whole_answers).unwrap();
    let dir = tmp("eval-resume");
    std::fs::create_dir_all(&dir).unwrap();

    // Two complete lines and a torn third, as a kill mid-write could leave them.
    let partial = dir.join("partial.jsonl");
    let cut: usize = want.iter().enumerate().filter(|(_, b)| **b == b'\n').nth(1).unwrap().0 + 1;
    let mut bytes = want[..cut].to_vec();
    bytes.extend_from_slice(br#"{"question_id": 3, "prompt": "User: Is th"#);
    std::fs::write(&partial, bytes).unwrap();
    let (_, err) = ok(eval(q, &partial).arg("--resume"));
    assert!(err.contains("2 answered before, 4 to answer") && err.contains("torn"), "{err}");
    assert_eq!(std::fs::read(&partial).unwrap(), want, "resumed == one run");

    // A real kill once the first answer is written, then --resume.
    let killed = dir.join("killed.jsonl");
    let mut child = eval(q, &killed).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    while child.try_wait().unwrap().is_none() {
        if std::fs::read(&killed).map(|b| !b.is_empty()).unwrap_or(false) {
            child.kill().unwrap();
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.wait().unwrap();
    ok(eval(q, &killed).arg("--resume"));
    assert_eq!(std::fs::read(&killed).unwrap(), want, "killed + resumed == one run");
    // Nothing left: a second --resume answers nothing and changes nothing.
    let (_, err) = ok(eval(q, &killed).arg("--resume"));
    assert!(err.contains("6 answered before, 0 to answer"), "{err}");
    assert_eq!(std::fs::read(&killed).unwrap(), want);

    // Answers of another question file are refused, not mixed in.
    let other = dir.join("other.jsonl");
    std::fs::write(&other, "{\"question_id\": 99, \"image\": \"000.jpg\", \"text\": \"Which?\"}\n").unwrap();
    fails(eval(&other, &killed).arg("--resume"), "not (or not that often) in these questions");
}

#[test]
fn chunks_concatenate_to_the_whole_run() {
    let (q, whole_answers) = whole();
    let want = std::fs::read(whole_answers).unwrap();
    let dir = tmp("eval-chunks");
    std::fs::create_dir_all(&dir).unwrap();
    let mut joined = Vec::new();
    for k in 0..4 {
        let part = dir.join(format!("4_{k}.jsonl"));
        ok(eval(q, &part).args(["--chunks", "4", "--chunk-index", &k.to_string()]));
        joined.extend(std::fs::read(&part).unwrap());
    }
    assert_eq!(joined, want);
    fails(
        eval(q, &dir.join("x.jsonl")).args(["--chunks", "4", "--chunk-index", "4"]),
        "--chunk-index 4 is not below --chunks 4",
    );
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[test]
fn mmbench_tsv_and_the_official_json_load() {
    let (data, _) = setup();
    let dir = tmp("eval-formats");
    std::fs::create_dir_all(&dir).unwrap();
    let png = base64(&std::fs::read(data.join("images/001.png")).unwrap());
    let tsv = dir.join("mmbench.tsv");
    std::fs::write(
        &tsv,
        format!(
            "index\tquestion\thint\tA\tB\tC\tD\tanswer\tcategory\timage\n\
             17\tWhich shape is shown?\tnan\tcircle\tsquare\ttriangle\tnan\tB\tshape\t{png}\n\
             18\tWhat color is it?\tLook closely.\tred\tgreen\tnan\tnan\tA\tcolor\t{png}\n"
        ),
    )
    .unwrap();
    let answers = dir.join("mmbench_answers.jsonl");
    let (_, err) = ok(&mut eval(&tsv, &answers));
    assert!(err.contains("images encoded 1, reused 1"), "{err}");
    let got = lines(&answers);
    assert_eq!(got[0]["question_id"], json!(17));
    let p = got[0]["prompt"].as_str().unwrap();
    assert!(p.contains("Which shape is shown?\nA. circle\nB. square\nC. triangle\nAnswer with the option's letter from the given choices directly."), "{p}");
    let p = got[1]["prompt"].as_str().unwrap();
    assert!(p.contains("Look closely.\nWhat color is it?\nA. red\nB. green\nAnswer with"), "{p}");
    assert_eq!(got[1]["metadata"]["image_file"], Value::Null, "inline images are not copied");

    // ScienceQA as the official JSON with conversations; a text-only problem has no image.
    let json_q = dir.join("sqa.json");
    std::fs::write(
        &json_q,
        json!([
            {"id": "p1", "image": "000.jpg", "conversations": [{"from": "human", "value": "<image>\nWhich shape?\nA. circle\nB. square"}, {"from": "gpt", "value": "A"}]},
            {"id": "p2", "conversations": [{"from": "human", "value": "Which is a colour?\nA. red\nB. seven"}, {"from": "gpt", "value": "A"}]}
        ])
        .to_string(),
    )
    .unwrap();
    let answers = dir.join("sqa_answers.jsonl");
    ok(&mut eval(&json_q, &answers));
    let got = lines(&answers);
    assert_eq!(got[0]["question_id"], json!("p1"));
    assert!(got[0]["prompt"].as_str().unwrap().contains("<image>"));
    assert_eq!(got[1]["prompt"], json!("User: Which is a colour?\nA. red\nB. seven\n\nAssistant:"));
    std::fs::write(
        dir.join("problems.json"),
        json!({"p1": {"choices": ["circle", "square"], "answer": 0}, "p2": {"choices": ["red", "seven"], "answer": 0}})
            .to_string(),
    )
    .unwrap();
    std::fs::write(dir.join("pid_splits.json"), json!({"test": ["p1", "p2"]}).to_string()).unwrap();
    let (stdout, _) = ok(bin()
        .args(["score", "--metric", "scienceqa", "--annotations"])
        .arg(dir.join("problems.json"))
        .arg("--answers")
        .arg(&answers));
    let s: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        (s["count"].clone(), s["img_count"].clone(), s["missing"].clone()),
        (json!(2), json!(1), json!(0)),
        "{s}"
    );
}

#[test]
fn bad_input_is_an_error_naming_the_file_line_and_field() {
    let (data, _) = setup();
    let dir = tmp("eval-bad");
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let out = dir.join("answers.jsonl");
    let good = r#"{"question_id": 1, "image": "000.jpg", "text": "Which?"}"#;
    let q = write("malformed.jsonl", &format!("{good}\n{{\"question_id\": 2, \"text\": \n"));
    fails(&mut eval(&q, &out), "malformed.jsonl:2:");
    let q = write("dup.jsonl", &format!("{good}\n{good}\n"));
    fails(&mut eval(&q, &out), "dup.jsonl:2: duplicate question_id 1 with the same question (first at line 1)");
    let q = write("notext.jsonl", "{\"question_id\": 1, \"image\": \"000.jpg\"}\n");
    fails(&mut eval(&q, &out), "notext.jsonl:1: field `text`: missing");
    let q = write("badid.jsonl", "{\"question_id\": [1], \"text\": \"Which?\"}\n");
    fails(&mut eval(&q, &out), "badid.jsonl:1: field `question_id`");
    let q = write(
        "missing.jsonl",
        &format!("{good}\n{{\"question_id\": 2, \"image\": \"nope.jpg\", \"text\": \"Which?\"}}\n"),
    );
    fails(&mut eval(&q, &out), "missing.jsonl:2: question_id 2: image");
    let (_, err) = ok(eval(&q, &out).args(["--on-missing-image", "skip"]));
    assert!(err.contains("skipped 1 with a missing image"), "{err}");
    assert_eq!(lines(&out).len(), 1);
    let corrupt = data.join("images/corrupt.jpg");
    std::fs::write(&corrupt, [0xFF, 0xD8, 0xFF, 0xE0, 1, 2, 3]).unwrap();
    let q = write("corrupt.jsonl", "{\"question_id\": 7, \"image\": \"corrupt.jpg\", \"text\": \"Which?\"}\n");
    fails(&mut eval(&q, &out), "corrupt.jsonl:1: question_id 7:");
    std::fs::remove_file(corrupt).unwrap();

    fails(bin().args(["score", "--metric", "bleu", "--input"]).arg(&q), "unknown metric `bleu`");
    let items =
        write("items.jsonl", "{\"prediction\": \"yes\", \"label\": \"yes\"}\n{\"prediction\": 3, \"label\": \"no\"}\n");
    fails(bin().args(["score", "--metric", "pope", "--input"]).arg(&items), "items.jsonl:2: field `prediction`");
    // Label files that do not match the answers: counts, not a silent zip.
    let coco = dir.join("coco");
    std::fs::create_dir_all(&coco).unwrap();
    std::fs::write(coco.join("coco_pope_random.json"), "{\"label\": \"yes\"}\n{\"label\": \"no\"}\n").unwrap();
    let answers = write(
        "pope_answers.jsonl",
        "{\"question_id\": 1, \"prompt\": \"\", \"text\": \"Yes\", \"metadata\": {\"image_file\": null, \"category\": \"random\"}}\n",
    );
    fails(
        bin().args(["score", "--metric", "pope", "--annotations"]).arg(&coco).arg("--answers").arg(&answers),
        "2 labels but 1 answers of category `random`",
    );
}

#[test]
fn ablate_on_real_data_fine_tunes_every_combination_and_scores_it_as_score_does() {
    let (data, ck) = setup();
    let out = tmp("ablate-real");
    let eval_dir = data.join("eval");
    let run = |out: &Path| {
        let mut cmd = bin();
        cmd.args(["ablate", "--data"]).arg(data.join("llava.json")).arg("--image-folder").arg(data.join("images"));
        cmd.arg("--questions").arg(eval_dir.join("pope_questions.jsonl"));
        cmd.arg("--annotations").arg(eval_dir.join("pope")).args(["--metric", "pope", "--checkpoint"]).arg(ck);
        cmd.args(["--prompts", "first,sandwich", "--scans", "uni,bi", "--seeds", "2", "--steps", "2", "--batch", "2"]);
        cmd.args(["--ctx-len", "96", "--max-tokens", "3", "--replicas", "1", "--lr", "1e-2", "--out"]).arg(out);
        cmd
    };
    let (stdout, _) = ok(&mut run(&out));
    assert!(stdout.contains("| Table 3 | sandwich > first |") && stdout.contains("| Table 4 | bi > uni |"), "{stdout}");
    let md = std::fs::read_to_string(out.join("ablation.md")).unwrap();
    assert!(md.contains("scored with `pope`") && md.contains("(6 questions)"), "{md}");
    assert!(!md.contains("majority baseline"), "no synthetic baseline on real data");
    let json: Value = serde_json::from_str(&std::fs::read_to_string(out.join("ablation.json")).unwrap()).unwrap();
    let runs = json["ablation"]["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 8, "2 prompts × 2 scans × 2 seeds");
    assert_eq!(json["ablation"]["kinds"], json!(vec!["example"; 6]), "POPE's category as the question type");
    let mut overall = Vec::new();
    for r in runs {
        let name = format!("{}-{}-seed{}", r["prompt"].as_str().unwrap(), r["scan"].as_str().unwrap(), r["seed"]);
        let dir = out.join("runs").join(&name);
        assert_eq!(std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap().lines().count(), 2, "{name}");
        assert!(!dir.join("model.safetensors").exists(), "{name}: the checkpoint is removed once scored");
        let answers = lines(&dir.join("answers.jsonl"));
        assert_eq!(answers.len(), 6, "{name}");
        assert!(answers.iter().all(|a| a["model_id"] == json!(name)), "{name}");
        let scores: Vec<f64> = r["scores"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
        assert_eq!(scores.len(), 6);
        assert!(scores.iter().all(|&x| x == 0.0 || x == 1.0), "{scores:?}");
        let mean = scores.iter().sum::<f64>() / 6.0;
        assert!((r["overall"].as_f64().unwrap() - mean).abs() < 1e-12);
        // The run's score is what `score` gives its answer file.
        let summary = dir.join("summary.json");
        ok(bin()
            .args(["score", "--metric", "pope", "--annotations"])
            .arg(eval_dir.join("pope"))
            .arg("--answers")
            .arg(dir.join("answers.jsonl"))
            .arg("--questions")
            .arg(eval_dir.join("pope_questions.jsonl"))
            .arg("--summary")
            .arg(&summary));
        let s: Value = serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
        assert!((s["accuracy"].as_f64().unwrap() - mean).abs() < 1e-9, "{name}: {s} vs {mean}");
        overall.push(mean);
    }
    let csv = std::fs::read_to_string(out.join("comparisons.csv")).unwrap();
    assert!(csv.lines().any(|l| l.starts_with("Prompt,sandwich,first,") && l.contains(",all,")), "{csv}");
    // Rerun with --resume: every run is read back from runs/, none fine-tuned again.
    let (_, stderr) = ok(run(&out).arg("--resume"));
    assert_eq!(stderr.matches("already done").count(), 8, "{stderr}");
    let again: Value = serde_json::from_str(&std::fs::read_to_string(out.join("ablation.json")).unwrap()).unwrap();
    assert_eq!(again["ablation"]["runs"], json["ablation"]["runs"]);
    assert!(out.join("ablation.svg").is_file());

    // Without annotations, the questions carry their labels (as `score --input` items).
    let labelled = out.join("labelled.jsonl");
    let pope: Vec<Value> = lines(&eval_dir.join("pope/coco_pope_example.json"));
    let text: String = pope.iter().map(|l| format!("{}\n", json!({"question_id": l["question_id"], "image": l["image"], "text": l["text"], "label": l["label"], "category": "example"}))).collect();
    std::fs::write(&labelled, text).unwrap();
    let inline = tmp("ablate-real-inline");
    let mut cmd = bin();
    cmd.args(["ablate", "--data"]).arg(data.join("llava.json")).arg("--image-folder").arg(data.join("images"));
    cmd.arg("--questions").arg(&labelled).args(["--metric", "pope", "--checkpoint"]).arg(ck);
    cmd.args(["--prompts", "first,sandwich", "--scans", "uni,bi", "--seeds", "2", "--steps", "2", "--batch", "2"]);
    cmd.args(["--ctx-len", "96", "--max-tokens", "3", "--replicas", "1", "--lr", "1e-2", "--out"]).arg(&inline);
    ok(&mut cmd);
    let json: Value = serde_json::from_str(&std::fs::read_to_string(inline.join("ablation.json")).unwrap()).unwrap();
    let again: Vec<f64> =
        json["ablation"]["runs"].as_array().unwrap().iter().map(|r| r["overall"].as_f64().unwrap()).collect();
    assert_eq!(again, overall, "the same runs scored from inline labels");

    // Bad input: a JSON list of questions needs annotations; --jobs is the synthetic task's.
    let list = out.join("questions.json");
    std::fs::write(&list, "[]").unwrap();
    let mut cmd = bin();
    cmd.args(["ablate", "--data"]).arg(data.join("llava.json")).arg("--questions").arg(&list);
    cmd.args(["--metric", "pope", "--checkpoint"]).arg(ck).arg("--out").arg(out.join("bad"));
    fails(&mut cmd, "without --annotations the questions must be JSON lines");
}

/// A stage-1 checkpoint whose head prefers the ids past the World tokenizer's 65 529 (its head
/// has 65 536 rows, as every RWKV World model): `eval` and `chat` answer with ids the tokenizer
/// spells instead of stopping with "token id 65532 is outside the vocabulary", and both give
/// the same answer. A tokenizer the model's vocabulary cannot hold is refused at load.
#[test]
fn answers_use_only_ids_the_tokenizer_and_the_model_share() {
    use visualrwkv_checkpoint::{TensorMap, write_safetensors};
    let (data, ck) = setup();
    let dir = tmp("eval-unspellable");
    std::fs::create_dir_all(&dir).unwrap();
    let mut map = TensorMap::read_safetensors(ck).unwrap();
    // ln_out's output becomes all ones, so each logit is its head row's sum: the rows past the
    // tokenizer get 1.0 per column (sum = C) and the others a thousandth of their values.
    let c = {
        let (shape, w) = map.tensors.get_mut("rwkv.ln_out.weight").unwrap();
        w.fill(0.0);
        shape[0]
    };
    map.tensors.get_mut("rwkv.ln_out.bias").unwrap().1.fill(1.0);
    let (shape, head) = map.tensors.get_mut("rwkv.head.weight").unwrap();
    assert_eq!(shape[..], [65536, c]);
    let spelt = visualrwkv_tokenizer::Tokenizer::world().vocab_size();
    for (row, w) in head.chunks_mut(c).enumerate() {
        let v = if row > spelt { 1.0 } else { 0.0 };
        w.iter_mut().for_each(|x| *x = if v > 0.0 { v } else { *x * 1e-3 });
    }
    write_safetensors(&map, dir.join("model.safetensors")).unwrap();
    std::fs::copy(ck.with_file_name("vision_config.json"), dir.join("vision_config.json")).unwrap();
    let model = dir.join("model.safetensors");

    let questions = question_file(&dir);
    let answers = dir.join("answers.jsonl");
    let mut cmd = bin();
    cmd.args(["eval", "--checkpoint"]).arg(&model).arg("--questions").arg(&questions);
    cmd.arg("--image-folder").arg(data.join("images")).arg("--answers").arg(&answers).args(["--max-tokens", "4"]);
    ok(&mut cmd);
    let got = lines(&answers);
    assert_eq!(got.len(), QUESTIONS.len());
    let (_, image, text, _) = QUESTIONS[1];
    let (out, _) = ok(bin()
        .args(["chat", "--checkpoint"])
        .arg(&model)
        .arg("--image")
        .arg(data.join("images").join(image.unwrap()))
        .args(["--question", text, "--temperature", "0", "--max-tokens", "4"]));
    assert_eq!(got[1]["text"], json!(out.split("\n\n").next().unwrap().trim()));
    // Sampling at temperature 1 never draws the favoured rows either.
    ok(bin()
        .args(["chat", "--checkpoint"])
        .arg(&model)
        .arg("--image")
        .arg(data.join("images").join(image.unwrap()))
        .args(["--question", text, "--temperature", "1", "--top-p", "1", "--max-tokens", "8"]));

    // A model with fewer rows than the World tokenizer's ids: `auto` falls back to byte tokens,
    // `--tokenizer world` is an error at load naming the missing ids.
    let mut small = TensorMap::read_safetensors(ck).unwrap();
    let vocab = 300;
    for key in ["rwkv.emb.weight", "rwkv.head.weight"] {
        let (shape, w) = small.tensors.get_mut(key).unwrap();
        w.truncate(vocab * shape[1]);
        shape[0] = vocab;
    }
    write_safetensors(&small, dir.join("small.safetensors")).unwrap();
    let small = dir.join("small.safetensors");
    std::fs::copy(ck.with_file_name("vision_config.json"), dir.join("vision_config.json")).unwrap();
    let chat = |tokenizer: &str| {
        let mut cmd = bin();
        cmd.args(["chat", "--checkpoint"]).arg(&small).arg("--image").arg(data.join("images").join("000.jpg"));
        cmd.args([
            "--question",
            "Is there a circle?",
            "--temperature",
            "0",
            "--max-tokens",
            "4",
            "--tokenizer",
            tokenizer,
        ]);
        cmd
    };
    ok(&mut chat("auto"));
    fails(&mut chat("world"), "ids 300..=65529 are missing");
    let mut cmd = bin();
    cmd.args(["eval", "--checkpoint"]).arg(&small).arg("--questions").arg(&questions);
    cmd.arg("--image-folder").arg(data.join("images")).arg("--answers").arg(dir.join("small.jsonl"));
    ok(cmd.args(["--max-tokens", "4"]));
    assert_eq!(lines(&dir.join("small.jsonl")).len(), QUESTIONS.len());
}
