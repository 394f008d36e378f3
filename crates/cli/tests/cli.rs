//! The `visualrwkv` binary: goldens through `logits`, the tokenizer through `tokenize`, errors as
//! messages with a non-zero exit (never a panic).

mod common;

use common::{bin, fixture, max_diff, read, tmp};

fn golden_tokens() -> Vec<i64> {
    let bytes = std::fs::read(fixture("rwkv6_tiny_a_golden.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensor("tokens").unwrap().data().chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap())).collect()
}

/// Both engines of `logits` — the fused decoder (`auto` on the CPU) and the model's tensor ops
/// (`burn`) — give every row's logits and the final state of the official package.
#[test]
fn logits_command_reproduces_the_goldens() {
    let tokens = golden_tokens().iter().map(|t| t.to_string()).collect::<Vec<_>>().join(",");
    let model = "rwkv6_tiny_a_weights.safetensors";
    for decoder in ["auto", "burn"] {
        let (out, state) =
            (tmp(&format!("logits-{decoder}.safetensors")), tmp(&format!("state-{decoder}.safetensors")));
        let st = bin()
            .args(["logits", "--decoder", decoder, "--model", &fixture(model), "--tokens", &tokens, "--out"])
            .arg(&out)
            .arg("--state-out")
            .arg(&state)
            .status()
            .unwrap();
        assert!(st.success());
        let golden = read(std::path::Path::new(&fixture("rwkv6_tiny_a_golden.safetensors")));
        let got = read(&out);
        assert_eq!(got["logits"].0, vec![32, 256]);
        let d = max_diff(&got["logits"].1, &golden["logits"].1);
        assert!(d <= 1e-4, "{decoder}: logits max diff {d:e}");
        let got = read(&state);
        for l in 0..2 {
            for name in ["att_shift", "wkv", "ffn_shift"] {
                let k = format!("state.{l}.{name}");
                assert_eq!(got[&k].0, golden[&k].0, "{decoder} {k}");
                let d = max_diff(&got[&k].1, &golden[&k].1);
                assert!(d <= 1e-4, "{decoder} {k}: max diff {d:e}");
            }
        }
    }
}

#[test]
fn logits_resume_from_a_saved_mid_sequence_state() {
    let tokens = golden_tokens();
    let join = |t: &[i64]| t.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(",");
    let model = fixture("rwkv6_tiny_a_weights.safetensors");
    let (mid, out) = (tmp("mid-state.safetensors"), tmp("resumed.safetensors"));
    let st = bin()
        .args(["logits", "--model", &model, "--tokens", &join(&tokens[..13]), "--out"])
        .arg(tmp("first.safetensors"))
        .arg("--state-out")
        .arg(&mid)
        .status()
        .unwrap();
    assert!(st.success());
    let golden = read(std::path::Path::new(&fixture("rwkv6_tiny_a_golden.safetensors")));
    let saved = read(&mid);
    for l in 0..2 {
        for name in ["att_shift", "wkv", "ffn_shift"] {
            let d = max_diff(&saved[&format!("state.{l}.{name}")].1, &golden[&format!("state_mid.{l}.{name}")].1);
            assert!(d <= 1e-4, "state_mid.{l}.{name}: {d:e}");
        }
    }
    let st = bin()
        .args(["logits", "--model", &model, "--tokens", &join(&tokens[13..]), "--state-in"])
        .arg(&mid)
        .arg("--out")
        .arg(&out)
        .status()
        .unwrap();
    assert!(st.success());
    let d = max_diff(&read(&out)["logits"].1, &golden["logits"].1[13 * 256..]);
    assert!(d <= 1e-4, "resumed logits: {d:e}");
    // A state of the wrong model is an error.
    let bad = tmp("bad-state.safetensors");
    std::fs::copy(fixture("wkv6_b1_t5_h3.safetensors"), &bad).unwrap();
    let o = bin()
        .args(["logits", "--model", &model, "--tokens", "1", "--state-in"])
        .arg(&bad)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("missing key `state.0.att_shift`"));
}

#[test]
fn convert_pth_then_logits() {
    let conv = tmp("converted.safetensors");
    let st = bin()
        .args(["convert", "--from", &fixture("rwkv6_tiny_a_weights_bf16.pth"), "--to"])
        .arg(&conv)
        .status()
        .unwrap();
    assert!(st.success());
    let out = tmp("conv-logits.safetensors");
    let st = bin()
        .args(["logits", "--model"])
        .arg(&conv)
        .args(["--tokens", "22,150,73", "--out"])
        .arg(&out)
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(read(&out)["logits"].0, vec![3, 256]);
}

/// `convert --quantize` writes a smaller file that every command reads; the fused decoder of the
/// same type generates the same text from it as from the f32 checkpoint (the same codes).
#[test]
fn convert_quantize_then_generate() {
    let model = fixture("rwkv6_tiny_a_weights.safetensors");
    let generate = |path: &str, decoder: &str| {
        let o = bin()
            .args(["generate", "--model", path, "--prompt", "~", "--temperature", "0", "--max-tokens", "6"])
            .args(["--decoder", decoder])
            .output()
            .unwrap();
        assert!(o.status.success(), "{path} {decoder}: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let full = std::fs::metadata(&model).unwrap().len() as f64;
    for (q, most) in [("i8", 0.5), ("q4", 0.4)] {
        let conv = tmp(&format!("quantised-{q}.safetensors"));
        let st = bin().args(["convert", "--from", &model, "--quantize", q, "--to"]).arg(&conv).status().unwrap();
        assert!(st.success());
        let len = std::fs::metadata(&conv).unwrap().len() as f64;
        assert!(len < most * full, "{q}: {len} bytes against {full}");
        let conv = conv.to_string_lossy().into_owned();
        assert_eq!(generate(&conv, q), generate(&model, q), "{q}");
        // The tensor ops read the dequantised weights.
        assert!(!generate(&conv, "burn").is_empty());
    }
    let o = bin().args(["convert", "--from", &model, "--quantize", "q3", "--to", "/tmp/x"]).output().unwrap();
    assert!(!o.status.success());
}

#[test]
fn info_prints_the_inferred_config() {
    let o = bin().args(["info", "--model", &fixture("rwkv6_tiny_a_weights.safetensors")]).output().unwrap();
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["n_layer"], 2);
    assert_eq!(v["n_embd"], 128);
    assert_eq!(v["dim_ffn"], 256);
    assert_eq!(v["d_decay_lora"], 64);
}

#[test]
fn tokenize_and_detokenize() {
    let o = bin().args(["tokenize", "--text", "User: What is the man holding?\n\nAssistant:"]).output().unwrap();
    assert!(o.status.success());
    let ids: Vec<u32> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(ids, [24281, 59, 30031, 4600, 22590, 22068, 51932, 64, 261, 5585, 41693, 59]);
    let o = bin().args(["detokenize", "--ids", "5585,41693,59,21186"]).output().unwrap();
    assert_eq!(String::from_utf8(o.stdout).unwrap(), "Assistant: Yes");
}

#[test]
fn generate_streams_text() {
    // The fused decoder (default f32), bf16 weights and the tensor ops: greedy f32 and tensor ops
    // print the same text.
    let mut texts = Vec::new();
    for decoder in ["f32", "bf16", "burn"] {
        let o = bin()
            .args([
                "generate",
                "--model",
                &fixture("rwkv6_tiny_a_weights.safetensors"),
                "--prompt",
                "~",
                "--temperature",
                "0",
                "--max-tokens",
                "5",
                "--decoder",
                decoder,
            ])
            .output()
            .unwrap();
        assert!(o.status.success(), "{decoder}: {}", String::from_utf8_lossy(&o.stderr));
        texts.push(String::from_utf8_lossy(&o.stdout).into_owned());
    }
    assert_eq!(texts[0], texts[2]);
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let refused = common::tmp_str("refused-demo");
    let model = fixture("rwkv6_tiny_a_weights.safetensors");
    // Each case: arguments separated by '|'.
    let cases = [
        "logits|--model|/nonexistent.safetensors|--tokens|1|--out|/tmp/x".to_string(),
        format!("logits|--model|{model}|--tokens|1,x|--out|/tmp/x"),
        format!("logits|--model|{model}|--tokens|1,256|--out|/tmp/x"),
        format!("logits|--model|{model}|--tokens||--out|/tmp/x"),
        format!("info|--model|{}", fixture("tokenizer_cases.jsonl")),
        "detokenize|--ids|0".to_string(),
        format!("generate|--model|{model}|--prompt|"),
        format!("generate|--model|{model}|--prompt|x|--top-p|0"),
        format!("generate|--model|{model}|--prompt|x|--decoder|f8"),
        "tokenize|--file|/nonexistent.txt".to_string(),
        format!("demo|--types|color,spiral|--steps|1|--out|{refused}"),
        format!("demo|--replicas|2|--devices|cpu|--steps|1|--out|{refused}"),
        format!("demo|--replicas|0|--steps|1|--out|{refused}"),
        format!("demo|--head-size|24|--steps|1|--out|{refused}"),
        format!("demo|--distractors|9|--steps|1|--out|{refused}"),
        "ablate|--seeds|0|--steps|1".to_string(),
    ];
    let cases: Vec<(Vec<&str>, &str)> = cases.iter().map(|c| (c.split('|').collect(), "error")).collect();
    common::assert_failures(&cases);
    // A refused run writes nothing (no folder, no empty metrics files).
    assert!(!std::path::Path::new(&refused).exists(), "{refused} was created");
}

/// `ablate` at a tiny budget: every combination × seed trains, the report holds the paper's claims
/// with intervals and verdicts, and two parallel jobs give exactly the runs of one.
#[test]
fn ablate_reports_intervals_and_verdicts_and_jobs_do_not_change_results() {
    let mut accuracies = Vec::new();
    for jobs in ["1", "2"] {
        let out = tmp(&format!("ablate-{jobs}"));
        let o = bin()
            .args(["ablate", "--prompts", "first,last,sandwich", "--scans", "uni,bi", "--seeds", "2"])
            .args(["--jobs", jobs, "--steps", "2", "--batch", "4", "--train-images", "12", "--test-images", "4"])
            .args(["--questions-per-image", "2", "--layers", "2", "--out"])
            .arg(&out)
            .output()
            .unwrap();
        assert!(o.status.success(), "jobs {jobs}: {}", String::from_utf8_lossy(&o.stderr));
        let md = std::fs::read_to_string(out.join("ablation.md")).unwrap();
        for want in ["| Table 3 | sandwich > first |", "| Table 4 | bi > uni |", "Table 3: sandwich > image-first"] {
            assert!(
                md.contains(want),
                "{want} missing from
{md}"
            );
        }
        assert!(["reproduced", "contradicted", "inconclusive"].iter().any(|v| md.contains(v)), "{md}");
        let csv = std::fs::read_to_string(out.join("ablation.csv")).unwrap();
        assert_eq!(csv.lines().count(), 1 + 3 * 2 * 2, "{csv}");
        let comparisons = std::fs::read_to_string(out.join("comparisons.csv")).unwrap();
        assert!(comparisons.starts_with("factor,a,b,claim,source,question_type,mean,low,high,verdict\n"));
        assert!(comparisons.lines().any(|l| l.starts_with("Scan,bi,uni,better,Table 4,all,")), "{comparisons}");
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("ablation.json")).unwrap()).unwrap();
        assert_eq!(json["ablation"]["runs"].as_array().unwrap().len(), 12);
        assert!(std::fs::read_to_string(out.join("ablation.svg")).unwrap().contains("<svg"));
        // Everything but the timing column.
        let runs: Vec<String> = csv
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split(',').collect();
                [&f[..4], &f[5..]].concat().join(",")
            })
            .collect();
        accuracies.push(runs);
    }
    assert_eq!(accuracies[0], accuracies[1], "--jobs 2 changed the runs");

    // An interrupted ablation resumes: with 3 runs' files gone, --resume trains those 3 and reads
    // the other 9 back, and the reports are the same.
    let out = tmp("ablate-1");
    let runs = out.join("runs");
    assert_eq!(std::fs::read_dir(&runs).unwrap().count(), 12, "one file per finished run");
    for name in ["first-uni-seed0.json", "last-bi-seed1.json", "sandwich-uni-seed1.json"] {
        std::fs::remove_file(runs.join(name)).unwrap();
    }
    let csv_before = std::fs::read_to_string(out.join("ablation.csv")).unwrap();
    let resume = |extra: &[&str]| {
        bin()
            .args(["ablate", "--prompts", "first,last,sandwich", "--scans", "uni,bi", "--seeds", "2", "--resume"])
            .args(["--steps", "2", "--batch", "4", "--train-images", "12", "--test-images", "4"])
            .args(["--questions-per-image", "2", "--layers", "2"])
            .args(extra)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap()
    };
    let o = resume(&[]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert_eq!(stderr.matches("already done").count(), 9, "{stderr}");
    assert_eq!(stderr.matches("s of training").count(), 3, "{stderr}");
    // Seed by seed: every combination's seed 0 comes before any seed 1.
    assert!(stderr.contains("[2/12] prompt first, scan bi, seed 0"), "{stderr}");
    assert!(stderr.contains("[7/12] prompt first, scan uni, seed 1"), "{stderr}");
    let without_timing = |csv: &str| -> Vec<String> {
        csv.lines().map(|l| l.split(',').enumerate().filter(|(i, _)| *i != 4).map(|(_, f)| f).collect()).collect()
    };
    let csv_after = std::fs::read_to_string(out.join("ablation.csv")).unwrap();
    assert_eq!(without_timing(&csv_after), without_timing(&csv_before));
    // Runs stored under other settings are not mixed into a changed experiment.
    let o = resume(&["--lr", "1e-3"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("other settings"), "{}", String::from_utf8_lossy(&o.stderr));
}

/// The main job at a tiny budget: `demo` trains, evaluates, answers and saves, on one CPU device
/// and data-parallel on two CPU replicas (the same loss curve: the replicas sum to one device's
/// update).
#[test]
fn demo_trains_reports_and_saves_on_one_and_two_devices() {
    let mut losses = Vec::new();
    for devices in ["cpu", "cpu,cpu"] {
        let out = tmp(&format!("demo-{}", devices.replace(',', "-")));
        let o = bin()
            .args(["demo", "--steps", "4", "--batch", "4", "--train-images", "12", "--test-images", "4"])
            .args(["--questions-per-image", "2", "--examples", "1", "--devices", devices, "--out"])
            .arg(&out)
            .output()
            .unwrap();
        assert!(o.status.success(), "{devices}: {}", String::from_utf8_lossy(&o.stderr));
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert!(stdout.contains("held-out (test split) accuracy"), "{stdout}");
        for f in [
            "metrics.jsonl",
            "metrics.csv",
            "loss.svg",
            "report.md",
            "example-0.png",
            "checkpoint/model.safetensors",
            "checkpoint/vision_config.json",
            "checkpoint/vocab.txt",
            "checkpoint/trainer/trainer.json",
        ] {
            assert!(out.join(f).exists(), "{devices}: {f} missing");
        }
        // The printed `chat` command asks the saved model the first example's question and gets
        // the demo's own answer.
        let command = stdout.lines().skip_while(|l| !l.starts_with("ask the trained model")).nth(1).unwrap();
        let (flags, question) = command.trim().split_once(" --question \"").unwrap();
        let args: Vec<&str> = flags.split_whitespace().skip(1).collect();
        let chat = bin()
            .args(&args)
            .args(["--decoder", "burn", "--question", question.trim_end_matches('"')])
            .output()
            .unwrap();
        assert!(chat.status.success(), "{command}: {}", String::from_utf8_lossy(&chat.stderr));
        let demo_answer =
            stdout.lines().find_map(|l| l.strip_prefix("A: ")).unwrap().split("   (expected").next().unwrap();
        assert_eq!(String::from_utf8_lossy(&chat.stdout).trim(), demo_answer.trim(), "{command}");
        let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
        let steps: Vec<f64> = metrics
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"].as_f64().unwrap())
            .collect();
        assert_eq!(steps.len(), 4);
        losses.push(steps);
    }
    for (a, b) in losses[0].iter().zip(&losses[1]) {
        assert!((a - b).abs() <= 1e-5, "one device {a} vs two replicas {b}");
    }
}
