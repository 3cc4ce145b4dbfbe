//! rbee's job routes: submit (`POST /v1/jobs`), follow (`GET /v1/jobs/{id}/stream`), read
//! (`GET /v1/jobs/{id}`) and cancel (`DELETE /v1/jobs/{id}`).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::SecondsFormat;
use futures::{stream, StreamExt};
use serde::Serialize;
use utoipa::ToSchema;

use crate::backend::request::JobEvent;
use crate::http::error::{job_error_code, ApiError, ErrorBody, ErrorDetail};
use crate::http::job_registry::{CancelOutcome, JobStatus};
use crate::http::native::events::{percent, stream_items, JobImage};
use crate::http::native::operations::{parse_job_request, ImageOperation, ServedModel};
use crate::http::sse::{data_event, json_event, sse_response};
use crate::http::AppState;

/// Reply to a job submission (rbee's `JobResponse`).
#[derive(Debug, Serialize, ToSchema)]
pub struct JobCreated {
    #[schema(example = "job-3f0c1d2e-8a4b-4c6d-9e7f-0a1b2c3d4e5f")]
    pub job_id: String,
    #[schema(example = "/v1/jobs/job-3f0c1d2e-8a4b-4c6d-9e7f-0a1b2c3d4e5f/stream")]
    pub sse_url: String,
}

/// A job's state and, once finished, its results.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobStatusResponse {
    pub job_id: String,
    pub status: JobStatus,
    /// RFC 3339.
    pub created_at: String,
    /// Sampling steps done so far, over all images.
    pub step: u32,
    pub total_steps: u32,
    pub percent: f32,
    /// The base seed, once the job started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    pub width: u32,
    pub height: u32,
    pub num_images: u32,
    /// Finished images (all of them once `completed`; those done before a cancel or failure).
    pub images: Vec<JobImage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail>,
}

/// Reply to a cancel.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobCancelled {
    pub job_id: String,
    #[schema(example = "cancelled")]
    pub status: String,
}

fn job_not_found(job_id: &str) -> ApiError {
    ApiError::not_found("JOB_NOT_FOUND", format!("job '{job_id}' is unknown (finished jobs are kept for 10 minutes)"))
}

#[utoipa::path(post, path = "/v1/jobs", tag = "jobs",
    request_body(content = ImageOperation, description = "An rbee image operation, selected by `operation`"),
    responses(
        (status = 200, description = "Accepted; follow `sse_url`", body = JobCreated),
        (status = 400, description = "Invalid request; `error.field` names the field", body = ErrorBody),
        (status = 413, description = "The body is over the worker's --max-body-mib", body = ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 503, description = "Queue full (see Retry-After), model unavailable, or shutting down", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying (queue full only)"))),
    ),
    security((), ("bearer" = [])))]
pub async fn create_job(State(state): State<AppState>, body: Bytes) -> Result<Json<JobCreated>, ApiError> {
    let status = state.engine.status();
    let served = ServedModel { configured: &state.config.model, loaded: status.model_id.as_deref(), library: state.library.as_deref() };
    let request = parse_job_request(&body, &state.limits, &served)?;
    let record = state.submit(super::FACE.name, request)?;
    let job_id = record.id().to_string();
    tracing::info!(job_id, "job accepted");
    Ok(Json(JobCreated { sse_url: format!("/v1/jobs/{job_id}/stream"), job_id }))
}

#[utoipa::path(get, path = "/v1/jobs/{job_id}/stream", tag = "jobs",
    params(("job_id" = String, Path, description = "Id from `POST /v1/jobs`")),
    responses(
        (status = 200, content_type = "text/event-stream",
            description = "Named events `queued`, `started`, `progress`, `preview`, `complete` (one per image), `error`, \
                each with a JSON `data` whose `type` equals the event name; then one unnamed final line: \
                `data: [DONE]`, `data: [ERROR] <message>` or `data: [CANCELLED]`. A keep-alive comment is sent \
                every second. Late subscribers get the events so far, then the rest. Closing the only stream \
                of an unfinished job cancels it.",
            body = JobStreamEvent),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "Unknown job", body = ErrorBody),
    ),
    security((), ("bearer" = [])))]
pub async fn stream_job(State(state): State<AppState>, Path(job_id): Path<String>) -> Result<Response, ApiError> {
    let record = state.jobs.get(&job_id).ok_or_else(|| job_not_found(&job_id))?;
    let model = state.engine.status().model_id;
    let events = record.subscribe().flat_map(move |event| {
        let items = stream_items(&job_id, model.as_deref(), &event);
        let json = items.event.map(|e| json_event(e.name(), &e));
        stream::iter(json.into_iter().chain(items.final_marker.map(data_event)))
    });
    Ok(sse_response(events).into_response())
}

#[utoipa::path(get, path = "/v1/jobs/{job_id}", tag = "jobs",
    params(("job_id" = String, Path, description = "Id from `POST /v1/jobs`")),
    responses(
        (status = 200, description = "The job's status and results", body = JobStatusResponse),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "Unknown job", body = ErrorBody),
    ),
    security((), ("bearer" = [])))]
pub async fn get_job(State(state): State<AppState>, Path(job_id): Path<String>) -> Result<Json<JobStatusResponse>, ApiError> {
    let record = state.jobs.get(&job_id).ok_or_else(|| job_not_found(&job_id))?;
    let summary = record.summary();
    let mut body = JobStatusResponse {
        job_id: record.id().to_string(),
        status: record.status(),
        created_at: record.created_at().to_rfc3339_opts(SecondsFormat::Millis, true),
        step: 0,
        total_steps: summary.steps * summary.num_images,
        percent: 0.0,
        seed: None,
        width: summary.width,
        height: summary.height,
        num_images: summary.num_images,
        images: Vec::new(),
        error: None,
    };
    for event in record.events() {
        match event.as_ref() {
            JobEvent::Started { seed, total_steps } => {
                body.seed = Some(*seed);
                body.total_steps = *total_steps;
            }
            JobEvent::Step { step, total } => {
                body.step = *step;
                body.total_steps = *total;
            }
            JobEvent::Image(image) => body.images.push(JobImage::from(image)),
            JobEvent::Failed(e) => {
                body.error = Some(ErrorDetail { code: job_error_code(e).to_string(), message: e.to_string(), field: None })
            }
            _ => {}
        }
    }
    body.percent = if body.status == JobStatus::Completed { 100.0 } else { percent(body.step, body.total_steps) };
    Ok(Json(body))
}

#[utoipa::path(delete, path = "/v1/jobs/{job_id}", tag = "jobs",
    params(("job_id" = String, Path, description = "Id from `POST /v1/jobs`")),
    responses(
        (status = 200, description = "Cancelled: a waiting job at once, a running one within one step", body = JobCancelled),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "Unknown job", body = ErrorBody),
        (status = 409, description = "The job had already finished", body = ErrorBody),
    ),
    security((), ("bearer" = [])))]
pub async fn cancel_job(State(state): State<AppState>, Path(job_id): Path<String>) -> Result<Json<JobCancelled>, ApiError> {
    match state.jobs.cancel(&job_id) {
        CancelOutcome::Cancelled => {
            tracing::info!(job_id, "job cancelled by request");
            Ok(Json(JobCancelled { job_id, status: "cancelled".to_string() }))
        }
        CancelOutcome::AlreadyFinished(status) => Err(ApiError::new(
            axum::http::StatusCode::CONFLICT,
            "JOB_FINISHED",
            format!("job '{job_id}' already finished ({})", status.as_str()),
        )),
        CancelOutcome::NotFound => Err(job_not_found(&job_id)),
    }
}

// Re-exported for the OpenAPI document.
pub use crate::http::native::events::JobStreamEvent;
