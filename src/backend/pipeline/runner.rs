//! The engine's `JobRunner` for Stable Diffusion: validates a request against the loaded model,
//! runs the pipeline once per image (image i: seed + i, its own generator), and reports steps,
//! previews and finished images.

use candle_core::Tensor;

use super::conditioning::{encode_prompts, PromptPair};
use super::denoise::loop_len;
use super::generate::{decode, generate_latents, internal, invalid, new_sampler, prepare_inputs, start_index, validate};
use super::model::{Family, SdModel};
use crate::backend::generation_engine::{JobContext, JobRunner, ModelInfo, RunError};
use crate::backend::image_io::{encode_image, encode_png};
use crate::backend::infotext::{format_infotext, rng_label, InfotextFields};
use crate::backend::preview::{latent_preview, LatentRgbFactors};
use crate::backend::prompt::lora_tags::{extract_extra_networks, ExtractedPrompt};
use crate::backend::request::{GeneratedImage, GenerationRequest, JobEvent, PreviewImage, PreviewPolicy, RgbImage};

/// Written as the infotext's `Version`.
const VERSION: &str = concat!("sd-worker-rbee v", env!("CARGO_PKG_VERSION"));

pub struct SdRunner {
    model: SdModel,
    /// First 10 hex digits of the UNet weights' sha256 (A1111's short model hash).
    model_hash: Option<String>,
}

impl SdRunner {
    pub fn new(model: SdModel, model_hash: Option<String>) -> Self {
        SdRunner { model, model_hash }
    }

    pub fn model(&self) -> &SdModel {
        &self.model
    }
}

impl JobRunner for SdRunner {
    fn model_id(&self) -> String {
        self.model.id.clone()
    }

    fn model_info(&self) -> Option<ModelInfo> {
        let m = &self.model;
        let (default_steps, default_cfg_scale) = if m.is_distilled() { (4, 1.0) } else { (20, 7.0) };
        Some(ModelInfo {
            id: m.id.clone(),
            name: model_display_name(&m.id),
            hash: self.model_hash.clone(),
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
        let req = ctx.request();
        validate(req, &self.model)?;
        let inputs = prepare_inputs(req)?;
        let seed = req.seed.unwrap_or_else(random_seed);
        let (per_image, schedule_steps) = {
            let sampler = new_sampler(req, &self.model)?;
            (loop_len(sampler.as_ref(), start_index(req, sampler.as_ref())), sampler.timesteps().len())
        };
        let extracted = extract_extra_networks(&req.prompt).map_err(|e| invalid("prompt", e.to_string()))?;
        let warnings = unapplied_network_warnings(&extracted);
        let total = (per_image * req.num_images as usize) as u32;
        ctx.emit(JobEvent::Started { seed, total_steps: total });
        let cond = encode_prompts(
            &self.model,
            &PromptPair {
                prompt: &extracted.prompt,
                negative_prompt: &req.negative_prompt,
                clip_skip: req.clip_skip,
                guidance_scale: req.cfg_scale,
                width: req.width,
                height: req.height,
                steps: schedule_steps,
            },
        )
        .map_err(internal)?;
        ctx.check_cancelled()?;
        for index in 0..req.num_images {
            let image_seed = seed.wrapping_add(u64::from(index));
            let steps_before = index as usize * per_image;
            let factors = if self.model.family == Family::Sdxl { LatentRgbFactors::SDXL } else { LatentRgbFactors::SD15 };
            let mut on_step = |done: usize, _of: usize, latents: &Tensor| -> bool {
                let step = (steps_before + done) as u32;
                ctx.emit(JobEvent::Step { step, total });
                if let PreviewPolicy::EveryNSteps(n) = req.preview {
                    if n > 0 && done % n as usize == 0 && done < per_image {
                        if let Some(preview) = make_preview(latents, &factors, req, step, total) {
                            ctx.emit(JobEvent::Preview(preview));
                        }
                    }
                }
                !ctx.is_cancelled()
            };
            let latents = generate_latents(&self.model, req, &inputs, &cond, image_seed, &mut on_step)?;
            let image = decode(&self.model, &latents).map_err(internal)?;
            let infotext = format_infotext(&self.infotext(req, image_seed, &warnings));
            let bytes = encode_image(&image, req.output_format, Some(&infotext)).map_err(|e| internal(e.to_string()))?;
            ctx.emit(JobEvent::Image(GeneratedImage {
                index,
                bytes,
                format: req.output_format,
                width: image.width,
                height: image.height,
                seed: image_seed,
                infotext,
            }));
            ctx.check_cancelled()?;
        }
        Ok(())
    }
}

impl SdRunner {
    fn infotext(&self, req: &GenerationRequest, seed: u64, warnings: &[(String, String)]) -> InfotextFields {
        InfotextFields {
            prompt: req.prompt.clone(),
            negative_prompt: req.negative_prompt.clone(),
            steps: req.steps,
            sampler_name: req.sampler.a1111_name().to_string(),
            schedule_label: req.schedule.label().to_string(),
            cfg_scale: req.cfg_scale,
            seed,
            width: req.width,
            height: req.height,
            model_hash: self.model_hash.clone(),
            model_name: Some(model_display_name(&self.model.id)),
            clip_skip: req.clip_skip,
            denoising_strength: req.init_image.as_ref().map(|i| i.strength),
            rng_label: rng_label(req.rng),
            variation: None,
            extra: warnings.to_vec(),
            version: Some(VERSION.to_string()),
        }
    }
}

/// Infotext entries (also logged) for the prompt's extra networks that this job does not apply:
/// A1111 removes every `<kind:…>` tag from the prompt, so a tag that does nothing must at least
/// be visible. LoRA application is not implemented yet, so every LoRA is listed.
fn unapplied_network_warnings(extracted: &ExtractedPrompt) -> Vec<(String, String)> {
    let mut warnings = Vec::new();
    if !extracted.loras.is_empty() {
        let names: Vec<&str> = extracted.loras.iter().map(|lora| lora.name.as_str()).collect();
        warnings.push(("Lora not applied".to_string(), names.join(", ")));
    }
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
fn model_display_name(id: &str) -> String {
    id.trim_end_matches('/').rsplit('/').next().unwrap_or(id).to_string()
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

