//! Prompt → the UNet's text conditioning, batched `[uncond, cond]` under classifier-free guidance
//! (diffusers' order), plus SDXL's pooled and time-id conditioning.

use candle_core::{Result, Tensor};

use super::model::{Family, SdModel};
use crate::backend::models::text_conditioning::{encode_prompt, SdxlPromptEmbeds, SdxlTextEncoders};
use crate::backend::models::unet::SdxlConditioning;

/// Everything the UNet needs besides the latents and the timestep.
pub struct TextConditioning {
    /// `[B, tokens, dim]`: `[uncond, cond]` when guided, `[cond]` otherwise.
    pub context: Tensor,
    pub sdxl: Option<SdxlConditioning>,
    /// Classifier-free guidance is on (guidance scale > 1, as diffusers decides).
    pub guided: bool,
}

/// What to condition on for one image.
pub struct PromptPair<'a> {
    pub prompt: &'a str,
    pub negative_prompt: &'a str,
    /// A1111 clip skip (1 = last layer). SD 1.x/2.x only; SDXL always uses the penultimate layer.
    pub clip_skip: u32,
    pub guidance_scale: f64,
    /// Image size, for SDXL's `add_time_ids`.
    pub width: u32,
    pub height: u32,
}

pub fn encode_prompts(model: &SdModel, p: &PromptPair<'_>) -> Result<TextConditioning> {
    let guided = p.guidance_scale > 1.0;
    match (model.family, &model.second) {
        (Family::Sdxl, Some(second)) => {
            let encoders = SdxlTextEncoders {
                tokenizer: &model.tokenizer,
                encoder: &model.text_encoder,
                tokenizer_2: &second.tokenizer,
                encoder_2: &second.encoder,
            };
            let cond = encoders.encode_prompt(p.prompt)?;
            let mut parts: Vec<SdxlPromptEmbeds> = Vec::with_capacity(2);
            if guided {
                let uncond = if p.negative_prompt.is_empty() && model.force_zeros_for_empty_prompt {
                    cond.zeros_like()?
                } else {
                    encoders.encode_prompt(p.negative_prompt)?
                };
                parts.push(uncond);
            }
            parts.push(cond);
            let context = Tensor::cat(&parts.iter().map(|e| e.prompt_embeds.clone()).collect::<Vec<_>>(), 0)?;
            let text_embeds = Tensor::cat(&parts.iter().map(|e| e.pooled_prompt_embeds.clone()).collect::<Vec<_>>(), 0)?;
            let (h, w) = (p.height as f32, p.width as f32);
            // original_size + crops_coords_top_left + target_size, the same row for uncond and cond.
            let row = Tensor::new(&[[h, w, 0.0, 0.0, h, w]], context.device())?;
            let time_ids = row.repeat((parts.len(), 1))?.to_dtype(context.dtype())?;
            Ok(TextConditioning { context: context.to_device(&model.device)?, sdxl: Some(SdxlConditioning { text_embeds, time_ids }), guided })
        }
        _ => {
            let skip = p.clip_skip.max(1) as usize;
            let cond = encode_prompt(&model.tokenizer, &model.text_encoder, p.prompt, skip)?;
            let context = if guided {
                let uncond = encode_prompt(&model.tokenizer, &model.text_encoder, p.negative_prompt, skip)?;
                Tensor::cat(&[uncond, cond], 0)?
            } else {
                cond
            };
            Ok(TextConditioning { context, sdxl: None, guided })
        }
    }
}
