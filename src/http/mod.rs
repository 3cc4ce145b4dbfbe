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

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::{middleware, Router};
use tower_http::cors::CorsLayer;
use utoipa_swagger_ui::SwaggerUi;

use crate::backend::generation_engine::GenerationEngine;
use crate::backend::model_library::ModelLibrary;
use crate::backend::request::GenerationRequest;
use crate::backend::request_limits::RequestLimits;
use crate::config::Config;
use crate::http::auth::ApiKeys;
use crate::http::error::ApiError;
use crate::http::job_registry::{JobRecord, JobRegistry, DEFAULT_RETENTION};

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
    draining: Arc<AtomicBool>,
}

impl AppState {
    /// The middleware state that puts axum's own plain-text errors into a face's `shape`.
    pub fn face_errors(&self, shape: plain_errors::ErrorShape) -> plain_errors::FaceErrors {
        plain_errors::FaceErrors { shape, max_body_mib: self.config.max_body_mib }
    }

    pub fn new(config: Config, engine: Arc<GenerationEngine>) -> Self {
        AppState {
            api_keys: ApiKeys::new(config.api_keys()),
            limits: Arc::new(config.request_limits()),
            engine,
            config: Arc::new(config),
            jobs: Arc::new(JobRegistry::new(DEFAULT_RETENTION)),
            library: None,
            draining: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Share the models folder the engine uses with the faces.
    pub fn with_library(mut self, library: Option<Arc<ModelLibrary>>) -> Self {
        self.library = library;
        self
    }

    /// Queue a validated request and start recording its events. 503 when the queue is full, the
    /// model failed to load, or the worker is shutting down.
    pub fn submit(&self, request: GenerationRequest) -> Result<Arc<JobRecord>, ApiError> {
        if self.is_draining() {
            return Err(ApiError::service_unavailable("SHUTTING_DOWN", "the worker is shutting down", None));
        }
        Ok(self.jobs.submit(&self.engine, request)?)
    }

    /// Shutdown has begun: refuse new jobs, report `stopping`.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}

/// All faces, Swagger UI and the OpenAPI document, with request ids, CORS and the body limit
/// (`--max-body-mib`, uploads included).
pub fn router(state: AppState) -> Router {
    let max_body_bytes = state.config.max_body_bytes();
    let mut app = Router::new();
    for face in FACES {
        tracing::debug!(face = face.name, "mounting face");
        app = app.merge((face.router)(&state));
    }
    app.merge(SwaggerUi::new(openapi::SWAGGER_UI_PATH).url(openapi::OPENAPI_JSON_PATH, openapi::document()))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(CorsLayer::permissive())
        .layer(middleware::from_fn(request_id::tag_request))
        .with_state(state)
}

/// Serve on an already-bound listener until `shutdown` resolves and open responses finish.
pub async fn serve<F>(listener: tokio::net::TcpListener, state: AppState, shutdown: F) -> std::io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown).await
}
