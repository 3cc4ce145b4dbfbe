//! The HTTP side: protocol faces that translate their wire types to and from the one
//! `GenerationRequest` / `JobEvent`, and the shared plumbing they use (state, job registry, auth,
//! SSE, errors, request ids, OpenAPI). No generation logic and no tensors live here.
//!
//! Adding a face (e.g. `http/openai/`): give it a `pub const FACE: Face` whose `router` builds its
//! routes (wrap protected ones with [`auth::require_api_key`] or its own scheme) and whose
//! `openapi` returns its `#[derive(OpenApi)]` document, then list it in [`FACES`]. Submit work
//! with [`AppState::submit`], and follow it with `JobRecord::subscribe` (streaming) or
//! `JobRecord::outcome` (synchronous).

pub mod a1111;
pub mod auth;
pub mod error;
pub mod image_input;
pub mod job_registry;
pub mod json_body;
pub mod native;
pub mod openai;
pub mod openapi;
pub mod plain_errors;
pub mod request_id;
pub mod sse;
pub mod sweeper;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::{middleware, Router};
use axum::http::{header, HeaderValue};
use tower_http::cors::{AllowOrigin, Any, CorsLayer};
use utoipa_swagger_ui::SwaggerUi;

use crate::backend::generation_engine::GenerationEngine;
use crate::backend::model_library::ModelLibrary;
use crate::backend::request::GenerationRequest;
use crate::backend::request_limits::RequestLimits;
use crate::config::Config;
use crate::http::auth::ApiKeys;
use crate::http::error::ApiError;
use crate::http::job_registry::{JobRecord, JobRegistry};
use crate::http::sweeper::{spawn_periodic_sweep, SWEEP_INTERVAL};
use crate::metrics::{Outcome, WorkerMetrics};

/// A protocol face: its routes and its part of the OpenAPI document.
pub struct Face {
    pub name: &'static str,
    pub router: fn(&AppState) -> Router<AppState>,
    pub openapi: fn() -> utoipa::openapi::OpenApi,
}

/// Every face this worker serves. Add new faces here.
pub const FACES: &[Face] = &[native::FACE, openai::FACE, a1111::FACE];

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub engine: Arc<GenerationEngine>,
    pub config: Arc<Config>,
    pub jobs: Arc<JobRegistry>,
    pub api_keys: ApiKeys,
    pub limits: Arc<RequestLimits>,
    /// The `--models-dir` library, for the faces' model/LoRA/VAE listings; `None` without one.
    pub library: Option<Arc<ModelLibrary>>,
    /// What `/metrics` serves; the engine reports step and job times into it too.
    pub metrics: Arc<WorkerMetrics>,
    draining: Arc<AtomicBool>,
}

impl AppState {
    /// The middleware state that puts axum's own plain-text errors into a face's `shape`.
    pub fn face_errors(&self, shape: plain_errors::ErrorShape) -> plain_errors::FaceErrors {
        plain_errors::FaceErrors { shape, max_body_mib: self.config.max_body_mib }
    }

    /// The state every face shares. Inside a tokio runtime this also starts the periodic sweep of
    /// finished jobs (see [`sweeper`]).
    pub fn new(config: Config, engine: Arc<GenerationEngine>) -> Self {
        let metrics = Arc::new(WorkerMetrics::new());
        engine.set_observer(metrics.clone());
        let jobs = Arc::new(JobRegistry::new(config.job_retention(), metrics.clone()));
        spawn_periodic_sweep(&jobs, SWEEP_INTERVAL.min(config.job_retention()), "jobs");
        AppState {
            api_keys: ApiKeys::new(config.api_keys()),
            limits: Arc::new(config.request_limits()),
            engine,
            config: Arc::new(config),
            jobs,
            library: None,
            metrics,
            draining: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Share the models folder the engine uses with the faces.
    pub fn with_library(mut self, library: Option<Arc<ModelLibrary>>) -> Self {
        self.library = library;
        self
    }

    /// Queue a validated request from `face` (its [`Face::name`]) and start recording its events.
    /// 503 when the queue is full, the model failed to load, or the worker is shutting down; the
    /// refusal is counted as a rejected job.
    pub fn submit(&self, face: &'static str, request: GenerationRequest) -> Result<Arc<JobRecord>, ApiError> {
        let submitted = self.try_submit(face, request);
        if submitted.is_err() {
            self.metrics.count_job(face, Outcome::Rejected);
        }
        submitted
    }

    /// [`Self::submit`] without counting a refusal: for a face that retries a full queue itself on
    /// behalf of a call it already accepted (A1111's later batches).
    pub fn try_submit(&self, face: &'static str, request: GenerationRequest) -> Result<Arc<JobRecord>, ApiError> {
        if self.is_draining() {
            return Err(ApiError::service_unavailable("SHUTTING_DOWN", "the worker is shutting down", None));
        }
        Ok(self.jobs.submit(&self.engine, request, face)?)
    }

    /// Shutdown has begun: refuse new jobs, report `stopping`.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}

/// All faces, Swagger UI and the OpenAPI document, with request ids, CORS (when configured) and
/// the body limit (`--max-body-mib`, uploads included).
pub fn router(state: AppState) -> Router {
    let max_body_bytes = state.config.max_body_bytes();
    let mut app = Router::new();
    for face in FACES {
        tracing::debug!(face = face.name, "mounting face");
        app = app.merge((face.router)(&state));
    }
    let app = app
        .merge(SwaggerUi::new(openapi::SWAGGER_UI_PATH).url(openapi::OPENAPI_JSON_PATH, openapi::document()))
        .layer(DefaultBodyLimit::max(max_body_bytes));
    let app = match cors_layer(&state.config.cors_origins) {
        Some(cors) => app.layer(cors),
        None => app,
    };
    app.layer(middleware::from_fn(request_id::tag_request)).with_state(state)
}

/// CORS for the configured origins; `None` (no CORS headers, browsers refuse cross-origin
/// calls) when none are configured. Origins were validated when the flags were parsed.
fn cors_layer(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow_origin = if origins.iter().any(|o| o == "*") {
        AllowOrigin::from(Any)
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    // Clients read these from replies: request ids for support, Retry-After for back-off.
    let exposed = [request_id::REQUEST_ID_HEADER.clone(), header::RETRY_AFTER];
    Some(CorsLayer::new().allow_origin(allow_origin).allow_methods(Any).allow_headers(Any).expose_headers(exposed))
}

/// Serve on an already-bound listener until `shutdown` resolves and open responses finish.
pub async fn serve<F>(listener: tokio::net::TcpListener, state: AppState, shutdown: F) -> std::io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown).await
}
