//! rbee's operation JSON (`operations-contract`, tag field `"operation"`) for the three image
//! operations, plus optional extension fields that reach every engine feature, and their
//! translation into the one [`GenerationRequest`].
//!
//! Parsing goes through `serde_json::Value` and `serde_path_to_error` instead of axum's `Json`
//! extractor so that every rejection is a 400 with our error body naming the field.

use serde::de::DeserializeOwned;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::backend::model_library::resolve::{find_checkpoint, is_path_like};
use crate::backend::model_library::{LibraryError, ModelLibrary};
use crate::backend::request::{LoraSpec,
    GenerationRequest, InitImage, MaskSpec, OutputFormat, PreviewPolicy, RngKind, SamplerKind, ScheduleKind,
};
use crate::backend::request_limits::{RequestField, RequestLimits};
use crate::http::error::ApiError;
use crate::http::json_body::parse_value;
use crate::http::image_input::{decode_mask_image, decode_rgb_image};

/// The operations this worker runs, as rbee tags them.
pub const SUPPORTED_OPERATIONS: &[&str] = &["image_generation", "image_transform", "image_inpaint"];

/// Default preview cadence: rbee's earlier SD worker sent one every 5 steps.
const DEFAULT_PREVIEW_EVERY: u32 = 5;

/// A job request: one of rbee's image operations, selected by `"operation"`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(tag = "operation", rename_all = "snake_case")]
pub enum ImageOperation {
    ImageGeneration(ImageGenerationRequest),
    ImageTransform(ImageTransformRequest),
    ImageInpaint(ImageInpaintRequest),
}

/// Text to image (`"operation": "image_generation"`).
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct ImageGenerationRequest {
    /// Sent by rbee's queen; not used by the worker.
    #[serde(default)]
    pub hive_id: Option<String>,
    /// The model to run: the served model's id, or a checkpoint of `--models-dir` by any
    /// A1111 name (title, file name, stem, hash); the engine loads it if needed. Absent = the
    /// worker's default model.
    #[serde(default)]
    pub model: Option<String>,
    #[schema(example = "a watercolor fox in a snowy forest")]
    pub prompt: String,
    #[serde(default)]
    pub negative_prompt: Option<String>,
    #[serde(default = "default_steps")]
    #[schema(default = 20, minimum = 1, maximum = 150)]
    pub steps: u32,
    #[serde(default = "default_guidance_scale")]
    #[schema(default = 7.5, minimum = 0.0, maximum = 30.0)]
    pub guidance_scale: f64,
    /// Random when absent; the seed used is reported in `started` and `complete`.
    #[serde(default)]
    pub seed: Option<u64>,
    #[serde(default = "default_side")]
    #[schema(default = 512, minimum = 64, maximum = 2048, multiple_of = 8.0)]
    pub width: u32,
    #[serde(default = "default_side")]
    #[schema(default = 512, minimum = 64, maximum = 2048, multiple_of = 8.0)]
    pub height: u32,
    /// Not supported yet: a non-empty list is refused.
    #[serde(default)]
    pub loras: Vec<LoraConfig>,
    #[serde(default)]
    pub worker_id: Option<String>,
    #[serde(flatten)]
    pub options: GenerationOptions,
}

/// Image to image (`"operation": "image_transform"`); the output has the input image's size
/// (rounded down to a multiple of 8).
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct ImageTransformRequest {
    #[serde(default)]
    pub hive_id: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
    pub prompt: String,
    #[serde(default)]
    pub negative_prompt: Option<String>,
    #[serde(default = "default_steps")]
    #[schema(default = 20, minimum = 1, maximum = 150)]
    pub steps: u32,
    #[serde(default = "default_guidance_scale")]
    #[schema(default = 7.5, minimum = 0.0, maximum = 30.0)]
    pub guidance_scale: f64,
    #[serde(default)]
    pub seed: Option<u64>,
    /// How much to change the input: 0 keeps it, 1 ignores it.
    #[serde(default = "default_strength")]
    #[schema(default = 0.8, minimum = 0.0, maximum = 1.0)]
    pub strength: f64,
    /// Base64 PNG, JPEG or WebP (a `data:` URL prefix is accepted).
    pub input_image: String,
    #[serde(default)]
    pub loras: Vec<LoraConfig>,
    #[serde(default)]
    pub worker_id: Option<String>,
    #[serde(flatten)]
    pub options: GenerationOptions,
}

/// Inpainting (`"operation": "image_inpaint"`): repaint the white area of `mask_image`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct ImageInpaintRequest {
    #[serde(default)]
    pub hive_id: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
    pub prompt: String,
    #[serde(default)]
    pub negative_prompt: Option<String>,
    #[serde(default = "default_steps")]
    #[schema(default = 20, minimum = 1, maximum = 150)]
    pub steps: u32,
    #[serde(default = "default_guidance_scale")]
    #[schema(default = 7.5, minimum = 0.0, maximum = 30.0)]
    pub guidance_scale: f64,
    #[serde(default)]
    pub seed: Option<u64>,
    /// Base64 image to edit; the output has its size (rounded down to a multiple of 8).
    pub init_image: String,
    /// Base64 mask, white = repaint, black = keep; resized to the init image when it differs.
    pub mask_image: String,
    #[serde(default)]
    pub loras: Vec<LoraConfig>,
    #[serde(default)]
    pub worker_id: Option<String>,
    #[serde(flatten)]
    pub options: GenerationOptions,
}

/// A LoRA to apply (rbee's `LoRAConfig`).
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct LoraConfig {
    /// Path to a `.safetensors` LoRA file.
    pub path: String,
    #[serde(default = "default_lora_strength")]
    pub strength: f32,
}

/// Extension fields (not in rbee's contract) that reach the engine's other features.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct GenerationOptions {
    /// A1111 sampler name or alias: `Euler`, `Euler a`, `DPM++ 2M`, `DDIM`, ...
    #[serde(default)]
    #[schema(default = "Euler", example = "DPM++ 2M")]
    pub sampler: Option<String>,
    /// A1111 schedule type: `Automatic`, `Karras`, `Exponential`, `SGM Uniform`.
    #[serde(default)]
    #[schema(default = "Automatic", example = "Karras")]
    pub scheduler: Option<String>,
    /// Images to make; image i uses seed + i.
    #[serde(default = "default_num_images")]
    #[schema(default = 1, minimum = 1, maximum = 8)]
    pub num_images: u32,
    #[serde(default)]
    pub output_format: OutputFormatName,
    /// JPEG/WebP quality 1-100 (JPEG default 90; WebP is lossless by default).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 100)]
    pub output_quality: Option<u8>,
    #[serde(default)]
    pub rng: RngName,
    /// 1 = last CLIP layer, 2 = penultimate (A1111 "Clip skip").
    #[serde(default = "default_clip_skip")]
    #[schema(default = 1, minimum = 1, maximum = 12)]
    pub clip_skip: u32,
    /// Send a preview every N steps; 0 = no previews.
    #[serde(default = "default_preview_every")]
    #[schema(default = 5)]
    pub preview_every: u32,
}

/// Output file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormatName {
    #[default]
    Png,
    #[serde(alias = "jpg")]
    Jpeg,
    Webp,
}

/// Noise generator: `cpu` = torch's CPU generator (same images as diffusers for a seed),
/// `philox` = A1111's default GPU generator (same images as A1111 for a seed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RngName {
    #[default]
    Cpu,
    Philox,
}

fn default_steps() -> u32 {
    20
}
fn default_guidance_scale() -> f64 {
    7.5
}
fn default_side() -> u32 {
    512
}
fn default_strength() -> f64 {
    0.8
}
fn default_lora_strength() -> f32 {
    1.0
}
fn default_num_images() -> u32 {
    1
}
fn default_clip_skip() -> u32 {
    1
}
fn default_preview_every() -> u32 {
    DEFAULT_PREVIEW_EVERY
}

/// Which models a request's `model` field may name.
#[derive(Clone)]
pub struct ServedModel<'a> {
    /// `--model` as given.
    pub configured: &'a str,
    /// The id of the model the engine used last, once loaded.
    pub loaded: Option<&'a str>,
    /// `--models-dir`: other checkpoints the engine can switch to.
    pub library: Option<&'a ModelLibrary>,
}

/// Parse a request body into a validated [`GenerationRequest`].
pub fn parse_job_request(body: &[u8], limits: &RequestLimits, served: &ServedModel<'_>) -> Result<GenerationRequest, ApiError> {
    let value = parse_value(body).map_err(|e| match e.field {
        Some(field) => ApiError::invalid_field(field.clone(), format!("{field}: {}", e.message)),
        None => ApiError::bad_request("INVALID_JSON", format!("the request body is not valid JSON: {e}")),
    })?;
    let operation = match value.get("operation") {
        Some(serde_json::Value::String(op)) => op.clone(),
        Some(_) => return Err(ApiError::invalid_field("operation", "operation must be a string")),
        None if value.is_object() => {
            return Err(ApiError::invalid_field(
                "operation",
                format!("operation is required: one of {}", SUPPORTED_OPERATIONS.join(", ")),
            ))
        }
        None => return Err(ApiError::bad_request("INVALID_JSON", "the request body must be a JSON object")),
    };
    let request = match operation.as_str() {
        "image_generation" => from_generation(parse_fields(value)?, limits, served)?,
        "image_transform" => from_transform(parse_fields(value)?, limits, served)?,
        "image_inpaint" => from_inpaint(parse_fields(value)?, limits, served)?,
        other => {
            return Err(ApiError {
                field: Some("operation".into()),
                ..ApiError::bad_request(
                    "UNSUPPORTED_OPERATION",
                    format!("operation '{other}' is not supported by this worker; use one of {}", SUPPORTED_OPERATIONS.join(", ")),
                )
            })
        }
    };
    check_limits(&request, limits, &operation)?;
    Ok(request)
}

/// Deserialize one operation's fields, reporting the failing field by name.
fn parse_fields<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, ApiError> {
    match serde_path_to_error::deserialize::<_, T>(value.clone()) {
        Ok(parsed) => Ok(parsed),
        Err(e) => {
            let path = e.path().to_string();
            if path != "." {
                return Err(ApiError::invalid_field(path.clone(), format!("{path}: {}", e.inner())));
            }
            // Fields of the flattened `GenerationOptions` lose their path inside serde's flatten
            // buffer; parsing them alone recovers it.
            if let Err(inner) = serde_path_to_error::deserialize::<_, GenerationOptions>(value) {
                let path = inner.path().to_string();
                return Err(ApiError::invalid_field(path.clone(), format!("{path}: {}", inner.inner())));
            }
            Err(missing_field_error(&e.inner().to_string()))
        }
    }
}

/// Turn serde's "missing field `prompt`" into "prompt is required".
fn missing_field_error(message: &str) -> ApiError {
    match message.strip_prefix("missing field `").and_then(|rest| rest.split('`').next()) {
        Some(field) => ApiError::invalid_field(field, format!("{field} is required")),
        None => ApiError::bad_request("INVALID_REQUEST", message.to_string()),
    }
}

/// What the engine is asked to load for a request's `model`: `None` for the default model,
/// else a name the engine resolves (a library checkpoint's title, the model in use, or an
/// external path the operator allows). Names nothing resolves are refused here, naming `model`,
/// so a typo fails the request instead of the job.
fn resolve_model(model: Option<&str>, served: &ServedModel<'_>) -> Result<Option<String>, ApiError> {
    let Some(wanted) = model.map(str::trim).filter(|m| !m.is_empty()) else {
        return Ok(None);
    };
    if wanted == served.configured {
        return Ok(None);
    }
    if Some(wanted) == served.loaded {
        return Ok(Some(wanted.to_string()));
    }
    let Some(library) = served.library else {
        return Err(ApiError::invalid_field(
            "model",
            format!("model '{wanted}' is not served here; this worker serves '{}' (start it with --models-dir to switch models)", served.configured),
        ));
    };
    if let Some(entry) = find_checkpoint(&library.checkpoints(), wanted) {
        return Ok(Some(entry.title.clone()));
    }
    if is_path_like(wanted) {
        if library.allows_external_paths() && std::path::Path::new(wanted).is_absolute() {
            return Ok(Some(wanted.to_string()));
        }
        return Err(ApiError::invalid_field("model", LibraryError::PathNotAllowed(wanted.to_string()).to_string()));
    }
    Err(ApiError::invalid_field(
        "model",
        format!("{}; GET /sdapi/v1/sd-models lists them", LibraryError::UnknownCheckpoint(wanted.to_string())),
    ))
}

/// rbee's `loras: [{path, strength}]` → the engine's LoRA list (the engine resolves the names in
/// the models folder and reports the ones it cannot apply as warnings).
fn lora_specs(loras: &[LoraConfig]) -> Result<Vec<LoraSpec>, ApiError> {
    loras
        .iter()
        .map(|l| {
            if l.path.trim().is_empty() {
                return Err(ApiError::invalid_field("loras", "each LoRA needs a non-empty path"));
            }
            if !l.strength.is_finite() {
                return Err(ApiError::invalid_field("loras", format!("LoRA '{}' has a strength that is not a finite number", l.path)));
            }
            Ok(LoraSpec::new(l.path.trim(), f64::from(l.strength)))
        })
        .collect()
}

/// The fields every operation shares, after the operation-specific ones are taken out.
struct Common {
    model: Option<String>,
    prompt: String,
    negative_prompt: Option<String>,
    steps: u32,
    guidance_scale: f64,
    seed: Option<u64>,
    loras: Vec<LoraConfig>,
    options: GenerationOptions,
}

fn base_request(common: Common, served: &ServedModel<'_>) -> Result<GenerationRequest, ApiError> {
    let model = resolve_model(common.model.as_deref(), served)?;
    let loras = lora_specs(&common.loras)?;
    let options = common.options;
    let mut request = GenerationRequest::new(common.prompt);
    request.model = model;
    request.loras = loras;
    request.negative_prompt = common.negative_prompt.unwrap_or_default();
    request.steps = common.steps;
    request.cfg_scale = common.guidance_scale;
    request.seed = common.seed;
    request.num_images = options.num_images;
    request.clip_skip = options.clip_skip;
    if let Some(name) = options.sampler.as_deref() {
        request.sampler = SamplerKind::from_name(name).ok_or_else(|| {
            let known: Vec<&str> = SamplerKind::ALL.iter().map(|(_, n, _)| *n).collect();
            ApiError::invalid_field("sampler", format!("sampler '{name}' is unknown; use one of: {}", known.join(", ")))
        })?;
    }
    if let Some(name) = options.scheduler.as_deref() {
        request.schedule = ScheduleKind::from_name(name).ok_or_else(|| {
            let known: Vec<&str> = ScheduleKind::ALL.iter().map(|(_, _, label)| *label).collect();
            ApiError::invalid_field("scheduler", format!("scheduler '{name}' is unknown; use one of: {}", known.join(", ")))
        })?;
    }
    if let Some(q) = options.output_quality.filter(|q| !(1..=100).contains(q)) {
        return Err(ApiError::invalid_field("output_quality", format!("output_quality must be between 1 and 100, got {q}")));
    }
    request.output_format = match options.output_format {
        OutputFormatName::Png => OutputFormat::Png,
        OutputFormatName::Jpeg => OutputFormat::Jpeg { quality: options.output_quality.unwrap_or(90) },
        OutputFormatName::Webp => OutputFormat::Webp { quality: options.output_quality.unwrap_or(100) },
    };
    request.rng = match options.rng {
        RngName::Cpu => RngKind::TorchCpu,
        RngName::Philox => RngKind::Philox,
    };
    request.preview = match options.preview_every {
        0 => PreviewPolicy::None,
        n => PreviewPolicy::EveryNSteps(n),
    };
    Ok(request)
}

fn from_generation(op: ImageGenerationRequest, _limits: &RequestLimits, served: &ServedModel<'_>) -> Result<GenerationRequest, ApiError> {
    let common = Common {
        model: op.model,
        prompt: op.prompt,
        negative_prompt: op.negative_prompt,
        steps: op.steps,
        guidance_scale: op.guidance_scale,
        seed: op.seed,
        loras: op.loras,
        options: op.options,
    };
    let mut request = base_request(common, served)?;
    request.width = op.width;
    request.height = op.height;
    Ok(request)
}

fn from_transform(op: ImageTransformRequest, limits: &RequestLimits, served: &ServedModel<'_>) -> Result<GenerationRequest, ApiError> {
    let common = Common {
        model: op.model,
        prompt: op.prompt,
        negative_prompt: op.negative_prompt,
        steps: op.steps,
        guidance_scale: op.guidance_scale,
        seed: op.seed,
        loras: op.loras,
        options: op.options,
    };
    let mut request = base_request(common, served)?;
    let image = decode_rgb_image("input_image", &op.input_image, limits.max_input_pixels)?;
    // The output keeps the input's size, snapped onto the model's grid; the pipeline resizes the
    // image to it.
    request.width = limits.snap_side(image.width);
    request.height = limits.snap_side(image.height);
    request.init_image = Some(InitImage { image, strength: op.strength });
    Ok(request)
}

fn from_inpaint(op: ImageInpaintRequest, limits: &RequestLimits, served: &ServedModel<'_>) -> Result<GenerationRequest, ApiError> {
    let common = Common {
        model: op.model,
        prompt: op.prompt,
        negative_prompt: op.negative_prompt,
        steps: op.steps,
        guidance_scale: op.guidance_scale,
        seed: op.seed,
        loras: op.loras,
        options: op.options,
    };
    let mut request = base_request(common, served)?;
    let image = decode_rgb_image("init_image", &op.init_image, limits.max_input_pixels)?;
    let mask = decode_mask_image("mask_image", &op.mask_image, limits.max_input_pixels)?;
    if (mask.width, mask.height) != (image.width, image.height) {
        return Err(ApiError::invalid_field(
            "mask_image",
            format!("mask_image is {}x{} but init_image is {}x{}; they must have the same size", mask.width, mask.height, image.width, image.height),
        ));
    }
    // As for transforms, the pipeline resizes the image and the mask to the snapped size.
    request.width = limits.snap_side(image.width);
    request.height = limits.snap_side(image.height);
    // Inpainting repaints the masked area from scratch, as diffusers' inpaint pipeline does by
    // default (strength 1.0).
    request.init_image = Some(InitImage { image, strength: 1.0 });
    request.mask = Some(MaskSpec::new(mask));
    Ok(request)
}

/// Apply the shared limits, naming fields as this face names them.
fn check_limits(request: &GenerationRequest, limits: &RequestLimits, operation: &str) -> Result<(), ApiError> {
    limits.check(request).map_err(|v| {
        let field = match (v.field, operation) {
            (RequestField::Width | RequestField::Height | RequestField::Pixels, "image_transform") => "input_image",
            (RequestField::Width | RequestField::Height | RequestField::Pixels, "image_inpaint") => "init_image",
            (RequestField::Width, _) => "width",
            (RequestField::Height, _) => "height",
            // Both sides make the area; the later one in the request is named.
            (RequestField::Pixels, _) => "height",
            (RequestField::Prompt, _) => "prompt",
            (RequestField::NegativePrompt, _) => "negative_prompt",
            (RequestField::Steps, _) => "steps",
            (RequestField::CfgScale, _) => "guidance_scale",
            (RequestField::NumImages, _) => "num_images",
            (RequestField::Strength, _) => "strength",
            (RequestField::ClipSkip, _) => "clip_skip",
        };
        ApiError::invalid_field(field, format!("{field} {}", v.problem))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVED: ServedModel<'static> = ServedModel { configured: "tiny", loaded: Some("tiny"), library: None };

    fn parse(json: &str) -> Result<GenerationRequest, ApiError> {
        parse_job_request(json.as_bytes(), &RequestLimits::default(), &SERVED)
    }

    #[test]
    fn rbee_generation_defaults_apply() {
        let req = parse(r#"{"operation":"image_generation","hive_id":"h","model":"tiny","prompt":"a cat"}"#).expect("valid");
        assert_eq!((req.width, req.height, req.steps, req.cfg_scale), (512, 512, 20, 7.5));
        assert_eq!(req.sampler, SamplerKind::Euler);
        assert_eq!(req.preview, PreviewPolicy::EveryNSteps(5));
        assert!(req.init_image.is_none());
    }

    #[test]
    fn extension_fields_translate() {
        let req = parse(
            r#"{"operation":"image_generation","prompt":"x","sampler":"DPM++ 2M","scheduler":"karras","num_images":2,
                "output_format":"jpeg","output_quality":70,"rng":"philox","clip_skip":2,"preview_every":0,"seed":9}"#,
        )
        .expect("valid");
        assert_eq!(req.sampler, SamplerKind::DpmPp2m);
        assert_eq!(req.schedule, ScheduleKind::Karras);
        assert_eq!((req.num_images, req.clip_skip, req.seed), (2, 2, Some(9)));
        assert_eq!(req.output_format, OutputFormat::Jpeg { quality: 70 });
        assert_eq!(req.rng, RngKind::Philox);
        assert_eq!(req.preview, PreviewPolicy::None);
    }

    #[test]
    fn errors_name_the_field() {
        let field = |json: &str| parse(json).expect_err("invalid").field;
        assert_eq!(field(r#"{"operation":"image_generation"}"#).as_deref(), Some("prompt"));
        assert_eq!(field(r#"{"operation":"image_generation","prompt":"x","steps":"many"}"#).as_deref(), Some("steps"));
        assert_eq!(field(r#"{"operation":"image_generation","prompt":"x","num_images":-1}"#).as_deref(), Some("num_images"));
        assert_eq!(field(r#"{"operation":"image_generation","prompt":"x","rng":"gpu"}"#).as_deref(), Some("rng"));
        assert_eq!(field(r#"{"operation":"image_generation","prompt":"x","width":4096}"#).as_deref(), Some("width"));
        assert_eq!(field(r#"{"operation":"image_generation","prompt":"x","guidance_scale":99}"#).as_deref(), Some("guidance_scale"));
        assert_eq!(field(r#"{"operation":"image_generation","prompt":"x","sampler":"Nope"}"#).as_deref(), Some("sampler"));
        assert_eq!(field(r#"{"operation":"image_generation","prompt":"x","model":"other"}"#).as_deref(), Some("model"));
        assert_eq!(field(r#"{"operation":"image_generation","prompt":"x","loras":[{"path":" "}]}"#).as_deref(), Some("loras"));
        assert_eq!(field(r#"{"operation":"image_transform","prompt":"x","input_image":"%%%"}"#).as_deref(), Some("input_image"));
        assert_eq!(field(r#"{"prompt":"x"}"#).as_deref(), Some("operation"));
    }

    #[test]
    fn model_names_resolve_through_the_models_folder() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let checkpoint = tmp.path().join("Stable-diffusion/other.safetensors");
        std::fs::create_dir_all(checkpoint.parent().expect("parent")).expect("mkdir");
        let tensor = candle_core::Tensor::zeros(2, candle_core::DType::F32, &candle_core::Device::Cpu).expect("tensor");
        candle_core::safetensors::save(&[("a".to_string(), tensor)].into(), &checkpoint).expect("write");
        let library = ModelLibrary::open(tmp.path(), Default::default()).expect("library");
        let title = library.checkpoints()[0].title.clone();
        let served = ServedModel { configured: "tiny", loaded: Some("now-used [abc]"), library: Some(&library) };
        let model = |name: Option<&str>| resolve_model(name, &served);
        assert_eq!(model(None).expect("default"), None);
        assert_eq!(model(Some(" ")).expect("default"), None);
        assert_eq!(model(Some("tiny")).expect("configured"), None);
        assert_eq!(model(Some("now-used [abc]")).expect("in use"), Some("now-used [abc]".to_string()));
        for alias in ["other", "other.safetensors", title.as_str(), &title[title.len() - 11..title.len() - 1]] {
            assert_eq!(model(Some(alias)).expect(alias), Some(title.clone()), "{alias}");
        }
        for refused in ["missing", "../other.safetensors", "/etc/passwd"] {
            let err = model(Some(refused)).expect_err(refused);
            assert_eq!((err.field.as_deref(), err.status.as_u16()), (Some("model"), 400), "{refused}");
            assert!(err.message.contains(refused), "{}", err.message);
        }
        let without_library = ServedModel { library: None, ..served };
        assert_eq!(resolve_model(Some("other"), &without_library).expect_err("no library").field.as_deref(), Some("model"));
    }

    #[test]
    fn unknown_operation_and_bad_json_have_their_own_codes() {
        assert_eq!(parse(r#"{"operation":"infer","prompt":"x"}"#).expect_err("unsupported").code, "UNSUPPORTED_OPERATION");
        assert_eq!(parse("{not json").expect_err("bad json").code, "INVALID_JSON");
        assert_eq!(parse("[1,2]").expect_err("not an object").code, "INVALID_JSON");
    }
}
