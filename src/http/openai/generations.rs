//! `POST /v1/images/generations`: text to image from a JSON body.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::Extension;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::http::openai::errors::{OpenAiError, OpenAiErrorBody};
use crate::http::openai::jobs::run_image_request;
use crate::http::openai::models::Endpoint;
use crate::http::openai::plan::ImageParams;
use crate::http::openai::response::ImagesResponse;
use crate::http::openai::stream::PartialImageEvent;
use crate::http::openai::wire::{
    lenient, parse_fields, Background, Complexity, Moderation, Quality, RequestedFormat, ResponseFormat, SdExtras, Style,
};
use crate::http::openai::OpenAiShared;

/// OpenAI's `CreateImageRequest`. Every field but `prompt` is optional and may be `null`;
/// unknown fields are ignored. The Stable Diffusion extras (`SdExtras`) are read from the same
/// top level.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct CreateImageRequest {
    #[schema(required = true, example = "a watercolor fox in a snowy forest")]
    pub prompt: Option<String>,
    /// The local model id or an OpenAI name (`dall-e-2`, `dall-e-3`, `gpt-image-1`, ...); the
    /// name's family decides the reply's shape. Default: dall-e-2, or gpt-image-1 when a GPT
    /// image field (`output_format`, `output_compression`, `background`, `moderation`, `stream`,
    /// `partial_images`) is sent.
    #[serde(default)]
    #[schema(example = "gpt-image-1")]
    pub model: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 10)]
    pub n: Option<u32>,
    /// `auto` (the model's native size) or any `WIDTHxHEIGHT` with sides of 16–4096 pixels; the
    /// images come back at exactly this size.
    #[serde(default)]
    #[schema(example = "1024x1024")]
    pub size: Option<String>,
    #[serde(default)]
    pub quality: Option<Quality>,
    #[serde(default)]
    pub style: Option<Style>,
    /// Default `url` for DALL·E names, `b64_json` otherwise.
    #[serde(default)]
    pub response_format: Option<ResponseFormat>,
    #[serde(default)]
    pub output_format: Option<RequestedFormat>,
    /// 0–100, JPEG quality (WebP is written lossless).
    #[serde(default, deserialize_with = "lenient")]
    #[schema(value_type = Option<u32>, minimum = 0, maximum = 100)]
    pub output_compression: Option<u32>,
    /// `transparent` is refused: Stable Diffusion paints opaque images.
    #[serde(default)]
    pub background: Option<Background>,
    #[serde(default)]
    pub moderation: Option<Moderation>,
    /// Answer with server-sent events (`image_generation.partial_image`, `image_generation.completed`).
    #[serde(default, deserialize_with = "lenient")]
    #[schema(value_type = Option<bool>)]
    pub stream: Option<bool>,
    /// 0–3 partial images while streaming.
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

impl CreateImageRequest {
    fn uses_gpt_only_fields(&self) -> bool {
        self.output_format.is_some()
            || self.output_compression.is_some()
            || self.background.is_some()
            || self.moderation.is_some()
            || self.stream.is_some()
            || self.partial_images.is_some()
            || self.complexity.is_some()
            || self.frame_count.is_some()
            || self.frame_duration_ms.is_some()
            || self.svg.is_some()
    }
}

/// Parse a JSON body into endpoint-neutral parameters.
pub fn parse_generation(body: &[u8]) -> Result<ImageParams, OpenAiError> {
    let value = crate::http::json_body::parse_value(body).map_err(|e| match e.field {
        Some(field) => OpenAiError::invalid_param(field.clone(), "invalid_value", format!("{field}: {}", e.message)),
        None => OpenAiError::invalid_request("invalid_json", format!("We could not parse the JSON body of your request ({e}); send a JSON object.")),
    })?;
    if !value.is_object() {
        return Err(OpenAiError::invalid_request("invalid_json", "The request body must be a JSON object."));
    }
    let fields: CreateImageRequest = parse_fields(&value)?;
    let extras: SdExtras = parse_fields(&value)?;
    let gpt_only_field_used = fields.uses_gpt_only_fields();
    let prompt = fields.prompt.filter(|p| !p.trim().is_empty()).ok_or_else(|| OpenAiError::missing_param("prompt"))?;
    let mut params = ImageParams::new(Endpoint::Generations, prompt);
    params.model = fields.model;
    params.n = fields.n;
    params.size = fields.size;
    params.quality = fields.quality;
    params.response_format = fields.response_format;
    params.output_format = fields.output_format;
    params.output_compression = fields.output_compression;
    params.background = fields.background;
    params.stream = fields.stream;
    params.partial_images = fields.partial_images;
    params.gpt_only_field_used = gpt_only_field_used;
    params.extras = extras;
    Ok(params)
}

#[utoipa::path(post, path = "/v1/images/generations", tag = "openai",
    request_body(content = CreateImageRequest, description = "OpenAI's image request; the `SdExtras` fields may be added at the top level"),
    responses(
        (status = 200, description = "The images; with `stream: true` the events instead: \
                `event: image_generation.partial_image` frames (`partial_images` of them, spread over the run), then one \
                `event: image_generation.completed` per image; `:` keep-alive comments; a failure is `event: error` with \
                `{\"type\":\"error\",\"error\":{...}}`. Closing the connection cancels the job.",
            content((ImagesResponse = "application/json"), (PartialImageEvent = "text/event-stream"))),
        (status = 400, description = "Invalid request; `error.param` names the field", body = OpenAiErrorBody),
        (status = 413, description = "The body is over the worker's --max-body-mib", body = OpenAiErrorBody),
        (status = 401, description = "Missing or invalid API key (only with --api-key)", body = OpenAiErrorBody),
        (status = 404, description = "Unknown `model`", body = OpenAiErrorBody),
        (status = 429, description = "Queue full; see Retry-After", body = OpenAiErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait"))),
        (status = 500, description = "Generation failed (`x-should-retry: false`)", body = OpenAiErrorBody),
        (status = 503, description = "Model still loading (Retry-After), failed to load, or shutting down", body = OpenAiErrorBody),
        (status = 504, description = "The job ran past the worker's --job-timeout", body = OpenAiErrorBody),
    ),
    security((), ("bearer" = [])))]
pub async fn create_image(
    State(state): State<crate::http::AppState>,
    Extension(shared): Extension<OpenAiShared>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OpenAiError> {
    let params = parse_generation(&body)?;
    run_image_request(&state, &shared, &headers, params).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sdks_nulls_and_extras_parse() {
        let body = br#"{"prompt":"fox","model":null,"n":null,"size":null,"quality":null,"style":null,"response_format":null,
            "output_format":null,"output_compression":null,"background":null,"moderation":null,"stream":null,
            "partial_images":null,"user":null,"seed":5,"cfg_scale":2.5,"negative_prompt":"ugly","something_new":[1]}"#;
        let params = parse_generation(body).expect("valid");
        assert!(!params.gpt_only_field_used);
        assert_eq!((params.extras.seed, params.extras.cfg_scale), (Some(5), Some(2.5)));
        assert_eq!(params.extras.negative_prompt.as_deref(), Some("ugly"));
    }

    #[test]
    fn missing_prompt_and_bad_json_are_400s() {
        let err = parse_generation(br#"{"n":1}"#).expect_err("no prompt");
        assert_eq!((err.param.as_deref(), err.code.as_deref()), (Some("prompt"), Some("missing_required_parameter")));
        assert_eq!(parse_generation(b"{oops").expect_err("bad json").code.as_deref(), Some("invalid_json"));
        assert_eq!(parse_generation(br#"{"prompt":"x","n":"lots"}"#).expect_err("bad n").param.as_deref(), Some("n"));
    }

    #[test]
    fn gpt_only_fields_switch_the_default_family() {
        assert!(parse_generation(br#"{"prompt":"x","output_format":"webp"}"#).expect("valid").gpt_only_field_used);
        assert!(parse_generation(br#"{"prompt":"x","stream":false}"#).expect("valid").gpt_only_field_used);
    }
}
