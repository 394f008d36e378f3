//! Process measurements shared by the benchmarks (the RWKV bench and `visualrwkv
//! bench-efficiency`).

/// Peak resident set size of this process (Linux `VmHWM`), MiB; NaN where `/proc` is absent.
pub fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}
