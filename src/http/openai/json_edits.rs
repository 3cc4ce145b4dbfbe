//! The JSON form of `POST /v1/images/edits` (OpenAI's `EditImageBodyJsonParam`, sent by clients
//! that hold images as URLs): `images` and `mask` are `{"image_url": ...}` references. Only
//! `data:` URLs are read. Fetching arbitrary URLs would let any client make this worker issue
//! requests into its network (SSRF), and `file_id` needs a Files API this worker does not have.
//! The references become the same [`UploadForm`] a multipart edit produces, so both forms share
//! one parser.

use axum::body::Bytes;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::backend::image_io::decode_base64;
use crate::http::openai::errors::OpenAiError;
use crate::http::openai::uploads::{UploadForm, MAX_IMAGES};
use crate::http::openai::wire::{Background, InputFidelity, Moderation, Quality, RequestedFormat};

/// One image reference: exactly one of `image_url` (here a `data:` URL) or `file_id`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct ImageRef {
    /// `data:image/png;base64,...` (PNG, JPEG or WebP). http(s) URLs are refused.
    #[serde(default)]
    pub image_url: Option<String>,
    /// Refused: this worker has no Files API.
    #[serde(default)]
    pub file_id: Option<String>,
}

/// OpenAI's JSON edit request. Documents the wire; the body is read by [`json_form`] and then
/// parsed like the multipart form. The Stable Diffusion extras of generations may be added.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct EditImageJsonRequest {
    /// 1–16 images; Stable Diffusion edits the first.
    #[schema(min_items = 1, max_items = 16)]
    pub images: Vec<ImageRef>,
    #[serde(default)]
    pub mask: Option<ImageRef>,
    #[schema(example = "add a red scarf")]
    pub prompt: String,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    #[schema(minimum = 1, maximum = 10)]
    pub n: Option<u32>,
    #[serde(default)]
    pub size: Option<String>,
    #[serde(default)]
    pub quality: Option<Quality>,
    #[serde(default)]
    pub output_format: Option<RequestedFormat>,
    #[serde(default)]
    #[schema(minimum = 0, maximum = 100)]
    pub output_compression: Option<u32>,
    #[serde(default)]
    pub background: Option<Background>,
    #[serde(default)]
    pub input_fidelity: Option<InputFidelity>,
    #[serde(default)]
    pub moderation: Option<Moderation>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    #[schema(minimum = 0, maximum = 3)]
    pub partial_images: Option<u32>,
    #[serde(default)]
    pub user: Option<String>,
}

/// Read a JSON edit body into the form the multipart path produces.
pub fn json_form(body: &[u8]) -> Result<UploadForm, OpenAiError> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| OpenAiError::invalid_request("invalid_json", format!("the request body is not valid JSON: {e}")))?;
    let serde_json::Value::Object(mut fields) = value else {
        return Err(OpenAiError::invalid_request("invalid_json", "the request body must be a JSON object"));
    };
    let mut form = UploadForm::default();
    match fields.remove("images") {
        None | Some(serde_json::Value::Null) => return Err(OpenAiError::missing_param("images")),
        Some(serde_json::Value::Array(refs)) => {
            if refs.is_empty() || refs.len() > MAX_IMAGES {
                return Err(OpenAiError::invalid_param("images", "invalid_value", format!("send 1 to {MAX_IMAGES} images")));
            }
            for (i, reference) in refs.into_iter().enumerate() {
                form.images.push(resolve(&format!("images[{i}]"), reference)?);
            }
        }
        Some(_) => return Err(OpenAiError::invalid_param("images", "invalid_type", "images must be an array of {\"image_url\": ...} objects")),
    }
    match fields.remove("mask") {
        None | Some(serde_json::Value::Null) => {}
        Some(reference) => form.mask = Some(resolve("mask", reference)?),
    }
    form.fields = fields;
    Ok(form)
}

fn resolve(param: &str, reference: serde_json::Value) -> Result<Bytes, OpenAiError> {
    let reference: ImageRef = serde_json::from_value(reference).map_err(|_| {
        OpenAiError::invalid_param(param, "invalid_type", format!("{param} must be an object with an image_url"))
    })?;
    match (reference.image_url, reference.file_id) {
        (Some(url), None) => {
            if !url.trim_start().get(..5).is_some_and(|scheme| scheme.eq_ignore_ascii_case("data:")) {
                return Err(OpenAiError::invalid_param(
                    format!("{param}.image_url"),
                    "unsupported_image_url",
                    "only data: URLs are accepted here (this worker does not fetch remote URLs); send the image inline or as multipart",
                ));
            }
            let bytes = decode_base64(&url)
                .map_err(|e| OpenAiError::invalid_param(format!("{param}.image_url"), "invalid_image_url", format!("{param}.image_url: {e}")))?;
            Ok(Bytes::from(bytes))
        }
        (None, Some(_)) => Err(OpenAiError::invalid_param(
            format!("{param}.file_id"),
            "unsupported_file_id",
            "file ids need the Files API, which this worker does not have; send a data: URL in image_url",
        )),
        _ => Err(OpenAiError::invalid_param(param, "invalid_value", format!("{param} must have exactly one of image_url or file_id"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PIXEL: &str = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGNgYPgPAAEDAQAIicLsAAAAAElFTkSuQmCC";

    #[test]
    fn data_urls_become_form_images_and_other_fields_stay() {
        let body = serde_json::json!({"images": [{"image_url": PIXEL}], "mask": {"image_url": PIXEL}, "prompt": "x", "n": 2});
        let form = json_form(body.to_string().as_bytes()).expect("valid");
        assert_eq!(form.images.len(), 1);
        assert!(form.images[0].starts_with(b"\x89PNG"));
        assert!(form.mask.is_some());
        assert_eq!(form.fields.get("n"), Some(&serde_json::json!(2)));
        assert!(!form.fields.contains_key("images"));
    }

    #[test]
    fn remote_urls_file_ids_and_bad_shapes_name_the_param() {
        let param = |body: serde_json::Value| json_form(body.to_string().as_bytes()).expect_err("refused").param;
        assert_eq!(param(serde_json::json!({"images": [{"image_url": "https://example.com/a.png"}]})), Some("images[0].image_url".into()));
        assert_eq!(param(serde_json::json!({"images": [{"file_id": "file-1"}]})), Some("images[0].file_id".into()));
        assert_eq!(param(serde_json::json!({"images": [{}]})), Some("images[0]".into()));
        assert_eq!(param(serde_json::json!({"images": "x"})), Some("images".into()));
        assert_eq!(param(serde_json::json!({"prompt": "x"})), Some("images".into()));
        assert_eq!(param(serde_json::json!({"images": [{"image_url": PIXEL}], "mask": {"image_url": "data:image/png;base64,!!"}})), Some("mask.image_url".into()));
    }
}
