//! The txt2img/img2img answer: `{images: [base64], parameters: <the request with defaults>,
//! info: "<JSON string>"}`. `info` is A1111's `Processed.js()`, every key in A1111's order,
//! written as Python's `json.dumps` writes it.

use base64::Engine as _;
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};
use serde_json::Value;
use utoipa::ToSchema;

use super::errors::A1111Error;
use super::generation::{PreparedCall, RunResult};
use super::models::ServedCheckpoint;
use super::python_json::dumps;
use super::request_model::{Img2ImgRequest, ProcessingFields, Txt2ImgRequest};
use crate::backend::request::GeneratedImage;

/// The version this worker reports (`info.version`; the engine writes the same in infotexts).
pub const VERSION: &str = concat!("sd-worker-rbee v", env!("CARGO_PKG_VERSION"));

#[derive(Debug, Serialize, ToSchema)]
pub struct Txt2ImgResponse {
    /// Base64 images in `samples_format` (PNG by default, infotext in its `parameters` chunk).
    pub images: Vec<String>,
    pub parameters: Txt2ImgRequest,
    /// A JSON string: all_prompts, all_seeds, infotexts, sd_model_name, ...
    pub info: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Img2ImgResponse {
    pub images: Vec<String>,
    /// `init_images` and `mask` are null unless `include_init_images`.
    pub parameters: Img2ImgRequest,
    pub info: String,
}

/// A JSON object with keys in insertion order (Python dict order).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OrderedObject(pub Vec<(String, Value)>);

impl OrderedObject {
    pub fn insert(&mut self, key: &str, value: impl Into<Value>) {
        let value = value.into();
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => self.0.push((key.to_string(), value)),
        }
    }
}

impl Serialize for OrderedObject {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (key, value) in &self.0 {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

/// `Processed.js()`, in A1111 1.10's key order.
#[derive(Debug, Serialize)]
struct ProcessedInfo<'a> {
    prompt: &'a str,
    all_prompts: Vec<&'a str>,
    negative_prompt: &'a str,
    all_negative_prompts: Vec<&'a str>,
    seed: i64,
    all_seeds: &'a [i64],
    subseed: i64,
    all_subseeds: &'a [i64],
    subseed_strength: f64,
    width: i64,
    height: i64,
    sampler_name: &'a str,
    cfg_scale: f64,
    steps: i64,
    batch_size: u32,
    restore_faces: bool,
    face_restoration_model: Option<&'a str>,
    sd_model_name: Option<&'a str>,
    sd_model_hash: Option<&'a str>,
    sd_vae_name: Option<&'a str>,
    sd_vae_hash: Option<&'a str>,
    seed_resize_from_w: i64,
    seed_resize_from_h: i64,
    denoising_strength: Option<f64>,
    extra_generation_params: &'a OrderedObject,
    index_of_first_image: usize,
    infotexts: Vec<&'a str>,
    styles: &'a [String],
    job_timestamp: &'a str,
    clip_skip: u32,
    is_using_inpainting_conditioning: bool,
    version: &'a str,
}

/// What `info` needs beyond the request and the prepared call.
pub struct InfoContext<'a> {
    pub served: &'a ServedCheckpoint,
    pub job_timestamp: &'a str,
    pub denoising_strength: Option<f64>,
    pub extra_generation_params: OrderedObject,
}

/// The `info` string for a finished call.
pub fn info_json(common: &ProcessingFields, call: &PreparedCall, result: &RunResult, ctx: &InfoContext<'_>) -> Result<String, A1111Error> {
    let count = call.seeds.all_seeds.len();
    let info = ProcessedInfo {
        prompt: &call.prompt,
        all_prompts: vec![call.prompt.as_str(); count],
        negative_prompt: &call.negative_prompt,
        all_negative_prompts: vec![call.negative_prompt.as_str(); count],
        seed: call.seeds.all_seeds.first().copied().unwrap_or(-1),
        all_seeds: &call.seeds.all_seeds,
        subseed: call.seeds.all_subseeds.first().copied().unwrap_or(-1),
        all_subseeds: &call.seeds.all_subseeds,
        subseed_strength: call.seeds.subseed_strength,
        width: common.width(),
        height: common.height(),
        sampler_name: call.sampler.sampler_name(),
        cfg_scale: common.cfg_scale(),
        steps: i64::from(call.base.steps),
        batch_size: call.batch_size,
        restore_faces: false,
        face_restoration_model: None,
        sd_model_name: ctx.served.model_name(),
        sd_model_hash: ctx.served.short_hash(),
        sd_vae_name: None,
        sd_vae_hash: None,
        seed_resize_from_w: common.seed_resize_from_w.unwrap_or(-1),
        seed_resize_from_h: common.seed_resize_from_h.unwrap_or(-1),
        denoising_strength: ctx.denoising_strength,
        extra_generation_params: &ctx.extra_generation_params,
        index_of_first_image: 0,
        infotexts: result.images.iter().map(|i| i.infotext.as_str()).collect(),
        styles: common.styles(),
        job_timestamp: ctx.job_timestamp,
        clip_skip: call.settings.clip_skip,
        is_using_inpainting_conditioning: false,
        version: VERSION,
    };
    dumps(&info).map_err(|e| A1111Error::internal(format!("could not write info: {e}")))
}

/// The images as the response carries them (none when `send_images` is false).
pub fn encoded_images(images: &[GeneratedImage], send_images: bool) -> Vec<String> {
    if !send_images {
        return Vec::new();
    }
    images.iter().map(|i| base64::engine::general_purpose::STANDARD.encode(&i.bytes)).collect()
}

/// `extra_generation_params` every call has: the schedule actually used.
pub fn base_extra_params(call: &PreparedCall) -> OrderedObject {
    let mut extra = OrderedObject::default();
    extra.insert("Schedule type", call.sampler.schedule_label());
    extra
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ordered_object_keeps_insertion_order_and_replaces_in_place() {
        let mut o = OrderedObject::default();
        o.insert("b", 1);
        o.insert("a", "x");
        o.insert("b", 2);
        assert_eq!(dumps(&o).expect("dumps"), r#"{"b": 2, "a": "x"}"#);
        assert_eq!(serde_json::to_value(&o).expect("json"), json!({"a": "x", "b": 2}));
    }
}
