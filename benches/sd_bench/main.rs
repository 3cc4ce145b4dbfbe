//! `cargo bench` for the CPU path: a full-size random-weight SD 1.5 (or SDXL) diffusers folder,
//! written once by our own model code, then text encoding, one CFG UNet step at 256² and 512²,
//! VAE decode/encode at 512² and a whole 4-step 512² job through the engine. Prints medians,
//! peak RSS, a per-op breakdown (with `--features profile`), and our/diffusers ratios when a
//! Python with torch + diffusers + transformers is given (`SD_BENCH_PYTHON`), run on the same
//! folder and threads in the same invocation.
//!
//! ```text
//! cargo bench --bench sd_bench -- [ITEM...] [--runs N] [--warmup N] [--job-runs N] [--threads N] [--sdxl]
//!                                 [--python PATH] [--no-diffusers] [--cache DIR]
//! ITEM: text unet256 unet512 vae_decode vae_encode job (substring match; default all)
//! env:  SD_BENCH_PYTHON, SD_BENCH_RUNS, SD_BENCH_SDXL=1, SD_BENCH_CACHE
//! The job runs `--job-runs` times (default 1) without warm-up on both sides: it is the
//! end-to-end number a user waits for, and each run costs 4 UNet steps plus a decode.
//! ```

mod configs;
mod diffusers;
mod measure;
mod model_folder;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use sd_worker_rbee::backend::generation_engine::{EngineState, GenerationEngine};
use sd_worker_rbee::backend::kernels::{self, profile};
use sd_worker_rbee::backend::pipeline::conditioning::{encode_prompts, PromptPair, TextConditioning};
use sd_worker_rbee::backend::pipeline::{SdModel, SdRunner};
use sd_worker_rbee::backend::request::{GenerationRequest, JobEvent, RngKind, SamplerKind};
use sd_worker_rbee::backend::rng::BatchNoise;

use measure::{gib, median, peak_rss_bytes, reset_peak_rss, rss_bytes, time_runs};
use model_folder::Family;

const ITEMS: [&str; 6] = ["text", "unet256", "unet512", "vae_decode", "vae_encode", "job"];
const PROMPT: &str = "a photograph of an astronaut riding a horse on the moon, highly detailed";
const NEGATIVE: &str = "blurry, low quality";
const GUIDANCE: f64 = 7.5;
const JOB_STEPS: u32 = 4;

struct Options {
    items: Vec<&'static str>,
    runs: usize,
    warmup: usize,
    job_runs: usize,
    threads: usize,
    family: Family,
    python: Option<PathBuf>,
    cache: PathBuf,
}

fn parse_options() -> Result<Options> {
    let env_flag = |name: &str| std::env::var(name).map(|v| !v.is_empty() && v != "0").unwrap_or(false);
    let mut filters = Vec::new();
    let mut runs = std::env::var("SD_BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let mut warmup = 1;
    let mut job_runs = 1;
    let mut threads = 2;
    let mut family = if env_flag("SD_BENCH_SDXL") { Family::Sdxl } else { Family::Sd15 };
    let mut python = std::env::var_os("SD_BENCH_PYTHON").map(PathBuf::from);
    let mut cache = std::env::var_os("SD_BENCH_CACHE").map(PathBuf::from).unwrap_or_else(|| {
        let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
        target.join("bench-models")
    });
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |flag: &str| args.next().with_context(|| format!("{flag} needs a value"));
        match arg.as_str() {
            "--bench" => {} // added by `cargo bench`
            "--runs" => runs = value("--runs")?.parse()?,
            "--warmup" => warmup = value("--warmup")?.parse()?,
            "--job-runs" => job_runs = value("--job-runs")?.parse()?,
            "--threads" => threads = value("--threads")?.parse()?,
            "--sdxl" => family = Family::Sdxl,
            "--python" => python = Some(PathBuf::from(value("--python")?)),
            "--no-diffusers" => python = None,
            "--cache" => cache = PathBuf::from(value("--cache")?),
            flag if flag.starts_with("--") => bail!("unknown flag {flag}"),
            filter => filters.push(filter.to_string()),
        }
    }
    let items: Vec<&'static str> = ITEMS.iter().copied().filter(|item| filters.is_empty() || filters.iter().any(|f| item.contains(f.as_str()))).collect();
    if items.is_empty() {
        bail!("no bench item matches {filters:?}; items are {ITEMS:?}");
    }
    Ok(Options { items, runs, warmup, job_runs, threads, family, python, cache })
}

/// (op class, calls, seconds) per op class of one profiled run.
type Breakdown = Vec<(&'static str, u64, f64)>;

/// One measured item.
struct Row {
    item: &'static str,
    runs: Vec<f64>,
    peak_rss: Option<u64>,
    breakdown: Breakdown,
    breakdown_wall: f64,
}

fn main() -> Result<()> {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without it, and
    // a benchmark that writes a full-size model and runs 512² steps has no place in the test run.
    if !std::env::args().any(|a| a == "--bench") {
        println!("sd_bench: run with `cargo bench --bench sd_bench` (skipped under cargo test)");
        return Ok(());
    }
    let opts = parse_options()?;
    // Same thread count for rayon (gemm, our kernels) and candle's own CPU ops, before first use.
    std::env::set_var("RAYON_NUM_THREADS", opts.threads.to_string());
    rayon::ThreadPoolBuilder::new().num_threads(opts.threads).build_global().ok();
    // As the server does on the CPU (device.rs).
    kernels::allocator::tune_allocator();
    let model_dir = model_folder::ensure(&opts.cache, opts.family)?;
    println!(
        "sd_bench: {:?} random weights at {}; {} threads; simd {}; runs {} (+{} warm-up); profile timers {}",
        opts.family,
        model_dir.display(),
        rayon::current_num_threads(),
        kernels::simd_level().label(),
        opts.runs,
        opts.warmup,
        if profile::AVAILABLE { "on" } else { "off (add --features profile for the breakdown)" }
    );

    let mut rows = Vec::new();
    // The job first, in a fresh process: its peak RSS must not include memory that the
    // component benches freed but the allocator kept.
    if opts.items.contains(&"job") {
        rows.push(bench_job(&model_dir, &opts)?);
    }
    let component_items: Vec<&'static str> = opts.items.iter().copied().filter(|i| *i != "job").collect();
    let mut load_peak = None;
    if !component_items.is_empty() {
        reset_peak_rss();
        let started = Instant::now();
        let model = SdModel::load("bench", &model_dir, &Device::Cpu)?;
        load_peak = peak_rss_bytes();
        println!("loaded in {:.1} s, peak RSS while loading {}, resident after {}", started.elapsed().as_secs_f64(), gib(load_peak), gib(rss_bytes()));
        for item in &component_items {
            rows.push(bench_component(&model, item, &opts)?);
        }
        drop(model);
        // diffusers runs next, in its own process: leave it the memory (SDXL: ~14 GiB a side).
        kernels::release_free_memory();
    }

    let baseline = match &opts.python {
        Some(python) => match diffusers::run(python, &model_dir, &opts.items, opts.runs, opts.warmup, opts.job_runs, opts.threads) {
            Ok(report) => Some(report),
            Err(e) => {
                eprintln!("diffusers baseline failed: {e:#}");
                None
            }
        },
        None => {
            println!("(no diffusers baseline: set SD_BENCH_PYTHON to a python with torch, diffusers and transformers)");
            None
        }
    };
    print_breakdowns(&rows);
    print_summary(&rows, baseline.as_ref(), load_peak);
    Ok(())
}

fn prompt_pair(width: u32, height: u32) -> PromptPair<'static> {
    PromptPair { prompt: PROMPT, negative_prompt: NEGATIVE, clip_skip: 1, guidance_scale: GUIDANCE, width, height, steps: 1, ..Default::default() }
}

fn seeded_noise(dims: &[usize], seed: u64) -> Result<Tensor> {
    let count: usize = dims.iter().product();
    Ok(BatchNoise::new(RngKind::TorchCpu, &[seed]).randn(&[1, count], &Device::Cpu, DType::F32)?.reshape(dims)?)
}

fn bench_component(model: &SdModel, item: &'static str, opts: &Options) -> Result<Row> {
    let cond: TextConditioning = encode_prompts(model, &prompt_pair(512, 512))?;
    let mut run: Box<dyn FnMut() -> Result<()>> = match item {
        "text" => Box::new(|| {
            encode_prompts(model, &prompt_pair(512, 512))?;
            Ok(())
        }),
        "unet256" | "unet512" => {
            let side = if item == "unet256" { 32 } else { 64 };
            let latents = seeded_noise(&[2, 4, side, side], 1)?;
            let cond = encode_prompts(model, &prompt_pair(side as u32 * 8, side as u32 * 8))?;
            Box::new(move || {
                model.unet.forward(&latents, 999.0, &cond.at_step(0).context, cond.at_step(0).sdxl.as_ref())?;
                Ok(())
            })
        }
        "vae_decode" => {
            let latents = seeded_noise(&[1, 4, 64, 64], 2)?;
            Box::new(move || {
                model.vae.decode(&latents)?;
                Ok(())
            })
        }
        "vae_encode" => {
            let image = (seeded_noise(&[1, 3, 512, 512], 3)? * 0.5)?.clamp(-1.0, 1.0)?;
            Box::new(move || {
                model.vae.encode(&image)?;
                Ok(())
            })
        }
        other => bail!("unknown item {other}"),
    };
    drop(cond);
    eprintln!("timing {item} ...");
    reset_peak_rss();
    let runs = time_runs(opts.warmup, opts.runs, &mut run)?;
    let peak_rss = peak_rss_bytes();
    let (breakdown, breakdown_wall) = profiled_run(&mut run)?;
    Ok(Row { item, runs, peak_rss, breakdown, breakdown_wall })
}

/// One more run with the op timers on (profile builds only).
fn profiled_run(run: &mut dyn FnMut() -> Result<()>) -> Result<(Breakdown, f64)> {
    if !profile::AVAILABLE {
        return Ok((Vec::new(), 0.0));
    }
    profile::take_report();
    profile::set_enabled(true);
    let started = Instant::now();
    let result = run();
    let wall = started.elapsed().as_secs_f64();
    profile::set_enabled(false);
    result?;
    Ok((profile::take_report(), wall))
}

fn job_request() -> GenerationRequest {
    let mut req = GenerationRequest::new(PROMPT);
    req.negative_prompt = NEGATIVE.into();
    req.width = 512;
    req.height = 512;
    req.steps = JOB_STEPS;
    req.cfg_scale = GUIDANCE;
    req.seed = Some(42);
    req.sampler = SamplerKind::Euler;
    req
}

/// A whole txt2img job through the engine: text, 4 CFG steps, decode, PNG encode.
fn bench_job(model_dir: &Path, opts: &Options) -> Result<Row> {
    let dir = model_dir.to_path_buf();
    let engine = GenerationEngine::start(4, move || SdModel::load("bench", &dir, &Device::Cpu).map(|m| SdRunner::new(m, None)).map_err(|e| e.to_string()));
    loop {
        match engine.status().state {
            EngineState::Idle => break,
            EngineState::Error(e) => bail!("engine failed to load: {e}"),
            _ => std::thread::sleep(std::time::Duration::from_millis(50)),
        }
    }
    let mut run = || -> Result<()> {
        let mut handle = engine.submit(job_request()).map_err(|e| anyhow::anyhow!("{e}"))?;
        loop {
            match handle.events.blocking_recv() {
                Some(JobEvent::Done) => return Ok(()),
                Some(JobEvent::Failed(e)) => bail!("job failed: {e}"),
                Some(JobEvent::Cancelled) | None => bail!("job ended without finishing"),
                Some(_) => {}
            }
        }
    };
    eprintln!("timing job ...");
    let load_peak = peak_rss_bytes();
    reset_peak_rss();
    let runs = time_runs(0, opts.job_runs, &mut run)?;
    println!("job: engine loaded with peak RSS {}; whole-process peak {}", gib(load_peak), gib(load_peak.max(peak_rss_bytes())));
    let peak_rss = peak_rss_bytes();
    engine.shutdown();
    // Hand the engine's freed weights back, so the items after the job start from one model.
    kernels::release_free_memory();
    // No profiled extra run here: the component items already show where the time goes.
    Ok(Row { item: "job", runs, peak_rss, breakdown: Vec::new(), breakdown_wall: 0.0 })
}

fn print_breakdowns(rows: &[Row]) {
    for row in rows.iter().filter(|r| !r.breakdown.is_empty()) {
        println!("\nbreakdown of one {} run ({:.2} s wall):", row.item, row.breakdown_wall);
        println!("  {:<22} {:>7} {:>9} {:>6}", "op", "calls", "seconds", "%");
        let mut covered = 0.0;
        for (op, calls, secs) in &row.breakdown {
            covered += secs;
            println!("  {:<22} {:>7} {:>9.3} {:>5.1}%", op, calls, secs, 100.0 * secs / row.breakdown_wall);
        }
        let rest = row.breakdown_wall - covered;
        println!("  {:<22} {:>7} {:>9.3} {:>5.1}%", "(not timed: glue ops)", "", rest, 100.0 * rest / row.breakdown_wall);
    }
}

fn print_summary(rows: &[Row], baseline: Option<&diffusers::DiffusersReport>, load_peak: Option<u64>) {
    println!();
    if let Some(b) = baseline {
        println!("diffusers baseline: torch {}, diffusers {}", b.torch, b.diffusers);
    }
    println!("{:<11} {:>9} {:>22} {:>12} {:>11} {:>12} {:>7} {:>7}", "item", "ours s", "runs", "ours peak", "diffusers s", "diff. peak", "ratio", "best");
    for row in rows {
        let ours = median(&row.runs);
        let our_best = row.runs.iter().copied().fold(f64::INFINITY, f64::min);
        let runs = row.runs.iter().map(|r| format!("{r:.2}")).collect::<Vec<_>>().join(" ");
        let theirs = baseline.and_then(|b| b.median_s.get(row.item)).copied();
        let their_best = baseline.and_then(|b| b.best_s.get(row.item)).copied();
        let their_peak = baseline.and_then(|b| b.peak_rss.get(row.item)).copied();
        let ratio = |ours: f64, theirs: Option<f64>| theirs.map(|t| format!("{:.2}x", ours / t)).unwrap_or_else(|| "-".into());
        println!(
            "{:<11} {:>9.3} {:>22} {:>12} {:>11} {:>12} {:>7} {:>7}",
            row.item,
            ours,
            runs,
            gib(row.peak_rss),
            theirs.map(|t| format!("{t:.3}")).unwrap_or_else(|| "-".into()),
            if baseline.is_some() { gib(their_peak) } else { "-".into() },
            ratio(ours, theirs),
            ratio(our_best, their_best),
        );
    }
    println!("ratio = ours / diffusers medians, best = ours / diffusers fastest runs (lower is better; other");
    println!("tenants of a shared host only ever add time, so the fastest runs are the steadier comparison);");
    println!("peaks are VmHWM during the item, weights resident");
    if let Some(peak) = load_peak {
        let theirs = baseline.and_then(|b| b.load_peak_rss);
        println!("peak RSS while loading: ours {}, diffusers {}", gib(Some(peak)), gib(theirs));
    }
}
