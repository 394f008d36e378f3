//! Helpers shared by the CLI tests: fixture paths, scratch files, running the binary, reading
//! safetensors outputs.

#![allow(dead_code)] // each test file uses a subset

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `name -> (shape, values)` of the F32 tensors of a file.
pub type Floats = HashMap<String, (Vec<usize>, Vec<f32>)>;

/// The `visualrwkv` binary built for these tests.
pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_visualrwkv"))
}

/// Runs `cmd`, which must succeed (else the test fails with its output); returns its stdout and
/// stderr.
pub fn ok_output(cmd: &mut Command) -> (String, String) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Runs the binary with `args`.
pub fn run(args: &[&str]) -> Output {
    bin().args(args).output().unwrap()
}

/// Path of a file in `tests/fixtures/`.
pub fn fixture(name: &str) -> String {
    format!("{}/../../tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// A scratch path unique to this test process. The first call removes the scratch folders of
/// test processes that have ended (tests cannot clean up after the last one of a process, so
/// each run clears what earlier runs left; on systems without `/proc` nothing is removed).
pub fn tmp(name: &str) -> PathBuf {
    static SWEPT: std::sync::Once = std::sync::Once::new();
    SWEPT.call_once(|| {
        let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(pid) = name.strip_prefix("visualrwkv-cli-").and_then(|p| p.parse::<u32>().ok()) else { continue };
            if Path::new("/proc/self").exists() && !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    });
    let dir = std::env::temp_dir().join(format!("visualrwkv-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// [`tmp`] as a `String` (for argument lists).
pub fn tmp_str(name: &str) -> String {
    tmp(name).to_str().unwrap().to_string()
}

/// The F32 and I64 tensors of a safetensors file.
pub fn read_all(path: impl AsRef<Path>) -> (Floats, HashMap<String, Vec<i64>>) {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (mut f, mut i) = (HashMap::new(), HashMap::new());
    for (k, v) in st.tensors() {
        match v.dtype() {
            safetensors::Dtype::F32 => {
                let values = v.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
                f.insert(k, (v.shape().to_vec(), values));
            }
            safetensors::Dtype::I64 => {
                i.insert(k, v.data().chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap())).collect());
            }
            _ => {}
        }
    }
    (f, i)
}

/// The F32 tensors of a safetensors file.
pub fn read(path: impl AsRef<Path>) -> Floats {
    read_all(path).0
}

/// Largest absolute difference of two equally long slices.
pub fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Each argument list must fail with a message containing its needle, never a panic.
pub fn assert_failures(cases: &[(Vec<&str>, &str)]) {
    for (args, needle) in cases {
        let o = run(args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

/// A projector 64 → 128 (`proj.weight`, deterministic values) for the tiny fixture RWKV-6 and
/// CLIP, written to the scratch file `name`; returns its path.
pub fn projector_file(name: &str) -> String {
    let path = tmp_str(name);
    let w: Vec<f32> = (0..128 * 64).map(|i| ((i * 7919 % 1000) as f32 / 1000.0 - 0.5) * 0.2).collect();
    let map = visualrwkv_checkpoint::TensorMap {
        origin: "proj".into(),
        tensors: HashMap::from([("proj.weight".to_string(), (vec![128, 64], w))]),
    };
    visualrwkv_checkpoint::write_safetensors(&map, &path).unwrap();
    path
}
