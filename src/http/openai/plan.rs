//! The one translation from an OpenAI image request (any of the three endpoints) to a
//! [`GenerationRequest`], plus the settings the reply needs (shape, exact size, format).

use crate::backend::generation_engine::ModelInfo;
use crate::backend::request::{
    GenerationRequest, InitImage, MaskImage, MaskSpec, OutputFormat, PreviewPolicy, RgbImage, SamplerKind, ScheduleKind,
};
use crate::backend::request_limits::{RequestField, RequestLimits};
use crate::http::openai::errors::OpenAiError;
use crate::http::openai::models::{resolve_family, Endpoint, Family};
use crate::http::openai::sizes::{fit_limits, fit_output, generation_size, parse_size, RequestedSize};
use crate::http::openai::wire::{Background, ImageFormat, InputFidelity, Quality, RequestedFormat, ResponseFormat, SdExtras};

/// OpenAI's bounds on `n` and `partial_images`.
const MAX_N: u32 = 10;
const MAX_PARTIAL_IMAGES: u32 = 3;

/// img2img strength without a mask: OpenAI's default `input_fidelity: low`, and `high`.
const EDIT_STRENGTH: f64 = 0.75;
const EDIT_STRENGTH_HIGH_FIDELITY: f64 = 0.5;
/// With a mask the masked area is repainted from scratch, as diffusers' inpainting does.
const INPAINT_STRENGTH: f64 = 1.0;
/// Variations keep the composition and change the details.
const VARIATION_STRENGTH: f64 = 0.65;

/// The image an edit or variation starts from.
#[derive(Debug, Clone)]
pub struct SourceImage {
    pub image: RgbImage,
    /// White = repaint, already converted from OpenAI's transparent = edit.
    pub mask: Option<MaskImage>,
    /// The image's own transparency as a mask, when it has any: dall-e-2 edits without a mask
    /// edit the transparent area.
    pub image_alpha: Option<MaskImage>,
}

/// An OpenAI image request, endpoint-neutral, before validation.
#[derive(Debug, Clone)]
pub struct ImageParams {
    pub endpoint: Endpoint,
    pub prompt: String,
    pub model: Option<String>,
    pub n: Option<u32>,
    pub size: Option<String>,
    pub quality: Option<Quality>,
    pub response_format: Option<ResponseFormat>,
    pub output_format: Option<RequestedFormat>,
    pub output_compression: Option<u32>,
    pub background: Option<Background>,
    pub stream: Option<bool>,
    pub partial_images: Option<u32>,
    pub input_fidelity: Option<InputFidelity>,
    /// A field only GPT image models take was sent (decides the default model of generations).
    pub gpt_only_field_used: bool,
    pub source: Option<SourceImage>,
    pub extras: SdExtras,
}

impl ImageParams {
    pub fn new(endpoint: Endpoint, prompt: String) -> Self {
        ImageParams {
            endpoint,
            prompt,
            model: None,
            n: None,
            size: None,
            quality: None,
            response_format: None,
            output_format: None,
            output_compression: None,
            background: None,
            stream: None,
            partial_images: None,
            input_fidelity: None,
            gpt_only_field_used: false,
            source: None,
            extras: SdExtras::default(),
        }
    }
}

/// The returned files: format and the JPEG/WebP quality (`output_compression`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputEncoding {
    pub format: ImageFormat,
    /// 1..=100; ignored for PNG.
    pub quality: u8,
}

impl OutputEncoding {
    pub fn engine_format(self) -> OutputFormat {
        match self.format {
            ImageFormat::Png => OutputFormat::Png,
            ImageFormat::Jpeg => OutputFormat::Jpeg { quality: self.quality },
            ImageFormat::Webp => OutputFormat::Webp { quality: self.quality },
        }
    }
}

/// What the reply needs to know about the request.
#[derive(Debug, Clone)]
pub struct ReplySettings {
    pub endpoint: Endpoint,
    pub family: Family,
    pub response_format: ResponseFormat,
    pub encoding: OutputEncoding,
    /// The exact size every returned image has.
    pub width: u32,
    pub height: u32,
    /// `low`, `medium`, `high`, `xhigh` or `max`: the resolved quality.
    pub quality: &'static str,
    pub stream: bool,
    pub partial_images: u32,
    pub prompt: String,
}

impl ReplySettings {
    pub fn size_label(&self) -> String {
        format!("{}x{}", self.width, self.height)
    }
}

/// A validated job: what the engine runs and how to answer.
#[derive(Debug, Clone)]
pub struct ImageJob {
    pub request: GenerationRequest,
    pub reply: ReplySettings,
}

/// Validate and translate. `local_ids` are the names the local model answers to.
pub fn plan(params: ImageParams, model: &ModelInfo, limits: &RequestLimits, local_ids: &[String]) -> Result<ImageJob, OpenAiError> {
    let family = resolve_family(params.model.as_deref(), params.endpoint, params.gpt_only_field_used, local_ids)?;
    if params.background == Some(Background::Transparent) {
        return Err(OpenAiError::invalid_param(
            "background",
            "invalid_value",
            "background 'transparent' is not supported: Stable Diffusion paints opaque images; use 'opaque' or 'auto'",
        ));
    }
    let n = params.n.unwrap_or(1);
    if !(1..=MAX_N).contains(&n) {
        return Err(OpenAiError::invalid_param("n", "invalid_value", format!("n must be between 1 and {MAX_N}, got {n}")));
    }
    let partial_images = params.partial_images.unwrap_or(0);
    if partial_images > MAX_PARTIAL_IMAGES {
        return Err(OpenAiError::invalid_param(
            "partial_images",
            "invalid_value",
            format!("partial_images must be between 0 and {MAX_PARTIAL_IMAGES}, got {partial_images}"),
        ));
    }
    let encoding = output_encoding(params.output_format, params.output_compression)?;
    let (width, height) = match (parse_size(params.size.as_deref())?, &params.source) {
        (RequestedSize::Exact { width, height }, _) => check_output_size(width, height, limits)?,
        (RequestedSize::Auto, Some(source)) => {
            let (width, height) = fit_output(source.image.width, source.image.height);
            fit_limits(width, height, limits)
        }
        (RequestedSize::Auto, None) => fit_limits(model.native_size, model.native_size, limits),
    };
    let (gen_width, gen_height) = generation_size(width, height, model, limits);
    let (steps_factor, quality) = quality_steps(params.quality);

    let mut request = GenerationRequest::new(params.prompt.clone());
    request.cfg_scale = model.default_cfg_scale;
    request.width = gen_width;
    request.height = gen_height;
    request.num_images = n;
    request.steps = params.extras.steps.unwrap_or_else(|| steps_factor.apply(model.default_steps));
    apply_extras(&mut request, &params.extras)?;
    // The engine writes the final file directly when no resize is needed; otherwise it returns
    // PNG (lossless) and the reply resizes and encodes once.
    request.output_format = if (gen_width, gen_height) == (width, height) { encoding.engine_format() } else { OutputFormat::Png };
    let stream = params.stream.unwrap_or(false);
    if stream && partial_images > 0 {
        // Previews of every step; the stream forwards the ones closest to an even spread.
        request.preview = PreviewPolicy::EveryNSteps(1);
    }
    if let Some(source) = params.source {
        let mask = match (source.mask, family) {
            (Some(mask), _) => Some(mask),
            (None, Family::DallE2) if params.endpoint == Endpoint::Edits => source.image_alpha,
            (None, _) => None,
        };
        let strength = match (params.endpoint, &mask, params.input_fidelity) {
            (Endpoint::Variations, _, _) => VARIATION_STRENGTH,
            (_, Some(_), _) => INPAINT_STRENGTH,
            (_, None, Some(InputFidelity::High)) => EDIT_STRENGTH_HIGH_FIDELITY,
            (_, None, _) => EDIT_STRENGTH,
        };
        let strength = params.extras.strength.or(params.extras.denoising_strength).unwrap_or(strength);
        // The pipeline resizes the image and mask to the generation size (stretching, like the
        // final resize back to the requested size).
        request.init_image = Some(InitImage { image: source.image, strength });
        // The area outside the mask comes back as uploaded (no VAE round-trip drift).
        request.mask = mask.map(|mask| MaskSpec { overlay_original: true, ..MaskSpec::new(mask) });
    }
    check_limits(&request, limits)?;

    let response_format =
        params.response_format.unwrap_or(if family.defaults_to_url() { ResponseFormat::Url } else { ResponseFormat::B64Json });
    let reply = ReplySettings {
        endpoint: params.endpoint,
        family,
        response_format,
        encoding,
        width,
        height,
        quality,
        stream,
        partial_images,
        prompt: params.prompt,
    };
    Ok(ImageJob { request, reply })
}

fn output_encoding(format: Option<RequestedFormat>, compression: Option<u32>) -> Result<OutputEncoding, OpenAiError> {
    let format = match format {
        None | Some(RequestedFormat::Png) => ImageFormat::Png,
        Some(RequestedFormat::Jpeg) => ImageFormat::Jpeg,
        Some(RequestedFormat::Webp) => ImageFormat::Webp,
        Some(other @ (RequestedFormat::Gif | RequestedFormat::Svg)) => {
            let name = if other == RequestedFormat::Gif { "gif" } else { "svg" };
            return Err(OpenAiError::invalid_param(
                "output_format",
                "invalid_value",
                format!("output_format '{name}' is not supported: Stable Diffusion makes single raster images; use png, jpeg or webp"),
            ));
        }
    };
    let compression = compression.unwrap_or(100);
    if compression > 100 {
        return Err(OpenAiError::invalid_param(
            "output_compression",
            "invalid_value",
            format!("output_compression must be between 0 and 100, got {compression}"),
        ));
    }
    // The encoders take a quality of 1..=100; OpenAI's 0 is the smallest file.
    Ok(OutputEncoding { format, quality: compression.max(1) as u8 })
}

/// Steps relative to the model's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StepsFactor {
    Half,
    Default,
    OneAndAHalf,
    Double,
    Triple,
}

impl StepsFactor {
    fn apply(self, default_steps: u32) -> u32 {
        match self {
            StepsFactor::Half => default_steps.div_ceil(2),
            StepsFactor::Default => default_steps,
            StepsFactor::OneAndAHalf => (default_steps * 3).div_ceil(2),
            StepsFactor::Double => default_steps * 2,
            StepsFactor::Triple => default_steps * 3,
        }
        .max(1)
    }
}

fn quality_steps(quality: Option<Quality>) -> (StepsFactor, &'static str) {
    match quality {
        Some(Quality::Low) => (StepsFactor::Half, "low"),
        Some(Quality::High | Quality::Hd) => (StepsFactor::OneAndAHalf, "high"),
        Some(Quality::Xhigh) => (StepsFactor::Double, "xhigh"),
        Some(Quality::Max) => (StepsFactor::Triple, "max"),
        Some(Quality::Medium | Quality::Standard | Quality::Auto) | None => (StepsFactor::Default, "medium"),
    }
}

fn apply_extras(request: &mut GenerationRequest, extras: &SdExtras) -> Result<(), OpenAiError> {
    if let Some(negative) = &extras.negative_prompt {
        request.negative_prompt = negative.clone();
    }
    // Negative seeds (-1 by convention) ask for a random one.
    request.seed = extras.seed.and_then(|s| u64::try_from(s).ok());
    if let Some(cfg) = extras.cfg_scale.or(extras.guidance_scale) {
        request.cfg_scale = cfg;
    }
    if let Some(clip_skip) = extras.clip_skip {
        request.clip_skip = clip_skip;
    }
    let sampler_field = if extras.sampler.is_some() { "sampler" } else { "sampler_name" };
    if let Some(name) = extras.sampler.as_deref().or(extras.sampler_name.as_deref()) {
        request.sampler = SamplerKind::from_name(name).ok_or_else(|| {
            let known: Vec<&str> = SamplerKind::ALL.iter().map(|(_, n, _)| *n).collect();
            OpenAiError::invalid_param(
                sampler_field,
                "invalid_value",
                format!("sampler '{name}' is unknown; use one of: {}", known.join(", ")),
            )
        })?;
    }
    if let Some(name) = extras.scheduler.as_deref() {
        request.schedule = ScheduleKind::from_name(name).ok_or_else(|| {
            let known: Vec<&str> = ScheduleKind::ALL.iter().map(|(_, _, label)| *label).collect();
            OpenAiError::invalid_param(
                "scheduler",
                "invalid_value",
                format!("scheduler '{name}' is unknown; use one of: {}", known.join(", ")),
            )
        })?;
    }
    Ok(())
}

/// The image the client gets is bounded by the worker's limits too (it is generated smaller and
/// resized, but resizing and encoding it still cost memory and time).
fn check_output_size(width: u32, height: u32, limits: &RequestLimits) -> Result<(u32, u32), OpenAiError> {
    let pixels = u64::from(width) * u64::from(height);
    if width > limits.max_side || height > limits.max_side || pixels > limits.max_pixels {
        return Err(OpenAiError::invalid_param(
            "size",
            "invalid_size",
            format!(
                "size '{width}x{height}' is larger than this server allows: at most {} pixels a side and {} pixels in all",
                limits.max_side, limits.max_pixels
            ),
        ));
    }
    Ok((width, height))
}

/// The server-wide limits, reported with this face's field names.
fn check_limits(request: &GenerationRequest, limits: &RequestLimits) -> Result<(), OpenAiError> {
    limits.check(request).map_err(|v| {
        let param = match v.field {
            RequestField::Width | RequestField::Height | RequestField::Pixels => "size",
            RequestField::Prompt => "prompt",
            RequestField::NegativePrompt => "negative_prompt",
            RequestField::Steps => "steps",
            RequestField::CfgScale => "cfg_scale",
            RequestField::NumImages => "n",
            RequestField::Strength => "strength",
            RequestField::ClipSkip => "clip_skip",
        };
        let what = match v.field {
            RequestField::Width => "the generated width",
            RequestField::Height => "the generated height",
            RequestField::Pixels => "the generated size",
            _ => param,
        };
        OpenAiError::invalid_param(param, "invalid_value", format!("{what} {} on this server", v.problem))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> ModelInfo {
        crate::http::openai::sizes::test_model_info(64, 4, 4)
    }

    fn plan_it(params: ImageParams) -> Result<ImageJob, OpenAiError> {
        plan(params, &tiny(), &RequestLimits::default(), &["tiny".to_string()])
    }

    fn generation(prompt: &str) -> ImageParams {
        ImageParams::new(Endpoint::Generations, prompt.to_string())
    }

    #[test]
    fn bare_prompt_is_dall_e_2_at_native_size_with_model_defaults() {
        let job = plan_it(generation("a fox")).expect("valid");
        assert_eq!(job.reply.family, Family::DallE2);
        assert_eq!(job.reply.response_format, ResponseFormat::Url);
        assert_eq!((job.reply.width, job.reply.height), (64, 64));
        let r = &job.request;
        assert_eq!((r.width, r.height, r.steps, r.cfg_scale, r.num_images, r.seed), (64, 64, 4, 7.5, 1, None));
        assert_eq!(r.output_format, OutputFormat::Png);
        assert_eq!(r.preview, PreviewPolicy::None);
    }

    #[test]
    fn quality_scales_steps_and_explicit_steps_win() {
        let steps = |quality, steps| {
            let mut p = generation("x");
            p.quality = quality;
            p.extras.steps = steps;
            plan_it(p).expect("valid").request.steps
        };
        assert_eq!(steps(Some(Quality::Low), None), 2);
        assert_eq!(steps(Some(Quality::Standard), None), 4);
        assert_eq!(steps(Some(Quality::Hd), None), 6);
        assert_eq!(steps(Some(Quality::High), Some(9)), 9);
        assert_eq!(steps(Some(Quality::Xhigh), None), 8);
        assert_eq!(steps(Some(Quality::Max), None), 12);
    }

    #[test]
    fn off_grid_sizes_generate_near_native_and_return_png_for_resizing() {
        let mut p = generation("x");
        p.size = Some("256x128".into());
        p.output_format = Some(RequestedFormat::Jpeg);
        p.output_compression = Some(0);
        p.gpt_only_field_used = true;
        let job = plan_it(p).expect("valid");
        assert_eq!((job.reply.width, job.reply.height), (256, 128));
        // 2:1 at 1.5x the native area (6144 px), on the 8 px grid, the short side raised to 64.
        assert_eq!((job.request.width, job.request.height), (112, 64));
        assert_eq!(job.request.output_format, OutputFormat::Png);
        assert_eq!(job.reply.encoding, OutputEncoding { format: ImageFormat::Jpeg, quality: 1 });
        assert_eq!(job.reply.family, Family::GptImage);
        assert_eq!(job.reply.response_format, ResponseFormat::B64Json);
    }

    #[test]
    fn extras_reach_the_request() {
        let mut p = generation("x");
        p.extras = SdExtras {
            negative_prompt: Some("blurry".into()),
            seed: Some(7),
            guidance_scale: Some(3.0),
            sampler_name: Some("Euler a".into()),
            scheduler: Some("karras".into()),
            clip_skip: Some(2),
            ..SdExtras::default()
        };
        p.n = Some(3);
        let r = plan_it(p).expect("valid").request;
        assert_eq!((r.negative_prompt.as_str(), r.seed, r.cfg_scale, r.num_images, r.clip_skip), ("blurry", Some(7), 3.0, 3, 2));
        assert_eq!((r.sampler, r.schedule), (SamplerKind::EulerAncestral, ScheduleKind::Karras));
        let mut p = generation("x");
        p.extras.seed = Some(-1);
        assert_eq!(plan_it(p).expect("valid").request.seed, None);
    }

    #[test]
    fn invalid_fields_are_400s_naming_the_param() {
        let param = |edit: &dyn Fn(&mut ImageParams)| {
            let mut p = generation("x");
            edit(&mut p);
            plan_it(p).expect_err("invalid").param
        };
        assert_eq!(param(&|p| p.n = Some(11)).as_deref(), Some("n"));
        assert_eq!(param(&|p| p.n = Some(9)).as_deref(), Some("n"), "over the server's image limit");
        assert_eq!(param(&|p| p.background = Some(Background::Transparent)).as_deref(), Some("background"));
        assert_eq!(param(&|p| p.partial_images = Some(4)).as_deref(), Some("partial_images"));
        assert_eq!(param(&|p| p.output_compression = Some(101)).as_deref(), Some("output_compression"));
        assert_eq!(param(&|p| p.output_format = Some(RequestedFormat::Gif)).as_deref(), Some("output_format"));
        assert_eq!(param(&|p| p.size = Some("huge".into())).as_deref(), Some("size"));
        assert_eq!(param(&|p| p.extras.sampler = Some("Nope".into())).as_deref(), Some("sampler"));
        assert_eq!(param(&|p| p.extras.steps = Some(0)).as_deref(), Some("steps"));
        assert_eq!(param(&|p| p.model = Some("sdxl".into())).as_deref(), Some("model"));
    }

    #[test]
    fn streaming_partials_ask_for_previews() {
        let mut p = generation("x");
        p.stream = Some(true);
        p.partial_images = Some(2);
        assert_eq!(plan_it(p).expect("valid").request.preview, PreviewPolicy::EveryNSteps(1));
    }

    fn source(width: u32, height: u32, mask: bool) -> SourceImage {
        SourceImage {
            image: RgbImage { width, height, pixels: vec![0; (width * height * 3) as usize] },
            mask: mask.then(|| MaskImage { width, height, pixels: vec![255; (width * height) as usize] }),
            image_alpha: None,
        }
    }

    #[test]
    fn edits_default_to_the_input_size_and_pick_strength_by_mask_and_fidelity() {
        let edit = |mask, fidelity| {
            let mut p = ImageParams::new(Endpoint::Edits, "x".into());
            p.source = Some(source(96, 64, mask));
            p.input_fidelity = fidelity;
            plan_it(p).expect("valid")
        };
        let job = edit(false, None);
        assert_eq!((job.reply.width, job.reply.height, job.reply.family), (96, 64, Family::GptImage));
        assert_eq!((job.request.width, job.request.height), (96, 64), "96x64 sits on the grid near the native area");
        assert_eq!(job.request.init_image.map(|i| i.strength), Some(EDIT_STRENGTH));
        assert_eq!(edit(false, Some(InputFidelity::High)).request.init_image.map(|i| i.strength), Some(EDIT_STRENGTH_HIGH_FIDELITY));
        let masked = edit(true, None).request;
        assert_eq!(masked.init_image.map(|i| i.strength), Some(INPAINT_STRENGTH));
        assert!(masked.mask.is_some());
        let mut p = ImageParams::new(Endpoint::Variations, String::new());
        p.source = Some(source(64, 64, false));
        let job = plan_it(p).expect("valid");
        assert_eq!(job.request.init_image.map(|i| i.strength), Some(VARIATION_STRENGTH));
        assert_eq!(job.reply.response_format, ResponseFormat::Url);
    }
}
