//! Bounded FIFO of accepted jobs. A full queue is an explicit error (the faces answer 429/503),
//! never a silent wait. Every job carries a cancellation token; cancelling a queued job removes it
//! and tells its listener at once, cancelling the running job is seen by the engine at the next
//! step.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use tokio::sync::mpsc;

use crate::backend::request::{GenerationRequest, JobEvent};

/// Job ids look like `job-<uuid v4>`, as rbee's job server writes them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(String);

impl JobId {
    pub fn new_random() -> Self {
        JobId(format!("job-{}", uuid::Uuid::new_v4()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for JobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for JobId {
    fn from(s: &str) -> Self {
        JobId(s.to_string())
    }
}

/// Shared flags a face sets and the engine polls between steps.
#[derive(Debug, Clone, Default)]
pub struct CancelToken {
    cancelled: Arc<AtomicBool>,
    interrupted: Arc<AtomicBool>,
}

impl CancelToken {
    /// Stop the job and throw away what it has (the job ends `Cancelled`).
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }

    /// Stop sampling and finish with what the job has (A1111 `/interrupt`: the current latents
    /// are decoded and sent as the last image; the job ends `Done`).
    pub fn interrupt(&self) {
        self.interrupted.store(true, Ordering::SeqCst);
    }

    pub fn is_interrupted(&self) -> bool {
        self.interrupted.load(Ordering::SeqCst)
    }
}

/// Where a job's events go. Unbounded so the engine thread never blocks on a slow client; a job
/// sends a bounded number of events (steps + previews + images), so memory stays bounded too.
pub type JobEventSender = mpsc::UnboundedSender<JobEvent>;
pub type JobEventReceiver = mpsc::UnboundedReceiver<JobEvent>;

/// A job waiting for (or held by) the engine.
#[derive(Debug)]
pub struct QueuedJob {
    pub id: JobId,
    pub request: GenerationRequest,
    pub events: JobEventSender,
    pub cancel: CancelToken,
    /// `job{job_id}`, opened where the job was submitted: its parent is the submitter's span (the
    /// HTTP request's, with its request id), so every line the engine logs for the job names both.
    pub span: tracing::Span,
}

impl QueuedJob {
    /// Send an event; a listener that went away is not an error (the job still finishes).
    pub fn emit(&self, event: JobEvent) {
        let _ = self.events.send(event);
    }
}

/// What a face gets back for an accepted job.
#[derive(Debug)]
pub struct JobHandle {
    pub id: JobId,
    pub events: JobEventReceiver,
    pub cancel: CancelToken,
    /// Jobs ahead of this one when it was accepted (0 = runs next).
    pub position: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    #[error("the queue is full ({capacity} jobs waiting); retry later")]
    Full { capacity: usize },
    #[error("the worker is shutting down")]
    Closed,
}

#[derive(Debug, Default)]
struct QueueState {
    jobs: VecDeque<QueuedJob>,
    closed: bool,
}

/// Bounded FIFO shared by the faces (producers) and the engine thread (the one consumer).
#[derive(Debug)]
pub struct RequestQueue {
    state: Mutex<QueueState>,
    job_ready: Condvar,
    capacity: usize,
}

impl RequestQueue {
    /// `capacity` jobs may wait (the running job does not count). At least 1.
    pub fn new(capacity: usize) -> Arc<Self> {
        Arc::new(RequestQueue { state: Mutex::new(QueueState::default()), job_ready: Condvar::new(), capacity: capacity.max(1) })
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    // A poisoned lock only means a panic happened while holding it; the VecDeque is still valid.
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Accept a request, or say why not. The `Queued` event is already in the handle's channel.
    pub fn submit(&self, request: GenerationRequest) -> Result<JobHandle, QueueError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let id = JobId::new_random();
        let cancel = CancelToken::default();
        let mut state = self.lock();
        if state.closed {
            return Err(QueueError::Closed);
        }
        if state.jobs.len() >= self.capacity {
            return Err(QueueError::Full { capacity: self.capacity });
        }
        let position = state.jobs.len();
        let span = tracing::info_span!("job", job_id = %id);
        let job = QueuedJob { id: id.clone(), request, events: tx, cancel: cancel.clone(), span };
        job.emit(JobEvent::Queued { position });
        state.jobs.push_back(job);
        drop(state);
        self.job_ready.notify_one();
        Ok(JobHandle { id, events: rx, cancel, position })
    }

    /// Jobs waiting (not counting the one running).
    pub fn len(&self) -> usize {
        self.lock().jobs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Remove a waiting job and tell its listener it was cancelled. False when it is not waiting
    /// (unknown, already running, or finished).
    pub fn cancel_waiting(&self, id: &JobId) -> bool {
        let mut state = self.lock();
        let Some(pos) = state.jobs.iter().position(|j| &j.id == id) else {
            return false;
        };
        if let Some(job) = state.jobs.remove(pos) {
            job.cancel.cancel();
            job.emit(JobEvent::Cancelled);
        }
        true
    }

    /// Block until a job is available, skipping jobs cancelled while they waited. `None` once the
    /// queue is closed and drained of runnable work.
    pub fn next_job(&self) -> Option<QueuedJob> {
        let mut state = self.lock();
        loop {
            while let Some(job) = state.jobs.pop_front() {
                if job.cancel.is_cancelled() {
                    job.emit(JobEvent::Cancelled);
                    continue;
                }
                return Some(job);
            }
            if state.closed {
                return None;
            }
            state = self.job_ready.wait(state).unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }

    /// Stop intake. Waiting jobs are cancelled (their listeners hear `Cancelled`) and the engine's
    /// `next_job` returns `None` once idle.
    pub fn close(&self) {
        self.close_with(|job| job.emit(JobEvent::Cancelled));
    }

    /// Stop intake and end every waiting job with `finish` (which sends its terminal event).
    pub fn close_with(&self, finish: impl Fn(&QueuedJob)) {
        let mut state = self.lock();
        state.closed = true;
        for job in state.jobs.drain(..) {
            job.cancel.cancel();
            finish(&job);
        }
        drop(state);
        self.job_ready.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> GenerationRequest {
        GenerationRequest::new("a cat")
    }

    #[test]
    fn full_queue_is_reported_not_waited_on() {
        let q = RequestQueue::new(2);
        let a = q.submit(req()).expect("first fits");
        let b = q.submit(req()).expect("second fits");
        assert_eq!((a.position, b.position), (0, 1));
        assert_eq!(q.submit(req()).err(), Some(QueueError::Full { capacity: 2 }));
    }

    #[test]
    fn cancelling_a_waiting_job_removes_it_and_notifies() {
        let q = RequestQueue::new(4);
        let mut a = q.submit(req()).expect("fits");
        let b = q.submit(req()).expect("fits");
        assert!(q.cancel_waiting(&a.id));
        assert!(!q.cancel_waiting(&a.id), "second cancel finds nothing");
        assert!(matches!(a.events.try_recv(), Ok(JobEvent::Queued { position: 0 })));
        assert!(matches!(a.events.try_recv(), Ok(JobEvent::Cancelled)));
        let next = q.next_job().expect("b is still there");
        assert_eq!(next.id, b.id);
    }

    #[test]
    fn tokens_cancelled_while_waiting_are_skipped() {
        let q = RequestQueue::new(4);
        let a = q.submit(req()).expect("fits");
        let b = q.submit(req()).expect("fits");
        a.cancel.cancel();
        assert_eq!(q.next_job().map(|j| j.id), Some(b.id));
    }

    #[test]
    fn close_cancels_waiting_jobs_and_ends_the_consumer() {
        let q = RequestQueue::new(4);
        let mut a = q.submit(req()).expect("fits");
        q.close();
        assert!(q.next_job().is_none());
        assert!(matches!(a.events.try_recv(), Ok(JobEvent::Queued { .. })));
        assert!(matches!(a.events.try_recv(), Ok(JobEvent::Cancelled)));
        assert_eq!(q.submit(req()).err(), Some(QueueError::Closed));
    }
}
