//! A1111's global `shared.state` as this face keeps it: which txt2img/img2img call is running,
//! which of its batches, and the interrupt/skip flags `/progress`, `/interrupt` and `/skip` read
//! and set. Each call runs its `n_iter` batches as separate engine jobs, so a skip can cut one
//! batch short and the call goes on with the next, as A1111's does.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use crate::backend::request_queue::JobId;

/// One running txt2img/img2img call.
#[derive(Debug)]
pub struct ActiveRun {
    id: u64,
    /// `"scripts_txt2img"` / `"scripts_img2img"`, A1111's `state.job` before batches are named.
    pub job_name: &'static str,
    /// A1111's `job_count`: the number of batches (`n_iter`).
    pub job_count: u32,
    /// A1111's `job_timestamp`, `YYYYmmddHHMMSS`.
    pub job_timestamp: String,
    state: Mutex<RunState>,
}

/// What changes while a call runs.
#[derive(Debug, Clone, Default)]
pub struct RunState {
    /// 0-based batch now running (A1111's `job_no`).
    pub job_no: u32,
    /// The engine job of the current batch.
    pub engine_job: Option<JobId>,
    /// Set once the engine took the call's first batch (before that it only waits in the queue).
    pub started: Option<Instant>,
    pub interrupted: bool,
    pub skipped: bool,
}

impl ActiveRun {
    pub fn state(&self) -> RunState {
        self.lock().clone()
    }

    fn lock(&self) -> MutexGuard<'_, RunState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn begin_batch(&self, job_no: u32, engine_job: JobId) {
        let mut s = self.lock();
        s.job_no = job_no;
        s.engine_job = Some(engine_job);
    }

    pub fn mark_started(&self) {
        self.lock().started.get_or_insert_with(Instant::now);
    }

    pub fn is_interrupted(&self) -> bool {
        self.lock().interrupted
    }

    /// Clear the skip flag, saying whether it was set (the batch that ended was skipped).
    pub fn take_skipped(&self) -> bool {
        std::mem::take(&mut self.lock().skipped)
    }
}

/// Every call in flight, oldest first.
#[derive(Debug, Default)]
pub struct RunTracker {
    runs: Mutex<Vec<Arc<ActiveRun>>>,
    next_id: AtomicU64,
}

/// Removes its run from the tracker when the call ends, however it ends (including the client
/// going away, which drops the handler's future).
pub struct RunGuard<'a> {
    tracker: &'a RunTracker,
    pub run: Arc<ActiveRun>,
}

impl Drop for RunGuard<'_> {
    fn drop(&mut self) {
        let id = self.run.id;
        self.tracker.lock().retain(|r| r.id != id);
    }
}

impl RunTracker {
    fn lock(&self) -> MutexGuard<'_, Vec<Arc<ActiveRun>>> {
        self.runs.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn register(&self, job_name: &'static str, job_count: u32) -> RunGuard<'_> {
        let run = Arc::new(ActiveRun {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            job_name,
            job_count,
            job_timestamp: chrono::Local::now().format("%Y%m%d%H%M%S").to_string(),
            state: Mutex::new(RunState::default()),
        });
        self.lock().push(run.clone());
        RunGuard { tracker: self, run }
    }

    /// The call A1111 would call "the current job": the one whose batch the engine runs, else the
    /// first one that has started (it is between two batches).
    pub fn current(&self, running_engine_job: Option<&JobId>) -> Option<Arc<ActiveRun>> {
        let runs = self.lock();
        let owner = running_engine_job.and_then(|id| runs.iter().find(|r| r.state().engine_job.as_ref() == Some(id)));
        owner.or_else(|| runs.iter().find(|r| r.state().started.is_some())).cloned()
    }

    /// `/interrupt`: the current call runs no further batches.
    pub fn interrupt(&self, running_engine_job: Option<&JobId>) -> Option<Arc<ActiveRun>> {
        let run = self.current(running_engine_job)?;
        run.lock().interrupted = true;
        Some(run)
    }

    /// `/skip`: the current call's running batch ends early; the call continues.
    pub fn skip(&self, running_engine_job: Option<&JobId>) -> Option<Arc<ActiveRun>> {
        let run = self.current(running_engine_job)?;
        run.lock().skipped = true;
        Some(run)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_prefers_the_engine_jobs_owner_and_guards_unregister() {
        let tracker = RunTracker::default();
        let a = tracker.register("scripts_txt2img", 2);
        let b = tracker.register("scripts_img2img", 1);
        assert!(tracker.current(None).is_none(), "nothing started yet");
        let job = JobId::new_random();
        b.run.begin_batch(0, job.clone());
        b.run.mark_started();
        assert_eq!(tracker.current(Some(&job)).map(|r| r.job_name), Some("scripts_img2img"));
        a.run.mark_started();
        assert_eq!(tracker.current(None).map(|r| r.job_name), Some("scripts_txt2img"));
        assert!(tracker.skip(Some(&job)).is_some());
        assert!(b.run.take_skipped() && !b.run.take_skipped());
        drop(b);
        assert_eq!(tracker.current(Some(&job)).map(|r| r.job_name), Some("scripts_txt2img"));
        drop(a);
        assert!(tracker.current(None).is_none());
    }
}
