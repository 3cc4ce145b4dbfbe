//! The worker's Prometheus metrics, served at `GET /metrics`. Counters and histograms are
//! updated as jobs move (the faces count submissions, the job registry counts outcomes, the
//! engine thread times steps and runs through [`EngineObserver`]); queue depth and the current
//! model are read from the engine when scraped, so they can never drift from the truth.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use crate::backend::engine_observer::{EngineObserver, JobRunReport};
use crate::backend::generation_engine::{EngineState, GenerationEngine};

/// Every metric name starts with this.
pub const PREFIX: &str = "sd_worker";

/// How an accepted or refused job ended, as counted in `sd_worker_jobs_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Completed,
    Failed,
    Cancelled,
    /// Refused at submission: queue full, model unavailable, or shutting down.
    Rejected,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::Failed => "failed",
            Outcome::Cancelled => "cancelled",
            Outcome::Rejected => "rejected",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FaceOutcome {
    face: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FaceLabel {
    face: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabel {
    model: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

/// 5 ms to ~41 s: a step on a big GPU to a step of SDXL on a small CPU.
fn step_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

/// 50 ms to ~27 min: a one-step tiny job to a long high-resolution batch on a CPU.
fn job_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.05, 2.0, 16))
}

/// All metrics of one worker.
pub struct WorkerMetrics {
    registry: Registry,
    jobs: Family<FaceOutcome, Counter>,
    images: Family<FaceLabel, Counter>,
    job_duration: Family<OutcomeLabel, Histogram>,
    step_duration: Histogram,
    queue_depth: Gauge,
    queue_capacity: Gauge,
    jobs_running: Gauge,
    engine_state: Family<StateLabel, Gauge>,
    model_info: Family<ModelLabel, Gauge>,
    model_load: Family<ModelLabel, Gauge<f64, AtomicU64>>,
}

impl std::fmt::Debug for WorkerMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerMetrics").finish_non_exhaustive()
    }
}

impl Default for WorkerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl WorkerMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix(PREFIX);
        let metrics = WorkerMetrics {
            jobs: Family::default(),
            images: Family::default(),
            job_duration: Family::new_with_constructor(job_histogram),
            step_duration: step_histogram(),
            queue_depth: Gauge::default(),
            queue_capacity: Gauge::default(),
            jobs_running: Gauge::default(),
            engine_state: Family::default(),
            model_info: Family::default(),
            model_load: Family::default(),
            registry: Registry::default(),
        };
        registry.register("jobs", "Jobs by face and outcome (completed, failed, cancelled, rejected)", metrics.jobs.clone());
        registry.register("images_generated", "Images produced, by face", metrics.images.clone());
        registry.register_with_unit(
            "job_duration",
            "Time the engine spent on a job, from taking it off the queue to its end, by outcome",
            Unit::Seconds,
            metrics.job_duration.clone(),
        );
        registry.register_with_unit("step_duration", "Time of one denoising step", Unit::Seconds, metrics.step_duration.clone());
        registry.register("queue_depth", "Jobs waiting behind the running one", metrics.queue_depth.clone());
        registry.register("queue_capacity", "Jobs that may wait before new ones are refused", metrics.queue_capacity.clone());
        registry.register("jobs_running", "Jobs the engine is running now (0 or 1)", metrics.jobs_running.clone());
        registry.register("engine_state", "1 for the engine's current state (loading, idle, busy, error, stopped)", metrics.engine_state.clone());
        registry.register("model_info", "1 for the model the engine serves now, named by its label", metrics.model_info.clone());
        registry.register_with_unit("model_load", "How long the latest load of a model took", Unit::Seconds, metrics.model_load.clone());
        WorkerMetrics { registry, ..metrics }
    }

    /// A job `face` submitted ended (or was refused) with `outcome`.
    pub fn count_job(&self, face: &'static str, outcome: Outcome) {
        self.jobs.get_or_create(&FaceOutcome { face, outcome: outcome.label() }).inc();
    }

    pub fn count_images(&self, face: &'static str, images: u64) {
        self.images.get_or_create(&FaceLabel { face }).inc_by(images);
    }

    /// The whole exposition (OpenMetrics text, which Prometheus' text parser also reads), with
    /// the engine's gauges read now.
    pub fn render(&self, engine: &GenerationEngine) -> Result<String, std::fmt::Error> {
        self.read_engine_gauges(engine);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }

    fn read_engine_gauges(&self, engine: &GenerationEngine) {
        let status = engine.status();
        self.queue_depth.set(gauge_value(engine.queue_len()));
        self.queue_capacity.set(gauge_value(engine.queue_capacity()));
        self.jobs_running.set(i64::from(status.current.is_some()));
        self.engine_state.clear();
        let state = match status.state {
            EngineState::Error(_) => "error",
            ref other => other.label(),
        };
        self.engine_state.get_or_create(&StateLabel { state }).set(1);
        self.model_info.clear();
        if let Some(model) = status.model_id {
            self.model_info.get_or_create(&ModelLabel { model }).set(1);
        }
        self.model_load.clear();
        if let Some(load) = status.last_model_load {
            self.model_load.get_or_create(&ModelLabel { model: load.model }).set(load.took.as_secs_f64());
        }
    }
}

fn gauge_value(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl EngineObserver for WorkerMetrics {
    fn step_finished(&self, took: Duration) {
        self.step_duration.observe(took.as_secs_f64());
    }

    fn job_ran(&self, report: &JobRunReport) {
        self.job_duration.get_or_create(&OutcomeLabel { outcome: report.outcome.label() }).observe(report.elapsed.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::engine_observer::RunOutcome;
    use crate::backend::generation_engine::{JobContext, JobRunner, RunError};

    struct Idle;

    impl JobRunner for Idle {
        fn model_id(&self) -> String {
            "idle-model".into()
        }

        fn run(&mut self, _ctx: &JobContext<'_>) -> Result<(), RunError> {
            Ok(())
        }
    }

    #[test]
    fn the_exposition_names_every_metric_and_the_loaded_model() {
        let engine = GenerationEngine::start(3, || Ok(Idle));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while engine.status().state != EngineState::Idle {
            assert!(std::time::Instant::now() < deadline, "engine never loaded");
            std::thread::sleep(Duration::from_millis(5));
        }
        let metrics = WorkerMetrics::new();
        metrics.count_job("native", Outcome::Completed);
        metrics.count_job("openai", Outcome::Rejected);
        metrics.count_images("native", 2);
        metrics.step_finished(Duration::from_millis(30));
        let report = JobRunReport { outcome: RunOutcome::Completed, elapsed: Duration::from_millis(400), steps_done: 1, total_steps: 1, images: 2 };
        metrics.job_ran(&report);
        let text = metrics.render(&engine).expect("encodes");
        for line in [
            "sd_worker_jobs_total{face=\"native\",outcome=\"completed\"} 1",
            "sd_worker_jobs_total{face=\"openai\",outcome=\"rejected\"} 1",
            "sd_worker_images_generated_total{face=\"native\"} 2",
            "sd_worker_step_duration_seconds_count 1",
            "sd_worker_step_duration_seconds_bucket{le=\"0.04\"} 1",
            "sd_worker_job_duration_seconds_count{outcome=\"completed\"} 1",
            "sd_worker_queue_depth 0",
            "sd_worker_queue_capacity 3",
            "sd_worker_jobs_running 0",
            "sd_worker_engine_state{state=\"idle\"} 1",
            "sd_worker_model_info{model=\"idle-model\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        assert!(text.lines().any(|l| l.starts_with("sd_worker_model_load_seconds{model=\"idle-model\"} ")), "{text}");
        assert_eq!(text.lines().last(), Some("# EOF"));
        engine.shutdown();
    }
}
