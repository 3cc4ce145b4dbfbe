//! Liveness and readiness. `GET /` and `GET /health` answer 200 from the first moment the
//! listener is up (rbee-hive polls `GET /` for 2xx while the model is still loading);
//! `GET /v1/ready` says whether jobs can run yet.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::backend::generation_engine::EngineState;
use crate::http::AppState;

/// What answers at `/`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RootInfo {
    #[schema(example = "sd-worker-rbee")]
    pub name: String,
    pub version: String,
    pub worker_id: String,
    /// `--model` as given.
    pub model: String,
    /// `loading`, `idle`, `busy`, `error` or `stopping`.
    pub state: String,
    #[schema(example = "/swagger-ui/")]
    pub docs: String,
    #[schema(example = "/api-docs/openapi.json")]
    pub openapi: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HealthResponse {
    #[schema(example = "healthy")]
    pub status: String,
}

/// Whether the worker can run jobs now.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReadyResponse {
    /// True when the model is loaded and jobs are accepted (idle or busy).
    pub ready: bool,
    /// `loading`, `idle`, `busy`, `error` or `stopping`.
    #[schema(example = "idle")]
    pub state: String,
    pub model_loaded: bool,
    /// The loaded model's id, or `--model` as given while loading.
    pub model: String,
    /// Why loading failed and how to fix it (state `error` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Jobs waiting behind the running one.
    pub queue_length: usize,
    pub queue_capacity: usize,
}

/// The worker's state label, with draining (shutdown in progress) taking precedence.
pub fn state_label(state: &AppState) -> &'static str {
    if state.is_draining() {
        return "stopping";
    }
    match state.engine.status().state {
        EngineState::Stopped => "stopping",
        other => other.label(),
    }
}

#[utoipa::path(get, path = "/", tag = "health",
    responses((status = 200, description = "The worker is up (the model may still be loading)", body = RootInfo)))]
pub async fn root(State(state): State<AppState>) -> Json<RootInfo> {
    Json(RootInfo {
        name: env!("CARGO_PKG_NAME").to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        worker_id: state.config.worker_id(),
        model: state.config.model.clone(),
        state: state_label(&state).to_string(),
        docs: "/swagger-ui/".to_string(),
        openapi: "/api-docs/openapi.json".to_string(),
    })
}

#[utoipa::path(get, path = "/health", tag = "health",
    responses((status = 200, description = "The HTTP server is up", body = HealthResponse)))]
pub async fn health() -> Json<HealthResponse> {
    Json(HealthResponse { status: "healthy".to_string() })
}

#[utoipa::path(get, path = "/v1/ready", tag = "health",
    responses(
        (status = 200, description = "Ready: the model is loaded", body = ReadyResponse),
        (status = 503, description = "Not ready: loading, failed to load, or stopping", body = ReadyResponse),
    ))]
pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<ReadyResponse>) {
    let status = state.engine.status();
    let label = state_label(&state);
    let model_loaded = matches!(status.state, EngineState::Idle | EngineState::Busy);
    let ready = model_loaded && !state.is_draining();
    let body = ReadyResponse {
        ready,
        state: label.to_string(),
        model_loaded,
        model: status.model_id.unwrap_or_else(|| state.config.model.clone()),
        error: match status.state {
            EngineState::Error(message) => Some(message),
            _ => None,
        },
        queue_length: state.engine.queue_len(),
        queue_capacity: state.engine.queue_capacity(),
    };
    let code = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, Json(body))
}

/// `/ready`: the same answer as `/v1/ready` (the path rbee's earlier SD worker used).
#[utoipa::path(get, path = "/ready", tag = "health",
    responses(
        (status = 200, description = "Ready: the model is loaded", body = ReadyResponse),
        (status = 503, description = "Not ready: loading, failed to load, or stopping", body = ReadyResponse),
    ))]
pub async fn ready_alias(state: State<AppState>) -> (StatusCode, Json<ReadyResponse>) {
    ready(state).await
}
