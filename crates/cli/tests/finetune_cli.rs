//! Fine-tuning end to end through the binary: `example-data` writes a tiny LLaVA-format dataset
//! (JPEG and PNG images, multi-turn and text-only samples) and tiny official-layout checkpoints;
//! `dataset` → `train --stage 1` → `train --stage 2` → `chat` on the saved `model.safetensors`;
//! a resumed run equals an uninterrupted one bit for bit; a run killed while saving leaves a
//! complete checkpoint it resumes from.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{bin, tmp};

fn ok(cmd: &mut Command) -> String {
    common::ok_output(cmd).0
}

fn example_data(name: &str) -> PathBuf {
    let dir = tmp(name);
    ok(bin().args(["example-data", "--images", "6", "--width", "32", "--out"]).arg(&dir));
    dir
}

fn losses(out: &Path) -> Vec<f64> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"].as_f64().unwrap())
        .collect()
}

/// `train` on the example's dataset: `stage`, the model flags `from`, then `flags`, into `out`.
fn train(data: &Path, stage: &str, from: &[&Path], flags: &[&str], out: &Path) -> Command {
    let mut cmd = bin();
    cmd.args(["train", "--stage", stage]);
    let names: &[&str] = if from.len() == 1 { &["--checkpoint"] } else { &["--rwkv", "--vision"] };
    for (name, path) in names.iter().zip(from) {
        cmd.arg(name).arg(path);
    }
    cmd.arg("--data").arg(data.join("llava.json")).arg("--image-folder").arg(data.join("images"));
    cmd.args(["--ctx-len", "96", "--workers", "2"]).args(flags).arg("--out").arg(out);
    cmd
}

/// A small stage-2 run from the example's RWKV and CLIP parts, saving every step.
fn stage2(data: &Path, out: &Path, steps: usize) -> Command {
    let steps = steps.to_string();
    let flags =
        ["--batch", "2", "--grad-accum", "2", "--lr", "3e-3", "--steps", &steps, "--save-every", "1", "--seed", "5"];
    train(data, "2", &[&data.join("rwkv.safetensors"), &data.join("clip")], &flags, out)
}

#[test]
fn dataset_train_and_chat_end_to_end() {
    let data = example_data("e2e");
    let jsonl = data.join("tokens.jsonl");
    let report = ok(bin()
        .args(["dataset", "--prompt", "sandwich", "--ctx-len", "96", "--image-rows", "17", "--data"])
        .arg(data.join("llava.json"))
        .arg("--image-folder")
        .arg(data.join("images"))
        .arg("--vision-config")
        .arg(data.join("clip/config.json"))
        .arg("--out")
        .arg(&jsonl));
    assert!(report.contains("samples 14 · with image 12 · text-only 2"), "{report}");
    let lines: Vec<serde_json::Value> =
        std::fs::read_to_string(&jsonl).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 14);
    for l in &lines {
        let (ids, labels) = (l["input_ids"].as_array().unwrap(), l["labels"].as_array().unwrap());
        assert_eq!(ids.len(), labels.len(), "{}", l["id"]);
        let images = ids.iter().filter(|&t| t == -200).count();
        assert_eq!(images, usize::from(!l["id"].as_str().unwrap().starts_with("text")), "{}", l["id"]);
    }

    // Stage 1 trains a new projector between the RWKV checkpoint and the CLIP tower.
    let s1 = data.join("stage1");
    let parts = [data.join("rwkv.safetensors"), data.join("clip")];
    ok(&mut train(&data, "1", &[&parts[0], &parts[1]], &["--batch", "2", "--steps", "4", "--lr", "1e-2"], &s1));
    let bytes = std::fs::read(s1.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    // The official VisualRWKV layout: RWKV-LM x060 names and shapes, HF tower names, `proj`.
    for (key, shape) in [
        ("rwkv.emb.weight", vec![65536, 32]),
        ("rwkv.blocks.0.ln0.weight", vec![32]),
        ("rwkv.blocks.1.att.time_maa_x", vec![1, 1, 32]),
        ("rwkv.blocks.1.att.time_faaaa", vec![2, 16]),
        ("rwkv.head.weight", vec![65536, 32]),
        ("vit.vision_model.embeddings.class_embedding", vec![32]),
        ("vit.vision_model.embeddings.patch_embedding.weight", vec![32, 3, 8, 8]),
        ("proj.weight", vec![32, 32]),
    ] {
        assert_eq!(st.tensor(key).unwrap_or_else(|_| panic!("no {key}")).shape(), shape, "{key}");
    }
    assert!(st.names().iter().all(|k| ["rwkv.", "vit.vision_model.", "proj."].iter().any(|p| k.starts_with(p))));
    assert!(s1.join("vision_config.json").is_file() && s1.join("loss.svg").is_file());

    // Stage 2 from the stage-1 checkpoint: the loss falls.
    let s2 = data.join("stage2");
    let flags = ["--batch", "4", "--steps", "20", "--lr", "3e-3"];
    ok(&mut train(&data, "2", &[&s1.join("model.safetensors")], &flags, &s2));
    let l = losses(&s2);
    assert_eq!(l.len(), 20);
    let (first, last) = (l[..5].iter().sum::<f64>() / 5.0, l[15..].iter().sum::<f64>() / 5.0);
    assert!(last < 0.9 * first, "stage-2 loss {first:.3} -> {last:.3}");
    let csv = std::fs::read_to_string(s2.join("metrics.csv")).unwrap();
    assert_eq!(csv.lines().count(), 21);

    // `chat` answers from the saved checkpoint (its tower config beside it), on a JPEG.
    let answer = ok(bin()
        .args(["chat", "--checkpoint"])
        .arg(s2.join("model.safetensors"))
        .arg("--image")
        .arg(data.join("images/000.jpg"))
        .args(["--question", "What color is the shape?", "--max-tokens", "8"]));
    assert!(!answer.trim().is_empty(), "no answer");
}

fn same_files(a: &Path, b: &Path) {
    for name in ["model.safetensors", "metrics.jsonl"] {
        let (x, y) = (std::fs::read(a.join(name)).unwrap(), std::fs::read(b.join(name)).unwrap());
        if name == "metrics.jsonl" {
            // Timings differ; the losses must not.
            assert_eq!(losses(a), losses(b), "{name}");
        } else {
            assert!(x == y, "{name} differs between {} and {}", a.display(), b.display());
        }
    }
}

#[test]
fn resume_equals_uninterrupted_and_survives_a_kill_during_save() {
    let data = example_data("resume");
    let whole = data.join("whole");
    ok(&mut stage2(&data, &whole, 8));

    // Stopped after 3 steps, then resumed with the same command line.
    let parts = data.join("parts");
    ok(stage2(&data, &parts, 8).args(["--stop-after", "3"]));
    assert_eq!(losses(&parts).len(), 3);
    ok(stage2(&data, &parts, 8).arg("--resume"));
    same_files(&whole, &parts);

    // Killed while a checkpoint is being written (a temporary file exists), then resumed.
    let mut caught = 0;
    for attempt in 0..4 {
        let killed = data.join(format!("killed-{attempt}"));
        let mut child = stage2(&data, &killed, 8).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        let in_save = |dir: &Path| {
            std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .any(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        };
        let mut hit = false;
        while child.try_wait().unwrap().is_none() {
            if killed.join("trainer/trainer.json").is_file() && (in_save(&killed) || in_save(&killed.join("trainer"))) {
                child.kill().unwrap();
                hit = true;
                break;
            }
        }
        child.wait().unwrap();
        if !hit {
            continue;
        }
        caught += 1;
        // What is there is complete: the user-facing weights parse and load, and the resume state
        // names files that exist.
        let bytes = std::fs::read(killed.join("model.safetensors")).unwrap();
        assert!(safetensors::SafeTensors::deserialize(&bytes).is_ok(), "model.safetensors is partial");
        let meta: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(killed.join("trainer/trainer.json")).unwrap()).unwrap();
        let step = meta["step"].as_u64().unwrap();
        for f in [
            format!("model-{step}.safetensors"),
            format!("optim-decayed-{step}.bin"),
            format!("optim-plain-{step}.bin"),
        ] {
            assert!(killed.join("trainer").join(&f).is_file(), "{f} missing after the kill");
        }
        ok(bin()
            .args(["chat", "--checkpoint"])
            .arg(killed.join("model.safetensors"))
            .arg("--image")
            .arg(data.join("images/001.png"))
            .args(["--question", "Which shape?", "--max-tokens", "2"]));
        ok(stage2(&data, &killed, 8).arg("--resume"));
        same_files(&whole, &killed);
        if caught == 2 {
            break;
        }
    }
    assert!(caught >= 1, "never caught the process inside a save in 4 runs");
}

fn fails(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{cmd:?} succeeded");
    assert!(err.contains("error: ") && !err.contains("panicked"), "{cmd:?}: {err}");
    err
}

/// Bad data and parts that do not fit are errors naming the file, the sample and the field.
#[test]
fn bad_datasets_and_mismatched_parts_are_errors() {
    let data = example_data("bad");
    let dataset = |json: &str, extra: &[&str]| {
        let file = data.join("bad.json");
        std::fs::write(&file, json).unwrap();
        let mut cmd = bin();
        cmd.args(["dataset", "--data"]).arg(&file).arg("--image-folder").arg(data.join("images"));
        cmd.args(extra).arg("--out").arg(data.join("bad.jsonl"));
        cmd
    };
    let err = fails(&mut dataset("[{\"id\": \"a\",\n \"conversations\": [}]", &[]));
    assert!(err.contains("bad.json:2:") && err.contains("malformed JSON"), "{err}");
    let missing = r#"[{"id": "m1", "image": "nope.jpg", "conversations": [{"from": "human", "value": "<image>\nQ"}, {"from": "gpt", "value": "A"}]},
                     {"id": "ok", "image": "000.jpg", "conversations": [{"from": "human", "value": "<image>\nQ"}, {"from": "gpt", "value": "A"}]}]"#;
    let err = fails(&mut dataset(missing, &[]));
    assert!(err.contains("sample m1") && err.contains("nope.jpg"), "{err}");
    let report = ok(&mut dataset(missing, &["--on-missing-image", "skip"]));
    assert!(report.contains("skipped 1") && report.contains("missing-image"), "{report}");
    // An undecodable image is caught when the images are decoded.
    std::fs::write(data.join("images/broken.jpg"), b"\xff\xd8\xff\xe0 not a jpeg").unwrap();
    let broken = missing.replace("nope.jpg", "broken.jpg");
    let err = fails(&mut dataset(&broken, &[]));
    assert!(err.contains("sample m1") && err.contains("broken.jpg"), "{err}");
    let err = fails(&mut dataset(
        r#"[{"id": "r", "conversations": [{"from": "human", "value": "Q"}, {"from": "bot", "value": "A"}]}]"#,
        &[],
    ));
    assert!(err.contains("sample r") && err.contains("conversations[1].from") && err.contains("bot"), "{err}");

    // A byte-level RWKV (vocabulary 256) cannot read World-tokenised data.
    let tiny = std::path::PathBuf::from(common::fixture("rwkv6_tiny_a_weights.safetensors"));
    let err = fails(&mut train(&data, "1", &[&tiny, &data.join("clip")], &["--steps", "1"], &data.join("x")));
    assert!(err.contains("vocabulary"), "{err}");
    // A VisualRWKV checkpoint whose projector does not map the tower's width to RWKV's.
    let bytes = std::fs::read(data.join("rwkv.safetensors")).unwrap();
    let rwkv = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let clip_bytes = std::fs::read(data.join("clip/model.safetensors")).unwrap();
    let clip = safetensors::SafeTensors::deserialize(&clip_bytes).unwrap();
    let wrong_proj = vec![0u8; 32 * 16 * 4];
    let mut views: Vec<(String, safetensors::tensor::TensorView)> = Vec::new();
    for (k, v) in rwkv.tensors() {
        views.push((format!("rwkv.{k}"), v));
    }
    for (k, v) in clip.tensors() {
        views.push((format!("vit.{k}"), v));
    }
    views.push((
        "proj.weight".into(),
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![32, 16], &wrong_proj).unwrap(),
    ));
    let ckpt = data.join("mismatched.safetensors");
    safetensors::serialize_to_file(views, None, &ckpt).unwrap();
    let err = fails(&mut train(&data, "2", &[&ckpt], &["--steps", "1"], &data.join("y")));
    assert!(err.contains("projector") || err.contains("proj"), "{err}");
}

/// `--devices cpu,cpu`: two data-parallel replicas, each computing half of every micro-batch,
/// follow the loss curve of one device on whole micro-batches.
#[test]
fn two_replicas_train_like_one_device() {
    let data = example_data("replicas");
    let parts = [data.join("rwkv.safetensors"), data.join("clip")];
    let flags = |devices: &'static str| {
        ["--batch", "2", "--grad-accum", "2", "--lr", "3e-3", "--steps", "3", "--devices", devices]
    };
    let (one, two) = (data.join("one"), data.join("two"));
    ok(&mut train(&data, "2", &[&parts[0], &parts[1]], &flags("cpu"), &one));
    ok(&mut train(&data, "2", &[&parts[0], &parts[1]], &flags("cpu,cpu"), &two));
    let (a, b) = (losses(&one), losses(&two));
    assert_eq!(a.len(), 3);
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() <= 1e-5, "one device {x} vs two replicas {y}");
    }
    assert!(two.join("model.safetensors").is_file());
}
