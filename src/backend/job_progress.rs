//! A running job's clock: how long each step took, when to write a progress log line, and the
//! numbers of the summary line. Pure bookkeeping over `Instant`s so the cadence is unit-tested
//! without sleeping.

use std::time::{Duration, Instant};

/// Progress lines are at least this far apart...
pub const PROGRESS_MIN_INTERVAL: Duration = Duration::from_secs(10);
/// ...and at least this share of the job's steps apart (whichever comes later), so a fast job
/// logs only its summary and a slow one a handful of lines, never one per step.
pub const PROGRESS_MIN_SHARE: f64 = 0.25;

/// What one step event means for the log and the metrics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepMark {
    /// Time since the previous step (or the job's start event or the previous image).
    pub took: Duration,
    /// Write a progress line for this step.
    pub log_progress: bool,
}

/// The summary of a job's run, for its last log line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunSummary {
    pub steps_done: u32,
    pub total_steps: u32,
    pub images: u32,
    pub elapsed: Duration,
}

impl RunSummary {
    /// Steps per second over the whole run (0 when nothing ran).
    pub fn iterations_per_second(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            f64::from(self.steps_done) / secs
        } else {
            0.0
        }
    }
}

#[derive(Debug, Clone)]
pub struct JobProgress {
    started: Instant,
    step_clock: Instant,
    steps_done: u32,
    total_steps: u32,
    images: u32,
    last_line_at: Instant,
    last_line_step: u32,
}

impl JobProgress {
    pub fn new(now: Instant, total_steps: u32) -> Self {
        JobProgress { started: now, step_clock: now, steps_done: 0, total_steps, images: 0, last_line_at: now, last_line_step: 0 }
    }

    /// The runner announced the job: sampling (and the step clock) starts now.
    pub fn started(&mut self, now: Instant, total_steps: u32) {
        self.total_steps = total_steps;
        self.step_clock = now;
    }

    /// Step `step` of `total` ended at `now`.
    pub fn step(&mut self, now: Instant, step: u32, total: u32) -> StepMark {
        let took = now.saturating_duration_since(self.step_clock);
        self.step_clock = now;
        self.steps_done = step;
        self.total_steps = total;
        let share = f64::from(step.saturating_sub(self.last_line_step)) / f64::from(total.max(1));
        let log_progress =
            step < total && share >= PROGRESS_MIN_SHARE && now.saturating_duration_since(self.last_line_at) >= PROGRESS_MIN_INTERVAL;
        if log_progress {
            self.last_line_at = now;
            self.last_line_step = step;
        }
        StepMark { took, log_progress }
    }

    /// An image was finished (decoded and encoded): the next step's time starts here.
    pub fn image_done(&mut self, now: Instant) {
        self.images += 1;
        self.step_clock = now;
    }

    pub fn summary(&self, now: Instant) -> RunSummary {
        RunSummary { steps_done: self.steps_done, total_steps: self.total_steps, images: self.images, elapsed: now.saturating_duration_since(self.started) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(start: Instant, secs: f64) -> Instant {
        start + Duration::from_secs_f64(secs)
    }

    #[test]
    fn a_fast_job_writes_no_progress_line() {
        let t0 = Instant::now();
        let mut p = JobProgress::new(t0, 20);
        p.started(t0, 20);
        let lines = (1..=20).filter(|&s| p.step(at(t0, f64::from(s) * 0.1), s, 20).log_progress).count();
        assert_eq!(lines, 0);
        let summary = p.summary(at(t0, 2.0));
        assert_eq!((summary.steps_done, summary.total_steps), (20, 20));
        assert!((summary.iterations_per_second() - 10.0).abs() < 1e-9);
    }

    #[test]
    fn a_slow_job_logs_every_quarter_once_ten_seconds_passed() {
        // 100 steps of 1 s: a line every 25 steps (the later of 25 % and 10 s), none at the end.
        let t0 = Instant::now();
        let mut p = JobProgress::new(t0, 100);
        let logged: Vec<u32> = (1..=100).filter(|&s| p.step(at(t0, f64::from(s)), s, 100).log_progress).collect();
        assert_eq!(logged, vec![25, 50, 75]);
    }

    #[test]
    fn a_short_slow_job_waits_for_ten_seconds_between_lines() {
        // 8 steps of 4 s: 25 % is 2 steps (8 s), so the 10 s rule decides: steps 3 and 6.
        let t0 = Instant::now();
        let mut p = JobProgress::new(t0, 8);
        let logged: Vec<u32> = (1..=8).filter(|&s| p.step(at(t0, 4.0 * f64::from(s)), s, 8).log_progress).collect();
        assert_eq!(logged, vec![3, 6]);
    }

    #[test]
    fn step_times_restart_after_each_image() {
        let t0 = Instant::now();
        let mut p = JobProgress::new(t0, 2);
        p.started(at(t0, 1.0), 2);
        assert_eq!(p.step(at(t0, 1.5), 1, 2).took, Duration::from_millis(500));
        p.image_done(at(t0, 3.0));
        assert_eq!(p.step(at(t0, 3.25), 2, 2).took, Duration::from_millis(250));
        assert_eq!(p.summary(at(t0, 4.0)).images, 1);
    }
}
