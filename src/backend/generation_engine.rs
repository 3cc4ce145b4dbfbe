//! The one background worker that owns the models. It loads them off the async runtime, then takes
//! jobs from the queue one at a time. A failing or panicking job fails alone; the engine keeps
//! serving. Status (loading / idle / busy / error, current step) is shared for the faces' ready and
//! progress endpoints.

use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::backend::engine_observer::{EngineObserver, JobRunReport, RunOutcome};
use crate::backend::job_progress::JobProgress;
use crate::backend::request::{GenerationRequest, JobError, JobEvent, PreviewImage};
use crate::backend::request_queue::{CancelToken, JobHandle, JobId, QueueError, QueuedJob, RequestQueue};

/// How a job run ended, other than success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunError {
    Cancelled,
    Failed(JobError),
}

impl From<JobError> for RunError {
    fn from(e: JobError) -> Self {
        RunError::Failed(e)
    }
}

/// What a runner sees of the job it runs: the request, a way to report events, and the cancel
/// flag to poll between steps.
pub struct JobContext<'a> {
    job: &'a QueuedJob,
    status: &'a EngineStatus,
    progress: Mutex<JobProgress>,
    observer: Option<Arc<dyn EngineObserver>>,
    /// When the running job began loading a model it switched to.
    loading_since: Mutex<Option<Instant>>,
    /// When the per-job timeout ends this job (its clock starts when the engine takes it).
    deadline: Option<Instant>,
}

impl JobContext<'_> {
    pub fn id(&self) -> &JobId {
        &self.job.id
    }

    pub fn request(&self) -> &GenerationRequest {
        &self.job.request
    }

    /// True once the job must stop: it was cancelled or ran past the per-job timeout. Runners
    /// poll this between steps; the engine tells the two apart when the runner returns.
    pub fn is_cancelled(&self) -> bool {
        self.job.cancel.is_cancelled() || self.is_past_deadline()
    }

    /// The job was interrupted: stop sampling, finish the image in hand, end normally.
    pub fn is_interrupted(&self) -> bool {
        self.job.cancel.is_interrupted()
    }

    /// Whether sampling should stop now (cancelled, timed out or interrupted).
    pub fn should_stop(&self) -> bool {
        self.is_cancelled() || self.is_interrupted()
    }

    fn is_past_deadline(&self) -> bool {
        self.deadline.is_some_and(|deadline| Instant::now() >= deadline)
    }

    /// `Err(Cancelled)` once the job must stop: `ctx.check_cancelled()?` between steps.
    pub fn check_cancelled(&self) -> Result<(), RunError> {
        if self.is_cancelled() {
            Err(RunError::Cancelled)
        } else {
            Ok(())
        }
    }

    /// The runner is loading `model` for this job: status says "loading" until
    /// [`Self::report_model_ready`].
    pub fn report_model_loading(&self, model: &str) {
        *lock_ignoring_poison(&self.loading_since) = Some(Instant::now());
        let mut s = self.status.lock();
        s.state = EngineState::Loading;
        s.loading_model = Some(model.to_string());
    }

    /// `model` is loaded and serves this job (and is the one status names from now on).
    pub fn report_model_ready(&self, model: &str) {
        let load = lock_ignoring_poison(&self.loading_since).take().map(|since| ModelLoad { model: model.to_string(), took: since.elapsed() });
        if let Some(load) = &load {
            tracing::info!(model, seconds = load.took.as_secs_f64(), "model loaded");
        }
        let mut s = self.status.lock();
        s.state = EngineState::Busy;
        s.loading_model = None;
        s.model_id = Some(model.to_string());
        if load.is_some() {
            s.last_model_load = load;
        }
    }

    /// Report an event to the job's listener, keeping the shared status, the step timings and
    /// the progress log in step.
    pub fn emit(&self, event: JobEvent) {
        self.record_progress(&event);
        self.status.observe(&self.job.id, &event);
        self.job.emit(event);
    }

    fn record_progress(&self, event: &JobEvent) {
        let now = Instant::now();
        let mut progress = lock_ignoring_poison(&self.progress);
        match event {
            JobEvent::Started { total_steps, .. } => progress.started(now, *total_steps),
            JobEvent::Step { step, total } => {
                let mark = progress.step(now, *step, *total);
                if let Some(observer) = &self.observer {
                    observer.step_finished(mark.took);
                }
                if mark.log_progress {
                    let summary = progress.summary(now);
                    tracing::info!(
                        step,
                        total,
                        elapsed_s = round_to_ms(summary.elapsed),
                        it_per_s = two_decimals(summary.iterations_per_second()),
                        "job progress"
                    );
                }
            }
            JobEvent::Image(_) => progress.image_done(now),
            _ => {}
        }
    }

    /// Steps, images and time so far.
    fn summary(&self) -> crate::backend::job_progress::RunSummary {
        lock_ignoring_poison(&self.progress).summary(Instant::now())
    }
}

/// Seconds with millisecond precision, for log fields people read.
fn round_to_ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

fn two_decimals(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

// A poisoned lock only means a runner panicked while holding it; the data is plain bookkeeping.
fn lock_ignoring_poison<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The model side of the engine: runs one job to completion (emitting `Started`, `Step`,
/// `Preview` and `Image` events). The engine itself sends the terminal event.
pub trait JobRunner: Send + 'static {
    /// Short id of the loaded model, for status reports.
    fn model_id(&self) -> String;

    /// Facts about the loaded model the faces need to fill in their defaults.
    fn model_info(&self) -> Option<ModelInfo> {
        None
    }

    fn run(&mut self, ctx: &JobContext<'_>) -> Result<(), RunError>;
}

/// Coarse engine state, as `/v1/ready` and A1111 progress report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineState {
    Loading,
    Idle,
    Busy,
    /// Loading failed; the message says what to do.
    Error(String),
    Stopped,
}

impl EngineState {
    pub fn label(&self) -> &'static str {
        match self {
            EngineState::Loading => "loading",
            EngineState::Idle => "idle",
            EngineState::Busy => "busy",
            EngineState::Error(_) => "error",
            EngineState::Stopped => "stopped",
        }
    }
}

/// The job the engine is running right now.
#[derive(Debug, Clone)]
pub struct CurrentJob {
    pub id: JobId,
    pub started: Instant,
    pub step: u32,
    pub total_steps: u32,
    pub images_done: u32,
    pub images_total: u32,
    pub latest_preview: Option<PreviewImage>,
}

/// Protocol-neutral facts about the loaded model: faces use them for defaults (size, steps, CFG)
/// and listings (name, hash).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    pub id: String,
    /// Display name (last path/repo component), as A1111 names checkpoints.
    pub name: String,
    /// First 10 hex digits of the weights' sha256, when known.
    pub hash: Option<String>,
    /// "sd" (1.x/2.x) or "sdxl".
    pub family: &'static str,
    /// Size the model was trained at, in pixels (square).
    pub native_size: u32,
    /// Width and height must be multiples of this.
    pub size_multiple: u32,
    /// Sensible defaults for this model (turbo/LCM-style models: few steps, no CFG).
    pub default_steps: u32,
    pub default_cfg_scale: f64,
    /// A 9-channel inpainting UNet.
    pub inpainting: bool,
}

/// How long the latest model load took (at start-up, or when a job switched models).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelLoad {
    pub model: String,
    pub took: Duration,
}

/// A consistent copy of the engine's status.
#[derive(Debug, Clone)]
pub struct StatusSnapshot {
    pub state: EngineState,
    pub model_id: Option<String>,
    pub model_info: Option<ModelInfo>,
    /// The model being loaded for the running job (state is `Loading` meanwhile).
    pub loading_model: Option<String>,
    pub current: Option<CurrentJob>,
    pub jobs_done: u64,
    pub last_model_load: Option<ModelLoad>,
}

/// Shared, lock-protected status the engine updates and the faces read.
#[derive(Debug)]
pub struct EngineStatus {
    inner: Mutex<StatusSnapshot>,
}

impl EngineStatus {
    fn new() -> Self {
        EngineStatus { inner: Mutex::new(StatusSnapshot { state: EngineState::Loading, model_id: None, model_info: None, loading_model: None, current: None, jobs_done: 0, last_model_load: None }) }
    }

    fn lock(&self) -> MutexGuard<'_, StatusSnapshot> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn snapshot(&self) -> StatusSnapshot {
        self.lock().clone()
    }

    fn set_state(&self, state: EngineState) {
        self.lock().state = state;
    }

    fn observe(&self, id: &JobId, event: &JobEvent) {
        let mut s = self.lock();
        let Some(cur) = s.current.as_mut().filter(|c| &c.id == id) else {
            return;
        };
        match event {
            JobEvent::Started { total_steps, .. } => cur.total_steps = *total_steps,
            JobEvent::Step { step, total } => {
                cur.step = *step;
                cur.total_steps = *total;
            }
            JobEvent::Preview(p) => cur.latest_preview = Some(p.clone()),
            JobEvent::Image(_) => cur.images_done += 1,
            _ => {}
        }
    }
}

/// How the engine runs jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineOptions {
    /// Jobs that may wait behind the running one.
    pub queue_capacity: usize,
    /// A job still running this long after it started stops at its next step and fails as timed
    /// out; `None` = no limit.
    pub job_timeout: Option<Duration>,
}

/// Handle to the running engine: submit jobs, cancel them, read status, shut down.
pub struct GenerationEngine {
    queue: Arc<RequestQueue>,
    status: Arc<EngineStatus>,
    running_cancel: Arc<Mutex<Option<(JobId, CancelToken)>>>,
    worker: Mutex<Option<JoinHandle<()>>>,
    observer: Arc<ObserverSlot>,
}

/// The observer the engine thread reports to; set after start (the HTTP state installs its
/// metrics), read at the start of every job.
#[derive(Default)]
struct ObserverSlot(RwLock<Option<Arc<dyn EngineObserver>>>);

impl ObserverSlot {
    fn get(&self) -> Option<Arc<dyn EngineObserver>> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set(&self, observer: Arc<dyn EngineObserver>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Some(observer);
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("the model is not available: {0}")]
    ModelUnavailable(String),
}

impl GenerationEngine {
    /// Start the worker thread with no job timeout; see [`Self::start_with`].
    pub fn start<R, L>(queue_capacity: usize, load: L) -> Arc<Self>
    where
        R: JobRunner,
        L: FnOnce() -> Result<R, String> + Send + 'static,
    {
        Self::start_with(EngineOptions { queue_capacity, job_timeout: None }, load)
    }

    /// Start the worker thread. `load` runs on that thread (the caller's listener is already up)
    /// and builds the runner that owns the models.
    pub fn start_with<R, L>(options: EngineOptions, load: L) -> Arc<Self>
    where
        R: JobRunner,
        L: FnOnce() -> Result<R, String> + Send + 'static,
    {
        let queue = RequestQueue::new(options.queue_capacity);
        let status = Arc::new(EngineStatus::new());
        let running_cancel = Arc::new(Mutex::new(None));
        let observer = Arc::new(ObserverSlot::default());
        let worker = {
            let (queue, status, running_cancel, observer) = (queue.clone(), status.clone(), running_cancel.clone(), observer.clone());
            std::thread::Builder::new()
                .name("generation-engine".into())
                .spawn(move || worker_loop(load, options.job_timeout, &queue, &status, &running_cancel, &observer))
                .ok()
        };
        if worker.is_none() {
            status.set_state(EngineState::Error("could not start the engine thread".into()));
        }
        Arc::new(GenerationEngine { queue, status, running_cancel, worker: Mutex::new(worker), observer })
    }

    /// Report step times and job runs to `observer` from the next job on (replaces any other).
    pub fn set_observer(&self, observer: Arc<dyn EngineObserver>) {
        self.observer.set(observer);
    }

    /// Queue a request. Refused at once when the queue is full or the model failed to load.
    pub fn submit(&self, request: GenerationRequest) -> Result<JobHandle, SubmitError> {
        if let EngineState::Error(msg) = self.status.snapshot().state {
            return Err(SubmitError::ModelUnavailable(msg));
        }
        Ok(self.queue.submit(request)?)
    }

    /// Cancel a waiting or running job. False when the engine does not hold it.
    pub fn cancel(&self, id: &JobId) -> bool {
        if self.queue.cancel_waiting(id) {
            return true;
        }
        let running = self.running_cancel.lock().unwrap_or_else(|p| p.into_inner());
        match running.as_ref() {
            Some((running_id, token)) if running_id == id => {
                token.cancel();
                true
            }
            _ => false,
        }
    }

    /// Interrupt a running job: it stops sampling, sends the image it has (decoded from its
    /// current latents, flagged in the image's warnings) and ends `Done`. False when `id` is not
    /// the running job.
    pub fn interrupt(&self, id: &JobId) -> bool {
        let running = self.running_cancel.lock().unwrap_or_else(|p| p.into_inner());
        match running.as_ref() {
            Some((running_id, token)) if running_id == id => {
                token.interrupt();
                true
            }
            _ => false,
        }
    }

    /// Cancel whatever is running now. Returns its id if there was one.
    pub fn cancel_running(&self) -> Option<JobId> {
        let running = self.running_cancel.lock().unwrap_or_else(|p| p.into_inner());
        running.as_ref().map(|(id, token)| {
            token.cancel();
            id.clone()
        })
    }

    pub fn status(&self) -> StatusSnapshot {
        self.status.snapshot()
    }

    pub fn queue_len(&self) -> usize {
        self.queue.len()
    }

    pub fn queue_capacity(&self) -> usize {
        self.queue.capacity()
    }

    /// Stop intake, cancel waiting and running jobs, and wait for the worker to exit.
    pub fn shutdown(&self) {
        self.queue.close();
        self.cancel_running();
        let handle = self.worker.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
        self.status.set_state(EngineState::Stopped);
    }
}

fn worker_loop<R, L>(
    load: L,
    job_timeout: Option<Duration>,
    queue: &RequestQueue,
    status: &EngineStatus,
    running_cancel: &Mutex<Option<(JobId, CancelToken)>>,
    observer: &ObserverSlot,
) where
    R: JobRunner,
    L: FnOnce() -> Result<R, String>,
{
    let load_started = Instant::now();
    let loaded = panic::catch_unwind(AssertUnwindSafe(load)).unwrap_or_else(|p| Err(format!("model loading panicked: {}", panic_message(&p))));
    let mut runner = match loaded {
        Ok(runner) => {
            {
                let mut s = status.lock();
                let model = runner.model_id();
                let took = load_started.elapsed();
                tracing::info!(model = %model, seconds = took.as_secs_f64(), "model loaded");
                s.last_model_load = Some(ModelLoad { model: model.clone(), took });
                s.model_id = Some(model);
                s.model_info = runner.model_info();
            }
            status.set_state(EngineState::Idle);
            runner
        }
        Err(message) => {
            tracing::error!(%message, "model loading failed");
            status.set_state(EngineState::Error(message.clone()));
            // Nothing can run: fail whatever was accepted while loading, then refuse new work.
            queue.close_with(|job| job.emit(JobEvent::Failed(JobError::ModelUnavailable(message.clone()))));
            return;
        }
    };

    while let Some(job) = queue.next_job() {
        *running_cancel.lock().unwrap_or_else(|p| p.into_inner()) = Some((job.id.clone(), job.cancel.clone()));
        {
            let mut s = status.lock();
            s.state = EngineState::Busy;
            s.current = Some(CurrentJob {
                id: job.id.clone(),
                started: Instant::now(),
                step: 0,
                total_steps: job.request.steps,
                images_done: 0,
                images_total: job.request.num_images,
                latest_preview: None,
            });
        }
        // Everything the engine does for this job, the runner's own log lines included, is
        // inside the job's span (and so names its job id and, for HTTP jobs, the request id).
        let span = job.span.clone();
        let _enter = span.enter();
        tracing::info!(steps = job.request.steps, width = job.request.width, height = job.request.height, images = job.request.num_images, "job started");
        let ctx = JobContext {
            job: &job,
            status,
            progress: Mutex::new(JobProgress::new(Instant::now(), job.request.steps)),
            observer: observer.get(),
            loading_since: Mutex::new(None),
            deadline: job_timeout.map(|timeout| Instant::now() + timeout),
        };
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| runner.run(&ctx)))
            .unwrap_or_else(|p| Err(RunError::Failed(JobError::Internal(format!("panic: {}", panic_message(&p))))));
        let (terminal, run_outcome) = match (outcome, job_timeout) {
            (Ok(()), _) if job.cancel.is_cancelled() => (JobEvent::Cancelled, RunOutcome::Cancelled),
            (Ok(()), _) => (JobEvent::Done, RunOutcome::Completed),
            // The runner stopped without a cancel request: its deadline stopped it.
            (Err(RunError::Cancelled), Some(timeout)) if !job.cancel.is_cancelled() && ctx.is_past_deadline() => {
                tracing::warn!(timeout_secs = timeout.as_secs(), "job timed out");
                (JobEvent::Failed(JobError::TimedOut { seconds: timeout.as_secs() }), RunOutcome::Failed)
            }
            (Err(RunError::Cancelled), _) => (JobEvent::Cancelled, RunOutcome::Cancelled),
            (Err(RunError::Failed(e)), _) => {
                tracing::warn!(error = %e, "job failed");
                (JobEvent::Failed(e), RunOutcome::Failed)
            }
        };
        let summary = ctx.summary();
        tracing::info!(
            outcome = run_outcome.label(),
            steps = summary.steps_done,
            total_steps = summary.total_steps,
            images = summary.images,
            seconds = round_to_ms(summary.elapsed),
            it_per_s = two_decimals(summary.iterations_per_second()),
            "job finished"
        );
        if let Some(observer) = &ctx.observer {
            observer.job_ran(&JobRunReport {
                outcome: run_outcome,
                elapsed: summary.elapsed,
                steps_done: summary.steps_done,
                total_steps: summary.total_steps,
                images: summary.images,
            });
        }
        drop(ctx);
        *running_cancel.lock().unwrap_or_else(|p| p.into_inner()) = None;
        {
            let mut s = status.lock();
            s.current = None;
            s.jobs_done += 1;
            s.state = EngineState::Idle;
            s.loading_model = None;
            // A job may have switched models.
            s.model_info = runner.model_info();
        }
        job.emit(terminal);
    }
}

fn panic_message(payload: &Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::backend::request_queue::JobEventReceiver;

    /// A runner that "samples" by sleeping per step, and panics or fails on request, so the
    /// engine's own contract can be pinned down without loading a model.
    struct StepRunner {
        step_time: Duration,
    }

    impl JobRunner for StepRunner {
        fn model_id(&self) -> String {
            "step-runner".into()
        }

        fn run(&mut self, ctx: &JobContext<'_>) -> Result<(), RunError> {
            match ctx.request().prompt.as_str() {
                "panic" => panic!("injected fault"),
                "fail" => return Err(JobError::Internal("injected failure".into()).into()),
                "switch" => {
                    ctx.report_model_loading("other-model");
                    std::thread::sleep(Duration::from_millis(300));
                    ctx.report_model_ready("other-model");
                }
                _ => {}
            }
            let total = ctx.request().steps;
            ctx.emit(JobEvent::Started { seed: 1, total_steps: total });
            for step in 1..=total {
                if ctx.is_interrupted() {
                    return Ok(());
                }
                ctx.check_cancelled()?;
                std::thread::sleep(self.step_time);
                ctx.emit(JobEvent::Step { step, total });
            }
            Ok(())
        }
    }

    fn engine(step_ms: u64, capacity: usize) -> Arc<GenerationEngine> {
        GenerationEngine::start(capacity, move || Ok(StepRunner { step_time: Duration::from_millis(step_ms) }))
    }

    fn request(prompt: &str, steps: u32) -> GenerationRequest {
        let mut r = GenerationRequest::new(prompt);
        r.steps = steps;
        r
    }

    fn events_until_terminal(rx: &mut JobEventReceiver) -> Vec<JobEvent> {
        let mut out = Vec::new();
        loop {
            let ev = rx.blocking_recv().expect("engine must end every job with a terminal event");
            let done = ev.is_terminal();
            out.push(ev);
            if done {
                return out;
            }
        }
    }

    #[test]
    fn a_panicking_job_fails_alone_and_the_next_job_runs() {
        let engine = engine(1, 4);
        let mut bad = engine.submit(request("panic", 3)).expect("accepted");
        let mut good = engine.submit(request("fine", 3)).expect("accepted");
        let bad_events = events_until_terminal(&mut bad.events);
        assert!(matches!(bad_events.last(), Some(JobEvent::Failed(JobError::Internal(m))) if m.contains("injected fault")));
        let good_events = events_until_terminal(&mut good.events);
        assert!(matches!(good_events.last(), Some(JobEvent::Done)));
        assert_eq!(good_events.iter().filter(|e| matches!(e, JobEvent::Step { .. })).count(), 3);
        engine.shutdown();
    }

    #[test]
    fn cancel_mid_run_stops_within_one_step_and_frees_the_engine() {
        let engine = engine(20, 4);
        let mut long = engine.submit(request("long", 1000)).expect("accepted");
        // Wait until it is running, then cancel.
        loop {
            if let Some(JobEvent::Step { .. }) = long.events.blocking_recv() {
                break;
            }
        }
        let cancelled_at = Instant::now();
        assert!(engine.cancel(&long.id));
        let rest = events_until_terminal(&mut long.events);
        assert!(matches!(rest.last(), Some(JobEvent::Cancelled)));
        let steps_after_cancel = rest.iter().filter(|e| matches!(e, JobEvent::Step { .. })).count();
        assert!(steps_after_cancel <= 1, "ran {steps_after_cancel} steps after cancel");
        assert!(cancelled_at.elapsed() < Duration::from_secs(5));
        let mut next = engine.submit(request("next", 2)).expect("accepted");
        assert!(matches!(events_until_terminal(&mut next.events).last(), Some(JobEvent::Done)));
        engine.shutdown();
    }

    #[test]
    fn an_interrupted_job_ends_done_and_only_the_running_job_is_interrupted() {
        let engine = engine(20, 4);
        let mut long = engine.submit(request("long", 1000)).expect("accepted");
        while !matches!(long.events.blocking_recv(), Some(JobEvent::Step { .. })) {}
        assert!(!engine.interrupt(&JobId::new_random()));
        assert!(engine.interrupt(&long.id));
        let rest = events_until_terminal(&mut long.events);
        assert!(matches!(rest.last(), Some(JobEvent::Done)), "{rest:?}");
        assert!(rest.iter().filter(|e| matches!(e, JobEvent::Step { .. })).count() <= 1);
        engine.shutdown();
    }

    #[test]
    fn a_job_past_its_timeout_fails_at_its_next_step_and_its_clock_starts_when_it_runs() {
        let engine = GenerationEngine::start_with(
            EngineOptions { queue_capacity: 4, job_timeout: Some(Duration::from_millis(300)) },
            || Ok(StepRunner { step_time: Duration::from_millis(20) }),
        );
        let mut long = engine.submit(request("long", 1000)).expect("accepted");
        // Waits ~300 ms behind `long`, then needs ~200 ms of its own: within its own timeout.
        let mut queued = engine.submit(request("short", 10)).expect("accepted");
        let started = Instant::now();
        let events = events_until_terminal(&mut long.events);
        assert!(
            matches!(events.last(), Some(JobEvent::Failed(e @ JobError::TimedOut { seconds: 0 })) if e.to_string().contains("timed out after 0 s")),
            "{:?}",
            events.last()
        );
        assert!(started.elapsed() < Duration::from_secs(3), "stopped at a step, not at the end");
        assert!(matches!(events_until_terminal(&mut queued.events).last(), Some(JobEvent::Done)));
        engine.shutdown();
    }

    #[test]
    fn a_full_queue_is_refused_with_its_capacity() {
        let engine = engine(50, 1);
        let mut running = engine.submit(request("a", 100)).expect("accepted");
        // Let the engine take the first job so the queue is empty again.
        while !matches!(running.events.blocking_recv(), Some(JobEvent::Started { .. })) {}
        let _waiting = engine.submit(request("b", 1)).expect("one may wait");
        assert_eq!(engine.submit(request("c", 1)).err(), Some(SubmitError::Queue(QueueError::Full { capacity: 1 })));
        engine.shutdown();
        assert!(matches!(events_until_terminal(&mut running.events).last(), Some(JobEvent::Cancelled)));
    }

    #[test]
    fn a_failed_load_reports_error_and_fails_waiting_jobs() {
        let engine = GenerationEngine::start::<StepRunner, _>(4, || {
            std::thread::sleep(Duration::from_millis(50));
            Err("no model at /nowhere; pass --model PATH".into())
        });
        let mut early = engine.submit(request("early", 1)).expect("accepted while loading");
        assert!(matches!(
            events_until_terminal(&mut early.events).last(),
            Some(JobEvent::Failed(JobError::ModelUnavailable(m))) if m.contains("--model PATH")
        ));
        assert!(matches!(engine.status().state, EngineState::Error(_)));
        assert!(matches!(engine.submit(request("late", 1)), Err(SubmitError::ModelUnavailable(_))));
        engine.shutdown();
    }

    #[test]
    fn status_reports_a_model_loading_for_a_job() {
        let engine = engine(1, 2);
        let mut job = engine.submit(request("switch", 2)).expect("accepted");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            // (The engine also starts in `Loading`, for its first model, with no job.)
            let snap = engine.status();
            if snap.state == EngineState::Loading && snap.current.is_some() {
                assert_eq!(snap.loading_model.as_deref(), Some("other-model"));
                break;
            }
            assert!(Instant::now() < deadline, "never saw the loading state");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(matches!(events_until_terminal(&mut job.events).last(), Some(JobEvent::Done)));
        let snap = engine.status();
        assert_eq!((snap.state, snap.model_id.as_deref(), snap.loading_model), (EngineState::Idle, Some("other-model"), None));
        engine.shutdown();
    }

    #[test]
    fn status_tracks_the_running_job() {
        let engine = engine(30, 2);
        let mut job = engine.submit(request("s", 50)).expect("accepted");
        while !matches!(job.events.blocking_recv(), Some(JobEvent::Step { step: 2, .. })) {}
        let snap = engine.status();
        assert_eq!(snap.state, EngineState::Busy);
        let cur = snap.current.expect("a job is running");
        assert_eq!(cur.id, job.id);
        assert!(cur.step >= 2 && cur.total_steps == 50);
        engine.shutdown();
    }
}
