//! A1111's `StableDiffusionProcessingTxt2Img` / `...Img2Img` request models: every field the API
//! exposes, with the API's defaults (steps 50, cfg 7.0, 512×512, seed −1, sampler_index "Euler",
//! ...), unknown keys ignored and pydantic v1's lax coercion ([`super::lax`]).
//!
//! Each field is an `Option`: a missing key takes the A1111 default (so `parameters` echoes it),
//! an explicit `null` stays `null` in the echo, as A1111's does, and the accessors below treat it
//! as the default. Forge's extra fields (`distilled_cfg_scale`, `hr_cfg`, `hr_additional_modules`,
//! ...) are accepted too, since clients send them.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::errors::A1111Error;
use super::lax;

/// A1111 API defaults that accessors fall back to when a field is `null`.
pub mod defaults {
    pub const STEPS: i64 = 50;
    pub const CFG_SCALE: f64 = 7.0;
    pub const SIDE: i64 = 512;
    pub const SEED: i64 = -1;
    pub const DENOISING_STRENGTH: f64 = 0.75;
    pub const SAMPLER_INDEX: &str = "Euler";
    pub const HR_SCALE: f64 = 2.0;
    pub const MASK_BLUR: i64 = 4;
}

/// Fields txt2img and img2img share.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(default)]
pub struct ProcessingFields {
    /// Styles are applied, then `#` comments are stripped.
    #[serde(deserialize_with = "lax::string")]
    #[schema(default = "")]
    pub prompt: Option<String>,
    #[serde(deserialize_with = "lax::string")]
    #[schema(default = "")]
    pub negative_prompt: Option<String>,
    /// Style names; this worker defines none, so every name is ignored as A1111 ignores unknown ones.
    #[serde(deserialize_with = "lax::string_list")]
    pub styles: Option<Vec<String>>,
    /// −1 (or null) = random in 0..4294967294; image i of the job gets seed + i.
    #[serde(deserialize_with = "lax::int")]
    #[schema(default = -1)]
    pub seed: Option<i64>,
    /// Variation seed; −1 = random.
    #[serde(deserialize_with = "lax::int")]
    #[schema(default = -1)]
    pub subseed: Option<i64>,
    #[serde(deserialize_with = "lax::float")]
    #[schema(default = 0.0)]
    pub subseed_strength: Option<f64>,
    #[serde(deserialize_with = "lax::int")]
    #[schema(default = -1)]
    pub seed_resize_from_h: Option<i64>,
    #[serde(deserialize_with = "lax::int")]
    #[schema(default = -1)]
    pub seed_resize_from_w: Option<i64>,
    /// A1111 sampler name; a trailing schedule label ("DPM++ 2M Karras") is split off. Falls back
    /// to `sampler_index` when empty; unknown names become "DPM++ 2M".
    #[serde(deserialize_with = "lax::string")]
    pub sampler_name: Option<String>,
    /// Schedule name or label; null or unknown = "Automatic".
    #[serde(deserialize_with = "lax::string")]
    pub scheduler: Option<String>,
    #[serde(deserialize_with = "lax::int")]
    #[schema(default = 1)]
    pub batch_size: Option<i64>,
    /// Number of batches.
    #[serde(deserialize_with = "lax::int")]
    #[schema(default = 1)]
    pub n_iter: Option<i64>,
    #[serde(deserialize_with = "lax::int")]
    #[schema(default = 50)]
    pub steps: Option<i64>,
    #[serde(deserialize_with = "lax::float")]
    #[schema(default = 7.0)]
    pub cfg_scale: Option<f64>,
    /// Forge (Flux); accepted and ignored.
    #[serde(deserialize_with = "lax::float")]
    #[schema(default = 3.5)]
    pub distilled_cfg_scale: Option<f64>,
    #[serde(deserialize_with = "lax::int")]
    #[schema(default = 512)]
    pub width: Option<i64>,
    #[serde(deserialize_with = "lax::int")]
    #[schema(default = 512)]
    pub height: Option<i64>,
    #[serde(deserialize_with = "lax::boolean")]
    pub restore_faces: Option<bool>,
    #[serde(deserialize_with = "lax::boolean")]
    pub tiling: Option<bool>,
    #[serde(deserialize_with = "lax::boolean")]
    #[schema(default = false)]
    pub do_not_save_samples: Option<bool>,
    #[serde(deserialize_with = "lax::boolean")]
    #[schema(default = false)]
    pub do_not_save_grid: Option<bool>,
    #[serde(deserialize_with = "lax::float")]
    pub eta: Option<f64>,
    /// txt2img: strength of the hires pass; img2img: how much to change the init image.
    #[serde(deserialize_with = "lax::float")]
    #[schema(default = 0.75)]
    pub denoising_strength: Option<f64>,
    #[serde(deserialize_with = "lax::float")]
    pub s_min_uncond: Option<f64>,
    #[serde(deserialize_with = "lax::float")]
    pub s_churn: Option<f64>,
    #[serde(deserialize_with = "lax::float")]
    pub s_tmax: Option<f64>,
    #[serde(deserialize_with = "lax::float")]
    pub s_tmin: Option<f64>,
    #[serde(deserialize_with = "lax::float")]
    pub s_noise: Option<f64>,
    /// Options applied to this job only (`CLIP_stop_at_last_layers`, `randn_source`, ...).
    #[serde(deserialize_with = "lax::dict")]
    #[schema(value_type = Option<Object>)]
    pub override_settings: Option<BTreeMap<String, Value>>,
    #[serde(deserialize_with = "lax::boolean")]
    #[schema(default = true)]
    pub override_settings_restore_afterwards: Option<bool>,
    #[serde(deserialize_with = "lax::string")]
    pub refiner_checkpoint: Option<String>,
    #[serde(deserialize_with = "lax::float")]
    pub refiner_switch_at: Option<f64>,
    #[serde(deserialize_with = "lax::boolean")]
    #[schema(default = false)]
    pub disable_extra_networks: Option<bool>,
    #[serde(deserialize_with = "lax::string")]
    pub firstpass_image: Option<String>,
    #[serde(deserialize_with = "lax::dict")]
    #[schema(value_type = Option<Object>)]
    pub comments: Option<BTreeMap<String, Value>>,
    /// Deprecated sampler field, used when `sampler_name` is empty.
    #[serde(deserialize_with = "lax::string")]
    #[schema(default = "Euler")]
    pub sampler_index: Option<String>,
    /// A selectable script; this worker has none, so any name is refused (422) as A1111 does.
    #[serde(deserialize_with = "lax::string")]
    pub script_name: Option<String>,
    #[serde(deserialize_with = "lax::any_list")]
    #[schema(value_type = Option<Vec<Object>>)]
    pub script_args: Option<Vec<Value>>,
    /// false = answer with `images: []`.
    #[serde(deserialize_with = "lax::boolean")]
    #[schema(default = true)]
    pub send_images: Option<bool>,
    /// Sets `do_not_save_samples = do_not_save_grid = !save_images`; this worker saves nothing.
    #[serde(deserialize_with = "lax::boolean")]
    #[schema(default = false)]
    pub save_images: Option<bool>,
    /// `{"<script title>": {"args": [...]}}`; this worker has no scripts, so any entry is refused.
    #[serde(deserialize_with = "lax::dict")]
    #[schema(value_type = Option<Object>)]
    pub alwayson_scripts: Option<BTreeMap<String, Value>>,
    #[serde(deserialize_with = "lax::string")]
    pub force_task_id: Option<String>,
    /// An infotext whose values fill every field the request does not send.
    #[serde(deserialize_with = "lax::string")]
    pub infotext: Option<String>,
}

impl Default for ProcessingFields {
    fn default() -> Self {
        ProcessingFields {
            prompt: Some(String::new()),
            negative_prompt: Some(String::new()),
            styles: None,
            seed: Some(defaults::SEED),
            subseed: Some(-1),
            subseed_strength: Some(0.0),
            seed_resize_from_h: Some(-1),
            seed_resize_from_w: Some(-1),
            sampler_name: None,
            scheduler: None,
            batch_size: Some(1),
            n_iter: Some(1),
            steps: Some(defaults::STEPS),
            cfg_scale: Some(defaults::CFG_SCALE),
            distilled_cfg_scale: Some(3.5),
            width: Some(defaults::SIDE),
            height: Some(defaults::SIDE),
            restore_faces: None,
            tiling: None,
            do_not_save_samples: Some(false),
            do_not_save_grid: Some(false),
            eta: None,
            denoising_strength: Some(defaults::DENOISING_STRENGTH),
            s_min_uncond: None,
            s_churn: None,
            s_tmax: None,
            s_tmin: None,
            s_noise: None,
            override_settings: None,
            override_settings_restore_afterwards: Some(true),
            refiner_checkpoint: None,
            refiner_switch_at: None,
            disable_extra_networks: Some(false),
            firstpass_image: None,
            comments: None,
            sampler_index: Some(defaults::SAMPLER_INDEX.to_string()),
            script_name: None,
            script_args: Some(Vec::new()),
            send_images: Some(true),
            save_images: Some(false),
            alwayson_scripts: Some(BTreeMap::new()),
            force_task_id: None,
            infotext: None,
        }
    }
}

impl ProcessingFields {
    pub fn prompt(&self) -> &str {
        self.prompt.as_deref().unwrap_or("")
    }

    pub fn negative_prompt(&self) -> &str {
        self.negative_prompt.as_deref().unwrap_or("")
    }

    pub fn seed(&self) -> i64 {
        self.seed.unwrap_or(defaults::SEED)
    }

    pub fn subseed(&self) -> i64 {
        self.subseed.unwrap_or(-1)
    }

    pub fn subseed_strength(&self) -> f64 {
        self.subseed_strength.unwrap_or(0.0)
    }

    pub fn batch_size(&self) -> i64 {
        self.batch_size.unwrap_or(1)
    }

    pub fn n_iter(&self) -> i64 {
        self.n_iter.unwrap_or(1)
    }

    pub fn steps(&self) -> i64 {
        self.steps.unwrap_or(defaults::STEPS)
    }

    pub fn cfg_scale(&self) -> f64 {
        self.cfg_scale.unwrap_or(defaults::CFG_SCALE)
    }

    pub fn width(&self) -> i64 {
        self.width.unwrap_or(defaults::SIDE)
    }

    pub fn height(&self) -> i64 {
        self.height.unwrap_or(defaults::SIDE)
    }

    pub fn denoising_strength(&self) -> f64 {
        self.denoising_strength.unwrap_or(defaults::DENOISING_STRENGTH)
    }

    /// `sampler_name or sampler_index`, as A1111's API picks the name to resolve.
    pub fn sampler_request(&self) -> &str {
        match self.sampler_name.as_deref() {
            Some(name) if !name.is_empty() => name,
            _ => self.sampler_index.as_deref().unwrap_or(""),
        }
    }

    pub fn send_images(&self) -> bool {
        self.send_images.unwrap_or(true)
    }

    pub fn styles(&self) -> &[String] {
        self.styles.as_deref().unwrap_or(&[])
    }

    pub fn override_settings(&self) -> impl Iterator<Item = (&String, &Value)> {
        self.override_settings.iter().flatten()
    }
}

/// `POST /sdapi/v1/txt2img`.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(default)]
pub struct Txt2ImgRequest {
    #[serde(flatten)]
    pub common: ProcessingFields,
    /// Hires fix: generate, upscale, then refine with a second pass.
    #[serde(deserialize_with = "lax::boolean")]
    #[schema(default = false)]
    pub enable_hr: Option<bool>,
    /// Legacy: non-zero values swap into width/height.
    #[serde(deserialize_with = "lax::int")]
    #[schema(default = 0)]
    pub firstphase_width: Option<i64>,
    #[serde(deserialize_with = "lax::int")]
    #[schema(default = 0)]
    pub firstphase_height: Option<i64>,
    /// Used when `hr_resize_x` and `hr_resize_y` are both 0.
    #[serde(deserialize_with = "lax::float")]
    #[schema(default = 2.0)]
    pub hr_scale: Option<f64>,
    /// A latent mode ("Latent", "Latent (bicubic)", ...) or an upscaler name; null = "Latent".
    #[serde(deserialize_with = "lax::string")]
    pub hr_upscaler: Option<String>,
    /// 0 = `steps`.
    #[serde(deserialize_with = "lax::int")]
    #[schema(default = 0)]
    pub hr_second_pass_steps: Option<i64>,
    #[serde(deserialize_with = "lax::int")]
    #[schema(default = 0)]
    pub hr_resize_x: Option<i64>,
    #[serde(deserialize_with = "lax::int")]
    #[schema(default = 0)]
    pub hr_resize_y: Option<i64>,
    #[serde(deserialize_with = "lax::string")]
    pub hr_checkpoint_name: Option<String>,
    #[serde(deserialize_with = "lax::string")]
    pub hr_sampler_name: Option<String>,
    #[serde(deserialize_with = "lax::string")]
    pub hr_scheduler: Option<String>,
    #[serde(deserialize_with = "lax::string")]
    #[schema(default = "")]
    pub hr_prompt: Option<String>,
    #[serde(deserialize_with = "lax::string")]
    #[schema(default = "")]
    pub hr_negative_prompt: Option<String>,
    /// Forge: VAE/text-encoder modules for the hires pass (clients send `[]`).
    #[serde(deserialize_with = "lax::any_list")]
    #[schema(value_type = Option<Vec<Object>>)]
    pub hr_additional_modules: Option<Vec<Value>>,
    /// Forge: CFG scale of the hires pass.
    #[serde(deserialize_with = "lax::float")]
    #[schema(default = 1.0)]
    pub hr_cfg: Option<f64>,
    #[serde(deserialize_with = "lax::float")]
    #[schema(default = 3.5)]
    pub hr_distilled_cfg: Option<f64>,
}

impl Default for Txt2ImgRequest {
    fn default() -> Self {
        Txt2ImgRequest {
            common: ProcessingFields::default(),
            enable_hr: Some(false),
            firstphase_width: Some(0),
            firstphase_height: Some(0),
            hr_scale: Some(defaults::HR_SCALE),
            hr_upscaler: None,
            hr_second_pass_steps: Some(0),
            hr_resize_x: Some(0),
            hr_resize_y: Some(0),
            hr_checkpoint_name: None,
            hr_sampler_name: None,
            hr_scheduler: None,
            hr_prompt: Some(String::new()),
            hr_negative_prompt: Some(String::new()),
            hr_additional_modules: None,
            hr_cfg: Some(1.0),
            hr_distilled_cfg: Some(3.5),
        }
    }
}

/// `POST /sdapi/v1/img2img`.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(default)]
pub struct Img2ImgRequest {
    #[serde(flatten)]
    pub common: ProcessingFields,
    /// Base64 images (raw or `data:` URLs); required. One image is used for the whole batch;
    /// N images (N ≤ batch_size) set batch_size = N.
    #[serde(deserialize_with = "lax::string_list")]
    pub init_images: Option<Vec<String>>,
    /// 0 just resize, 1 crop and resize, 2 resize and fill, 3 just resize (latent upscale).
    #[serde(deserialize_with = "lax::int")]
    #[schema(default = 0)]
    pub resize_mode: Option<i64>,
    #[serde(deserialize_with = "lax::float")]
    pub image_cfg_scale: Option<f64>,
    /// Base64 mask: white = repaint.
    #[serde(deserialize_with = "lax::string")]
    pub mask: Option<String>,
    /// Sets both `mask_blur_x` and `mask_blur_y`.
    #[serde(deserialize_with = "lax::int")]
    pub mask_blur: Option<i64>,
    #[serde(deserialize_with = "lax::int")]
    #[schema(default = 4)]
    pub mask_blur_x: Option<i64>,
    #[serde(deserialize_with = "lax::int")]
    #[schema(default = 4)]
    pub mask_blur_y: Option<i64>,
    #[serde(deserialize_with = "lax::boolean")]
    #[schema(default = true)]
    pub mask_round: Option<bool>,
    /// 0 fill, 1 original, 2 latent noise, 3 latent nothing.
    #[serde(deserialize_with = "lax::int")]
    #[schema(default = 0)]
    pub inpainting_fill: Option<i64>,
    /// "Only masked" (the API default differs from the UI's).
    #[serde(deserialize_with = "lax::boolean")]
    #[schema(default = true)]
    pub inpaint_full_res: Option<bool>,
    #[serde(deserialize_with = "lax::int")]
    #[schema(default = 0)]
    pub inpaint_full_res_padding: Option<i64>,
    /// 1 = repaint the black area instead.
    #[serde(deserialize_with = "lax::int")]
    #[schema(default = 0)]
    pub inpainting_mask_invert: Option<i64>,
    #[serde(deserialize_with = "lax::float")]
    pub initial_noise_multiplier: Option<f64>,
    #[serde(deserialize_with = "lax::string")]
    pub latent_mask: Option<String>,
    /// false = `parameters.init_images` and `parameters.mask` are nulled in the response.
    #[serde(deserialize_with = "lax::boolean")]
    #[schema(default = false)]
    pub include_init_images: Option<bool>,
}

impl Default for Img2ImgRequest {
    fn default() -> Self {
        Img2ImgRequest {
            common: ProcessingFields::default(),
            init_images: None,
            resize_mode: Some(0),
            image_cfg_scale: None,
            mask: None,
            mask_blur: None,
            mask_blur_x: Some(defaults::MASK_BLUR),
            mask_blur_y: Some(defaults::MASK_BLUR),
            mask_round: Some(true),
            inpainting_fill: Some(0),
            inpaint_full_res: Some(true),
            inpaint_full_res_padding: Some(0),
            inpainting_mask_invert: Some(0),
            initial_noise_multiplier: None,
            latent_mask: None,
            include_init_images: Some(false),
        }
    }
}

/// Parse a request body, answering A1111's/FastAPI's 422 for anything that is not the model.
pub fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, A1111Error> {
    let value: Value = crate::http::json_body::parse_value(body).map_err(|e| A1111Error::from_json_body(&e))?;
    if !value.is_object() {
        return Err(A1111Error::validation(Vec::new(), "type_error.dict", "value is not a valid dict"));
    }
    match serde_path_to_error::deserialize::<_, T>(value.clone()) {
        Ok(parsed) => Ok(parsed),
        Err(e) if e.path().iter().next().is_some() => Err(A1111Error::from_serde(e.path(), e.inner())),
        Err(e) => {
            // Fields of the flattened `ProcessingFields` lose their path inside serde's flatten
            // buffer; parsing them alone recovers it.
            match serde_path_to_error::deserialize::<_, ProcessingFields>(value) {
                Err(inner) => Err(A1111Error::from_serde(inner.path(), inner.inner())),
                Ok(_) => Err(A1111Error::from_serde(e.path(), e.inner())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn issue(body: &str) -> Value {
        let err = parse_body::<Txt2ImgRequest>(body.as_bytes()).expect_err("refused");
        assert_eq!(err.status(), 422);
        match err {
            A1111Error::Validation(detail) => serde_json::to_value(&detail[0]).expect("json"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn defaults_are_a1111_api_defaults() {
        let req: Txt2ImgRequest = parse_body(b"{}").expect("parses");
        assert_eq!((req.common.steps(), req.common.cfg_scale(), req.common.width(), req.common.height()), (50, 7.0, 512, 512));
        assert_eq!((req.common.seed(), req.common.sampler_request()), (-1, "Euler"));
        let echoed = serde_json::to_value(&req).expect("json");
        assert_eq!(echoed["sampler_index"], "Euler");
        assert_eq!(echoed["sampler_name"], Value::Null);
        assert_eq!(echoed["hr_scale"], 2.0);
        assert_eq!(echoed["alwayson_scripts"], json!({}));
        let img: Img2ImgRequest = parse_body(b"{}").expect("parses");
        let echoed = serde_json::to_value(&img).expect("json");
        assert_eq!((echoed["inpaint_full_res"].clone(), echoed["inpaint_full_res_padding"].clone()), (json!(true), json!(0)));
        assert_eq!(echoed["denoising_strength"], 0.75);
    }

    #[test]
    fn unknown_keys_are_ignored_and_null_keeps_the_default() {
        let req: Txt2ImgRequest =
            parse_body(br#"{"url":"http://x","auth":"u:p","clip_skip":2,"steps":null,"steps_x":1,"hr_additional_modules":[]}"#).expect("parses");
        assert_eq!(req.common.steps, None);
        assert_eq!(req.common.steps(), 50);
        assert_eq!(req.hr_additional_modules, Some(vec![]));
    }

    #[test]
    fn lax_coercion_like_pydantic_v1() {
        let req: Txt2ImgRequest = parse_body(br#"{"steps":"20","cfg_scale":7,"width":64.9,"prompt":5,"enable_hr":"yes"}"#).expect("parses");
        assert_eq!((req.common.steps(), req.common.cfg_scale(), req.common.width(), req.common.prompt()), (20, 7.0, 64, "5"));
        assert_eq!(req.enable_hr, Some(true));
    }

    #[test]
    fn type_errors_are_fastapi_422_naming_the_field() {
        assert_eq!(issue(r#"{"steps":"many"}"#), json!({"loc":["body","steps"],"msg":"value is not a valid integer","type":"type_error.integer"}));
        assert_eq!(issue(r#"{"enable_hr":"maybe"}"#)["loc"], json!(["body", "enable_hr"]));
        assert_eq!(issue(r#"{"prompt":["a"]}"#)["type"], "type_error.str");
        assert_eq!(issue(r#"{"styles":"a"}"#)["type"], "type_error.list");
        assert_eq!(issue(r#"{"override_settings":[1]}"#)["type"], "type_error.dict");
        assert_eq!(issue(r#"{"prompt":"x""#)["type"], "value_error.jsondecode");
        let err = parse_body::<Img2ImgRequest>(br#"{"init_images":["ok", 3, {}]}"#).expect_err("refused");
        let A1111Error::Validation(detail) = err else { panic!("validation") };
        assert_eq!(serde_json::to_value(&detail[0].loc).expect("json"), json!(["body", "init_images", 2]));
    }
}
