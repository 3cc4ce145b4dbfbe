//! The rbee native face: health and readiness, and rbee's job API (operation JSON in, SSE out).

pub mod events;
pub mod health;
pub mod jobs;
pub mod metrics;
pub mod operations;

use axum::routing::{get, post};
use axum::{middleware, Router};
use utoipa::OpenApi;

use crate::http::error::ApiError;
use crate::http::{auth, plain_errors, AppState, Face};

/// This face's entry in [`crate::http::FACES`].
pub const FACE: Face = Face { name: "native", router, openapi };

#[derive(OpenApi)]
#[openapi(
    paths(
        health::root,
        health::health,
        health::ready,
        health::ready_alias,
        metrics::metrics,
        jobs::create_job,
        jobs::stream_job,
        jobs::get_job,
        jobs::cancel_job,
    ),
    components(schemas(
        operations::ImageOperation,
        operations::ImageGenerationRequest,
        operations::ImageTransformRequest,
        operations::ImageInpaintRequest,
        operations::GenerationOptions,
        operations::LoraConfig,
        operations::OutputFormatName,
        operations::RngName,
        events::JobStreamEvent,
        events::JobImage,
        jobs::JobCreated,
        jobs::JobStatusResponse,
        jobs::JobCancelled,
        health::RootInfo,
        health::HealthResponse,
        health::ReadyResponse,
    )),
    tags(
        (name = "health", description = "Liveness, readiness and Prometheus metrics; never need an API key"),
        (name = "jobs", description = "rbee native job API: submit an image operation, follow it over SSE, read or cancel it"),
    )
)]
struct NativeApi;

fn openapi() -> utoipa::openapi::OpenApi {
    NativeApi::openapi()
}

fn router(state: &AppState) -> Router<AppState> {
    let open = Router::new()
        .route("/", get(health::root))
        .route("/health", get(health::health))
        .route("/v1/ready", get(health::ready))
        .route("/ready", get(health::ready_alias))
        .route("/metrics", get(metrics::metrics));
    let jobs = Router::new()
        .route("/v1/jobs", post(jobs::create_job))
        .route("/v1/jobs/{job_id}", get(jobs::get_job).delete(jobs::cancel_job))
        .route("/v1/jobs/{job_id}/stream", get(jobs::stream_job))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::require_api_key));
    open.merge(jobs).layer(middleware::from_fn_with_state(state.face_errors(error_shape), plain_errors::reshape))
}

fn error_shape(status: axum::http::StatusCode, message: String) -> axum::response::Response {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "PAYLOAD_TOO_LARGE",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "UNSUPPORTED_MEDIA_TYPE",
        StatusCode::METHOD_NOT_ALLOWED => "METHOD_NOT_ALLOWED",
        s if s.is_server_error() => "INTERNAL",
        _ => "INVALID_REQUEST",
    };
    ApiError::new(status, code, message).into_response()
}
