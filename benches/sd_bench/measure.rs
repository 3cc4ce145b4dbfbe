//! Timing (median of runs after warm-ups) and peak resident memory from /proc.

use std::time::Instant;

use anyhow::Result;

/// Seconds of each timed run, after `warmup` untimed runs.
pub fn time_runs(warmup: usize, runs: usize, mut run: impl FnMut() -> Result<()>) -> Result<Vec<f64>> {
    for _ in 0..warmup {
        run()?;
    }
    (0..runs.max(1))
        .map(|_| {
            let started = Instant::now();
            run()?;
            Ok(started.elapsed().as_secs_f64())
        })
        .collect()
}

pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// Peak resident set (VmHWM) of this process in bytes, since start or the last [`reset_peak_rss`].
pub fn peak_rss_bytes() -> Option<u64> {
    proc_status_kib("VmHWM:").map(|kib| kib * 1024)
}

/// Current resident set (VmRSS) in bytes.
pub fn rss_bytes() -> Option<u64> {
    proc_status_kib("VmRSS:").map(|kib| kib * 1024)
}

/// Restarts the VmHWM high-water mark at the current RSS (Linux `clear_refs` value 5), so each
/// bench item reports its own peak.
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn proc_status_kib(key: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].trim().trim_end_matches("kB").trim().parse().ok()
}

pub fn gib(bytes: Option<u64>) -> String {
    bytes.map(|b| format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64)).unwrap_or_else(|| "n/a".into())
}
