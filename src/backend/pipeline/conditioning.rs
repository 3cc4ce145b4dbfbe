//! Prompt → the UNet's text conditioning, batched `[uncond, cond]` under classifier-free guidance
//! (diffusers' order), plus SDXL's pooled and time-id conditioning.
//!
//! Prompts are read as A1111 reads them (see `backend::prompt`): attention weights, `BREAK`,
//! 75-token chunks, prompt editing and alternation. Editing makes the conditioning change
//! during sampling, so the result is a short list of stages that the denoise loop looks up by
//! step. A plain prompt of at most 75 tokens gives exactly diffusers' embeddings.

use std::sync::Arc;

use candle_core::{Result, Tensor};

use super::model::{Family, SdModel};
use crate::backend::models::unet::SdxlConditioning;
use crate::backend::prompt::embeddings::TextualInversion;
use crate::backend::prompt::schedule::{align_schedules, prompt_schedule};
use crate::backend::prompt::weighted::{
    encode_texts, pad_with_empty_chunks, EncodedText, EncoderEmbeddings, EncoderLayer, WeightedEncoder,
};

/// What the UNet reads besides the latents and the timestep, for some stretch of steps.
pub struct StepConditioning {
    /// `[B, tokens, dim]`: `[uncond, cond]` when guided, `[cond]` otherwise; tokens = 77 · chunks.
    pub context: Tensor,
    pub sdxl: Option<SdxlConditioning>,
}

/// The text conditioning of a whole run.
pub struct TextConditioning {
    /// Distinct conditionings, in order of first use.
    stages: Vec<StepConditioning>,
    /// `(last 0-based denoiser step, index into stages)`, ascending; never empty.
    schedule: Vec<(usize, usize)>,
    /// Classifier-free guidance is on (guidance scale > 1, as diffusers decides).
    pub guided: bool,
    /// Indices into [`PromptPair::embeddings`] of the embeddings the prompts used: the
    /// prompt's first, then the negative prompt's (each once, in order of first use).
    pub used_embeddings: Vec<usize>,
}

impl TextConditioning {
    /// The conditioning for 0-based denoiser step `step` (steps past the schedule keep the last).
    pub fn at_step(&self, step: usize) -> &StepConditioning {
        let entry = self
            .schedule
            .iter()
            .position(|(end, _)| step <= *end)
            .unwrap_or(self.schedule.len() - 1);
        &self.stages[self.schedule[entry].1]
    }

    /// How many different conditionings the run switches between (1 without prompt editing).
    pub fn stage_count(&self) -> usize {
        self.stages.len()
    }
}

/// What to condition on for one image.
#[derive(Default)]
pub struct PromptPair<'a> {
    /// The prompt with extra-network tags already removed (`prompt::lora_tags`).
    pub prompt: &'a str,
    pub negative_prompt: &'a str,
    /// A1111 clip skip (1 = last layer). SD 1.x/2.x; SDXL only with `sdxl_clip_l_skip`.
    pub clip_skip: u32,
    /// A1111's `sdxl_clip_l_skip`: SDXL's CLIP-L reads the layer `clip_skip` selects (not
    /// normalised) instead of the penultimate one. OpenCLIP-G stays on its penultimate layer.
    pub sdxl_clip_l_skip: bool,
    pub guidance_scale: f64,
    /// Image size, for SDXL's `add_time_ids`.
    pub width: u32,
    pub height: u32,
    /// Denoiser calls that prompt-editing steps refer to: the sampler's full timestep count
    /// (A1111 counts img2img edits against the full schedule too).
    pub steps: usize,
    /// Textual-inversion embeddings the prompts may name, fitted to this model.
    pub embeddings: &'a [Arc<TextualInversion>],
}

pub fn encode_prompts(model: &SdModel, p: &PromptPair<'_>) -> Result<TextConditioning> {
    let guided = p.guidance_scale > 1.0;
    let encoders = weighted_encoders(model, p, p.embeddings);
    let mut cond = ScheduledEncoding::encode(&encoders, p.prompt, p.steps)?;
    let mut uncond = if !guided {
        None
    } else if model.family == Family::Sdxl
        && p.negative_prompt.is_empty()
        && model.force_zeros_for_empty_prompt
    {
        Some(cond.zeros(p.steps)?)
    } else {
        Some(ScheduledEncoding::encode(&encoders, p.negative_prompt, p.steps)?)
    };
    if let Some(uncond) = uncond.as_mut() {
        pad_to_same_length(&encoders, &mut cond, uncond)?;
    }

    let uncond_ends = uncond.as_ref().map_or_else(|| cond.ends.clone(), |u| u.ends.clone());
    let mut keys: Vec<(Option<usize>, usize)> = Vec::new();
    let mut schedule = Vec::new();
    for (end, cond_entry, uncond_entry) in align_schedules(&cond.ends, &uncond_ends) {
        let key = (uncond.as_ref().map(|u| u.text_of_entry[uncond_entry]), cond.text_of_entry[cond_entry]);
        let stage = match keys.iter().position(|k| *k == key) {
            Some(stage) => stage,
            None => {
                keys.push(key);
                keys.len() - 1
            }
        };
        schedule.push((end, stage));
    }
    let stages = keys
        .iter()
        .map(|(uncond_text, cond_text)| {
            let uncond_text = match (uncond_text, &uncond) {
                (Some(index), Some(u)) => Some(&u.texts[*index]),
                _ => None,
            };
            step_conditioning(model, p, uncond_text, &cond.texts[*cond_text])
        })
        .collect::<Result<Vec<_>>>()?;
    let mut used_embeddings = cond.used_embeddings();
    for index in uncond.as_ref().map(ScheduledEncoding::used_embeddings).unwrap_or_default() {
        if !used_embeddings.contains(&index) {
            used_embeddings.push(index);
        }
    }
    Ok(TextConditioning { stages, schedule, guided, used_embeddings })
}

fn weighted_encoders<'a>(
    model: &'a SdModel,
    p: &PromptPair<'_>,
    embeddings: &'a [Arc<TextualInversion>],
) -> Vec<WeightedEncoder<'a>> {
    let clip_skip = p.clip_skip.max(1) as usize;
    match (model.family, &model.second) {
        (Family::Sdxl, Some(second)) => vec![
            WeightedEncoder {
                tokenizer: &model.tokenizer,
                encoder: &model.text_encoder,
                // A1111's FrozenCLIPEmbedderForSDXLWithCustomWords: `hidden_states[-clip_skip]`
                // with the option on, else its configured penultimate layer.
                layer: if p.sdxl_clip_l_skip { EncoderLayer::Hidden(clip_skip) } else { EncoderLayer::Penultimate },
                embeddings: EncoderEmbeddings::new(&model.tokenizer, embeddings, 0),
            },
            WeightedEncoder {
                tokenizer: &second.tokenizer,
                encoder: &second.encoder,
                layer: EncoderLayer::Penultimate,
                embeddings: EncoderEmbeddings::new(&second.tokenizer, embeddings, 1),
            },
        ],
        _ => vec![WeightedEncoder {
            tokenizer: &model.tokenizer,
            encoder: &model.text_encoder,
            layer: EncoderLayer::ClipSkip(clip_skip),
            embeddings: EncoderEmbeddings::new(&model.tokenizer, embeddings, 0),
        }],
    }
}

/// One side (prompt or negative prompt) encoded over its editing schedule.
struct ScheduledEncoding {
    /// `end_at_step` of each schedule entry.
    ends: Vec<usize>,
    /// Which of `texts` each entry uses: alternation repeats texts, which are encoded once.
    /// (A1111 encodes every entry, repeats included, and takes the emphasis mean over all of
    /// them; that only differs when a weighted prompt repeats alternatives unevenly.)
    text_of_entry: Vec<usize>,
    /// Every distinct text, all with the same number of tokens.
    texts: Vec<EncodedText>,
}

impl ScheduledEncoding {
    fn encode(encoders: &[WeightedEncoder<'_>], prompt: &str, steps: usize) -> Result<Self> {
        let schedule = prompt_schedule(prompt, steps);
        let mut distinct: Vec<&str> = Vec::new();
        let mut text_of_entry = Vec::with_capacity(schedule.len());
        for entry in &schedule {
            let index = match distinct.iter().position(|text| *text == entry.text) {
                Some(index) => index,
                None => {
                    distinct.push(&entry.text);
                    distinct.len() - 1
                }
            };
            text_of_entry.push(index);
        }
        Ok(Self {
            ends: schedule.iter().map(|entry| entry.end_at_step).collect(),
            text_of_entry,
            texts: encode_texts(encoders, &distinct)?,
        })
    }

    /// diffusers' SDXL uncond for an empty negative prompt: zeros shaped like this side.
    fn zeros(&self, steps: usize) -> Result<Self> {
        let Some(first) = self.texts.first() else {
            candle_core::bail!("no encoded prompt to shape the zero conditioning after");
        };
        Ok(Self {
            ends: vec![steps],
            text_of_entry: vec![0],
            texts: vec![EncodedText {
                hidden: first.hidden.zeros_like()?,
                pooled: first.pooled.zeros_like()?,
                embeddings: Vec::new(),
            }],
        })
    }

    /// The embeddings any of the texts used, each once, in order of first use.
    fn used_embeddings(&self) -> Vec<usize> {
        let mut used = Vec::new();
        for index in self.texts.iter().flat_map(|text| &text.embeddings) {
            if !used.contains(index) {
                used.push(*index);
            }
        }
        used
    }

    fn tokens(&self) -> Result<usize> {
        match self.texts.first() {
            Some(text) => text.hidden.dim(1),
            None => Ok(0),
        }
    }
}

/// A1111's `pad_cond_uncond`: the side with fewer chunks gets empty-prompt chunks appended, so
/// both fit one UNet batch.
fn pad_to_same_length(
    encoders: &[WeightedEncoder<'_>],
    cond: &mut ScheduledEncoding,
    uncond: &mut ScheduledEncoding,
) -> Result<()> {
    let (cond_tokens, uncond_tokens) = (cond.tokens()?, uncond.tokens()?);
    if cond_tokens == uncond_tokens {
        return Ok(());
    }
    let tokens = cond_tokens.max(uncond_tokens);
    let shorter = if cond_tokens < tokens { cond } else { uncond };
    let empty = encode_texts(encoders, &[""])?;
    let Some(empty) = empty.first() else {
        candle_core::bail!("the empty prompt did not encode");
    };
    for text in &mut shorter.texts {
        text.hidden = pad_with_empty_chunks(&text.hidden, &empty.hidden, tokens)?;
    }
    Ok(())
}

fn step_conditioning(
    model: &SdModel,
    p: &PromptPair<'_>,
    uncond: Option<&EncodedText>,
    cond: &EncodedText,
) -> Result<StepConditioning> {
    let parts: Vec<&EncodedText> = uncond.into_iter().chain(std::iter::once(cond)).collect();
    let context = Tensor::cat(&parts.iter().map(|e| &e.hidden).collect::<Vec<_>>(), 0)?.to_device(&model.device)?;
    let sdxl = if model.family == Family::Sdxl && model.second.is_some() {
        let text_embeds = Tensor::cat(&parts.iter().map(|e| &e.pooled).collect::<Vec<_>>(), 0)?;
        let (h, w) = (p.height as f32, p.width as f32);
        // original_size + crops_coords_top_left + target_size, the same row for uncond and cond.
        let row = Tensor::new(&[[h, w, 0.0, 0.0, h, w]], context.device())?;
        let time_ids = row.repeat((parts.len(), 1))?.to_dtype(context.dtype())?;
        Some(SdxlConditioning { text_embeds, time_ids })
    } else {
        None
    };
    Ok(StepConditioning { context, sdxl })
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod embedding_tests;
