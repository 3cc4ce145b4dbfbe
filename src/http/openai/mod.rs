//! The OpenAI Images face: `/v1/images/generations`, `/v1/images/edits`,
//! `/v1/images/variations` (JSON or SSE), `/v1/models`, and the files behind `url` replies. An
//! application written for OpenAI's Images API works by changing only its base URL (and using
//! any key, unless the worker runs with `--api-key`). The same routes also answer without the
//! `/v1` prefix, for clients configured with a bare base URL.

pub mod auth;
pub mod edits;
pub mod errors;
pub mod generations;
pub mod json_edits;
pub mod jobs;
pub mod models;
pub mod output;
pub mod plan;
pub mod response;
pub mod sizes;
pub mod stream;
pub mod uploads;
pub mod url_images;
pub mod variations;
pub mod wire;

use std::sync::Arc;

use axum::routing::{get, post};
use axum::{middleware, Extension, Router};
use utoipa::OpenApi;

use crate::http::openai::url_images::{UrlImageStore, MAX_STORED_BYTES};
use crate::http::sweeper::{spawn_periodic_sweep, SWEEP_INTERVAL};
use crate::http::{AppState, Face};

/// This face's entry in [`crate::http::FACES`].
pub const FACE: Face = Face { name: "openai", router, openapi };

/// State only this face needs, shared by its handlers.
#[derive(Clone)]
pub struct OpenAiShared {
    pub urls: Arc<UrlImageStore>,
    /// Unix seconds; the `created` of every listed model.
    pub started_at: i64,
}

#[derive(OpenApi)]
#[openapi(
    paths(
        generations::create_image,
        edits::create_image_edit,
        variations::create_image_variation,
        models::list_models,
        models::get_model,
        url_images::get_image_file,
    ),
    components(schemas(
        generations::CreateImageRequest,
        edits::CreateImageEditRequest,
        variations::CreateImageVariationRequest,
        wire::SdExtras,
        wire::Quality,
        wire::ResponseFormat,
        wire::RequestedFormat,
        wire::Complexity,
        wire::Background,
        wire::Style,
        wire::Moderation,
        wire::InputFidelity,
        response::ImagesResponse,
        response::ImageData,
        response::ImagesUsage,
        response::InputTokensDetails,
        stream::PartialImageEvent,
        stream::CompletedEvent,
        stream::StreamErrorEvent,
        models::ModelList,
        models::ModelObject,
        errors::OpenAiErrorBody,
        errors::OpenAiErrorDetail,
    )),
    tags((name = "openai", description = "OpenAI Images API: generations, edits, variations (with SSE streaming), models. \
        Works with the unmodified OpenAI SDKs; the routes also answer without the `/v1` prefix. \
        Stable Diffusion controls (`negative_prompt`, `seed`, `steps`, `cfg_scale`, `sampler`, `scheduler`, `strength`) \
        are accepted at the top level (`extra_body` in the SDKs)."))
)]
struct OpenAiApi;

fn openapi() -> utoipa::openapi::OpenApi {
    OpenAiApi::openapi()
}

fn router(state: &AppState) -> Router<AppState> {
    let urls = UrlImageStore::new(state.config.image_url_ttl(), MAX_STORED_BYTES);
    spawn_periodic_sweep(&urls, SWEEP_INTERVAL.min(state.config.image_url_ttl()), "url images");
    let shared = OpenAiShared { urls, started_at: chrono::Utc::now().timestamp() };
    let mut protected = Router::new();
    for prefix in ["/v1", ""] {
        protected = protected
            .route(&format!("{prefix}/images/generations"), post(generations::create_image))
            .route(&format!("{prefix}/images/edits"), post(edits::create_image_edit))
            .route(&format!("{prefix}/images/variations"), post(variations::create_image_variation))
            .route(&format!("{prefix}/models"), get(models::list_models))
            .route(&format!("{prefix}/models/{{*model}}"), get(models::get_model));
    }
    let protected = protected.route_layer(middleware::from_fn_with_state(state.clone(), auth::require_api_key));
    // Capability links: the unguessable name is the credential, as with OpenAI's signed URLs.
    let files = Router::new().route(&format!("{}/{{file}}", url_images::FILES_ROUTE), get(url_images::get_image_file));
    protected
        .merge(files)
        .layer(Extension(shared))
        .layer(middleware::from_fn_with_state(state.face_errors(error_shape), crate::http::plain_errors::reshape))
}

fn error_shape(status: axum::http::StatusCode, message: String) -> axum::response::Response {
    axum::response::IntoResponse::into_response(errors::OpenAiError::from_status(status, message))
}
