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
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
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

/// The common flags of a small stage-2 run from the example's RWKV and CLIP parts.
fn stage2(data: &Path, out: &Path, steps: usize) -> Command {
    let mut cmd = bin();
    cmd.args(["train", "--stage", "2", "--rwkv"])
        .arg(data.join("rwkv.safetensors"))
        .arg("--vision")
        .arg(data.join("clip"))
        .arg("--data")
        .arg(data.join("llava.json"))
        .arg("--image-folder")
        .arg(data.join("images"))
        .args(["--ctx-len", "96", "--batch", "2", "--grad-accum", "2", "--lr", "3e-3", "--workers", "2"])
        .args(["--steps", &steps.to_string(), "--save-every", "1", "--seed", "5", "--out"])
        .arg(out);
    cmd
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
    ok(bin()
        .args(["train", "--stage", "1", "--rwkv"])
        .arg(data.join("rwkv.safetensors"))
        .arg("--vision")
        .arg(data.join("clip"))
        .arg("--data")
        .arg(data.join("llava.json"))
        .arg("--image-folder")
        .arg(data.join("images"))
        .args(["--ctx-len", "96", "--batch", "2", "--steps", "4", "--lr", "1e-2", "--out"])
        .arg(&s1));
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
    ok(bin()
        .args(["train", "--stage", "2", "--checkpoint"])
        .arg(s1.join("model.safetensors"))
        .arg("--data")
        .arg(data.join("llava.json"))
        .arg("--image-folder")
        .arg(data.join("images"))
        .args(["--ctx-len", "96", "--batch", "4", "--steps", "20", "--lr", "3e-3", "--out"])
        .arg(&s2));
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
