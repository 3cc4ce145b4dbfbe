//! Hooks the engine thread calls while it runs jobs, so metrics time the work where it happens
//! (the HTTP side only sees events after a channel hop, bunched up when its runtime is busy).
//! Protocol-neutral: the metrics module implements it; the engine knows no metric names.

use std::time::Duration;

/// How a job the engine ran ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    Completed,
    Failed,
    Cancelled,
}

impl RunOutcome {
    pub fn label(self) -> &'static str {
        match self {
            RunOutcome::Completed => "completed",
            RunOutcome::Failed => "failed",
            RunOutcome::Cancelled => "cancelled",
        }
    }
}

/// One job's run on the engine, as reported when it ends. Jobs cancelled while they waited in
/// the queue never run and are not reported here.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRunReport {
    pub outcome: RunOutcome,
    /// From the engine taking the job off the queue to its end.
    pub elapsed: Duration,
    pub steps_done: u32,
    pub total_steps: u32,
    pub images: u32,
}

/// Called on the engine thread: implementations must be quick and must not block.
pub trait EngineObserver: Send + Sync {
    /// One denoising step took `took` (time since the previous step, the job's start event or
    /// the previous image).
    fn step_finished(&self, took: Duration) {
        let _ = took;
    }

    fn job_ran(&self, report: &JobRunReport) {
        let _ = report;
    }
}
