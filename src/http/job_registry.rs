//! Jobs as the HTTP side sees them: each submitted job gets a record that keeps its event history
//! and wakes every subscriber, so a second or late stream replays what happened so far and then
//! follows live. A pump task moves events from the engine's channel into the record.
//!
//! Memory stays bounded: only the latest preview of a job is kept (older ones are blanked in
//! place so subscriber cursors stay valid), and finished jobs are dropped after `retention`, by
//! a periodic sweep as well as on access (so an idle worker frees them too).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::stream::{self, BoxStream, StreamExt};
use serde::Serialize;
use tokio::sync::watch;
use utoipa::ToSchema;

use crate::backend::generation_engine::{GenerationEngine, SubmitError};
use crate::backend::request::{GeneratedImage, GenerationRequest, JobError, JobEvent};
use crate::backend::request_queue::{CancelToken, JobId};
use crate::http::sweeper::Expiring;
use crate::metrics::{Outcome, WorkerMetrics};

/// How long a finished job stays readable (status, results, late streams).
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(10 * 60);

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Queued,
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl JobStatus {
    pub fn is_finished(self) -> bool {
        matches!(self, JobStatus::Completed | JobStatus::Failed | JobStatus::Cancelled)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }
}

/// The request facts a status report shows (the request itself goes to the engine).
#[derive(Debug, Clone)]
pub struct JobSummary {
    pub width: u32,
    pub height: u32,
    pub steps: u32,
    pub num_images: u32,
}

#[derive(Debug)]
struct JobLog {
    /// `None` marks a superseded preview: indices never shift under a subscriber's cursor.
    events: Vec<Option<Arc<JobEvent>>>,
    latest_preview: Option<usize>,
    status: JobStatus,
    finished_at: Option<Instant>,
}

/// One job's history and live feed.
#[derive(Debug)]
pub struct JobRecord {
    id: JobId,
    created_at: DateTime<Utc>,
    summary: JobSummary,
    log: Mutex<JobLog>,
    /// Bumped after every appended event; subscribers wait on it.
    changed: watch::Sender<u64>,
    subscribers: AtomicUsize,
    cancel_token: CancelToken,
    engine: Weak<GenerationEngine>,
}

impl JobRecord {
    pub fn id(&self) -> &JobId {
        &self.id
    }

    pub fn created_at(&self) -> DateTime<Utc> {
        self.created_at
    }

    pub fn summary(&self) -> &JobSummary {
        &self.summary
    }

    fn lock(&self) -> MutexGuard<'_, JobLog> {
        self.log.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn status(&self) -> JobStatus {
        self.lock().status
    }

    /// Every retained event so far, oldest first.
    pub fn events(&self) -> Vec<Arc<JobEvent>> {
        self.lock().events.iter().flatten().cloned().collect()
    }

    fn push(&self, event: JobEvent) {
        {
            let mut log = self.lock();
            if log.status.is_finished() {
                return;
            }
            match &event {
                JobEvent::Started { .. } => log.status = JobStatus::Running,
                JobEvent::Done => log.status = JobStatus::Completed,
                JobEvent::Failed(_) => log.status = JobStatus::Failed,
                JobEvent::Cancelled => log.status = JobStatus::Cancelled,
                _ => {}
            }
            if event.is_terminal() {
                log.finished_at = Some(Instant::now());
            }
            let index = log.events.len();
            if matches!(event, JobEvent::Preview(_)) {
                if let Some(old) = log.latest_preview.replace(index) {
                    log.events[old] = None;
                }
            }
            log.events.push(Some(Arc::new(event)));
        }
        self.changed.send_modify(|version| *version += 1);
    }

    /// The first retained event at or after `from`, with its index; or whether the job is over.
    fn event_from(&self, from: usize) -> Result<(usize, Arc<JobEvent>), bool> {
        let log = self.lock();
        log.events
            .iter()
            .enumerate()
            .skip(from)
            .find_map(|(i, e)| e.as_ref().map(|e| (i, e.clone())))
            .ok_or(log.status.is_finished())
    }

    /// Ask the engine to stop this job: a waiting job ends at once, a running one within a step.
    /// False when it had already finished.
    pub fn cancel(&self) -> bool {
        if self.status().is_finished() {
            return false;
        }
        // The token covers the moment between the engine taking the job off the queue and
        // registering it as running, when `GenerationEngine::cancel` cannot see it.
        self.cancel_token.cancel();
        if let Some(engine) = self.engine.upgrade() {
            engine.cancel(&self.id);
        }
        true
    }

    /// The job's events from the beginning, then live until its terminal event. While a job is
    /// unfinished, dropping the last open subscription cancels it (the client went away).
    pub fn subscribe(self: &Arc<Self>) -> BoxStream<'static, Arc<JobEvent>> {
        self.subscribers.fetch_add(1, Ordering::SeqCst);
        let guard = SubscriberGuard { record: self.clone() };
        let wake = self.changed.subscribe();
        stream::unfold((guard, 0usize, wake), |(guard, next, mut wake)| async move {
            loop {
                // Mark the current version seen *before* reading, so a push in between is
                // still noticed by `changed()`.
                wake.borrow_and_update();
                match guard.record.event_from(next) {
                    Ok((index, event)) => return Some((event, (guard, index + 1, wake))),
                    Err(true) => return None,
                    Err(false) => {
                        if wake.changed().await.is_err() {
                            return None;
                        }
                    }
                }
            }
        })
        .boxed()
    }

    /// Follow the job to its end and collect what it produced. Dropping this future before the
    /// end counts as a disconnect (see [`JobRecord::subscribe`]), which suits synchronous faces.
    pub async fn outcome(self: &Arc<Self>) -> JobOutcome {
        let mut outcome = JobOutcome { status: JobStatus::Queued, seed: None, images: Vec::new(), error: None };
        let mut events = self.subscribe();
        while let Some(event) = events.next().await {
            match event.as_ref() {
                JobEvent::Started { seed, .. } => outcome.seed = Some(*seed),
                JobEvent::Image(image) => outcome.images.push(image.clone()),
                JobEvent::Failed(e) => outcome.error = Some(e.clone()),
                _ => {}
            }
        }
        outcome.status = self.status();
        outcome
    }
}

/// What a finished job produced.
#[derive(Debug, Clone)]
pub struct JobOutcome {
    pub status: JobStatus,
    pub seed: Option<u64>,
    pub images: Vec<GeneratedImage>,
    pub error: Option<JobError>,
}

struct SubscriberGuard {
    record: Arc<JobRecord>,
}

impl Drop for SubscriberGuard {
    fn drop(&mut self) {
        let left = self.record.subscribers.fetch_sub(1, Ordering::SeqCst) - 1;
        if left == 0 && self.record.cancel() {
            tracing::info!(job_id = %self.record.id, "last stream closed before the job finished; cancelling it");
        }
    }
}

/// What `DELETE` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelOutcome {
    Cancelled,
    AlreadyFinished(JobStatus),
    NotFound,
}

/// All jobs this worker still remembers.
#[derive(Debug)]
pub struct JobRegistry {
    jobs: Mutex<HashMap<String, Arc<JobRecord>>>,
    retention: Duration,
    metrics: Arc<WorkerMetrics>,
}

impl JobRegistry {
    /// Finished jobs are forgotten `retention` after their end; outcomes and images are counted
    /// in `metrics`.
    pub fn new(retention: Duration, metrics: Arc<WorkerMetrics>) -> Self {
        JobRegistry { jobs: Mutex::new(HashMap::new()), retention, metrics }
    }

    pub fn retention(&self) -> Duration {
        self.retention
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<JobRecord>>> {
        self.jobs.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Hand a request from `face` to the engine and start recording its events. Needs a tokio
    /// runtime.
    pub fn submit(&self, engine: &Arc<GenerationEngine>, request: GenerationRequest, face: &'static str) -> Result<Arc<JobRecord>, SubmitError> {
        let summary = JobSummary { width: request.width, height: request.height, steps: request.steps, num_images: request.num_images };
        let mut handle = engine.submit(request)?;
        let (changed, _) = watch::channel(0);
        let record = Arc::new(JobRecord {
            id: handle.id.clone(),
            created_at: Utc::now(),
            summary,
            log: Mutex::new(JobLog { events: Vec::new(), latest_preview: None, status: JobStatus::Queued, finished_at: None }),
            changed,
            subscribers: AtomicUsize::new(0),
            cancel_token: handle.cancel.clone(),
            engine: Arc::downgrade(engine),
        });
        {
            let mut jobs = self.lock();
            self.sweep(&mut jobs);
            jobs.insert(record.id.as_str().to_string(), record.clone());
        }
        let pump = record.clone();
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            let mut images = 0u64;
            while let Some(event) = handle.events.recv().await {
                let terminal = event.is_terminal();
                images += u64::from(matches!(event, JobEvent::Image(_)));
                pump.push(event);
                if terminal {
                    break;
                }
            }
            if !pump.status().is_finished() {
                // The engine dropped the job without a terminal event (it stopped); say so.
                pump.push(JobEvent::Failed(JobError::Internal("the engine stopped before finishing the job".into())));
            }
            metrics.count_images(face, images);
            metrics.count_job(face, match pump.status() {
                JobStatus::Completed => Outcome::Completed,
                JobStatus::Cancelled => Outcome::Cancelled,
                _ => Outcome::Failed,
            });
        });
        Ok(record)
    }

    /// A job still remembered (finished jobs are forgotten after the retention time).
    pub fn get(&self, id: &str) -> Option<Arc<JobRecord>> {
        let mut jobs = self.lock();
        self.sweep(&mut jobs);
        jobs.get(id).cloned()
    }

    pub fn cancel(&self, id: &str) -> CancelOutcome {
        match self.get(id) {
            None => CancelOutcome::NotFound,
            Some(record) if record.cancel() => CancelOutcome::Cancelled,
            Some(record) => CancelOutcome::AlreadyFinished(record.status()),
        }
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn sweep(&self, jobs: &mut HashMap<String, Arc<JobRecord>>) -> usize {
        let (retention, before) = (self.retention, jobs.len());
        jobs.retain(|_, record| record.lock().finished_at.is_none_or(|at| at.elapsed() < retention));
        before - jobs.len()
    }
}

impl Expiring for JobRegistry {
    fn sweep_expired(&self) -> usize {
        let mut jobs = self.lock();
        self.sweep(&mut jobs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::generation_engine::{JobContext, JobRunner, RunError};

    struct CountingRunner;

    impl JobRunner for CountingRunner {
        fn model_id(&self) -> String {
            "counting".into()
        }

        fn run(&mut self, ctx: &JobContext<'_>) -> Result<(), RunError> {
            let total = ctx.request().steps;
            ctx.emit(JobEvent::Started { seed: 7, total_steps: total });
            for step in 1..=total {
                ctx.check_cancelled()?;
                std::thread::sleep(Duration::from_millis(5));
                ctx.emit(JobEvent::Step { step, total });
            }
            Ok(())
        }
    }

    fn request(steps: u32) -> GenerationRequest {
        let mut r = GenerationRequest::new("x");
        r.steps = steps;
        r
    }

    #[tokio::test]
    async fn a_late_subscriber_replays_the_whole_history() {
        let engine = GenerationEngine::start(4, || Ok(CountingRunner));
        let registry = JobRegistry::new(DEFAULT_RETENTION, Arc::default());
        let record = registry.submit(&engine, request(3), "test").expect("accepted");
        let first: Vec<_> = record.subscribe().collect().await;
        let late: Vec<_> = record.subscribe().collect().await;
        assert_eq!(first.len(), late.len());
        assert_eq!(first.len(), 1 + 1 + 3 + 1, "queued, started, 3 steps, done");
        assert_eq!(record.status(), JobStatus::Completed);
        engine.shutdown();
    }

    #[tokio::test]
    async fn dropping_the_only_stream_cancels_the_job() {
        let engine = GenerationEngine::start(4, || Ok(CountingRunner));
        let registry = JobRegistry::new(DEFAULT_RETENTION, Arc::default());
        let record = registry.submit(&engine, request(10_000), "test").expect("accepted");
        let mut stream = record.subscribe();
        while !matches!(stream.next().await.as_deref(), Some(JobEvent::Step { .. })) {}
        drop(stream);
        let rest: Vec<_> = record.subscribe().collect().await;
        assert!(matches!(rest.last().map(|e| e.as_ref()), Some(JobEvent::Cancelled)));
        assert_eq!(record.status(), JobStatus::Cancelled);
        engine.shutdown();
    }

    #[tokio::test]
    async fn the_periodic_sweep_frees_finished_jobs_without_any_access() {
        let engine = GenerationEngine::start(4, || Ok(CountingRunner));
        let metrics = Arc::new(WorkerMetrics::new());
        let registry = Arc::new(JobRegistry::new(Duration::from_millis(40), metrics));
        let done = registry.submit(&engine, request(1), "test").expect("accepted");
        let running = registry.submit(&engine, request(10_000), "test").expect("accepted");
        assert_eq!(done.outcome().await.status, JobStatus::Completed);
        let sweeper = crate::http::sweeper::spawn_periodic_sweep(&registry, Duration::from_millis(10), "test");
        assert!(sweeper.is_some());
        tokio::time::sleep(Duration::from_millis(150)).await;
        // `len` does not sweep: only the periodic task can have dropped the finished job.
        assert_eq!(registry.len(), 1, "the finished job is gone, the unfinished one stays");
        assert_eq!(registry.sweep_expired(), 0);
        assert!(running.cancel());
        engine.shutdown();
    }

    #[tokio::test]
    async fn only_the_latest_preview_is_kept_and_finished_jobs_expire() {
        let engine = GenerationEngine::start(4, || Ok(CountingRunner));
        let registry = JobRegistry::new(Duration::from_millis(50), Arc::default());
        let record = registry.submit(&engine, request(10_000), "test").expect("accepted");
        let preview = |step| JobEvent::Preview(crate::backend::request::PreviewImage { step, total: 2, png: vec![], width: 1, height: 1 });
        record.push(preview(1));
        record.push(preview(2));
        let previews: Vec<u32> =
            record.events().iter().filter_map(|e| if let JobEvent::Preview(p) = e.as_ref() { Some(p.step) } else { None }).collect();
        assert_eq!(previews, vec![2]);
        assert!(record.cancel());
        assert_eq!(record.outcome().await.status, JobStatus::Cancelled);
        assert!(registry.get(record.id().as_str()).is_some());
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert!(registry.get(record.id().as_str()).is_none(), "expired after retention");
        assert_eq!(registry.cancel(record.id().as_str()), CancelOutcome::NotFound);
        engine.shutdown();
    }
}
