//! Turning a prompt into the UNet's text conditioning, the way diffusers' SD 1.x/2.x and
//! SDXL pipelines do it.

use std::path::Path;

use candle_core::{Device, Result, Tensor};

use super::clip_text::{ClipTextModel, ClipTextOutput};
use super::error::{read_json, ModelError};
use super::tokenizer::ClipTokenizer;

/// `[1, L]` u32 ids, padded/truncated to the length both the tokenizer config and the
/// encoder's position table allow (77 for SD).
pub fn prompt_input_ids(
    tokenizer: &ClipTokenizer,
    encoder: &ClipTextModel,
    text: &str,
    device: &Device,
) -> Result<Tensor> {
    let length = tokenizer
        .model_max_length()
        .min(encoder.config().max_position_embeddings);
    let ids = tokenizer.encode_padded(text, length);
    Tensor::from_vec(ids, (1, length), device)
}

/// SD 1.x / 2.x conditioning `[1, 77, hidden]` for `text`. `clip_skip` counts like A1111:
/// 1 (or 0) = the last layer, `k` = the output `k - 1` layers before it.
pub fn encode_prompt(
    tokenizer: &ClipTokenizer,
    encoder: &ClipTextModel,
    text: &str,
    clip_skip: usize,
) -> Result<Tensor> {
    let input_ids = prompt_input_ids(tokenizer, encoder, text, encoder.device())?;
    encode_prompt_ids(encoder, &input_ids, clip_skip)
}

/// [`encode_prompt`] on ids the caller built (e.g. from a weighted-prompt parser).
pub fn encode_prompt_ids(
    encoder: &ClipTextModel,
    input_ids: &Tensor,
    clip_skip: usize,
) -> Result<Tensor> {
    let output = encoder.forward(input_ids)?;
    clip_skipped_state(encoder, output, clip_skip)
}

/// The hidden state `clip_skip` selects from one encoder pass (see [`encode_prompt`]).
pub fn clip_skipped_state(
    encoder: &ClipTextModel,
    output: ClipTextOutput,
    clip_skip: usize,
) -> Result<Tensor> {
    if clip_skip <= 1 {
        return Ok(output.last_hidden_state);
    }
    let layers = output.hidden_states.len() - 1;
    if clip_skip > layers {
        candle_core::bail!("clip_skip {clip_skip} exceeds the encoder's {layers} layers");
    }
    // A1111 and diffusers both apply the final LayerNorm to the earlier layer: SD was trained
    // on normalised states, so a skipped layer must be normalised the same way.
    let skipped = &output.hidden_states[output.hidden_states.len() - clip_skip];
    encoder.apply_final_layer_norm(skipped)
}

/// SDXL's conditioning for one prompt.
#[derive(Debug, Clone)]
pub struct SdxlPromptEmbeds {
    /// `[1, 77, hidden_1 + hidden_2]`: penultimate layer of each encoder (no final LayerNorm),
    /// `text_encoder` channels first.
    pub prompt_embeds: Tensor,
    /// `[1, projection_dim]`: `text_encoder_2`'s projected pooled output.
    pub pooled_prompt_embeds: Tensor,
}

impl SdxlPromptEmbeds {
    /// What SDXL uses for an absent negative prompt when `force_zeros_for_empty_prompt` is set.
    pub fn zeros_like(&self) -> Result<Self> {
        Ok(Self {
            prompt_embeds: self.prompt_embeds.zeros_like()?,
            pooled_prompt_embeds: self.pooled_prompt_embeds.zeros_like()?,
        })
    }
}

/// The two CLIPs of SDXL with their own tokenizers (`tokenizer_2` pads with "!").
pub struct SdxlTextEncoders<'a> {
    pub tokenizer: &'a ClipTokenizer,
    pub encoder: &'a ClipTextModel,
    pub tokenizer_2: &'a ClipTokenizer,
    pub encoder_2: &'a ClipTextModel,
}

impl SdxlTextEncoders<'_> {
    pub fn encode_prompt(&self, text: &str) -> Result<SdxlPromptEmbeds> {
        let ids = prompt_input_ids(self.tokenizer, self.encoder, text, self.encoder.device())?;
        let ids_2 = prompt_input_ids(self.tokenizer_2, self.encoder_2, text, self.encoder_2.device())?;
        self.encode_prompt_ids(&ids, &ids_2)
    }

    /// [`Self::encode_prompt`] on ids the caller built, one tensor per tokenizer.
    pub fn encode_prompt_ids(
        &self,
        input_ids: &Tensor,
        input_ids_2: &Tensor,
    ) -> Result<SdxlPromptEmbeds> {
        let output = self.encoder.forward(input_ids)?;
        let output_2 = self.encoder_2.forward(input_ids_2)?;
        let prompt_embeds = Tensor::cat(
            &[
                penultimate(&output.hidden_states)?,
                penultimate(&output_2.hidden_states)?,
            ],
            candle_core::D::Minus1,
        )?;
        Ok(SdxlPromptEmbeds {
            prompt_embeds,
            pooled_prompt_embeds: output_2.pooled,
        })
    }
}

/// SDXL's layer: the output of the second-to-last encoder layer, without the final LayerNorm.
pub fn penultimate(hidden_states: &[Tensor]) -> Result<Tensor> {
    match hidden_states {
        [.., penultimate, _] => Ok(penultimate.clone()),
        _ => candle_core::bail!("text encoder returned fewer than two hidden states"),
    }
}

/// `hidden_states[-from_end]` (HF order: `[0]` embeddings, `[k]` layer k, none normalised):
/// what A1111 reads from SDXL's CLIP-L when `sdxl_clip_l_skip` is on.
pub fn hidden_from_end(hidden_states: &[Tensor], from_end: usize) -> Result<Tensor> {
    if from_end == 0 || from_end > hidden_states.len() {
        candle_core::bail!("layer -{from_end} of a text encoder with {} hidden states", hidden_states.len());
    }
    Ok(hidden_states[hidden_states.len() - from_end].clone())
}

/// `force_zeros_for_empty_prompt` from a pipeline's `model_index.json`; diffusers' SDXL
/// pipeline defaults it to true when the file does not say.
pub fn force_zeros_for_empty_prompt(pipeline_dir: &Path) -> std::result::Result<bool, ModelError> {
    let index: serde_json::Value = read_json(&pipeline_dir.join("model_index.json"))?;
    Ok(index
        .get("force_zeros_for_empty_prompt")
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(true))
}

#[cfg(test)]
mod tests;
