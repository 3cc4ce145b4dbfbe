//! The AUTOMATIC1111 `/sdapi/v1` face: a frontend or script written for A1111's API works by
//! changing only the base URL. Request models, defaults, `info` keys, sampler resolution,
//! progress and error shapes follow A1111 1.10 (see `shared/reference/a1111.md`); every handler
//! only translates between A1111's wire types and `GenerationRequest` / `JobEvent`.
//!
//! Face-wide state (the options dict and the running calls) lives in [`FaceState`], reached by
//! handlers as an `Extension`.

pub mod auth;
pub mod errors;
pub mod generation;
pub mod hires;
pub mod img2img;
pub mod img2img_inputs;
pub mod infotext_fields;
pub mod lax;
pub mod lists;
pub mod models;
pub mod options;
pub mod png_info;
pub mod progress;
pub mod prompt_text;
pub mod python_json;
pub mod request_model;
pub mod response;
pub mod run_tracker;
pub mod samplers;
pub mod txt2img;

use std::sync::Arc;

use axum::routing::{get, post};
use axum::{middleware, Extension, Router};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::http::{AppState, Face};

/// This face's entry in [`crate::http::FACES`].
pub const FACE: Face = Face { name: "a1111", router, openapi };

/// What every A1111 handler shares.
#[derive(Default)]
pub struct FaceState {
    pub options: options::OptionsStore,
    pub runs: run_tracker::RunTracker,
    pub models: models::ModelSelection,
}

/// The handle handlers extract.
pub type A1111Face = Arc<FaceState>;

#[derive(OpenApi)]
#[openapi(
    paths(
        txt2img::txt2img,
        img2img::img2img,
        png_info::png_info,
        progress::progress,
        progress::interrupt,
        progress::skip,
        options::get_options,
        options::set_options,
        lists::sd_models,
        lists::samplers,
        lists::schedulers,
        lists::upscalers,
        lists::latent_upscale_modes,
        lists::sd_vae,
        lists::sd_modules,
        lists::loras,
        lists::embeddings,
        lists::prompt_styles,
        lists::scripts,
        lists::script_info,
        lists::extensions,
        lists::hypernetworks,
        lists::face_restorers,
        lists::realesrgan_models,
        lists::memory,
        lists::cmd_flags,
        lists::refresh_checkpoints,
        lists::refresh_loras,
        lists::refresh_vae,
        lists::refresh_embeddings,
        lists::unload_checkpoint,
        lists::reload_checkpoint,
        lists::ping,
    ),
    components(schemas(
        request_model::ProcessingFields,
        request_model::Txt2ImgRequest,
        request_model::Img2ImgRequest,
        response::Txt2ImgResponse,
        response::Img2ImgResponse,
        png_info::PngInfoRequest,
        png_info::PngInfoResponse,
        progress::ProgressResponse,
        progress::ProgressState,
        samplers::SamplerItem,
        samplers::SchedulerItem,
        lists::SdModelItem,
        lists::LoraItem,
        lists::VaeItem,
        lists::UpscalerItem,
        lists::NamedItem,
        errors::A1111ErrorBody,
        errors::ValidationErrorBody,
        errors::ValidationIssue,
        errors::LocationStep,
        errors::UnprocessableBody,
    )),
    modifiers(&BasicAuth),
    tags((name = "a1111", description = "AUTOMATIC1111 `/sdapi/v1` API: with `--api-key`, send HTTP Basic auth with the key as password (or a Bearer token)"))
)]
struct A1111Api;

struct BasicAuth;

impl Modify for BasicAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("basic", SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Basic).build()));
    }
}

fn openapi() -> utoipa::openapi::OpenApi {
    A1111Api::openapi()
}

fn router(state: &AppState) -> Router<AppState> {
    let face: A1111Face = Arc::new(FaceState::default());
    let protected = Router::new()
        .route("/sdapi/v1/txt2img", post(txt2img::txt2img))
        .route("/sdapi/v1/img2img", post(img2img::img2img))
        .route("/sdapi/v1/png-info", post(png_info::png_info))
        .route("/sdapi/v1/progress", get(progress::progress))
        .route("/sdapi/v1/interrupt", post(progress::interrupt))
        .route("/sdapi/v1/skip", post(progress::skip))
        .route("/sdapi/v1/options", get(options::get_options).post(options::set_options))
        .route("/sdapi/v1/sd-models", get(lists::sd_models))
        .route("/sdapi/v1/samplers", get(lists::samplers))
        .route("/sdapi/v1/schedulers", get(lists::schedulers))
        .route("/sdapi/v1/upscalers", get(lists::upscalers))
        .route("/sdapi/v1/latent-upscale-modes", get(lists::latent_upscale_modes))
        .route("/sdapi/v1/sd-vae", get(lists::sd_vae))
        .route("/sdapi/v1/sd-modules", get(lists::sd_modules))
        .route("/sdapi/v1/embeddings", get(lists::embeddings))
        .route("/sdapi/v1/prompt-styles", get(lists::prompt_styles))
        .route("/sdapi/v1/scripts", get(lists::scripts))
        .route("/sdapi/v1/script-info", get(lists::script_info))
        .route("/sdapi/v1/extensions", get(lists::extensions))
        .route("/sdapi/v1/hypernetworks", get(lists::hypernetworks))
        .route("/sdapi/v1/face-restorers", get(lists::face_restorers))
        .route("/sdapi/v1/realesrgan-models", get(lists::realesrgan_models))
        .route("/sdapi/v1/memory", get(lists::memory))
        .route("/sdapi/v1/cmd-flags", get(lists::cmd_flags))
        // A1111's Lora extension registers these two outside its API auth; here a key guards them
        // like every other state-reading and state-changing route (clients send it to all routes).
        .route("/sdapi/v1/loras", get(lists::loras))
        .route("/sdapi/v1/refresh-loras", post(lists::refresh_loras))
        .route("/sdapi/v1/refresh-checkpoints", post(lists::refresh_checkpoints))
        .route("/sdapi/v1/refresh-vae", post(lists::refresh_vae))
        .route("/sdapi/v1/refresh-embeddings", post(lists::refresh_embeddings))
        .route("/sdapi/v1/unload-checkpoint", post(lists::unload_checkpoint))
        .route("/sdapi/v1/reload-checkpoint", post(lists::reload_checkpoint))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::require_api_auth));
    // A liveness probe outside A1111's API (and its auth).
    let open = Router::new().route("/internal/ping", get(lists::ping));
    protected
        .merge(open)
        .layer(Extension(face))
        .layer(middleware::from_fn_with_state(state.face_errors(error_shape), crate::http::plain_errors::reshape))
}

/// axum's own plain-text refusals as FastAPI's `HTTPException` after A1111's middleware.
fn error_shape(status: axum::http::StatusCode, message: String) -> axum::response::Response {
    axum::response::IntoResponse::into_response(errors::A1111Error::http(status, message))
}
