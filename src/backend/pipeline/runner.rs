//! The engine's `JobRunner` for Stable Diffusion: picks the model a request names (loading it
//! if needed, keeping up to N resident), applies the job's LoRAs and VAE override to a patched
//! copy, validates the request against it, runs the pipeline once per image (image i: seed + i,
//! its own generator), and reports steps, previews and finished images.

use std::path::PathBuf;
use std::sync::Arc;

use candle_core::Tensor;

use super::conditioning::{encode_prompts, PromptPair};
use super::denoise::loop_len;
use super::conditioning::TextConditioning;
use super::generate::{decode, first_pass_latents, internal, new_sampler, prepare_inputs, start_index, validate, ImageSeeds, PreparedInputs};
use super::hires::{hires_latents, hires_loop_len};
use super::job_embeddings::{job_embeddings, JobEmbeddings};
use super::loading::ModelLoader;
use super::model::{Family, SdModel};
use super::resident::{ResidentModel, ResidentModels, VaeOverride};
use crate::backend::generation_engine::{JobContext, JobRunner, ModelInfo, RunError};
use crate::backend::image_io::{encode_image, encode_png};
use crate::backend::infotext::{format_infotext, python_float_repr, rng_label, InfotextFields, VariationSeed};
use crate::backend::lora::{AppliedLora, LoraError, LoraFileCache, LoraTargets};
use crate::backend::model_library::resolve::is_builtin_vae;
use crate::backend::model_library::{CheckpointEntry, LibraryError, ModelLibrary};
use crate::backend::models::hub::ModelFormat;
use crate::backend::preview::{latent_preview, LatentRgbFactors};
use crate::backend::prompt::lora_tags::{extract_extra_networks, ExtractedPrompt};
use crate::backend::request::{GeneratedImage, GenerationRequest, HiresPass, HiresSizeRequest, JobError, JobEvent, LoraSpec, PreviewImage, PreviewPolicy, RgbImage};

/// Written as the infotext's `Version`.
const VERSION: &str = concat!("sd-worker-rbee v", env!("CARGO_PKG_VERSION"));

/// Parsed LoRA files kept between jobs.
const LORA_FILES_KEPT: usize = 16;

pub struct SdRunner {
    /// How to load more models; `None` for a runner fixed to one model.
    loader: Option<ModelLoader>,
    library: Option<Arc<ModelLibrary>>,
    /// The model used when a request names none (reloaded if it was evicted).
    default: ModelSpec,
    resident: ResidentModels,
    lora_files: LoraFileCache,
    /// The model status reports (the last one used).
    current: String,
}

/// How to (re)load one model and what to call it.
#[derive(Debug, Clone)]
struct ModelSpec {
    key: PathBuf,
    title: String,
    display_name: String,
    hash: Option<String>,
    format: ModelFormat,
}

impl ModelSpec {
    fn of(model: &ResidentModel, format: ModelFormat) -> Self {
        ModelSpec { key: model.key.clone(), title: model.title.clone(), display_name: model.display_name.clone(), hash: model.hash.clone(), format }
    }

    fn from_entry(entry: &CheckpointEntry) -> Self {
        ModelSpec { key: entry.path.clone(), title: entry.title.clone(), display_name: entry.stem(), hash: Some(entry.hash.clone()), format: entry.format }
    }

    /// Whether a request's model name means this model.
    fn is_named(&self, name: &str) -> bool {
        self.title == name || self.display_name == name || self.key.as_os_str() == name
    }
}

/// What a job runs with after model selection, LoRAs and VAE.
struct Prepared {
    model: Arc<SdModel>,
    infotext_extra: Vec<(String, String)>,
    model_name: String,
    model_hash: Option<String>,
    warnings: Vec<String>,
}

impl SdRunner {
    /// A runner serving only `model` (no switching, no models folder).
    pub fn new(model: SdModel, model_hash: Option<String>) -> Self {
        let key = PathBuf::from(&model.id);
        let id = model.id.clone();
        let format = if model.dir.is_dir() { ModelFormat::DiffusersFolder } else { ModelFormat::SingleFile };
        let resident_model = ResidentModel::new(key, id.clone(), model_display_name(&id), model_hash, model);
        let default = ModelSpec::of(&resident_model, format);
        let mut resident = ResidentModels::new(1);
        resident.insert(resident_model);
        SdRunner { loader: None, library: None, default, resident, lora_files: LoraFileCache::new(LORA_FILES_KEPT), current: id }
    }

    /// A runner that starts with `default` (stored as `format` at its key) and loads others
    /// from `library` on demand, keeping at most `max_resident` loaded.
    pub fn with_library(default: ResidentModel, format: ModelFormat, loader: ModelLoader, library: Option<Arc<ModelLibrary>>, max_resident: usize) -> Self {
        let spec = ModelSpec::of(&default, format);
        let current = default.title.clone();
        let mut resident = ResidentModels::new(max_resident);
        resident.insert(default);
        SdRunner { loader: Some(loader), library, default: spec, resident, lora_files: LoraFileCache::new(LORA_FILES_KEPT), current }
    }

    /// The default model's base pipeline, if it is resident.
    pub fn model(&mut self) -> Option<Arc<SdModel>> {
        let key = self.default.key.clone();
        self.resident.touch(&key).map(|m| m.base.clone())
    }

    /// Titles of the resident models, most recently used first.
    pub fn resident_models(&self) -> Vec<String> {
        self.resident.titles()
    }

    pub fn library(&self) -> Option<&Arc<ModelLibrary>> {
        self.library.as_ref()
    }

    /// The resident model a request names, loading it if needed.
    fn select(&mut self, requested: Option<&str>, ctx: &JobContext<'_>) -> Result<PathBuf, RunError> {
        let spec = match requested.map(str::trim).filter(|n| !n.is_empty()) {
            None => self.default.clone(),
            Some(name) => {
                let known = |m: &ResidentModel| m.title == name || m.display_name == name || m.key.as_os_str() == name || m.base.id == name;
                if let Some(key) = self.resident.iter().find(|m| known(m)).map(|m| m.key.clone()) {
                    return Ok(key);
                }
                if self.default.is_named(name) {
                    self.default.clone()
                } else {
                    let Some(library) = &self.library else {
                        return Err(unavailable(format!(
                            "model '{name}' is not loaded and this worker serves only '{}' (start it with --models-dir to switch models)",
                            self.default.title
                        )));
                    };
                    let entry = library.resolve_checkpoint(name).map_err(|e| match e {
                        LibraryError::PathNotAllowed(_) => invalid("model", e.to_string()),
                        other => unavailable(other.to_string()),
                    })?;
                    ModelSpec::from_entry(&entry)
                }
            }
        };
        if self.resident.touch(&spec.key).is_some() {
            return Ok(spec.key);
        }
        let Some(loader) = &self.loader else {
            return Err(unavailable(format!("model '{}' is not loaded and this runner cannot load models", spec.title)));
        };
        ctx.report_model_loading(&spec.title);
        self.resident.make_room();
        let model = loader.load(&spec.title, &spec.key, spec.format).map_err(unavailable)?;
        self.resident.insert(ResidentModel::new(spec.key.clone(), spec.title, spec.display_name, spec.hash, model));
        Ok(spec.key)
    }

    /// Select the model, then apply the job's LoRAs and VAE to a patched copy of it.
    fn prepare(&mut self, req: &GenerationRequest, ctx: &JobContext<'_>) -> Result<Prepared, RunError> {
        let key = self.select(req.model.as_deref(), ctx)?;
        let mut warnings = Vec::new();
        let mut extra = Vec::new();
        let loras = self.resolve_loras(req, &mut warnings);
        let library = self.library.clone();
        let loader = self.loader.clone();
        let resident = self.resident.touch(&key).ok_or_else(|| internal("the selected model is no longer resident"))?;
        ctx.report_model_ready(&resident.title);
        self.current = resident.title.clone();

        let mut model = merge_job_loras(resident, loras, &mut warnings, &mut extra)?;
        if let Some(vae_name) = req.vae.as_deref() {
            match (library.as_ref(), loader.as_ref()) {
                (Some(library), Some(loader)) => match library.resolve_vae(vae_name) {
                    Ok(None) => {}
                    Ok(Some(entry)) => {
                        model = with_job_vae(resident, &model, loader, &entry.path)?;
                        if let Some(hash) = library.vae_hash(&entry) {
                            extra.push(("VAE hash".to_string(), hash));
                        }
                        extra.push(("VAE".to_string(), entry.model_name.clone()));
                    }
                    Err(e) => warnings.push(format!("{e}; the checkpoint's own VAE was used")),
                },
                _ if is_builtin_vae(vae_name) => {}
                _ => warnings.push(format!("VAE '{vae_name}' cannot be selected without a models folder; the checkpoint's own VAE was used")),
            }
        }
        Ok(Prepared { model, infotext_extra: extra, model_name: resident.display_name.clone(), model_hash: resident.hash.clone(), warnings })
    }

    /// The job's LoRAs found in the models folder, parsed (cached), with the name to report
    /// and A1111's short hash. Unknown names become warnings.
    fn resolve_loras(&mut self, req: &GenerationRequest, warnings: &mut Vec<String>) -> Vec<(AppliedLora, String, Option<String>)> {
        let mut out = Vec::new();
        for spec in &req.loras {
            let name = spec.name_or_path.trim();
            let Some(entry) = self.library.as_ref().and_then(|l| l.resolve_lora(name)) else {
                warnings.push(format!("LoRA '{name}' was not found in the models folder; it was not applied"));
                continue;
            };
            match self.lora_files.get(&entry.path) {
                Ok(file) => {
                    let hash = self.library.as_ref().and_then(|l| l.lora_hash(&entry));
                    out.push((AppliedLora { file, unet_strength: spec.unet_strength, te_strength: spec.te_strength }, name.to_string(), hash));
                }
                Err(e) => warnings.push(format!("{e}; it was not applied")),
            }
        }
        out
    }
}

/// The resident model with the job's LoRAs merged (the cached merge when the set repeats).
/// A LoRA that fits none of the model's weights is dropped with a warning; the applied ones
/// go into the infotext's `Lora hashes` as A1111 writes it (name without ':' and ',').
fn merge_job_loras(
    resident: &mut ResidentModel,
    mut applied: Vec<(AppliedLora, String, Option<String>)>,
    warnings: &mut Vec<String>,
    extra: &mut Vec<(String, String)>,
) -> Result<Arc<SdModel>, RunError> {
    if applied.is_empty() {
        return Ok(resident.base.clone());
    }
    let targets = resident.lora_targets.get_or_insert_with(|| LoraTargets::new(&resident.base));
    let mut model = resident.base.clone();
    while !applied.is_empty() {
        let set: Vec<AppliedLora> = applied.iter().map(|(a, _, _)| a.clone()).collect();
        match resident.merged.get_or_merge(&resident.base, targets, &set) {
            Ok((merged, _)) => {
                model = merged;
                break;
            }
            Err(LoraError::NothingMatched { path, .. }) => {
                let position = applied.iter().position(|(a, _, _)| a.file.path == path).ok_or_else(|| internal("a refused LoRA is not in the set"))?;
                let (_, name, _) = applied.remove(position);
                warnings.push(format!("LoRA '{name}' does not fit model '{}' (none of its weights matches); it was not applied", resident.title));
            }
            Err(e) => return Err(internal(e)),
        }
    }
    let hashes: Vec<String> = applied
        .iter()
        .filter_map(|(_, name, hash)| hash.as_ref().map(|h| format!("{}: {h}", name.replace([':', ','], ""))))
        .collect();
    if !hashes.is_empty() {
        extra.push(("Lora hashes".to_string(), hashes.join(", ")));
    }
    Ok(model)
}

/// `model` with the VAE file at `path` (built once per resident model and reused).
fn with_job_vae(resident: &mut ResidentModel, model: &SdModel, loader: &ModelLoader, path: &std::path::Path) -> Result<Arc<SdModel>, RunError> {
    let cached = resident.vae.as_ref().filter(|v| v.path == path);
    let (vae, tensors) = match cached {
        Some(v) => (v.vae.clone(), v.tensors.clone()),
        None => {
            let (vae, tensors) = loader.load_vae(path, &resident.base).map_err(|e| invalid("vae", e))?;
            resident.vae = Some(VaeOverride { path: path.to_path_buf(), vae: vae.clone(), tensors: tensors.clone() });
            (vae, tensors)
        }
    };
    Ok(Arc::new(model.with_vae(vae, tensors)))
}

impl JobRunner for SdRunner {
    fn model_id(&self) -> String {
        self.current.clone()
    }

    /// Facts about the most recently used resident model (the one status names).
    fn model_info(&self) -> Option<ModelInfo> {
        let resident = self.resident.iter().next()?;
        let m = resident.base.as_ref();
        let (default_steps, default_cfg_scale) = if m.is_distilled() { (4, 1.0) } else { (20, 7.0) };
        Some(ModelInfo {
            id: resident.title.clone(),
            name: resident.display_name.clone(),
            hash: resident.hash.clone(),
            family: match m.family {
                Family::Sd => "sd",
                Family::Sdxl => "sdxl",
            },
            native_size: m.native_size(),
            size_multiple: m.size_multiple(),
            default_steps,
            default_cfg_scale,
            inpainting: m.is_inpainting_model(),
        })
    }

    fn run(&mut self, ctx: &JobContext<'_>) -> Result<(), RunError> {
        // A1111 takes `<lora:…>` tags out of the prompt and applies them like explicit LoRAs.
        let extracted = extract_extra_networks(&ctx.request().prompt).map_err(|e| invalid("prompt", e.to_string()))?;
        let mut effective = ctx.request().clone();
        effective.loras.extend(extracted.loras.iter().map(|tag| LoraSpec {
            name_or_path: tag.name.clone(),
            unet_strength: tag.unet_multiplier,
            te_strength: tag.te_multiplier,
        }));
        let req = &effective;
        let unsupported = unsupported_network_warnings(&extracted);
        let mut prepared = self.prepare(req, ctx)?;
        let model_handle = prepared.model.clone();
        let model = model_handle.as_ref();
        validate(req, model)?;
        let inputs = prepare_inputs(req)?;
        let seed = req.seed.unwrap_or_else(random_seed);
        let (first_len, schedule_steps) = {
            let sampler = new_sampler(req, model)?;
            (loop_len(sampler.as_ref(), start_index(req, sampler.as_ref())), sampler.timesteps().len())
        };
        // The hires pass may name embeddings of its own: load them with the first pass's.
        let mut prompt_texts = vec![extracted.prompt.as_str(), req.negative_prompt.as_str()];
        if let Some(hires) = &req.hires {
            prompt_texts.extend(hires.prompt.as_deref());
            prompt_texts.extend(hires.negative_prompt.as_deref());
        }
        let embeddings = job_embeddings(self.library.as_deref(), model, &prompt_texts, schedule_steps);
        prepared.warnings.extend(embeddings.warnings.iter().cloned());
        for warning in &prepared.warnings {
            tracing::warn!(job = %ctx.id(), "{warning}");
        }
        let hires_len = match &req.hires {
            Some(hires) => hires_loop_len(model, req, hires)?,
            None => 0,
        };
        let per_image = first_len + hires_len;
        let total = (per_image * req.num_images as usize) as u32;
        ctx.emit(JobEvent::Started { seed, total_steps: total });
        let cond = encode_prompts(
            model,
            &PromptPair {
                prompt: &extracted.prompt,
                negative_prompt: &req.negative_prompt,
                clip_skip: req.clip_skip,
                sdxl_clip_l_skip: req.sdxl_clip_l_skip,
                guidance_scale: req.cfg_scale,
                width: req.width,
                height: req.height,
                steps: schedule_steps,
                embeddings: &embeddings.embeddings,
            },
        )
        .map_err(internal)?;
        if let Some(hashes) = embeddings.hashes(&cond.used_embeddings) {
            prepared.infotext_extra.push(("TI hashes".to_string(), hashes));
        }
        let hires_cond = match &req.hires {
            Some(hires) => Some(encode_hires_prompts(model, req, hires, &extracted.prompt, hires_len, &embeddings)?),
            None => None,
        };
        ctx.check_cancelled()?;
        let factors = if model.family == Family::Sdxl { LatentRgbFactors::SDXL } else { LatentRgbFactors::SD15 };
        for index in 0..req.num_images {
            // An interrupt ends the job after the image in hand; later images are not started.
            if ctx.is_interrupted() {
                break;
            }
            let seeds = ImageSeeds::of_image(req, seed, index);
            let steps_before = index as usize * per_image;
            let progress = StepProgress { ctx, req, factors: &factors, total, image_end: steps_before + per_image };
            let mut first = progress.reporter(steps_before);
            let mut denoised = first_pass_latents(model, req, &inputs, &cond, seeds, &mut first)?;
            if let (Some(hires), Some(hires_cond), false) = (&req.hires, &hires_cond, denoised.stopped_early) {
                let mut second = progress.reporter(steps_before + first_len);
                denoised = hires_latents(model, req, hires, &denoised.latents, hires_cond, seeds, &mut second)?;
            }
            let interrupted = denoised.stopped_early;
            if interrupted && !ctx.is_interrupted() {
                return Err(RunError::Cancelled);
            }
            let mut image = decode(model, &denoised.latents).map_err(internal)?;
            if let Some(paste_back) = &inputs.paste_back {
                image = paste_back.apply(&image).map_err(|e| internal(e.to_string()))?;
            }
            let infotext = format_infotext(&infotext(ctx.request(), seeds, &prepared, &unsupported, &inputs));
            let bytes = encode_image(&image, req.output_format, Some(&infotext)).map_err(|e| internal(e.to_string()))?;
            let mut warnings = prepared.warnings.clone();
            if interrupted {
                warnings.push(INTERRUPTED_WARNING.to_string());
            }
            ctx.emit(JobEvent::Image(GeneratedImage {
                index,
                bytes,
                format: req.output_format,
                width: image.width,
                height: image.height,
                seed: seeds.seed,
                infotext,
                warnings,
            }));
            ctx.check_cancelled()?;
        }
        Ok(())
    }
}

/// The warning an image made from an interrupted job's current latents carries.
pub const INTERRUPTED_WARNING: &str = "interrupted: this image was decoded from the latents reached when sampling stopped";

/// Reports each sampling step (and previews) of one image, counted over the whole job.
struct StepProgress<'a, 'c> {
    ctx: &'a JobContext<'c>,
    req: &'a GenerationRequest,
    factors: &'a LatentRgbFactors,
    total: u32,
    /// The job-wide step count when this image is done.
    image_end: usize,
}

impl StepProgress<'_, '_> {
    /// A step callback for a loop that starts after `steps_before` steps of the job; it asks the
    /// loop to stop on cancel and on interrupt.
    fn reporter(&self, steps_before: usize) -> impl FnMut(usize, usize, &Tensor) -> bool + '_ {
        move |done: usize, _of: usize, latents: &Tensor| -> bool {
            let step = (steps_before + done) as u32;
            self.ctx.emit(JobEvent::Step { step, total: self.total });
            if let PreviewPolicy::EveryNSteps(n) = self.req.preview {
                if n > 0 && done.is_multiple_of(n as usize) && (step as usize) < self.image_end {
                    if let Some(preview) = make_preview(latents, self.factors, self.req, step, self.total) {
                        self.ctx.emit(JobEvent::Preview(preview));
                    }
                }
            }
            !self.ctx.should_stop()
        }
    }
}

/// The hires pass's conditioning: its own prompts when given (extra-network tags removed, as
/// from the first prompt), at the hires size.
fn encode_hires_prompts(
    model: &SdModel,
    req: &GenerationRequest,
    hires: &HiresPass,
    first_prompt: &str,
    steps: usize,
    embeddings: &JobEmbeddings,
) -> Result<TextConditioning, RunError> {
    let prompt = match &hires.prompt {
        Some(text) => extract_extra_networks(text).map_err(|e| invalid("hires.prompt", e.to_string()))?.prompt,
        None => first_prompt.to_string(),
    };
    let (width, height) = hires.output_size();
    encode_prompts(
        model,
        &PromptPair {
            prompt: &prompt,
            negative_prompt: hires.negative_prompt.as_deref().unwrap_or(&req.negative_prompt),
            clip_skip: req.clip_skip,
            sdxl_clip_l_skip: req.sdxl_clip_l_skip,
            guidance_scale: hires.cfg_scale.unwrap_or(req.cfg_scale),
            width,
            height,
            steps: steps.max(1),
            embeddings: &embeddings.embeddings,
        },
    )
    .map_err(internal)
}

/// The infotext entries of a hires pass, in the order A1111 1.10 adds them.
fn hires_infotext(fields: &mut InfotextFields, req: &GenerationRequest, hires: &HiresPass) {
    if let Some(sampler) = hires.sampler.filter(|s| *s != req.sampler) {
        fields.set_extra("Hires sampler", sampler.a1111_name());
    }
    if let Some(prompt) = hires.prompt.as_ref().filter(|p| **p != req.prompt) {
        fields.set_extra("Hires prompt", prompt.clone());
    }
    if let Some(negative) = hires.negative_prompt.as_ref().filter(|n| **n != req.negative_prompt) {
        fields.set_extra("Hires negative prompt", negative.clone());
    }
    if let Some(schedule) = hires.schedule.filter(|s| *s != req.schedule) {
        fields.set_extra("Hires schedule type", schedule.label());
    }
    match hires.size_request {
        HiresSizeRequest::Scale(scale) => fields.set_extra("Hires upscale", python_float_repr(scale)),
        HiresSizeRequest::Resize(w, h) => fields.set_extra("Hires resize", format!("{w}x{h}")),
    }
    if hires.steps != 0 {
        fields.set_extra("Hires steps", hires.steps.to_string());
    }
    fields.set_extra("Hires upscaler", hires.upscaler_name.clone());
    if let Some(cfg) = hires.cfg_scale.filter(|c| *c != req.cfg_scale) {
        // Forge's key for its `hr_cfg`.
        fields.set_extra("Hires CFG Scale", python_float_repr(cfg));
    }
}

fn infotext(req: &GenerationRequest, seeds: ImageSeeds, prepared: &Prepared, unsupported: &[(String, String)], inputs: &PreparedInputs) -> InfotextFields {
    let mut fields = InfotextFields {
        prompt: req.prompt.clone(),
        negative_prompt: req.negative_prompt.clone(),
        steps: req.steps,
        sampler_name: req.sampler.a1111_name().to_string(),
        schedule_label: req.schedule.label().to_string(),
        cfg_scale: req.cfg_scale,
        seed: seeds.seed,
        width: req.width,
        height: req.height,
        model_hash: prepared.model_hash.clone(),
        model_name: Some(prepared.model_name.clone()),
        clip_skip: req.clip_skip,
        denoising_strength: req.init_image.as_ref().map(|i| i.strength).or(req.hires.as_ref().map(|h| h.denoising_strength)),
        rng_label: rng_label(req.rng),
        variation: req.variation.zip(seeds.subseed).map(|(v, subseed)| VariationSeed { seed: subseed, strength: v.strength }),
        extra: Vec::new(),
        version: Some(VERSION.to_string()),
    };
    if let Some((w, h)) = req.variation.and_then(|v| v.resize_from) {
        fields.set_extra("Seed resize from", format!("{w}x{h}"));
    }
    if let Some(hires) = &req.hires {
        hires_infotext(&mut fields, req, hires);
    }
    // A1111 adds the mask entries while preparing the init image, before extra networks load.
    for (key, value) in req.infotext_extra.iter().cloned().chain(inputs.infotext_entries()) {
        fields.set_extra(key, value);
    }
    for (key, value) in prepared.infotext_extra.iter().chain(unsupported) {
        fields.set_extra(key.clone(), value.clone());
    }
    fields
}

/// A resident model for a library entry: A1111 names it by file stem and short hash.
pub fn resident_from_entry(entry: &CheckpointEntry, model: SdModel) -> ResidentModel {
    ResidentModel::new(entry.path.clone(), entry.title.clone(), entry.stem(), Some(entry.hash.clone()), model)
}

/// Infotext entries (also logged) for the prompt's extra networks of kinds this server does not
/// apply (`<hypernet:…>`, unknown kinds): A1111 removes every `<kind:…>` tag from the prompt, so a
/// tag that does nothing must at least be visible. LoRA tags become LoRAs of the job.
fn unsupported_network_warnings(extracted: &ExtractedPrompt) -> Vec<(String, String)> {
    let mut warnings = Vec::new();
    if !extracted.unsupported.is_empty() {
        let tags: Vec<String> = extracted.unsupported.iter().map(|tag| format!("{}:{}", tag.kind, tag.name)).collect();
        warnings.push(("Extra networks not supported".to_string(), tags.join(", ")));
    }
    for (what, names) in &warnings {
        tracing::warn!(names = %names, "{what}");
    }
    warnings
}

/// The last path or repo component, as A1111 names a checkpoint without extension.
pub fn model_display_name(id: &str) -> String {
    let last = id.trim_end_matches('/').rsplit('/').next().unwrap_or(id);
    last.strip_suffix(".safetensors").unwrap_or(last).to_string()
}

fn unavailable(message: String) -> RunError {
    RunError::Failed(JobError::ModelUnavailable(message))
}

fn invalid(field: &str, message: String) -> RunError {
    RunError::Failed(JobError::InvalidRequest { field: field.to_string(), message })
}

fn make_preview(latents: &Tensor, factors: &LatentRgbFactors, req: &GenerationRequest, step: u32, total: u32) -> Option<PreviewImage> {
    let rgb = latent_preview(latents, factors, Some((req.width, req.height))).ok()?;
    let image = RgbImage { width: rgb.width(), height: rgb.height(), pixels: rgb.into_raw() };
    let png = encode_png(&image, None).ok()?;
    Some(PreviewImage { step, total, png, width: image.width, height: image.height })
}

/// A1111's random seed range: `random.randrange(4294967294)`.
fn random_seed() -> u64 {
    rand::random_range(0..4_294_967_294u64)
}
