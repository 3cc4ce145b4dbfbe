//! Runs compat/bench_diffusers.py on the same folder, items and threads, and reads its JSON.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

/// What the script prints on its last stdout line.
#[derive(Debug, Deserialize)]
pub struct DiffusersReport {
    pub torch: String,
    pub diffusers: String,
    /// item -> median seconds
    pub median_s: BTreeMap<String, f64>,
    /// item -> fastest run's seconds
    #[serde(default)]
    pub best_s: BTreeMap<String, f64>,
    /// item -> peak RSS bytes during that item (weights resident)
    #[serde(default)]
    pub peak_rss: BTreeMap<String, u64>,
    #[serde(default)]
    pub load_peak_rss: Option<u64>,
}

pub fn run(python: &Path, model_dir: &Path, items: &[&str], runs: usize, warmup: usize, job_runs: usize, threads: usize) -> Result<DiffusersReport> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("compat/bench_diffusers.py");
    eprintln!("running diffusers baseline: {} {}", python.display(), script.display());
    let output = Command::new(python)
        .arg(&script)
        .arg("--model")
        .arg(model_dir)
        .arg("--items")
        .arg(items.join(","))
        .arg("--runs")
        .arg(runs.to_string())
        .arg("--warmup")
        .arg(warmup.to_string())
        .arg("--job-runs")
        .arg(job_runs.to_string())
        .env("DIFFUSERS_VERBOSITY", "error")
        .env("TRANSFORMERS_VERBOSITY", "error")
        .env("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        .env("HF_HUB_OFFLINE", "1")
        .arg("--threads")
        .arg(threads.to_string())
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("starting {}", python.display()))?;
    if !output.status.success() {
        bail!("bench_diffusers.py failed with {}", output.status);
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout.lines().rev().find(|l| l.trim_start().starts_with('{')).context("no JSON line from bench_diffusers.py")?;
    Ok(serde_json::from_str(last)?)
}
