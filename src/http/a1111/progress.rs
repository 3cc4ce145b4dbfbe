//! `GET /sdapi/v1/progress`, `POST /sdapi/v1/interrupt`, `POST /sdapi/v1/skip`: A1111's global
//! job state, answered from the engine's status and the face's [`super::run_tracker`] without
//! waiting for the running job.
//!
//! Idle is `progress == 0 && state.job_count == 0` (what webuiapi's `util_wait_for_ready` and
//! SillyTavern poll for). While the model loads the worker reports one job ("Loading model"), so
//! those clients wait for it.

use axum::extract::{Query, State};
use axum::{Extension, Json};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::{IntoParams, ToSchema};

use super::A1111Face;
use crate::backend::generation_engine::{EngineState, StatusSnapshot};
use crate::http::AppState;

#[derive(Debug, Deserialize, IntoParams)]
pub struct ProgressQuery {
    /// Leave `current_image` out (it is the live preview, a base64 PNG).
    #[serde(default)]
    pub skip_current_image: bool,
}

/// A1111's `shared.state` dict, with exactly its 9 keys.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProgressState {
    pub skipped: bool,
    pub interrupted: bool,
    pub stopping_generation: bool,
    /// `""` when idle, `"scripts_txt2img"`, or `"Batch i out of N"` when `n_iter > 1`.
    pub job: String,
    pub job_count: i64,
    pub job_timestamp: String,
    pub job_no: i64,
    pub sampling_step: i64,
    pub sampling_steps: i64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProgressResponse {
    /// 0..1; 0 when idle.
    pub progress: f64,
    /// Seconds left, estimated from the time so far: A1111's `elapsed / progress - elapsed`.
    pub eta_relative: f64,
    pub state: ProgressState,
    /// Base64 PNG of the latest live preview, unless `skip_current_image`.
    pub current_image: Option<String>,
    pub textinfo: Option<String>,
}

/// What the state dict says when nothing runs. A1111 keeps the last timestamp; a fixed zero
/// timestamp tells clients just as well that nothing is running.
fn idle_state() -> ProgressState {
    ProgressState {
        skipped: false,
        interrupted: false,
        stopping_generation: false,
        job: String::new(),
        job_count: 0,
        job_timestamp: "0".into(),
        job_no: 0,
        sampling_step: 0,
        sampling_steps: 0,
    }
}

fn idle() -> ProgressResponse {
    ProgressResponse { progress: 0.0, eta_relative: 0.0, state: idle_state(), current_image: None, textinfo: None }
}

/// A1111's formula: `0.01 + job_no/job_count + (step/steps)/job_count`, capped at 1.
fn fraction(job_no: i64, job_count: i64, step: i64, steps: i64) -> f64 {
    let mut progress = 0.01;
    if job_count > 0 {
        progress += job_no as f64 / job_count as f64;
        if steps > 0 {
            progress += step as f64 / steps as f64 / job_count as f64;
        }
    }
    progress.min(1.0)
}

/// The progress answer for an engine status and the face's runs.
pub fn progress_for(status: &StatusSnapshot, face: &A1111Face, skip_current_image: bool) -> ProgressResponse {
    if status.state == EngineState::Loading {
        let mut state = idle_state();
        state.job = "Loading model".into();
        state.job_count = 1;
        return ProgressResponse { progress: 0.01, eta_relative: 0.0, state, current_image: None, textinfo: Some("Loading model".into()) };
    }
    let engine_job = status.current.as_ref();
    let run = face.runs.current(engine_job.map(|c| &c.id));
    if run.is_none() && engine_job.is_none() {
        return idle();
    }
    let (step, steps) = engine_job.map_or((0, 0), |c| (i64::from(c.step), i64::from(c.total_steps)));
    let mut state = idle_state();
    state.sampling_step = step;
    state.sampling_steps = steps;
    let started = match &run {
        Some(run) => {
            let run_state = run.state();
            state.job_count = i64::from(run.job_count);
            state.job_no = i64::from(run_state.job_no);
            state.job_timestamp = run.job_timestamp.clone();
            state.interrupted = run_state.interrupted;
            state.skipped = run_state.skipped;
            state.job = if run.job_count > 1 {
                format!("Batch {} out of {}", run_state.job_no + 1, run.job_count)
            } else {
                run.job_name.to_string()
            };
            // A batch that belongs to the run but has not reached the engine yet.
            if engine_job.is_none_or(|c| run_state.engine_job.as_ref() != Some(&c.id)) {
                state.sampling_step = 0;
                state.sampling_steps = 0;
            }
            run_state.started
        }
        None => {
            // Another face's job: one job with its own steps.
            state.job = "job".into();
            state.job_count = 1;
            engine_job.map(|c| c.started)
        }
    };
    let progress = fraction(state.job_no, state.job_count, state.sampling_step, state.sampling_steps);
    let elapsed = started.map_or(0.0, |s| s.elapsed().as_secs_f64());
    let eta_relative = if progress > 0.0 { elapsed / progress - elapsed } else { 0.0 };
    let current_image = if skip_current_image {
        None
    } else {
        engine_job.and_then(|c| c.latest_preview.as_ref()).map(|p| base64::engine::general_purpose::STANDARD.encode(&p.png))
    };
    ProgressResponse { progress, eta_relative, state, current_image, textinfo: None }
}

#[utoipa::path(get, path = "/sdapi/v1/progress", tag = "a1111", params(ProgressQuery),
    responses((status = 200, description = "The running job's progress; idle is progress 0 and job_count 0", body = ProgressResponse)))]
pub async fn progress(State(state): State<AppState>, Extension(face): Extension<A1111Face>, Query(query): Query<ProgressQuery>) -> Json<ProgressResponse> {
    Json(progress_for(&state.engine.status(), &face, query.skip_current_image))
}

#[utoipa::path(post, path = "/sdapi/v1/interrupt", tag = "a1111",
    responses((status = 200, description = "The running job stops within a step and decodes its current latents; its call answers 200 with the images so far, that one included", body = Object)))]
pub async fn interrupt(State(state): State<AppState>, Extension(face): Extension<A1111Face>) -> Json<Value> {
    let running = state.engine.status().current.map(|c| c.id);
    let run = face.runs.interrupt(running.as_ref());
    // Cancel the engine job the current call is on (or whatever runs, as A1111's state is
    // global). Interrupting while idle does nothing, as in A1111.
    // The job stops sampling and sends the image it has (its current latents, decoded), as
    // A1111 does; a job still waiting in the queue is cancelled.
    let target = run.and_then(|r| r.state().engine_job).or(running);
    if let Some(job) = target {
        if !state.engine.interrupt(&job) {
            state.engine.cancel(&job);
        }
    }
    Json(json!({}))
}

#[utoipa::path(post, path = "/sdapi/v1/skip", tag = "a1111",
    responses((status = 200, description = "The running batch ends early; later batches of the same call still run (A1111 answers `null`)", body = Option<Object>)))]
pub async fn skip(State(state): State<AppState>, Extension(face): Extension<A1111Face>) -> Json<Value> {
    let running = state.engine.status().current.map(|c| c.id);
    if let Some(run) = face.runs.skip(running.as_ref()) {
        if let Some(job) = run.state().engine_job {
            state.engine.cancel(&job);
        }
    }
    Json(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a1111_progress_formula() {
        assert_eq!(fraction(0, 0, 0, 0), 0.01);
        assert!((fraction(0, 2, 5, 10) - 0.26).abs() < 1e-12);
        assert!((fraction(1, 2, 10, 10) - 1.0).abs() < 1e-12);
    }
}
