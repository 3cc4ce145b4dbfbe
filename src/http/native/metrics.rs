//! `GET /metrics`: the worker's Prometheus metrics (see [`crate::metrics`]). Open like `/health`:
//! it reveals counts and timings, never prompts, images or keys.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::http::AppState;

/// What Prometheus asks for first; the body is OpenMetrics text either way.
const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The classic text format's type, for `curl` and scrapers that do not ask for OpenMetrics.
const PROMETHEUS_TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200,
        description = "Prometheus metrics: `sd_worker_jobs_total{face,outcome}`, `sd_worker_images_generated_total{face}`, \
            `sd_worker_job_duration_seconds{outcome}` and `sd_worker_step_duration_seconds` (histograms), \
            `sd_worker_queue_depth`, `sd_worker_queue_capacity`, `sd_worker_jobs_running`, `sd_worker_engine_state{state}`, \
            `sd_worker_model_info{model}`, `sd_worker_model_load_seconds{model}`. OpenMetrics text; served as \
            `application/openmetrics-text` when the client accepts it, else as `text/plain`.",
        content(
            (String = "text/plain"),
            (String = "application/openmetrics-text"),
        ))))]
pub async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let text = match state.metrics.render(&state.engine) {
        Ok(text) => text,
        Err(e) => {
            tracing::error!(error = %e, "cannot encode the metrics");
            return (StatusCode::INTERNAL_SERVER_ERROR, "cannot encode the metrics").into_response();
        }
    };
    let wants_openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|accept| accept.contains("application/openmetrics-text"));
    let content_type = if wants_openmetrics { OPENMETRICS_CONTENT_TYPE } else { PROMETHEUS_TEXT_CONTENT_TYPE };
    ([(header::CONTENT_TYPE, HeaderValue::from_static(content_type))], text).into_response()
}
