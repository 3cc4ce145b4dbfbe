//! `POST /v1/images/edits`: multipart image (+ optional mask) and prompt, or the JSON form with
//! `data:` URLs. With a mask the transparent area is repainted (inpainting); without one the whole
//! image is reworked (img2img, less with `input_fidelity: high`).

use axum::body::Bytes;
use axum::extract::multipart::Multipart;
use axum::extract::{FromRequest, Request, State};
use axum::response::Response;
use axum::Extension;
// File parts are read separately; these fields only document them.
use serde::de::IgnoredAny;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::http::json_body::has_json_content_type;
use crate::http::openai::errors::{OpenAiError, OpenAiErrorBody};
use crate::http::openai::jobs::{off_runtime, run_image_request};
use crate::http::openai::json_edits::{json_form, EditImageJsonRequest};
use crate::http::openai::models::Endpoint;
use crate::http::openai::plan::ImageParams;
use crate::http::openai::response::ImagesResponse;
use crate::http::openai::stream::PartialImageEvent;
use crate::http::openai::uploads::{read_form, source_image, UploadForm};
use crate::http::openai::wire::{
    lenient, parse_fields, Background, Complexity, InputFidelity, Moderation, Quality, RequestedFormat, ResponseFormat, SdExtras,
};
use crate::http::openai::OpenAiShared;
use crate::http::AppState;

/// OpenAI's `CreateImageEditRequest` (multipart). Scalars arrive as text; the `SdExtras` fields
/// may be added as further form fields.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct CreateImageEditRequest {
    /// PNG, JPEG or WebP, detected from its bytes. Several images may be sent as repeated
    /// `image[]` parts; Stable Diffusion edits the first.
    #[serde(default)]
    #[schema(value_type = String, format = Binary, required = true)]
    pub image: Option<IgnoredAny>,
    /// Fully transparent pixels mark the area to repaint; resized to the image when it differs.
    /// Without an alpha channel, white marks it.
    #[serde(default)]
    #[schema(value_type = Option<String>, format = Binary)]
    pub mask: Option<IgnoredAny>,
    #[schema(required = true, example = "add a red scarf")]
    pub prompt: Option<String>,
    /// Default gpt-image-1.5 (GPT-image reply shape).
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 10)]
    pub n: Option<u32>,
    /// `auto` (the input image's size) or `WIDTHxHEIGHT`.
    #[serde(default)]
    pub size: Option<String>,
    #[serde(default)]
    pub quality: Option<Quality>,
    #[serde(default)]
    pub response_format: Option<ResponseFormat>,
    #[serde(default)]
    pub output_format: Option<RequestedFormat>,
    #[serde(default, deserialize_with = "lenient")]
    #[schema(value_type = Option<u32>, minimum = 0, maximum = 100)]
    pub output_compression: Option<u32>,
    #[serde(default)]
    pub background: Option<Background>,
    /// `high` keeps more of the input image (img2img strength 0.5 instead of 0.75).
    #[serde(default)]
    pub input_fidelity: Option<InputFidelity>,
    #[serde(default)]
    pub moderation: Option<Moderation>,
    /// Answer with server-sent events (`image_edit.partial_image`, `image_edit.completed`).
    #[serde(default, deserialize_with = "lenient")]
    #[schema(value_type = Option<bool>)]
    pub stream: Option<bool>,
    #[serde(default, deserialize_with = "lenient")]
    #[schema(value_type = Option<u32>, minimum = 0, maximum = 3)]
    pub partial_images: Option<u32>,
    /// GIF/SVG options of some GPT image models: accepted; `output_format` gif/svg is refused.
    #[serde(default)]
    pub complexity: Option<Complexity>,
    #[serde(default, deserialize_with = "lenient")]
    #[schema(value_type = Option<u32>)]
    pub frame_count: Option<u32>,
    #[serde(default, deserialize_with = "lenient")]
    #[schema(value_type = Option<u32>)]
    pub frame_duration_ms: Option<u32>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub svg: Option<serde_json::Value>,
    /// Accepted; this worker keeps no per-user records.
    #[serde(default)]
    pub safety_identifier: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
}

/// Turn a read form into endpoint-neutral parameters.
pub fn parse_edit(form: &UploadForm, max_input_pixels: u64) -> Result<ImageParams, OpenAiError> {
    let value = serde_json::Value::Object(form.fields.clone());
    let fields: CreateImageEditRequest = parse_fields(&value)?;
    let extras: SdExtras = parse_fields(&value)?;
    let prompt = fields.prompt.filter(|p| !p.trim().is_empty()).ok_or_else(|| OpenAiError::missing_param("prompt"))?;
    let mut params = ImageParams::new(Endpoint::Edits, prompt);
    params.source = Some(source_image(form, max_input_pixels)?);
    params.model = fields.model;
    params.n = fields.n;
    params.size = fields.size;
    params.quality = fields.quality;
    params.response_format = fields.response_format;
    params.output_format = fields.output_format;
    params.output_compression = fields.output_compression;
    params.background = fields.background;
    params.input_fidelity = fields.input_fidelity;
    params.stream = fields.stream;
    params.partial_images = fields.partial_images;
    params.extras = extras;
    Ok(params)
}

#[utoipa::path(post, path = "/v1/images/edits", tag = "openai",
    request_body(content((CreateImageEditRequest = "multipart/form-data"), (EditImageJsonRequest = "application/json"))),
    responses(
        (status = 200, description = "The edited images, or with `stream: true` the events: `image_edit.partial_image` \
            frames, then `image_edit.completed` per image (same framing as generations)",
            content((ImagesResponse = "application/json"), (PartialImageEvent = "text/event-stream"))),
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
pub async fn create_image_edit(
    State(state): State<AppState>,
    Extension(shared): Extension<OpenAiShared>,
    request: Request,
) -> Result<Response, OpenAiError> {
    let headers = request.headers().clone();
    let form = if has_json_content_type(&headers) {
        let body = Bytes::from_request(request, &state)
            .await
            .map_err(|e| OpenAiError::new(e.status(), "invalid_request_error", format!("the request body could not be read: {}", e.body_text())))?;
        off_runtime(move || json_form(&body)).await?
    } else {
        read_form(Multipart::from_request(request, &state).await, state.config.max_body_mib).await?
    };
    let max_pixels = state.limits.max_input_pixels;
    let params = off_runtime(move || parse_edit(&form, max_pixels)).await?;
    run_image_request(&state, &shared, &headers, params).await
}
