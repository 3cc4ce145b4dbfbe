//! The one internal generation request every protocol face translates into, and the events the
//! engine sends back. Nothing here knows about HTTP, JSON wire shapes or tensors.

use std::fmt;

/// Samplers, named as A1111 names them (the names every face accepts and the infotext writes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SamplerKind {
    Euler,
    EulerAncestral,
    Ddim,
    DpmPp2m,
    DpmPp2mSde,
    Heun,
    Lms,
    UniPc,
    Lcm,
    Ddpm,
}

impl SamplerKind {
    /// Every sampler with its A1111 display name and A1111 aliases, in A1111's list order.
    pub const ALL: &'static [(SamplerKind, &'static str, &'static [&'static str])] = &[
        (SamplerKind::DpmPp2m, "DPM++ 2M", &["k_dpmpp_2m"]),
        (SamplerKind::DpmPp2mSde, "DPM++ 2M SDE", &["k_dpmpp_2m_sde"]),
        (SamplerKind::EulerAncestral, "Euler a", &["k_euler_a", "k_euler_ancestral"]),
        (SamplerKind::Euler, "Euler", &["k_euler"]),
        (SamplerKind::Lms, "LMS", &["k_lms"]),
        (SamplerKind::Heun, "Heun", &["k_heun"]),
        (SamplerKind::Ddim, "DDIM", &["ddim"]),
        (SamplerKind::UniPc, "UniPC", &["unipc"]),
        (SamplerKind::Lcm, "LCM", &["k_lcm"]),
        (SamplerKind::Ddpm, "DDPM", &["ddpm"]),
    ];

    /// The A1111 display name ("Euler a", "DPM++ 2M", ...).
    pub fn a1111_name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(k, _, _)| *k == self)
            .map(|(_, n, _)| *n)
            .unwrap_or("Euler")
    }

    /// Exact display name, or an alias, compared case-insensitively. `None` when unknown: each
    /// face decides its own fallback (A1111 falls back silently, the native face answers 400).
    pub fn from_name(name: &str) -> Option<SamplerKind> {
        let wanted = name.trim();
        Self::ALL.iter().find_map(|(k, n, aliases)| {
            (n.eq_ignore_ascii_case(wanted) || aliases.iter().any(|a| a.eq_ignore_ascii_case(wanted)))
                .then_some(*k)
        })
    }

    /// Ancestral and SDE samplers draw fresh noise during sampling.
    pub fn is_stochastic(self) -> bool {
        matches!(self, SamplerKind::EulerAncestral | SamplerKind::DpmPp2mSde | SamplerKind::Lcm | SamplerKind::Ddpm)
    }
}

impl fmt::Display for SamplerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.a1111_name())
    }
}

/// Sigma/timestep schedules, named as A1111 names them ("Schedule type").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ScheduleKind {
    /// The model's own schedule from its `scheduler_config.json`.
    #[default]
    Automatic,
    Karras,
    Exponential,
    SgmUniform,
}

impl ScheduleKind {
    pub const ALL: &'static [(ScheduleKind, &'static str, &'static str)] = &[
        (ScheduleKind::Automatic, "automatic", "Automatic"),
        (ScheduleKind::Karras, "karras", "Karras"),
        (ScheduleKind::Exponential, "exponential", "Exponential"),
        (ScheduleKind::SgmUniform, "sgm_uniform", "SGM Uniform"),
    ];

    /// The A1111 label ("Karras", "SGM Uniform", ...).
    pub fn label(self) -> &'static str {
        Self::ALL.iter().find(|(k, _, _)| *k == self).map(|(_, _, l)| *l).unwrap_or("Automatic")
    }

    /// The A1111 scheduler name ("karras", "sgm_uniform", ...).
    pub fn name(self) -> &'static str {
        Self::ALL.iter().find(|(k, _, _)| *k == self).map(|(_, n, _)| *n).unwrap_or("automatic")
    }

    /// A1111 name or label, case-insensitive (`SGMUniform` is A1111's alias of SGM Uniform).
    pub fn from_name(name: &str) -> Option<ScheduleKind> {
        let wanted = name.trim();
        if wanted.eq_ignore_ascii_case("sgmuniform") {
            return Some(ScheduleKind::SgmUniform);
        }
        Self::ALL
            .iter()
            .find(|(_, n, l)| n.eq_ignore_ascii_case(wanted) || l.eq_ignore_ascii_case(wanted))
            .map(|(k, _, _)| *k)
    }
}

/// Which random number generator makes the noise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RngKind {
    /// torch's CPU generator (MT19937 + torch's normal sampling), as diffusers and ComfyUI use.
    #[default]
    TorchCpu,
    /// A1111's default "GPU" generator: Philox 4x32-10 as CUDA torch.randn draws it.
    Philox,
}

/// Encoded output image format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum OutputFormat {
    #[default]
    Png,
    /// JPEG with quality 1..=100.
    Jpeg { quality: u8 },
    /// WebP (quality 1..=100; 100 = lossless).
    Webp { quality: u8 },
}

impl OutputFormat {
    pub fn extension(self) -> &'static str {
        match self {
            OutputFormat::Png => "png",
            OutputFormat::Jpeg { .. } => "jpeg",
            OutputFormat::Webp { .. } => "webp",
        }
    }

    pub fn mime_type(self) -> &'static str {
        match self {
            OutputFormat::Png => "image/png",
            OutputFormat::Jpeg { .. } => "image/jpeg",
            OutputFormat::Webp { .. } => "image/webp",
        }
    }
}

/// When the engine sends preview images during sampling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PreviewPolicy {
    #[default]
    None,
    /// A cheap latent→RGB preview every N steps (N ≥ 1).
    EveryNSteps(u32),
}

/// An RGB8 image, decoded and protocol-neutral (faces decode base64/multipart into this).
#[derive(Clone, PartialEq, Eq)]
pub struct RgbImage {
    pub width: u32,
    pub height: u32,
    /// Row-major RGB, 3 bytes per pixel.
    pub pixels: Vec<u8>,
}

impl fmt::Debug for RgbImage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RgbImage({}x{})", self.width, self.height)
    }
}

/// A single-channel mask, white (255) = repaint.
#[derive(Clone, PartialEq, Eq)]
pub struct MaskImage {
    pub width: u32,
    pub height: u32,
    pub pixels: Vec<u8>,
}

impl fmt::Debug for MaskImage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MaskImage({}x{})", self.width, self.height)
    }
}

/// Starting image for img2img / inpainting.
#[derive(Debug, Clone)]
pub struct InitImage {
    pub image: RgbImage,
    /// 0.0 = keep the image, 1.0 = ignore it entirely.
    pub strength: f64,
}

/// What the masked area starts from before denoising (A1111 `inpainting_fill`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum MaskedContent {
    /// 0: the masked pixels are replaced by a blurred fill of the colours around them before
    /// encoding (A1111 `masking.fill`).
    Fill,
    /// 1: the init image as it is.
    #[default]
    Original,
    /// 2: the masked latents are replaced by the image's initial noise.
    LatentNoise,
    /// 3: the masked latents are zeroed.
    LatentNothing,
}

impl MaskedContent {
    /// A1111's integer `inpainting_fill`, `None` for anything else.
    pub fn from_a1111(value: i64) -> Option<MaskedContent> {
        match value {
            0 => Some(MaskedContent::Fill),
            1 => Some(MaskedContent::Original),
            2 => Some(MaskedContent::LatentNoise),
            3 => Some(MaskedContent::LatentNothing),
            _ => None,
        }
    }

    /// The infotext's `Masked content` value; A1111 writes none for "original".
    pub fn infotext_label(self) -> Option<&'static str> {
        match self {
            MaskedContent::Fill => Some("fill"),
            MaskedContent::Original => None,
            MaskedContent::LatentNoise => Some("latent noise"),
            MaskedContent::LatentNothing => Some("latent nothing"),
        }
    }
}

/// Which part of the init image is generated (A1111 `inpaint_full_res`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum InpaintArea {
    /// The whole image at the request's size.
    #[default]
    WholeImage,
    /// "Only masked": the mask's bounding box grown by `padding` pixels and then to the
    /// request's aspect ratio is cut out of the init image (at its own size), generated at the
    /// request's size, scaled back and pasted into the init image through the mask. The output
    /// has the init image's size. A blank mask falls back to plain img2img, as in A1111.
    OnlyMasked { padding: u32 },
}

/// Inpainting mask and how to treat it.
#[derive(Debug, Clone)]
pub struct MaskSpec {
    pub mask: MaskImage,
    /// Gaussian blur radius in pixels applied to the mask before use (A1111 `mask_blur`).
    pub blur: u32,
    /// Repaint the black area instead of the white one (A1111 `inpainting_mask_invert`).
    pub invert: bool,
    pub content: MaskedContent,
    pub area: InpaintArea,
    /// Whole-image inpainting: composite the init image back over the result outside the mask
    /// (through the mask doubled and clipped, as A1111 does), so unmasked pixels come back
    /// exactly. Off = diffusers' inpainting pipeline, whose VAE round trip alters them slightly.
    /// ("Only masked" always pastes back.)
    pub overlay_original: bool,
}

impl MaskSpec {
    /// A mask used as given: no blur, not inverted, original content, whole image, no overlay.
    pub fn new(mask: MaskImage) -> Self {
        MaskSpec { mask, blur: 0, invert: false, content: MaskedContent::Original, area: InpaintArea::WholeImage, overlay_original: false }
    }
}

/// A LoRA applied for one job (native `loras: [{path, strength}]`, A1111 `<lora:name:w>` tags).
#[derive(Debug, Clone, PartialEq)]
pub struct LoraSpec {
    /// A name in the models folder's `Lora/` (file stem, `ss_output_name` alias, or relative
    /// path), or an absolute path where the operator allows external paths.
    pub name_or_path: String,
    pub unet_strength: f64,
    /// Text-encoder strength (A1111's first number in `<lora:name:te:unet>`).
    pub te_strength: f64,
}

impl LoraSpec {
    /// One strength for both networks (`<lora:name:0.8>`).
    pub fn new(name_or_path: impl Into<String>, strength: f64) -> Self {
        LoraSpec { name_or_path: name_or_path.into(), unet_strength: strength, te_strength: strength }
    }
}

/// A1111's variation seed: the initial noise of each image is slerped from its seed's noise
/// toward the subseed's. With `strength != 0` image `i` keeps the request's seed and uses
/// `subseed + i` (A1111's `all_seeds` / `all_subseeds` rule); with 0 it uses `seed + i` as usual.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VariationSeed {
    pub subseed: u64,
    /// 0.0 = the seed's noise, 1.0 = the subseed's.
    pub strength: f64,
    /// A1111 `seed_resize_from_w/h` in pixels `(width, height)`: the seed's noise is drawn at
    /// this size and pasted centred into the target-size noise, so a seed keeps its look at a
    /// new size.
    pub resize_from: Option<(u32, u32)>,
}

impl VariationSeed {
    /// (seed, subseed) of image `index` of a request whose seed is `seed`.
    pub fn image_seeds(&self, seed: u64, index: u32) -> (u64, u64) {
        if self.strength != 0.0 {
            (seed, self.subseed.wrapping_add(u64::from(index)))
        } else {
            (seed.wrapping_add(u64::from(index)), self.subseed.wrapping_add(u64::from(index)))
        }
    }
}

/// How a hires pass enlarges the first pass's latents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HiresUpscaler {
    /// Interpolate the latents themselves (A1111's `Latent*` modes).
    Latent(LatentInterpolation),
    /// Decode, resize the image, encode again (A1111's pixel upscalers; ESRGAN-style models are
    /// not available here, faces substitute one of these).
    Image(ImageInterpolation),
}

/// `torch.nn.functional.interpolate` modes, as A1111's latent upscale modes use them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LatentInterpolation {
    /// "Latent": bilinear, align_corners=False.
    Bilinear,
    /// "Latent (antialiased)": bilinear with torch's antialias (a triangle filter widened when
    /// shrinking; the same as `Bilinear` when enlarging).
    BilinearAntialiased,
    /// "Latent (bicubic)": bicubic (a = −0.75), align_corners=False.
    Bicubic,
    /// "Latent (bicubic antialiased)": torch's antialiased bicubic (a = −0.5, weights
    /// renormalised at the borders, widened when shrinking).
    BicubicAntialiased,
    /// "Latent (nearest)": torch's legacy `nearest` (`floor(dst * in / out)`).
    Nearest,
    /// "Latent (nearest-exact)": `floor((dst + 0.5) * in / out)`.
    NearestExact,
}

/// Pixel-space resize filters for [`HiresUpscaler::Image`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ImageInterpolation {
    /// Pillow's LANCZOS (A1111's "Lanczos", and what "None" ends up doing).
    Lanczos,
    /// Pillow's NEAREST (A1111's "Nearest").
    Nearest,
}

/// What a client asked the hires size to be, as A1111's infotext reports it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum HiresSizeRequest {
    /// `Hires upscale: 2.0`.
    Scale(f64),
    /// `Hires resize: WxH` (either side may be 0: keep the aspect ratio).
    Resize(u32, u32),
}

/// A second, img2img-style pass at a larger size after a txt2img first pass (A1111's hires
/// fix): the first pass's result is upscaled to `width`×`height`, centre-cropped to `crop_to`
/// when given, noised with fresh noise from the same seeds to `denoising_strength`, and
/// denoised for `steps` steps (0 = the first pass's steps) on a schedule of
/// `int(steps / min(denoising_strength, 0.999))` steps, as A1111 does.
#[derive(Debug, Clone, PartialEq)]
pub struct HiresPass {
    pub width: u32,
    pub height: u32,
    /// The final size, smaller than the upscaled one on at most one side (A1111 `hr_resize_x/y`
    /// with another aspect ratio: cover, then crop). `None` = `width`×`height`.
    pub crop_to: Option<(u32, u32)>,
    pub steps: u32,
    /// 0 < strength ≤ 1; 0 skips the second sampling (the upscaled result is decoded as is).
    pub denoising_strength: f64,
    pub upscaler: HiresUpscaler,
    /// The upscaler's name for the infotext (`Hires upscaler`), as the face's client named it.
    pub upscaler_name: String,
    /// How the client asked for the size (infotext `Hires upscale` or `Hires resize`).
    pub size_request: HiresSizeRequest,
    /// `None` = the first pass's sampler / schedule / prompt / negative prompt / CFG scale.
    pub sampler: Option<SamplerKind>,
    pub schedule: Option<ScheduleKind>,
    pub prompt: Option<String>,
    pub negative_prompt: Option<String>,
    pub cfg_scale: Option<f64>,
}

impl HiresPass {
    /// The size the images come out at.
    pub fn output_size(&self) -> (u32, u32) {
        self.crop_to.unwrap_or((self.width, self.height))
    }
}

/// One request for images, whichever protocol it came from.
#[derive(Debug, Clone)]
pub struct GenerationRequest {
    /// A checkpoint name (any A1111 alias: title, file name, stem, hash) or the served model's
    /// id; `None` = the default model.
    pub model: Option<String>,
    /// LoRAs for this job only; the base weights are untouched afterwards.
    pub loras: Vec<LoraSpec>,
    /// A VAE from the models folder's `VAE/` (A1111 `sd_vae`); `None`, "Automatic" or "None" =
    /// the checkpoint's own.
    pub vae: Option<String>,
    pub prompt: String,
    pub negative_prompt: String,
    pub width: u32,
    pub height: u32,
    pub steps: u32,
    pub cfg_scale: f64,
    /// `None` = pick a random seed; the seed used is always reported back.
    pub seed: Option<u64>,
    /// Image i uses seed + i with its own generator.
    pub num_images: u32,
    pub sampler: SamplerKind,
    pub schedule: ScheduleKind,
    pub rng: RngKind,
    /// Variation seed / seed resize (A1111 `subseed`, `subseed_strength`, `seed_resize_from_*`).
    pub variation: Option<VariationSeed>,
    /// A1111 `CLIP_stop_at_last_layers`: 1 = last layer (no skip), 2 = penultimate, ...
    /// SDXL ignores it unless `sdxl_clip_l_skip` is set, as in A1111.
    pub clip_skip: u32,
    /// A1111's `sdxl_clip_l_skip` ("Clip skip SDXL"): SDXL's first text encoder (CLIP-L) reads
    /// the layer `clip_skip` selects, un-normalised, instead of its fixed penultimate layer.
    /// The second encoder (OpenCLIP-G) always uses its penultimate layer.
    pub sdxl_clip_l_skip: bool,
    pub init_image: Option<InitImage>,
    pub mask: Option<MaskSpec>,
    /// A hires second pass (txt2img only).
    pub hires: Option<HiresPass>,
    /// Infotext entries for preparation a face did before the engine saw the request (A1111's
    /// img2img inverts and blurs its mask at the mask's own size: `Mask mode`, `Mask blur`).
    /// Written after the engine's own fixed keys, before its inpainting entries.
    pub infotext_extra: Vec<(String, String)>,
    pub output_format: OutputFormat,
    pub preview: PreviewPolicy,
}

impl GenerationRequest {
    /// (seed, subseed) of image `index` when the request's seed is `seed`: `seed + index`
    /// without a variation strength, see [`VariationSeed::image_seeds`] otherwise.
    pub fn image_seeds(&self, seed: u64, index: u32) -> (u64, Option<u64>) {
        match &self.variation {
            Some(v) => {
                let (seed, subseed) = v.image_seeds(seed, index);
                (seed, Some(subseed))
            }
            None => (seed.wrapping_add(u64::from(index)), None),
        }
    }

    /// A txt2img request with the engine's defaults for everything but the prompt.
    pub fn new(prompt: impl Into<String>) -> Self {
        GenerationRequest {
            model: None,
            loras: Vec::new(),
            vae: None,
            prompt: prompt.into(),
            negative_prompt: String::new(),
            width: 512,
            height: 512,
            steps: 20,
            cfg_scale: 7.5,
            seed: None,
            num_images: 1,
            sampler: SamplerKind::Euler,
            schedule: ScheduleKind::Automatic,
            rng: RngKind::TorchCpu,
            variation: None,
            clip_skip: 1,
            sdxl_clip_l_skip: false,
            init_image: None,
            mask: None,
            hires: None,
            infotext_extra: Vec::new(),
            output_format: OutputFormat::Png,
            preview: PreviewPolicy::None,
        }
    }
}

/// One finished image.
#[derive(Debug, Clone)]
pub struct GeneratedImage {
    /// Position in the request (0-based).
    pub index: u32,
    /// Encoded file bytes in the requested format.
    pub bytes: Vec<u8>,
    pub format: OutputFormat,
    pub width: u32,
    pub height: u32,
    pub seed: u64,
    /// The A1111 "parameters" infotext describing how this image was made.
    pub infotext: String,
    /// What the job could not do as asked (an unknown LoRA name, a LoRA for another model
    /// family, ...): reported, never silently dropped.
    pub warnings: Vec<String>,
}

/// A preview of the job in progress.
#[derive(Debug, Clone)]
pub struct PreviewImage {
    pub step: u32,
    pub total: u32,
    /// PNG bytes.
    pub png: Vec<u8>,
    pub width: u32,
    pub height: u32,
}

/// Why a job failed. Faces map these onto their own error bodies.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    /// The request cannot be served as asked (bad size for the model, missing init image, ...).
    #[error("invalid request: {field}: {message}")]
    InvalidRequest { field: String, message: String },
    /// The model could not be loaded or is not available.
    #[error("model unavailable: {0}")]
    ModelUnavailable(String),
    /// The job ran longer than the worker's per-job limit (`--job-timeout`) and was stopped.
    #[error("the job timed out after {seconds} s (the worker's per-job time limit)")]
    TimedOut { seconds: u64 },
    /// Something broke inside generation (a tensor error, a panic).
    #[error("generation failed: {0}")]
    Internal(String),
}

/// Progress of one job, in order: `Queued`, `Started`, (`Step` | `Preview`)*, `Image`+, then
/// exactly one of `Done`, `Failed`, `Cancelled`.
#[derive(Debug, Clone)]
pub enum JobEvent {
    /// Accepted; `position` jobs are ahead of it (0 = next to run).
    Queued { position: usize },
    /// The engine took the job. `seed` is the resolved base seed.
    Started { seed: u64, total_steps: u32 },
    /// A sampling step finished (1-based `step` of `total` over the whole job).
    Step { step: u32, total: u32 },
    Preview(PreviewImage),
    Image(GeneratedImage),
    Done,
    Failed(JobError),
    Cancelled,
}

impl JobEvent {
    /// True for the last event a job sends.
    pub fn is_terminal(&self) -> bool {
        matches!(self, JobEvent::Done | JobEvent::Failed(_) | JobEvent::Cancelled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampler_names_round_trip_and_aliases_resolve() {
        for (kind, name, aliases) in SamplerKind::ALL {
            assert_eq!(SamplerKind::from_name(name), Some(*kind));
            for alias in *aliases {
                assert_eq!(SamplerKind::from_name(alias), Some(*kind));
            }
        }
        assert_eq!(SamplerKind::from_name("euler A"), Some(SamplerKind::EulerAncestral));
        assert_eq!(SamplerKind::from_name("nope"), None);
    }

    #[test]
    fn schedule_names_and_labels_resolve() {
        assert_eq!(ScheduleKind::from_name("Karras"), Some(ScheduleKind::Karras));
        assert_eq!(ScheduleKind::from_name("sgm_uniform"), Some(ScheduleKind::SgmUniform));
        assert_eq!(ScheduleKind::from_name("SGMUniform"), Some(ScheduleKind::SgmUniform));
        assert_eq!(ScheduleKind::SgmUniform.label(), "SGM Uniform");
        assert_eq!(ScheduleKind::from_name("bogus"), None);
    }
}
