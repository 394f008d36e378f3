//! RWKV-7 (x070) through the binary: `info` tells the version from the keys, `logits` gives the
//! official package's logits and states for `.pth` and safetensors checkpoints and resumes from
//! a saved state, on the fused CPU decoder and on the model's tensor ops; `convert` round-trips
//! and quantises, `generate` runs an x070 World-vocabulary model on both engines; `dataset
//! --format v700` (VisualRWKV-7's data format) against the official dataset code.

mod common;

use common::{assert_failures, bin, fixture, max_diff, ok_output, read, tmp, tmp_str};

fn golden() -> common::Floats {
    read(std::path::Path::new(&fixture("x070/x070_tiny_golden.safetensors")))
}

fn tokens(range: std::ops::Range<usize>) -> String {
    golden()["tokens"].1[range].iter().map(|t| (*t as i64).to_string()).collect::<Vec<_>>().join(",")
}

#[test]
fn info_tells_x070_from_x060() {
    let (out, _) = ok_output(bin().args(["info", "--model", &fixture("x070/x070_tiny_weights.pth")]));
    let info: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(info["version"], "x070");
    assert_eq!(
        (info["n_layer"].as_u64(), info["n_head"].as_u64(), info["d_gate_lora"].as_u64()),
        (Some(2), Some(2), Some(24))
    );
    let (out, _) = ok_output(bin().args(["info", "--model", &fixture("rwkv6_tiny_a_weights.safetensors")]));
    assert_eq!(serde_json::from_str::<serde_json::Value>(&out).unwrap()["version"], "x060");
}

#[test]
fn logits_reproduce_the_package_and_resume_from_a_state() {
    let g = golden();
    let runs = [
        ("x070/x070_tiny_weights.safetensors", "auto"),
        ("x070/x070_tiny_weights.pth", "auto"),
        ("x070/x070_tiny_weights.safetensors", "burn"),
    ];
    for (model, decoder) in runs {
        let (out, state) = (tmp_str("x070-logits.safetensors"), tmp_str("x070-state.safetensors"));
        ok_output(bin().args([
            "logits",
            "--model",
            &fixture(model),
            "--tokens",
            &tokens(0..24),
            "--decoder",
            decoder,
            "--out",
            &out,
            "--state-out",
            &state,
        ]));
        let got = read(&out);
        assert_eq!(got["logits"].0, vec![24, 128]);
        let d = max_diff(&got["logits"].1, &g["logits"].1);
        assert!(d <= 1e-4, "{model} --decoder {decoder}: logits max diff {d:e}");
        let got = read(&state);
        for l in 0..2 {
            for name in ["att_shift", "wkv", "ffn_shift"] {
                let k = format!("state.{l}.{name}");
                assert_eq!(got[&k].0, g[&k].0, "{k}");
                assert!(max_diff(&got[&k].1, &g[&k].1) <= 1e-4, "{model} --decoder {decoder} {k}");
            }
        }
    }
    let model = fixture("x070/x070_tiny_weights.safetensors");
    let (mid, out) = (tmp_str("x070-mid.safetensors"), tmp_str("x070-resumed.safetensors"));
    ok_output(bin().args([
        "logits",
        "--model",
        &model,
        "--tokens",
        &tokens(0..13),
        "--out",
        &tmp_str("x070-first.safetensors"),
        "--state-out",
        &mid,
    ]));
    ok_output(bin().args([
        "logits",
        "--model",
        &model,
        "--tokens",
        &tokens(13..24),
        "--state-in",
        &mid,
        "--out",
        &out,
    ]));
    let d = max_diff(&read(&out)["logits"].1, &g["logits"].1[13 * 128..]);
    assert!(d <= 1e-4, "resumed logits: {d:e}");
}

/// `convert` from `.pth`, and `convert --quantize`: the fused decoder of the same type gives the
/// same logits from the quantised file as from the f32 one (the same codes), close to f32's.
#[test]
fn convert_pth_then_logits_and_quantize() {
    let converted = tmp_str("x070-converted.safetensors");
    ok_output(bin().args(["convert", "--from", &fixture("x070/x070_tiny_weights.pth"), "--to", &converted]));
    let out = tmp_str("x070-conv-logits.safetensors");
    ok_output(bin().args(["logits", "--model", &converted, "--tokens", &tokens(0..24), "--out", &out]));
    assert!(max_diff(&read(&out)["logits"].1, &golden()["logits"].1) <= 1e-4);
    let logits = |model: &str, decoder: &str| {
        let out = tmp_str(&format!("x070-{decoder}-logits.safetensors"));
        ok_output(bin().args([
            "logits",
            "--model",
            model,
            "--tokens",
            &tokens(0..24),
            "--decoder",
            decoder,
            "--out",
            &out,
        ]));
        read(&out)["logits"].1.clone()
    };
    for (q, tol) in [("i8", 0.1), ("q4", 1.0)] {
        let quantised = tmp_str(&format!("x070-{q}.safetensors"));
        ok_output(bin().args(["convert", "--from", &converted, "--to", &quantised, "--quantize", q]));
        let from_f32 = logits(&converted, q);
        assert!(logits(&quantised, q) == from_f32, "{q}: the quantised file decodes differently");
        let d = max_diff(&from_f32, &golden()["logits"].1);
        assert!(d > 0.0 && d < tol, "{q}: max diff {d:e} from the package's f32 logits");
    }
}

#[test]
fn generate_runs_an_x070_world_model() {
    let dir = tmp("x070-example");
    ok_output(bin().args(["example-data", "--images", "1", "--out"]).arg(&dir));
    let model = dir.join("rwkv7.safetensors");
    let (info, _) = ok_output(bin().args(["info", "--model"]).arg(&model));
    assert!(info.contains("\"x070\""), "{info}");
    let args =
        ["generate", "--prompt", "User: hi\n\nAssistant:", "--max-tokens", "6", "--temperature", "0", "--stop", "0"];
    let (fused, _) = ok_output(bin().args(args).arg("--model").arg(&model));
    let (burn, _) = ok_output(bin().args(args).args(["--decoder", "burn", "--model"]).arg(&model));
    assert!(!fused.trim().is_empty(), "no text generated");
    assert_eq!(fused, burn, "the fused decoder and the tensor ops generate the same greedy text");

    // `--v700-padding`: v7.00's left-padded decoding, as the library computes it.
    let (padded, _) = ok_output(bin().args(args).arg("--v700-padding").arg("--model").arg(&model));
    let lm = visualrwkv_rwkv::LanguageModel::<burn::backend::NdArray>::load(&model, &Default::default()).unwrap();
    let options = visualrwkv::GenerateOptions {
        sampling: visualrwkv_rwkv::SamplingOptions { temperature: 0.0, ..Default::default() },
        max_tokens: 6,
        stop_tokens: vec![0],
        ..Default::default()
    };
    let want = visualrwkv::generate_tokens_v700_padded(
        &lm,
        visualrwkv_tokenizer::Tokenizer::world(),
        "User: hi\n\nAssistant:",
        &options,
        |_| {},
    )
    .unwrap();
    assert_eq!(padded.strip_suffix('\n').unwrap_or(&padded), want.text, "generate --v700-padding");
}

/// VisualRWKV on RWKV-7 end to end on the example data: `train --arch x070` stage 1 from the
/// RWKV-7 checkpoint and the CLIP tower, stage 2 from its checkpoint (the loss falls), the
/// checkpoint in the official layout with x070 keys, then `chat` and `eval` on it; `--arch`
/// that disagrees with the checkpoint is refused.
#[test]
fn train_chat_and_eval_with_arch_x070() {
    let data = tmp("x070-train");
    ok_output(bin().args(["example-data", "--images", "6", "--width", "32", "--out"]).arg(&data));
    let train = |stage: &str, from: &[(&str, std::path::PathBuf)], flags: &[&str], out: &std::path::Path| {
        let mut cmd = bin();
        cmd.args(["train", "--arch", "x070", "--stage", stage]);
        for (name, path) in from {
            cmd.arg(name).arg(path);
        }
        cmd.arg("--data").arg(data.join("llava.json")).arg("--image-folder").arg(data.join("images"));
        cmd.args(["--ctx-len", "96", "--workers", "2"]).args(flags).arg("--out").arg(out);
        cmd
    };
    let s1 = data.join("stage1");
    let parts = [("--rwkv", data.join("rwkv7.safetensors")), ("--vision", data.join("clip"))];
    ok_output(&mut train("1", &parts, &["--batch", "2", "--steps", "3", "--lr", "1e-2"], &s1));
    let bytes = std::fs::read(s1.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    for (key, shape) in [
        ("rwkv.blocks.0.att.r_k", vec![2, 16]),
        ("rwkv.blocks.1.att.v1", vec![32, 8]),
        ("rwkv.blocks.0.ffn.key.weight", vec![128, 32]),
        ("proj.weight", vec![32, 32]),
    ] {
        assert_eq!(st.tensor(key).unwrap_or_else(|_| panic!("no {key}")).shape(), shape, "{key}");
    }
    assert!(st.tensor("rwkv.blocks.0.att.v1").is_err(), "the first block has no value-residual LoRA");

    let s2 = data.join("stage2");
    let checkpoint = [("--checkpoint", s1.join("model.safetensors"))];
    ok_output(&mut train("2", &checkpoint, &["--batch", "4", "--steps", "16", "--lr", "3e-3"], &s2));
    let losses: Vec<f64> = std::fs::read_to_string(s2.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"].as_f64().unwrap())
        .collect();
    assert_eq!(losses.len(), 16);
    let (first, last) = (losses[..4].iter().sum::<f64>() / 4.0, losses[12..].iter().sum::<f64>() / 4.0);
    assert!(last < 0.9 * first, "stage-2 loss {first:.3} -> {last:.3}");

    let model = s2.join("model.safetensors");
    let (answer, _) = ok_output(
        bin()
            .args(["chat", "--arch", "x070", "--checkpoint"])
            .arg(&model)
            .arg("--image")
            .arg(data.join("images/000.jpg"))
            .args(["--question", "What color is the shape?", "--max-tokens", "6"]),
    );
    assert!(!answer.trim().is_empty(), "no answer");
    let questions = data.join("questions.jsonl");
    std::fs::write(
        &questions,
        "{\"question_id\": 1, \"image\": \"000.jpg\", \"text\": \"What color is the shape?\"}\n{\"question_id\": 2, \"text\": \"Is there a circle?\"}\n",
    )
    .unwrap();
    let answers = data.join("answers.jsonl");
    ok_output(
        bin()
            .args(["eval", "--arch", "x070", "--checkpoint"])
            .arg(&model)
            .arg("--questions")
            .arg(&questions)
            .arg("--image-folder")
            .arg(data.join("images"))
            .arg("--answers")
            .arg(&answers)
            .args(["--max-tokens", "4"]),
    );
    let lines: Vec<serde_json::Value> =
        std::fs::read_to_string(&answers).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    assert!(lines.iter().all(|l| l["text"].is_string()));
    // v7.00's left-padded decoding answers the same questions.
    let padded = data.join("answers-v700.jsonl");
    ok_output(
        bin()
            .args(["eval", "--arch", "x070", "--v700-padding", "--checkpoint"])
            .arg(&model)
            .arg("--questions")
            .arg(&questions)
            .arg("--image-folder")
            .arg(data.join("images"))
            .arg("--answers")
            .arg(&padded)
            .args(["--max-tokens", "4"]),
    );
    assert_eq!(std::fs::read_to_string(&padded).unwrap().lines().count(), 2);

    // The fused decoder answers too; `--arch` must agree with the checkpoint.
    let (model, image) = (model.to_str().unwrap(), data.join("images/000.jpg"));
    let chat = |flags: [&'static str; 2]| {
        let mut args = vec!["chat", flags[0], flags[1], "--checkpoint", model, "--image"];
        args.extend([image.to_str().unwrap(), "--question", "hi"]);
        args
    };
    let (fused, _) = ok_output(bin().args(chat(["--decoder", "i8"])));
    assert!(!fused.trim().is_empty(), "no answer from the fused decoder");
    assert_failures(&[(chat(["--arch", "x060"]), "--arch x060")]);
}

/// `dataset --format v700` writes v7.00's ids and labels (padded to --ctx-len) for every sample
/// of the official-format fixture, equal to the official `src/dataset.py`; missing images stop
/// it, or are skipped and counted.
#[test]
fn dataset_writes_the_v700_format() {
    let data = fixture("v700/v700_dev.json");
    let folder = tmp("v700-images");
    let records = visualrwkv_data::v700::read_v700(&data).unwrap();
    for image in records.iter().flat_map(|r| &r.images) {
        let path = folder.join(image);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"present").unwrap();
    }
    let out = tmp_str("v700-tokenized.jsonl");
    let args = ["dataset", "--format", "v700", "--num-token-per-image", "4", "--ctx-len", "40", "--data", &data];
    let (stdout, _) = ok_output(bin().args(args).arg("--image-folder").arg(&folder).args(["--out", &out]));
    assert!(stdout.contains("samples 7 · images 11"), "{stdout}");
    let golden: Vec<serde_json::Value> = std::fs::read_to_string(fixture("v700/v700_dev_golden.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|g: &serde_json::Value| g["num_token_per_image"] == 4)
        .collect();
    let lines: Vec<serde_json::Value> =
        std::fs::read_to_string(&out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 7);
    for line in &lines {
        // The capitalised-role sample is labelled as its lowercase twin (the official
        // case-sensitive masking is a bug not copied), so compare ids only for it.
        let g = golden.iter().find(|g| g["id"] == line["id"]).unwrap();
        assert_eq!(line["input_ids"], g["padded_ids"], "{}", line["id"]);
        assert_eq!(line["input_text"], g["input_text"], "{}", line["id"]);
        if line["id"] != "images_in_two_turns" {
            assert_eq!(line["labels"], g["padded_labels"], "{}", line["id"]);
        }
    }
    let empty = tmp("v700-no-images");
    let (stdout, _) = ok_output(bin().args(args).arg("--image-folder").arg(&empty).args([
        "--on-missing-image",
        "skip",
        "--out",
        &out,
    ]));
    assert!(stdout.contains("skipped (missing image) 6") && stdout.contains("(1 samples)"), "{stdout}");
    let empty = empty.to_str().unwrap();
    assert_failures(&[(
        [args.as_slice(), &["--image-folder", empty, "--out", &out]].concat(),
        "sample single_first: image",
    )]);
}
