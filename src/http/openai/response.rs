//! OpenAI's `ImagesResponse`, shaped by the requested model family: DALL·E names get `url` (or
//! `b64_json`) items and, for dall-e-3, `revised_prompt`; GPT image names and the local model id
//! also get the resolved `background/output_format/quality/size` and a `usage` object.

use serde::Serialize;
use utoipa::ToSchema;

use crate::http::native::events::base64_encode;
use crate::http::openai::models::Family;
use crate::http::openai::output::OutputImage;
use crate::http::openai::plan::ReplySettings;
use crate::http::openai::url_images::{UrlImageStore, FILES_ROUTE};
use crate::http::openai::wire::ResponseFormat;

/// The reply of all three image endpoints.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ImagesResponse {
    /// Unix seconds.
    pub created: i64,
    pub data: Vec<ImageData>,
    /// Always `opaque` (GPT image families and the local model only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub background: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "png")]
    pub output_format: Option<&'static str>,
    /// `low`, `medium` or `high`, as resolved from the request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quality: Option<&'static str>,
    /// The size of every returned image, `WIDTHxHEIGHT`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "1024x1024")]
    pub size: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<ImagesUsage>,
}

/// One image.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ImageData {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub b64_json: Option<String>,
    /// Absolute link to this worker, valid for 60 minutes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The prompt as used (dall-e-3 only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revised_prompt: Option<String>,
    /// Extension: the seed this image was made with (resend it as `seed` to reproduce it).
    pub seed: u64,
}

/// OpenAI's `ImagesUsage`. Text tokens are estimated (about four characters per token: the
/// engine does not report its tokenizer's count); images are not priced in tokens here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub struct ImagesUsage {
    pub input_tokens: u32,
    pub output_tokens: u32,
    pub total_tokens: u32,
    pub input_tokens_details: InputTokensDetails,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub struct InputTokensDetails {
    pub text_tokens: u32,
    pub image_tokens: u32,
}

impl ImagesUsage {
    pub fn for_prompt(prompt: &str) -> Self {
        let text_tokens = u32::try_from(prompt.chars().count().div_ceil(4)).unwrap_or(u32::MAX);
        ImagesUsage {
            input_tokens: text_tokens,
            output_tokens: 0,
            total_tokens: text_tokens,
            input_tokens_details: InputTokensDetails { text_tokens, image_tokens: 0 },
        }
    }
}

/// Where `url` images go and how their links start.
pub struct UrlTarget<'a> {
    pub store: &'a UrlImageStore,
    /// e.g. `http://127.0.0.1:8080`
    pub base: String,
}

pub fn images_response(images: Vec<OutputImage>, reply: &ReplySettings, urls: &UrlTarget<'_>, created: i64) -> ImagesResponse {
    let content_type = reply.encoding.engine_format().mime_type();
    let extension = reply.encoding.engine_format().extension();
    let data = images
        .into_iter()
        .map(|image| {
            let (b64_json, url) = match reply.response_format {
                ResponseFormat::B64Json => (Some(base64_encode(&image.bytes)), None),
                ResponseFormat::Url => {
                    let name = urls.store.put(image.bytes, content_type, extension);
                    (None, Some(format!("{}{FILES_ROUTE}/{name}", urls.base)))
                }
            };
            let revised_prompt = (reply.family == Family::DallE3).then(|| reply.prompt.clone());
            ImageData { b64_json, url, revised_prompt, seed: image.seed }
        })
        .collect();
    let settings = reply.family.reports_settings();
    ImagesResponse {
        created,
        data,
        background: settings.then_some("opaque"),
        output_format: settings.then_some(reply.encoding.format.name()),
        quality: settings.then_some(reply.quality),
        size: settings.then(|| reply.size_label()),
        usage: settings.then(|| ImagesUsage::for_prompt(&reply.prompt)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::openai::models::Endpoint;
    use crate::http::openai::plan::OutputEncoding;
    use crate::http::openai::url_images::URL_LIFETIME;
    use crate::http::openai::wire::ImageFormat;

    fn reply(family: Family, response_format: ResponseFormat) -> ReplySettings {
        ReplySettings {
            endpoint: Endpoint::Generations,
            family,
            response_format,
            encoding: OutputEncoding { format: ImageFormat::Png, quality: 100 },
            width: 32,
            height: 16,
            quality: "medium",
            stream: false,
            partial_images: 0,
            prompt: "a red fox".into(),
        }
    }

    fn shape(family: Family, format: ResponseFormat) -> serde_json::Value {
        let store = UrlImageStore::new(URL_LIFETIME, 1 << 20);
        let target = UrlTarget { store: &store, base: "http://h:1".into() };
        let images = vec![OutputImage { bytes: vec![1, 2, 3], seed: 5 }];
        serde_json::to_value(images_response(images, &reply(family, format), &target, 100)).expect("serializes")
    }

    #[test]
    fn dall_e_replies_carry_only_created_and_data() {
        let json = shape(Family::DallE2, ResponseFormat::Url);
        let url = json["data"][0]["url"].as_str().expect("url");
        assert!(url.starts_with("http://h:1/v1/images/files/") && url.ends_with(".png"), "{url}");
        assert_eq!(json.as_object().map(|o| o.len()), Some(2), "{json}");
        let json = shape(Family::DallE3, ResponseFormat::B64Json);
        assert_eq!(json["data"][0], serde_json::json!({"b64_json": "AQID", "revised_prompt": "a red fox", "seed": 5}));
    }

    #[test]
    fn gpt_image_replies_add_resolved_settings_and_usage() {
        let json = shape(Family::GptImage, ResponseFormat::B64Json);
        assert_eq!(json["background"], "opaque");
        assert_eq!(json["output_format"], "png");
        assert_eq!(json["quality"], "medium");
        assert_eq!(json["size"], "32x16");
        assert_eq!(
            json["usage"],
            serde_json::json!({"input_tokens":3,"output_tokens":0,"total_tokens":3,"input_tokens_details":{"text_tokens":3,"image_tokens":0}})
        );
    }
}
