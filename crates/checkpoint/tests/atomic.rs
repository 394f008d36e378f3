//! `write_atomic` under a real kill: a child process rewrites a file over and over (16 MiB each
//! time, so most of its life is spent mid-write); killed while its temporary file exists, it
//! leaves the file either as it was before or complete, never a part.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use visualrwkv_checkpoint::write_atomic;

const CHILD: &str = "VISUALRWKV_ATOMIC_WRITER";
const NEW: usize = 16 << 20;

fn dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("visualrwkv-atomic-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn writing(dir: &Path) -> bool {
    std::fs::read_dir(dir).into_iter().flatten().flatten().any(|e| e.file_name().to_string_lossy().contains(".tmp-"))
}

#[test]
fn a_writer_killed_mid_write_leaves_the_previous_file_or_the_new_one() {
    if let Ok(path) = std::env::var(CHILD) {
        // The child: rewrite `path` until killed.
        let bytes = vec![0xAB; NEW];
        loop {
            write_atomic(&path, &bytes).unwrap();
        }
    }
    let dir = dir();
    let previous = b"the previous file\n".repeat(64);
    let mut killed_mid_write = 0;
    for attempt in 0..6 {
        let path = dir.join(format!("out-{attempt}.bin"));
        std::fs::write(&path, &previous).unwrap();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "a_writer_killed_mid_write_leaves_the_previous_file_or_the_new_one", "--nocapture"])
            .env(CHILD, &path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Kill it while a temporary file exists, after a different number of completed writes.
        let start = Instant::now();
        let wait_for_writes = attempt % 3;
        let mut seen_new = 0;
        while start.elapsed() < Duration::from_secs(30) {
            let len = std::fs::metadata(&path).map(|m| m.len() as usize).unwrap_or(0);
            if len == NEW && seen_new < wait_for_writes {
                seen_new += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            if seen_new >= wait_for_writes && writing(&dir) {
                child.kill().unwrap();
                killed_mid_write += 1;
                break;
            }
        }
        child.kill().ok();
        child.wait().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let intact = bytes == previous || (bytes.len() == NEW && bytes.iter().all(|&b| b == 0xAB));
        assert!(intact, "attempt {attempt}: {} bytes, neither the previous file nor the new one", bytes.len());
    }
    assert!(killed_mid_write >= 3, "only {killed_mid_write} kills landed mid-write");
    std::fs::remove_dir_all(&dir).unwrap();
}
