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
