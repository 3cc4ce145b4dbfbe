//! Field types shared by the three image endpoints, and the Stable Diffusion extras clients send
//! at the top level (the SDK's `extra_body`). Every field is optional and JSON `null` means
//! "not given" (the SDK sends `null` for `None`). Numbers and booleans are also accepted as text,
//! because multipart forms carry every scalar as text (`"2"`, `"true"`).

use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer};
use utoipa::ToSchema;

use crate::http::openai::errors::OpenAiError;

/// `quality`: steps relative to the model's default (low ≈ half, high/hd ≈ 1.5x).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Quality {
    Standard,
    Hd,
    Low,
    Medium,
    High,
    Auto,
}

/// How images are returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ResponseFormat {
    /// A link to this worker, valid for 60 minutes.
    Url,
    B64Json,
}

/// Encoded file format of the returned images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ImageFormat {
    Png,
    #[serde(alias = "jpg")]
    Jpeg,
    Webp,
}

impl ImageFormat {
    pub fn name(self) -> &'static str {
        match self {
            ImageFormat::Png => "png",
            ImageFormat::Jpeg => "jpeg",
            ImageFormat::Webp => "webp",
        }
    }
}

/// `background`. Stable Diffusion paints opaque images, so `transparent` is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Background {
    Transparent,
    Opaque,
    Auto,
}

/// dall-e-3's `style`: accepted and ignored (the prompt decides the style).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Style {
    Vivid,
    Natural,
}

/// `moderation`: accepted; this worker runs no safety checker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Moderation {
    Low,
    Auto,
}

/// Edits' `input_fidelity`: `high` keeps more of the input image (a lower img2img strength).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum InputFidelity {
    High,
    Low,
}

/// Stable Diffusion controls, accepted at the top level of every image request (JSON fields or
/// form fields; with the SDK: `extra_body={...}`).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct SdExtras {
    #[serde(default)]
    pub negative_prompt: Option<String>,
    /// Base seed; image i uses seed + i. Absent or negative = random.
    #[serde(default, deserialize_with = "lenient")]
    #[schema(value_type = Option<i64>, example = 42)]
    pub seed: Option<i64>,
    /// Sampling steps; wins over `quality`.
    #[serde(default, deserialize_with = "lenient")]
    #[schema(value_type = Option<u32>)]
    pub steps: Option<u32>,
    /// Classifier-free guidance scale (0 turns guidance off).
    #[serde(default, deserialize_with = "lenient")]
    #[schema(value_type = Option<f64>)]
    pub cfg_scale: Option<f64>,
    /// Same as `cfg_scale` (diffusers' name); `cfg_scale` wins when both are sent.
    #[serde(default, deserialize_with = "lenient")]
    #[schema(value_type = Option<f64>)]
    pub guidance_scale: Option<f64>,
    /// A1111 sampler name or alias: `Euler`, `Euler a`, `DPM++ 2M`, `DDIM`, ...
    #[serde(default)]
    pub sampler: Option<String>,
    /// Same as `sampler` (A1111's name).
    #[serde(default)]
    pub sampler_name: Option<String>,
    /// A1111 schedule type: `Automatic`, `Karras`, `Exponential`, `SGM Uniform`.
    #[serde(default)]
    pub scheduler: Option<String>,
    /// Edits and variations: how much of the input to change (0 keeps it, 1 ignores it).
    #[serde(default, deserialize_with = "lenient")]
    #[schema(value_type = Option<f64>)]
    pub strength: Option<f64>,
    /// Same as `strength` (A1111's name).
    #[serde(default, deserialize_with = "lenient")]
    #[schema(value_type = Option<f64>)]
    pub denoising_strength: Option<f64>,
    /// 1 = last CLIP layer, 2 = penultimate (A1111 "Clip skip").
    #[serde(default, deserialize_with = "lenient")]
    #[schema(value_type = Option<u32>)]
    pub clip_skip: Option<u32>,
}

/// A number or boolean given as itself or as text; `null` and `""` mean "not given".
pub fn lenient<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned + std::str::FromStr,
{
    let value = Option::<serde_json::Value>::deserialize(deserializer)?;
    match value {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(text)) if text.trim().is_empty() => Ok(None),
        Some(serde_json::Value::String(text)) => {
            text.trim().parse::<T>().map(Some).map_err(|_| D::Error::custom(format!("'{text}' is not a valid {}", type_label::<T>())))
        }
        Some(other) => {
            let shown = other.to_string();
            serde_json::from_value::<T>(other)
                .map(Some)
                .map_err(|_| D::Error::custom(format!("{shown} is not a valid {}", type_label::<T>())))
        }
    }
}

fn type_label<T>() -> &'static str {
    match std::any::type_name::<T>() {
        "bool" => "boolean (true or false)",
        "f64" | "f32" => "number",
        "u8" | "u16" | "u32" | "u64" => "non-negative integer",
        _ => "integer",
    }
}

/// Deserialize request fields, naming the failing field (`param`) the way OpenAI does.
pub fn parse_fields<T: DeserializeOwned>(value: &serde_json::Value) -> Result<T, OpenAiError> {
    serde_path_to_error::deserialize::<_, T>(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        match inner.strip_prefix("missing field `").and_then(|rest| rest.split('`').next()) {
            Some(field) => OpenAiError::missing_param(field),
            None if path == "." => OpenAiError::invalid_request("invalid_value", inner),
            None => OpenAiError::invalid_param(path.clone(), "invalid_value", format!("Invalid value for '{path}': {inner}")),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Debug, Deserialize)]
    struct Probe {
        #[serde(default, deserialize_with = "lenient")]
        n: Option<u32>,
        #[serde(default, deserialize_with = "lenient")]
        stream: Option<bool>,
        #[serde(default)]
        quality: Option<Quality>,
    }

    #[test]
    fn numbers_and_booleans_arrive_as_json_or_as_text() {
        let p: Probe = parse_fields(&json!({"n": 2, "stream": true})).expect("json");
        assert_eq!((p.n, p.stream), (Some(2), Some(true)));
        let p: Probe = parse_fields(&json!({"n": "3", "stream": "false"})).expect("text");
        assert_eq!((p.n, p.stream), (Some(3), Some(false)));
        let p: Probe = parse_fields(&json!({"n": null, "stream": null, "quality": null, "unknown": 1})).expect("nulls");
        assert_eq!((p.n, p.stream, p.quality), (None, None, None));
    }

    #[test]
    fn bad_values_name_their_field() {
        let err = parse_fields::<Probe>(&json!({"n": "two"})).expect_err("not a number");
        assert_eq!((err.param.as_deref(), err.status.as_u16()), (Some("n"), 400));
        assert!(err.message.contains("'two' is not a valid non-negative integer"), "{}", err.message);
        let err = parse_fields::<Probe>(&json!({"n": -1})).expect_err("negative");
        assert_eq!(err.param.as_deref(), Some("n"));
        let err = parse_fields::<Probe>(&json!({"quality": "ultra"})).expect_err("unknown variant");
        assert_eq!(err.param.as_deref(), Some("quality"));
        assert!(err.message.contains("ultra"), "{}", err.message);
    }
}
