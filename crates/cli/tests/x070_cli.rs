//! RWKV-7 (x070) through the binary: `info` tells the version from the keys, `logits` gives the
//! official package's logits and states for `.pth` and safetensors checkpoints and resumes from
//! a saved state, `convert` round-trips, `generate` runs an x070 World-vocabulary model, and the
//! x060-only fused decoder is refused with a message.

mod common;

use common::{bin, fixture, max_diff, ok_output, read, run, tmp, tmp_str};

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
    for model in ["x070/x070_tiny_weights.safetensors", "x070/x070_tiny_weights.pth"] {
        let (out, state) = (tmp_str("x070-logits.safetensors"), tmp_str("x070-state.safetensors"));
        ok_output(bin().args([
            "logits",
            "--model",
            &fixture(model),
            "--tokens",
            &tokens(0..24),
            "--out",
            &out,
            "--state-out",
            &state,
        ]));
        let got = read(&out);
        assert_eq!(got["logits"].0, vec![24, 128]);
        let d = max_diff(&got["logits"].1, &g["logits"].1);
        assert!(d <= 1e-4, "{model}: logits max diff {d:e}");
        let got = read(&state);
        for l in 0..2 {
            for name in ["att_shift", "wkv", "ffn_shift"] {
                let k = format!("state.{l}.{name}");
                assert_eq!(got[&k].0, g[&k].0, "{k}");
                assert!(max_diff(&got[&k].1, &g[&k].1) <= 1e-4, "{model} {k}");
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

#[test]
fn convert_pth_then_logits_and_refusals() {
    let converted = tmp_str("x070-converted.safetensors");
    ok_output(bin().args(["convert", "--from", &fixture("x070/x070_tiny_weights.pth"), "--to", &converted]));
    let out = tmp_str("x070-conv-logits.safetensors");
    ok_output(bin().args(["logits", "--model", &converted, "--tokens", &tokens(0..24), "--out", &out]));
    assert!(max_diff(&read(&out)["logits"].1, &golden()["logits"].1) <= 1e-4);
    for (args, message) in [
        (vec!["logits", "--model", &converted, "--tokens", "1", "--decoder", "i8", "--out", &out], "x060 only"),
        (vec!["convert", "--from", &converted, "--to", &out, "--quantize", "i8"], "x060 models only"),
    ] {
        let o = run(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(message), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
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
    let (first, _) = ok_output(bin().args(args).arg("--model").arg(&model));
    let (again, _) = ok_output(bin().args(args).arg("--model").arg(&model));
    assert!(!first.trim().is_empty(), "no text generated");
    assert_eq!(first, again, "greedy generation is deterministic");
}
