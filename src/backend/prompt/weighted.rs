//! Weighted, chunked prompt encoding as A1111's `FrozenCLIPEmbedderWithCustomWords` does it:
//! every 77-token chunk goes through the text encoder on its own, the output is multiplied by
//! the per-token weights and rescaled to its original mean (A1111's default "Original"
//! emphasis), and the chunks are concatenated along the token axis.
//!
//! A prompt without attention syntax that fits one chunk produces exactly the ids diffusers
//! uses, and unweighted chunks skip the reweighting, so such prompts encode bit for bit as
//! before.

use std::sync::Arc;

use candle_core::{DType, Result, Tensor, D};

use super::chunking::{chunk_prompt_with_embeddings, empty_chunk, TokenChunk, CHUNK_LENGTH};
use super::embeddings::{EmbeddingTriggers, TextualInversion};
use super::parser::parse_prompt_attention;
use crate::backend::models::clip_text::{ClipTextModel, TokenOverride};
use crate::backend::models::text_conditioning::{clip_skipped_state, hidden_from_end, penultimate};
use crate::backend::models::tokenizer::ClipTokenizer;

/// Which hidden state of the encoder conditions the UNet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncoderLayer {
    /// SD 1.x/2.x: A1111 clip skip (1 = last layer after the final LayerNorm; `k` = `k - 1`
    /// layers earlier, normalised).
    ClipSkip(usize),
    /// SDXL: the penultimate layer, not normalised.
    Penultimate,
    /// SDXL's CLIP-L under A1111's `sdxl_clip_l_skip`: `hidden_states[-k]`, not normalised
    /// (1 = the last layer before the final LayerNorm, 2 = the penultimate layer, ...).
    Hidden(usize),
}

/// Rows per text-encoder pass when several texts are encoded together.
const ENCODER_BATCH: usize = 8;

/// One text encoder with its tokenizer and the layer to read.
#[derive(Clone)]
pub struct WeightedEncoder<'a> {
    pub tokenizer: &'a ClipTokenizer,
    pub encoder: &'a ClipTextModel,
    pub layer: EncoderLayer,
    pub embeddings: EncoderEmbeddings<'a>,
}

/// The textual-inversion embeddings a prompt may name, as one encoder uses them.
#[derive(Clone, Default)]
pub struct EncoderEmbeddings<'a> {
    embeddings: &'a [Arc<TextualInversion>],
    /// Which of each embedding's vector sets this encoder takes.
    encoder_index: usize,
    triggers: EmbeddingTriggers,
}

impl<'a> EncoderEmbeddings<'a> {
    /// `embeddings` for the encoder at `encoder_index` of the model, names in `tokenizer`'s ids.
    pub fn new(tokenizer: &ClipTokenizer, embeddings: &'a [Arc<TextualInversion>], encoder_index: usize) -> Self {
        Self { embeddings, encoder_index, triggers: EmbeddingTriggers::new(tokenizer, embeddings) }
    }

    fn vectors(&self, embedding: usize) -> Result<&'a Tensor> {
        let embeddings: &'a [Arc<TextualInversion>] = self.embeddings;
        match embeddings.get(embedding).and_then(|e| e.vectors.get(self.encoder_index)) {
            Some(vectors) => Ok(vectors),
            None => candle_core::bail!("embedding {embedding} has no vectors for text encoder {}", self.encoder_index),
        }
    }
}

/// One text's encoding.
#[derive(Debug, Clone)]
pub struct EncodedText {
    /// `[1, 77 · chunks, hidden]`.
    pub hidden: Tensor,
    /// `[1, pooled_dim]`: the encoder's pooled output for the first chunk (what SDXL uses).
    pub pooled: Tensor,
    /// Indices of the textual-inversion embeddings the text used, in order of first use.
    pub embeddings: Vec<usize>,
}

impl WeightedEncoder<'_> {
    /// Attention-parsed and chunked `text`, at least one chunk.
    pub fn chunk(&self, text: &str) -> Vec<TokenChunk> {
        chunk_prompt_with_embeddings(self.tokenizer, &parse_prompt_attention(text), &self.embeddings.triggers)
    }

    /// The token-embedding overrides of a batch of chunks (row = index in `rows`).
    fn overrides<'v>(&'v self, rows: &[&TokenChunk]) -> Result<Vec<TokenOverride<'v>>> {
        let mut overrides = Vec::new();
        for (row, chunk) in rows.iter().enumerate() {
            for slot in &chunk.embeddings {
                overrides.push(TokenOverride { row, position: slot.position, vectors: self.embeddings.vectors(slot.embedding)? });
            }
        }
        Ok(overrides)
    }

    /// Encodes several chunked texts together, each padded with empty-prompt chunks to
    /// `chunk_count`. Chunk `i` of every text goes through the encoder as one batch and the
    /// emphasis mean is taken over that batch, as in A1111 (which encodes a prompt's editing
    /// variants together).
    pub fn encode(
        &self,
        texts: &[Vec<TokenChunk>],
        chunk_count: usize,
    ) -> Result<Vec<EncodedText>> {
        if texts.is_empty() || chunk_count == 0 {
            candle_core::bail!("nothing to encode");
        }
        let empty = empty_chunk(self.tokenizer);
        let mut hidden_per_text: Vec<Vec<Tensor>> =
            vec![Vec::with_capacity(chunk_count); texts.len()];
        let mut pooled_per_text: Vec<Tensor> = Vec::with_capacity(texts.len());
        for index in 0..chunk_count {
            let batch: Vec<&TokenChunk> = texts
                .iter()
                .map(|chunks| chunks.get(index).unwrap_or(&empty))
                .collect();
            // The encoder keeps every layer's output, so many editing variants go through it a
            // few at a time; only the selected layer is kept for the batch-wide emphasis.
            let mut selected = Vec::with_capacity(batch.len().div_ceil(ENCODER_BATCH));
            for rows in batch.chunks(ENCODER_BATCH) {
                let ids: Vec<u32> = rows
                    .iter()
                    .flat_map(|chunk| chunk.ids.iter().copied())
                    .collect();
                let ids = Tensor::from_vec(ids, (rows.len(), CHUNK_LENGTH), self.encoder.device())?;
                let output = self.encoder.forward_with_overrides(&ids, &self.overrides(rows)?)?;
                if index == 0 {
                    for row in 0..rows.len() {
                        pooled_per_text.push(output.pooled.narrow(0, row, 1)?);
                    }
                }
                selected.push(match self.layer {
                    EncoderLayer::ClipSkip(skip) => clip_skipped_state(self.encoder, output, skip)?,
                    EncoderLayer::Penultimate => penultimate(&output.hidden_states)?,
                    EncoderLayer::Hidden(from_end) => hidden_from_end(&output.hidden_states, from_end)?,
                });
            }
            let hidden = if selected.len() == 1 {
                selected.remove(0)
            } else {
                Tensor::cat(&selected, 0)?
            };
            let hidden = apply_emphasis(&hidden, &batch)?;
            for (row, chunks) in hidden_per_text.iter_mut().enumerate() {
                chunks.push(hidden.narrow(0, row, 1)?);
            }
        }
        hidden_per_text
            .into_iter()
            .zip(pooled_per_text)
            .zip(texts)
            .map(|((chunks, pooled), text_chunks)| {
                Ok(EncodedText {
                    hidden: Tensor::cat(&chunks, 1)?,
                    pooled,
                    embeddings: used_embeddings(text_chunks),
                })
            })
            .collect()
    }
}

/// The embeddings `chunks` place, each once, in order of first use.
fn used_embeddings(chunks: &[TokenChunk]) -> Vec<usize> {
    let mut used = Vec::new();
    for slot in chunks.iter().flat_map(|chunk| &chunk.embeddings) {
        if !used.contains(&slot.embedding) {
            used.push(slot.embedding);
        }
    }
    used
}

/// A1111's "Original" emphasis over a batch `[B, 77, C]`: `z *= weights` per token, then
/// `z *= mean(z_before) / mean(z_after)` so the overall magnitude stays. Computed in f32 (the
/// weights are f32 in A1111 too) and returned in `hidden`'s dtype. A batch without weights is
/// returned untouched, which keeps plain prompts bit-identical.
pub fn apply_emphasis(hidden: &Tensor, chunks: &[&TokenChunk]) -> Result<Tensor> {
    if chunks.iter().all(|chunk| chunk.is_unweighted()) {
        return Ok(hidden.clone());
    }
    let (batch, tokens, _) = hidden.dims3()?;
    let weights: Vec<f32> = chunks
        .iter()
        .flat_map(|chunk| chunk.weights.iter().copied())
        .collect();
    if weights.len() != batch * tokens {
        candle_core::bail!(
            "{} weights for a [{batch}, {tokens}, _] batch",
            weights.len()
        );
    }
    let weights = Tensor::from_vec(weights, (batch, tokens, 1), hidden.device())?;
    let original = hidden.to_dtype(DType::F32)?;
    let original_mean = original.mean_all()?.to_scalar::<f32>()?;
    let weighted = original.broadcast_mul(&weights)?;
    let weighted_mean = weighted.mean_all()?.to_scalar::<f32>()?;
    let rescale = original_mean / weighted_mean;
    // A weighted mean of exactly zero would turn the conditioning into NaNs or infinities
    // (A1111 lets it); keep the plain multiplication instead.
    let rescale = if rescale.is_finite() { rescale } else { 1.0 };
    (weighted * f64::from(rescale))?.to_dtype(hidden.dtype())
}

/// Encodes texts with every encoder of a model (one for SD 1.x/2.x, two for SDXL) and joins
/// them: hidden states concatenated on the channel axis in encoder order, pooled output from
/// the last encoder (SDXL's `text_encoder_2`). All results have the same number of chunks:
/// the most any text needs under any of the tokenizers.
pub fn encode_texts(encoders: &[WeightedEncoder<'_>], texts: &[&str]) -> Result<Vec<EncodedText>> {
    let chunked: Vec<Vec<Vec<TokenChunk>>> = encoders
        .iter()
        .map(|encoder| texts.iter().map(|text| encoder.chunk(text)).collect())
        .collect();
    let chunk_count = chunked.iter().flatten().map(Vec::len).max().unwrap_or(1);
    let mut per_encoder = Vec::with_capacity(encoders.len());
    for (encoder, chunks) in encoders.iter().zip(&chunked) {
        per_encoder.push(encoder.encode(chunks, chunk_count)?);
    }
    let Some(last) = per_encoder.last() else {
        candle_core::bail!("no text encoder");
    };
    let mut joined = Vec::with_capacity(texts.len());
    for (index, last_encoded) in last.iter().enumerate() {
        let hidden: Vec<Tensor> = per_encoder
            .iter()
            .map(|encoded| encoded[index].hidden.clone())
            .collect();
        let mut embeddings: Vec<usize> = Vec::new();
        for used in per_encoder.iter().flat_map(|encoded| &encoded[index].embeddings) {
            if !embeddings.contains(used) {
                embeddings.push(*used);
            }
        }
        joined.push(EncodedText {
            hidden: if hidden.len() == 1 {
                hidden[0].clone()
            } else {
                Tensor::cat(&hidden, D::Minus1)?
            },
            pooled: last_encoded.pooled.clone(),
            embeddings,
        });
    }
    Ok(joined)
}

/// `hidden` `[B, 77·k, C]` extended to `tokens` with copies of `empty` `[1, 77, C]` (the encoded
/// empty prompt): A1111's `pad_cond_uncond`, so that prompt and negative prompt of different
/// lengths can share one UNet batch.
pub fn pad_with_empty_chunks(hidden: &Tensor, empty: &Tensor, tokens: usize) -> Result<Tensor> {
    let (batch, have, _) = hidden.dims3()?;
    let chunk = empty.dim(1)?;
    if have == tokens {
        return Ok(hidden.clone());
    }
    if tokens < have || chunk == 0 || !(tokens - have).is_multiple_of(chunk) {
        candle_core::bail!("cannot pad {have} tokens to {tokens} with {chunk}-token chunks");
    }
    let padding = empty.repeat((batch, (tokens - have) / chunk, 1))?;
    Tensor::cat(&[hidden, &padding.to_dtype(hidden.dtype())?], 1)
}

#[cfg(test)]
mod tests;
