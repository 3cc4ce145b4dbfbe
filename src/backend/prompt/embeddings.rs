//! Textual-inversion embeddings in prompts, as A1111's `EmbeddingDatabase` uses them.
//!
//! An embedding is named by its file stem. A1111 tokenizes that name and looks for the same
//! token sequence in each tokenized prompt piece, so the name works as a bare word or inside
//! `<name>`, `(name:1.2)` and the like (the `<`, `>` stay as tokens of their own), in any case,
//! and only as whole tokens. Where it matches, the embedding's N vectors take the place of the
//! name's tokens: N placeholder positions in the chunk (never split across chunks), carrying the
//! piece's emphasis weight, whose token embeddings are replaced by the vectors before the text
//! encoder adds position embeddings.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use candle_core::Tensor;

use super::chunking::CHUNK_TOKENS;
use super::parser::{parse_prompt_attention, PromptPart};
use crate::backend::models::tokenizer::ClipTokenizer;

/// The id A1111 puts at each embedding position before the vectors replace it. It never
/// reaches the encoder's output: the vectors overwrite its token embedding, and the pooled
/// output is read at the end-of-text token (the highest id), not here.
pub const PLACEHOLDER_ID: u32 = 0;

/// One embedding fitted to a model's text encoders.
#[derive(Debug, Clone)]
pub struct TextualInversion {
    /// The trigger: the file stem.
    pub name: String,
    /// A1111's short hash (`TI hashes` in the infotext).
    pub hash: String,
    /// `[vectors, width]` per text encoder of the model, in encoder order, all with the same
    /// number of vectors.
    pub vectors: Vec<Tensor>,
}

/// Why an embedding cannot be used with a model; A1111 skips such embeddings too.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmbeddingFitError {
    #[error("embedding '{name}' is for SDXL (clip_l + clip_g) and this model has one text encoder")]
    SdxlOnSingleEncoder { name: String },
    #[error("embedding '{name}' has no clip_l + clip_g pair, which SDXL's two text encoders need")]
    NotSdxl { name: String },
    #[error("embedding '{name}' has {found} vectors per token; this model's text encoder takes {expected}")]
    Width { name: String, found: usize, expected: usize },
    #[error("embedding '{name}' holds {found} tensors ({keys}); expected one")]
    Ambiguous { name: String, found: usize, keys: String },
    #[error("embedding '{name}' has {clip_l} clip_l vectors but {clip_g} clip_g vectors")]
    UnequalCounts { name: String, clip_l: usize, clip_g: usize },
    #[error("embedding '{name}' has {count} vectors; one prompt chunk holds 1 to {CHUNK_TOKENS}")]
    Count { name: String, count: usize },
    #[error("embedding '{name}': {message}")]
    Tensor { name: String, message: String },
}

impl TextualInversion {
    /// Picks the vectors of an embedding file (tensors by key: `clip_l`, `clip_g`,
    /// `emb_params`, ...) for encoders of `widths`: one encoder takes the file's single tensor,
    /// SDXL's two take `clip_l` and `clip_g`. A1111 checks the summed width; checking each
    /// encoder is the same for real models and also exact when both encoders are equally wide.
    pub fn fit(
        name: &str,
        hash: &str,
        tensors: &BTreeMap<String, Tensor>,
        widths: &[usize],
    ) -> Result<Self, EmbeddingFitError> {
        let name_owned = || name.to_string();
        let is_sdxl_file = tensors.contains_key("clip_l") && tensors.contains_key("clip_g");
        let chosen: Vec<Tensor> = match widths {
            [_] if is_sdxl_file => return Err(EmbeddingFitError::SdxlOnSingleEncoder { name: name_owned() }),
            [_] => match tensors.values().collect::<Vec<_>>().as_slice() {
                [only] => vec![as_matrix(name, only)?],
                all => {
                    return Err(EmbeddingFitError::Ambiguous {
                        name: name_owned(),
                        found: all.len(),
                        keys: tensors.keys().cloned().collect::<Vec<_>>().join(", "),
                    })
                }
            },
            [_, _] => match (tensors.get("clip_l"), tensors.get("clip_g")) {
                (Some(l), Some(g)) => vec![as_matrix(name, l)?, as_matrix(name, g)?],
                _ => return Err(EmbeddingFitError::NotSdxl { name: name_owned() }),
            },
            _ => {
                return Err(EmbeddingFitError::Tensor {
                    name: name_owned(),
                    message: format!("a model with {} text encoders", widths.len()),
                })
            }
        };
        for (tensor, expected) in chosen.iter().zip(widths) {
            let found = tensor.dims()[1];
            if found != *expected {
                return Err(EmbeddingFitError::Width { name: name_owned(), found, expected: *expected });
            }
        }
        let counts: Vec<usize> = chosen.iter().map(|t| t.dims()[0]).collect();
        if let [clip_l, clip_g] = counts.as_slice() {
            if clip_l != clip_g {
                return Err(EmbeddingFitError::UnequalCounts { name: name_owned(), clip_l: *clip_l, clip_g: *clip_g });
            }
        }
        let count = counts[0];
        if count == 0 || count > CHUNK_TOKENS {
            return Err(EmbeddingFitError::Count { name: name_owned(), count });
        }
        Ok(Self { name: name_owned(), hash: hash.to_string(), vectors: chosen })
    }

    pub fn vector_count(&self) -> usize {
        self.vectors.first().map_or(0, |t| t.dims()[0])
    }
}

/// A 2-D `[vectors, width]` view of a file's tensor; a single vector may be stored 1-D, which
/// A1111 unsqueezes.
fn as_matrix(name: &str, tensor: &Tensor) -> Result<Tensor, EmbeddingFitError> {
    let result = match tensor.rank() {
        1 => tensor.unsqueeze(0),
        2 => Ok(tensor.clone()),
        rank => {
            return Err(EmbeddingFitError::Tensor { name: name.to_string(), message: format!("a tensor of rank {rank}") })
        }
    };
    result.map_err(|e| EmbeddingFitError::Tensor { name: name.to_string(), message: e.to_string() })
}

/// An embedding's name in one tokenizer's ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trigger {
    pub ids: Vec<u32>,
    /// Index into the embeddings the triggers were built from.
    pub embedding: usize,
    /// Placeholder positions the embedding takes.
    pub vectors: usize,
}

/// Where embeddings start in a token stream, for one tokenizer (A1111's `ids_lookup`).
#[derive(Debug, Clone, Default)]
pub struct EmbeddingTriggers {
    /// By first token; longest name first, so `bad hands` wins over `bad`.
    by_first_token: HashMap<u32, Vec<Trigger>>,
}

impl EmbeddingTriggers {
    pub fn new(tokenizer: &ClipTokenizer, embeddings: &[Arc<TextualInversion>]) -> Self {
        let mut by_first_token: HashMap<u32, Vec<Trigger>> = HashMap::new();
        for (index, embedding) in embeddings.iter().enumerate() {
            let ids = tokenizer.encode_words(&embedding.name);
            let Some(first) = ids.first().copied() else { continue };
            by_first_token.entry(first).or_default().push(Trigger { ids, embedding: index, vectors: embedding.vector_count() });
        }
        for triggers in by_first_token.values_mut() {
            // Stable: equal lengths keep the order the embeddings came in, as in A1111.
            triggers.sort_by_key(|trigger| std::cmp::Reverse(trigger.ids.len()));
        }
        Self { by_first_token }
    }

    pub fn is_empty(&self) -> bool {
        self.by_first_token.is_empty()
    }

    /// The embedding whose name starts at `tokens[position]` (A1111's
    /// `find_embedding_at_position`).
    pub fn find_at(&self, tokens: &[u32], position: usize) -> Option<&Trigger> {
        let candidates = self.by_first_token.get(tokens.get(position)?)?;
        candidates.iter().find(|trigger| tokens[position..].starts_with(&trigger.ids))
    }
}

/// The tokens of a set of prompts, piece by piece as the chunker sees them: used to tell which
/// embeddings a job's prompts name before any is loaded.
pub struct PromptTokens {
    pieces: Vec<Vec<u32>>,
}

impl PromptTokens {
    /// `prompts` are plain texts (prompt-editing schedules already expanded).
    pub fn new<'a>(tokenizer: &ClipTokenizer, prompts: impl IntoIterator<Item = &'a str>) -> Self {
        let mut pieces = Vec::new();
        for prompt in prompts {
            for part in parse_prompt_attention(prompt) {
                if let PromptPart::Text { text, .. } = part {
                    pieces.push(tokenizer.encode_words(&text));
                }
            }
        }
        Self { pieces }
    }

    /// Whether `name` appears as A1111 would find it: its tokens inside one piece.
    pub fn mentions(&self, tokenizer: &ClipTokenizer, name: &str) -> bool {
        let ids = tokenizer.encode_words(name);
        !ids.is_empty() && self.pieces.iter().any(|piece| piece.windows(ids.len()).any(|w| w == ids.as_slice()))
    }
}

#[cfg(test)]
mod tests;
