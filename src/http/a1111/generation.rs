//! What txt2img and img2img share: turning the request model into engine requests (seeds,
//! sampler, sizes, settings), running a call's `n_iter` batches as engine jobs while keeping
//! A1111's progress/interrupt/skip state, and fitting the images to the requested size.
//!
//! Seeds follow A1111: −1 means `random.randrange(4294967294)`, image i of the call gets
//! seed + i with its own generator, batch n uses `all_seeds[n·batch_size ..]`. The default RNG is
//! A1111's "GPU" Philox; the `randn_source` option switches to torch's CPU generator.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use super::errors::A1111Error;
use super::models::{info_from_id, Checkpoint};
use super::options::JobSettings;
use super::prompt_text::{extra_networks, strip_comments};
use super::request_model::ProcessingFields;
use super::run_tracker::ActiveRun;
use super::samplers::{resolve, ResolvedSampler};
use super::A1111Face;
use crate::backend::generation_engine::{EngineState, ModelInfo};
use crate::backend::image_io::{decode_rgb, encode_image, resize_rgb, DEFAULT_MAX_PIXELS};
use crate::backend::request::{GeneratedImage, GenerationRequest, JobEvent, VariationSeed};
use crate::backend::request_limits::RequestField;
use crate::http::error::ApiError;
use crate::http::AppState;

/// A1111's UI limit on the batch count.
pub const MAX_N_ITER: i64 = 100;

/// How often a later batch retries when the queue is full (the first batch answers 503).
const QUEUE_RETRY: Duration = Duration::from_millis(200);

/// How often a request waits for the model to finish loading.
const LOAD_POLL: Duration = Duration::from_millis(100);

/// The seeds of a call (A1111's `all_seeds` / `all_subseeds`).
#[derive(Debug, Clone, PartialEq)]
pub struct SeedPlan {
    pub all_seeds: Vec<i64>,
    pub all_subseeds: Vec<i64>,
    pub subseed_strength: f64,
}

/// A1111's `get_fixed_seed`: −1 becomes `random.randrange(4294967294)`; other values pass through.
pub fn fixed_seed(seed: i64) -> i64 {
    if seed == -1 {
        rand::random_range(0..4_294_967_294i64)
    } else {
        seed
    }
}

impl SeedPlan {
    pub fn new(seed: i64, subseed: i64, subseed_strength: f64, count: usize) -> Self {
        let (seed, subseed) = (fixed_seed(seed), fixed_seed(subseed));
        // With a variation strength A1111 keeps the main seed and varies the subseed instead
        // (the engine's `VariationSeed::image_seeds` follows the same rule).
        let seed_step = if subseed_strength == 0.0 { 1 } else { 0 };
        SeedPlan {
            all_seeds: (0..count as i64).map(|i| seed.wrapping_add(i * seed_step)).collect(),
            all_subseeds: (0..count as i64).map(|i| subseed.wrapping_add(i)).collect(),
            subseed_strength,
        }
    }
}

impl PreparedCall {
    /// The engine request for a job whose first image is image `first_image` of the call: its
    /// seed, and its subseed when the call has a variation. Torch takes negative and big seeds
    /// modulo 2^64, so the two's-complement reinterpretation is the same generator state.
    pub fn request_for(&self, first_image: usize) -> GenerationRequest {
        let mut request = self.base.clone();
        request.seed = self.seeds.all_seeds.get(first_image).map(|s| *s as u64);
        if let (Some(variation), Some(subseed)) = (request.variation.as_mut(), self.seeds.all_subseeds.get(first_image)) {
            variation.subseed = *subseed as u64;
        }
        request
    }
}

/// A1111's variation fields as the engine's [`VariationSeed`]: `None` when neither a strength
/// nor a resize-from size (both sides > 0) is given.
fn variation(seeds: &SeedPlan, resize_from_w: i64, resize_from_h: i64) -> Option<VariationSeed> {
    let resize_from = (resize_from_w > 0 && resize_from_h > 0).then(|| (resize_from_w.min(i64::from(u32::MAX)) as u32, resize_from_h.min(i64::from(u32::MAX)) as u32));
    (seeds.subseed_strength != 0.0 || resize_from.is_some()).then(|| VariationSeed {
        subseed: seeds.all_subseeds.first().copied().unwrap_or(0) as u64,
        strength: seeds.subseed_strength,
        resize_from,
    })
}

/// A call translated for the engine, before its images exist.
#[derive(Debug, Clone)]
pub struct PreparedCall {
    /// Everything but seed, image count and init image.
    pub base: GenerationRequest,
    /// The prompt after A1111's text processing (what `all_prompts` holds).
    pub prompt: String,
    pub negative_prompt: String,
    pub seeds: SeedPlan,
    pub sampler: ResolvedSampler,
    pub settings: JobSettings,
    /// The checkpoint the call runs on (`info.sd_model_name` / `sd_model_hash`).
    pub checkpoint: Option<Checkpoint>,
    pub batch_size: u32,
    pub n_iter: u32,
    /// What the client gets: the requested size rounded down to a multiple of 8, as A1111's
    /// latents (size / 8) make it.
    pub output_size: (u32, u32),
    /// What the engine makes: the output size moved to the model's size multiple.
    pub generation_size: (u32, u32),
}

/// Wait for the model (A1111 does not answer before its model is loaded); its facts decide the
/// generation size. 503 when loading failed.
pub async fn loaded_model(state: &AppState) -> Result<ModelInfo, A1111Error> {
    loop {
        match state.engine.status().state {
            EngineState::Loading => tokio::time::sleep(LOAD_POLL).await,
            EngineState::Error(message) => {
                return Err(A1111Error::http(axum::http::StatusCode::SERVICE_UNAVAILABLE, format!("the model is not available: {message}")))
            }
            EngineState::Stopped => return Err(ApiError::service_unavailable("SHUTTING_DOWN", "the worker is shutting down", None).into()),
            EngineState::Idle | EngineState::Busy => {
                let status = state.engine.status();
                let info = status.model_info.or_else(|| status.model_id.as_deref().map(info_from_id));
                return info.ok_or_else(|| A1111Error::internal("the engine reports no model"));
            }
        }
    }
}

/// The nearest positive multiple of `multiple` (ties go up).
pub fn nearest_multiple(value: u32, multiple: u32) -> u32 {
    let m = multiple.max(1);
    (((value + m / 2) / m).max(1)) * m
}

fn positive(field: &str, value: i64, max: i64) -> Result<u32, A1111Error> {
    if (1..=max).contains(&value) {
        Ok(value as u32)
    } else {
        Err(A1111Error::bad_request(format!("{field} must be between 1 and {max}, got {value}")))
    }
}

/// Translate the shared fields. `face` supplies the stored options, `model` the size rules.
pub fn prepare(common: &ProcessingFields, state: &AppState, face: &A1111Face, model: &ModelInfo) -> Result<PreparedCall, A1111Error> {
    if let Some(name) = common.script_name.as_deref().filter(|n| !n.is_empty()) {
        return Err(A1111Error::http(axum::http::StatusCode::UNPROCESSABLE_ENTITY, format!("Script '{name}' not found")));
    }
    if let Some(title) = common.alwayson_scripts.iter().flatten().map(|(k, _)| k).next() {
        return Err(A1111Error::http(axum::http::StatusCode::UNPROCESSABLE_ENTITY, format!("always on script {title} not found")));
    }
    let catalog = face.models.catalog(state);
    let settings = face.options.job_settings(common.override_settings(), &catalog)?;
    // The checkpoint this call uses: an override for this job, else `sd_model_checkpoint`.
    let checkpoint = settings.checkpoint.clone().or_else(|| face.models.active(&catalog));
    let limits = &state.limits;
    let batch_size = positive("batch_size", common.batch_size(), i64::from(limits.max_images))?;
    let n_iter = positive("n_iter", common.n_iter(), MAX_N_ITER)?;
    let steps = positive("steps", common.steps(), i64::from(limits.max_steps))?;

    let side = |field: &str, value: i64| -> Result<u32, A1111Error> {
        let rounded = value - value.rem_euclid(8);
        if !(i64::from(limits.min_side)..=i64::from(limits.max_side)).contains(&rounded) {
            return Err(A1111Error::bad_request(format!("{field} must be between {} and {} pixels, got {value}", limits.min_side, limits.max_side)));
        }
        Ok(rounded as u32)
    };
    let output_size = (side("width", common.width())?, side("height", common.height())?);
    let generation_size = (nearest_multiple(output_size.0, model.size_multiple), nearest_multiple(output_size.1, model.size_multiple));

    let process = |text: &str| if settings.strip_prompt_comments { strip_comments(text) } else { text.to_string() };
    let prompt = process(common.prompt());
    let negative_prompt = process(common.negative_prompt());
    // A1111 applies the extra networks of the prompt; tags in the negative prompt are only removed.
    let positive = extra_networks(&prompt);
    let negative = extra_networks(&negative_prompt);
    let ignored: Vec<&String> = positive.unsupported.iter().chain(&negative.unsupported).chain(negative.loras.iter().map(|l| &l.name_or_path)).collect();
    if !ignored.is_empty() {
        tracing::warn!(tags = ?ignored, "extra-network tags that cannot be applied were removed from the prompt");
    }
    for style in common.styles() {
        tracing::info!(style = %style, "no prompt styles are defined; style ignored");
    }
    let sampler = resolve(common.sampler_request(), common.scheduler.as_deref());
    let seeds = SeedPlan::new(common.seed(), common.subseed(), common.subseed_strength(), (batch_size * n_iter) as usize);
    if !seeds.subseed_strength.is_finite() {
        return Err(A1111Error::bad_request("subseed_strength must be a finite number".to_string()));
    }
    if settings.eta_noise_seed_delta != 0 {
        tracing::warn!("eta_noise_seed_delta is not supported by the engine yet; ignored");
    }

    let mut base = GenerationRequest::new(positive.text);
    base.negative_prompt = negative.text;
    base.loras = positive.loras;
    base.model = checkpoint.as_ref().and_then(|c| c.request_name.clone());
    base.vae = settings.vae.clone();
    base.width = generation_size.0;
    base.height = generation_size.1;
    base.steps = steps;
    base.cfg_scale = common.cfg_scale();
    base.num_images = batch_size;
    base.sampler = sampler.sampler;
    base.schedule = sampler.schedule;
    base.rng = settings.rng;
    base.variation = variation(&seeds, common.seed_resize_from_w.unwrap_or(-1), common.seed_resize_from_h.unwrap_or(-1));
    base.clip_skip = settings.clip_skip;
    base.sdxl_clip_l_skip = settings.sdxl_clip_l_skip;
    base.output_format = settings.output_format;
    base.preview = settings.preview;
    check_limits(&base, state)?;
    Ok(PreparedCall { base, prompt, negative_prompt, seeds, sampler, settings, checkpoint, batch_size, n_iter, output_size, generation_size })
}

/// The shared limits, named as A1111 names the fields.
fn check_limits(request: &GenerationRequest, state: &AppState) -> Result<(), A1111Error> {
    state.limits.check(request).map_err(|v| {
        let field = match v.field {
            RequestField::Width => "width",
            RequestField::Height => "height",
            RequestField::Pixels => "width x height",
            RequestField::Prompt => "prompt",
            RequestField::NegativePrompt => "negative_prompt",
            RequestField::Steps => "steps",
            RequestField::CfgScale => "cfg_scale",
            RequestField::NumImages => "batch_size",
            RequestField::Strength => "denoising_strength",
            RequestField::ClipSkip => "CLIP_stop_at_last_layers",
        };
        A1111Error::bad_request(format!("{field} {}", v.problem))
    })
}

/// One engine job of a call.
#[derive(Debug, Clone)]
pub struct PlannedJob {
    /// 0-based batch (A1111's `job_no`) the job belongs to.
    pub batch: u32,
    pub request: GenerationRequest,
}

/// How a call's run ended.
#[derive(Debug, Clone, Default)]
pub struct RunResult {
    pub images: Vec<GeneratedImage>,
    pub interrupted: bool,
}

/// Submit one job, retrying while the queue is full unless it is the call's first job (which
/// answers 503 with Retry-After, as a full queue should).
async fn submit(state: &AppState, run: &ActiveRun, request: GenerationRequest, first: bool) -> Result<Option<Arc<crate::http::job_registry::JobRecord>>, A1111Error> {
    loop {
        // Only the call's first job is a refusal the client sees; later batches wait their turn.
        let submitted = if first { state.submit(super::FACE.name, request.clone()) } else { state.try_submit(super::FACE.name, request.clone()) };
        match submitted {
            Ok(record) => return Ok(Some(record)),
            Err(e) if !first && e.code == "QUEUE_FULL" => {
                if run.is_interrupted() {
                    return Ok(None);
                }
                tokio::time::sleep(QUEUE_RETRY).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Run the jobs in order, as one A1111 call: `/progress` sees its batches, `/interrupt` stops it
/// after the running job (returning the images so far), `/skip` ends the running batch early and
/// goes on with the next.
pub async fn run_jobs(state: &AppState, run: &ActiveRun, jobs: Vec<PlannedJob>) -> Result<RunResult, A1111Error> {
    let mut result = RunResult::default();
    for (index, job) in jobs.into_iter().enumerate() {
        if run.is_interrupted() {
            result.interrupted = true;
            break;
        }
        let Some(record) = submit(state, run, job.request, index == 0).await? else {
            result.interrupted = true;
            break;
        };
        run.begin_batch(job.batch, record.id().clone());
        let mut events = record.subscribe();
        let mut failure = None;
        let mut cancelled = false;
        while let Some(event) = events.next().await {
            match event.as_ref() {
                JobEvent::Started { .. } => run.mark_started(),
                JobEvent::Image(image) => result.images.push(image.clone()),
                JobEvent::Failed(e) => failure = Some(e.clone()),
                JobEvent::Cancelled => cancelled = true,
                _ => {}
            }
        }
        if let Some(e) = failure {
            return Err(e.into());
        }
        if cancelled && !run.take_skipped() {
            // Cancelled by shutdown: A1111 answers with what it has.
            result.interrupted = true;
            break;
        }
        if run.is_interrupted() {
            // The engine finished the interrupted job with the image it had.
            result.interrupted = true;
            break;
        }
    }
    Ok(result)
}

/// Replace the `Size: WxH` parameter of an infotext's last line (the size the client asked for,
/// which A1111 writes, instead of the size the model had to use).
fn rewrite_size(infotext: &str, from: (u32, u32), to: (u32, u32)) -> String {
    let old = format!("Size: {}x{}", from.0, from.1);
    let new = format!("Size: {}x{}", to.0, to.1);
    let last_line = infotext.rfind('\n').unwrap_or(0);
    match infotext[last_line..].find(&old).map(|at| last_line + at) {
        Some(at) => format!("{}{new}{}", &infotext[..at], &infotext[at + old.len()..]),
        None => infotext.to_string(),
    }
}

/// `(generated width × height, width × height the client gets)`.
pub type SizeFit = ((u32, u32), (u32, u32));

/// Give the client the size it asked for when the model needed another one: each image whose
/// size is a generation size in `sizes` is resized (Lanczos) to its output size, and the
/// infotext's `Size` (always the first pass's) is corrected; images are re-encoded only when
/// something changed.
pub fn fit_images(images: Vec<GeneratedImage>, call: &PreparedCall, sizes: &[SizeFit]) -> Result<Vec<GeneratedImage>, A1111Error> {
    images
        .into_iter()
        .map(|image| {
            let target = sizes.iter().find(|(generated, _)| *generated == (image.width, image.height)).map(|(_, output)| *output);
            let (width, height) = target.unwrap_or((image.width, image.height));
            let resize = (width, height) != (image.width, image.height);
            if !resize && call.generation_size == call.output_size {
                return Ok(image);
            }
            let mut pixels = decode_rgb(&image.bytes, DEFAULT_MAX_PIXELS).map_err(|e| A1111Error::internal(e.to_string()))?;
            if resize {
                pixels = resize_rgb(&pixels, width, height).map_err(|e| A1111Error::internal(e.to_string()))?;
            }
            let infotext = rewrite_size(&image.infotext, call.generation_size, call.output_size);
            let bytes = encode_image(&pixels, image.format, Some(&infotext)).map_err(|e| A1111Error::internal(e.to_string()))?;
            Ok(GeneratedImage { bytes, width, height, infotext, ..image })
        })
        .collect()
}

/// [`fit_images`] for a call without a hires pass.
pub fn fit_to_output(images: Vec<GeneratedImage>, call: &PreparedCall) -> Result<Vec<GeneratedImage>, A1111Error> {
    fit_images(images, call, &[(call.generation_size, call.output_size)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_follow_a1111() {
        let plan = SeedPlan::new(100, 7, 0.0, 4);
        assert_eq!(plan.all_seeds, vec![100, 101, 102, 103]);
        assert_eq!(plan.all_subseeds, vec![7, 8, 9, 10]);
        let random = SeedPlan::new(-1, -1, 0.0, 2);
        assert!((0..4_294_967_294).contains(&random.all_seeds[0]));
        assert_eq!(random.all_seeds[1], random.all_seeds[0] + 1);
        assert!((0..4_294_967_294).contains(&random.all_subseeds[0]));
        let varied = SeedPlan::new(100, 7, 0.5, 3);
        assert_eq!(varied.all_seeds, vec![100, 100, 100]);
        assert_eq!(varied.all_subseeds, vec![7, 8, 9]);
    }

    #[test]
    fn variation_needs_a_strength_or_both_resize_sides() {
        let plain = SeedPlan::new(1, 7, 0.0, 2);
        assert_eq!(variation(&plain, -1, -1), None);
        assert_eq!(variation(&plain, 512, 0), None);
        assert_eq!(variation(&plain, 512, 384), Some(VariationSeed { subseed: 7, strength: 0.0, resize_from: Some((512, 384)) }));
        let varied = SeedPlan::new(1, 7, 0.25, 2);
        assert_eq!(variation(&varied, 0, 0), Some(VariationSeed { subseed: 7, strength: 0.25, resize_from: None }));
    }

    #[test]
    fn sizes_snap_to_the_model_multiple() {
        assert_eq!(nearest_multiple(512, 64), 512);
        assert_eq!(nearest_multiple(600, 64), 576);
        assert_eq!(nearest_multiple(608, 64), 640);
        assert_eq!(nearest_multiple(8, 64), 64);
        assert_eq!(nearest_multiple(70, 4), 72);
    }

    #[test]
    fn size_rewrite_touches_only_the_parameters_line() {
        let text = "Size: 64x64 in the prompt\nSteps: 2, Sampler: Euler, Seed: 1, Size: 64x64, Model: x";
        assert_eq!(rewrite_size(text, (64, 64), (72, 72)), "Size: 64x64 in the prompt\nSteps: 2, Sampler: Euler, Seed: 1, Size: 72x72, Model: x");
        assert_eq!(rewrite_size("Steps: 2, Size: 64x64", (64, 64), (72, 72)), "Steps: 2, Size: 72x72");
    }
}
