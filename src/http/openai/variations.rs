//! `POST /v1/images/variations`: img2img of one image with an empty prompt at moderate strength
//! (0.65: the composition stays, the details change), one seed per requested image.

use axum::extract::multipart::{Multipart, MultipartRejection};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::Extension;
// File parts are read separately; these fields only document them.
use serde::de::IgnoredAny;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::http::openai::errors::{OpenAiError, OpenAiErrorBody};
use crate::http::openai::jobs::{off_runtime, run_image_request};
use crate::http::openai::models::Endpoint;
use crate::http::openai::plan::ImageParams;
use crate::http::openai::response::ImagesResponse;
use crate::http::openai::uploads::{read_form, source_image, UploadForm};
use crate::http::openai::wire::{lenient, parse_fields, ResponseFormat, SdExtras};
use crate::http::openai::OpenAiShared;
use crate::http::AppState;

/// OpenAI's `CreateImageVariationRequest` (multipart). The `SdExtras` fields (including a
/// `prompt`-less `negative_prompt`, `seed`, `strength`) may be added as form fields.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct CreateImageVariationRequest {
    /// PNG, JPEG or WebP, detected from its bytes.
    #[serde(default)]
    #[schema(value_type = String, format = Binary, required = true)]
    pub image: Option<IgnoredAny>,
    /// Default dall-e-2 (`url` replies).
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 10)]
    pub n: Option<u32>,
    #[serde(default)]
    pub response_format: Option<ResponseFormat>,
    /// `auto` (the input image's size) or `WIDTHxHEIGHT`.
    #[serde(default)]
    pub size: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
}

/// Turn a read form into endpoint-neutral parameters.
pub fn parse_variation(form: &UploadForm, max_input_pixels: u64) -> Result<ImageParams, OpenAiError> {
    let value = serde_json::Value::Object(form.fields.clone());
    let fields: CreateImageVariationRequest = parse_fields(&value)?;
    let extras: SdExtras = parse_fields(&value)?;
    let mut params = ImageParams::new(Endpoint::Variations, String::new());
    params.source = Some(source_image(form, max_input_pixels)?);
    params.model = fields.model;
    params.n = fields.n;
    params.size = fields.size;
    params.response_format = fields.response_format;
    params.extras = extras;
    Ok(params)
}

#[utoipa::path(post, path = "/v1/images/variations", tag = "openai",
    request_body(content = CreateImageVariationRequest, content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "The variations", body = ImagesResponse),
        (status = 400, description = "Invalid request or unreadable image; `error.param` names the field", body = OpenAiErrorBody),
        (status = 413, description = "The body is over the worker's --max-body-mib", body = OpenAiErrorBody),
        (status = 401, description = "Missing or invalid API key (only with --api-key)", body = OpenAiErrorBody),
        (status = 404, description = "Unknown `model`", body = OpenAiErrorBody),
        (status = 429, description = "Queue full; see Retry-After", body = OpenAiErrorBody),
        (status = 500, description = "Generation failed (`x-should-retry: false`)", body = OpenAiErrorBody),
        (status = 503, description = "Model still loading (Retry-After), failed to load, or shutting down", body = OpenAiErrorBody),
        (status = 504, description = "The job ran past the worker's --job-timeout", body = OpenAiErrorBody),
    ),
    security((), ("bearer" = [])))]
pub async fn create_image_variation(
    State(state): State<AppState>,
    Extension(shared): Extension<OpenAiShared>,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Response, OpenAiError> {
    let form = read_form(multipart, state.config.max_body_mib).await?;
    let max_pixels = state.limits.max_input_pixels;
    let params = off_runtime(move || parse_variation(&form, max_pixels)).await?;
    run_image_request(&state, &shared, &headers, params).await
}
