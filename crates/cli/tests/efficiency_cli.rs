//! `visualrwkv bench-efficiency` on tiny sizes: every output is written, every point measured
//! for both models, the cache grows with the context for the transformer only.

mod common;

use common::{run, tmp};

#[test]
fn bench_efficiency_writes_table_json_csv_and_plot() {
    let out = tmp("efficiency");
    let o = run(&[
        "bench-efficiency",
        "--contexts",
        "64,256",
        "--width",
        "64",
        "--layers",
        "1",
        "--vocab",
        "300",
        "--decode-steps",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for f in ["efficiency.json", "efficiency.csv", "efficiency.md", "efficiency.svg"] {
        assert!(out.join(f).metadata().map(|m| m.len() > 0).unwrap_or(false), "{f} missing");
    }
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("efficiency.json")).unwrap()).unwrap();
    let points = json["points"].as_array().unwrap();
    assert_eq!(points.len(), 4);
    let cache = |model: &str, ctx: u64| {
        points.iter().find(|p| p["model"] == model && p["context"] == ctx).unwrap()["cache_mib"].as_f64().unwrap()
    };
    assert_eq!(cache("rwkv", 64), cache("rwkv", 256), "RWKV's state is fixed-size");
    assert!(cache("transformer", 256) > 3.9 * cache("transformer", 64), "the KV cache grows with the context");
    assert!(points.iter().all(|p| p["prefill_s"].as_f64().unwrap() > 0.0 && p["decode_ms"].as_f64().unwrap() > 0.0));
    let table = std::fs::read_to_string(out.join("efficiency.md")).unwrap();
    assert_eq!(table.lines().filter(|l| l.starts_with("| 64 ") || l.starts_with("| 256 ")).count(), 2);
    let svg = std::fs::read_to_string(out.join("efficiency.svg")).unwrap();
    assert!(svg.contains("<svg") && svg.contains("decode latency"));
    // Bad sizes are messages.
    common::assert_failures(&[
        (vec!["bench-efficiency", "--contexts", "0", "--out", out.to_str().unwrap()], "--contexts"),
        (vec!["bench-efficiency", "--width", "100", "--out", out.to_str().unwrap()], "multiple of 64"),
    ]);
}

/// The GPU check's two measurements (`scripts/gpu-check.sh`: the VLM efficiency points with an
/// image in front of the context, and stage-2 training speed) run on the wgpu path at tiny
/// sizes, so the script's steps are known to work before a CUDA machine runs them.
#[cfg(feature = "wgpu")]
#[test]
fn gpu_check_steps_run_on_wgpu_at_tiny_sizes() {
    let out = tmp("efficiency-vlm");
    let o = run(&[
        "bench-efficiency",
        "--contexts",
        "48,96",
        "--width",
        "64",
        "--layers",
        "1",
        "--vocab",
        "300",
        "--decode-steps",
        "2",
        "--vision",
        "tiny",
        "--device",
        "wgpu",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("efficiency.json")).unwrap()).unwrap();
    let points = json["points"].as_array().unwrap();
    assert_eq!(points.len(), 4);
    assert!(points.iter().all(|p| p["image_rows"] == 17 && p["device"] == "wgpu"), "{points:?}");
    let cache = |model: &str, ctx: u64| {
        points.iter().find(|p| p["model"] == model && p["context"] == ctx).unwrap()["cache_mib"].as_f64().unwrap()
    };
    assert_eq!(cache("rwkv", 48), cache("rwkv", 96));
    assert!(cache("transformer", 96) > 1.9 * cache("transformer", 48));

    let json_out = tmp("train.json");
    let o = run(&[
        "bench-train",
        "--width",
        "64",
        "--layers",
        "1",
        "--vocab",
        "300",
        "--vision",
        "tiny",
        "--ctx-len",
        "40",
        "--batch",
        "2",
        "--steps",
        "3",
        "--device",
        "wgpu",
        "--out",
        json_out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let p: serde_json::Value = serde_json::from_slice(&std::fs::read(&json_out).unwrap()).unwrap();
    assert_eq!(p["timed_steps"], 2);
    assert_eq!(p["ctx_len"], 40);
    assert_eq!(p["device"], "wgpu");
    assert!(p["steps_per_s"].as_f64().unwrap() > 0.0 && p["tokens_per_s"].as_f64().unwrap() > 0.0);
    // The same on two CPU replicas (data-parallel) and the errors.
    let o = run(&[
        "bench-train",
        "--width",
        "64",
        "--layers",
        "1",
        "--vocab",
        "300",
        "--vision",
        "tiny",
        "--ctx-len",
        "40",
        "--batch",
        "2",
        "--steps",
        "2",
        "--devices",
        "cpu,cpu",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let p: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(p["devices"], 2);
    common::assert_failures(&[
        (vec!["bench-train", "--vision", "none", "--width", "64", "--layers", "1"], "needs a --vision"),
        (
            vec!["bench-train", "--vision", "tiny", "--ctx-len", "10", "--width", "64", "--layers", "1"],
            "longer than the image",
        ),
        (
            vec![
                "bench-efficiency",
                "--vision",
                "tiny",
                "--contexts",
                "16",
                "--width",
                "64",
                "--layers",
                "1",
                "--out",
                out.to_str().unwrap(),
            ],
            "longer than the image",
        ),
    ]);
}
