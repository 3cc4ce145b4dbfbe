//! A1111's long-prompt tokenization: weighted prompt pieces become chunks of 75 tokens, each
//! sent to CLIP as `BOS + 75 + EOS` (77 positions) with a weight per position. A chunk that
//! fills up while a comma sits within its last 20 tokens moves the text after that comma to the
//! next chunk, so phrases are not cut in half; `BREAK` closes the current chunk early.
//! A textual-inversion embedding named in a piece takes as many positions as it has vectors,
//! all in one chunk (see `prompt::embeddings`).

use super::embeddings::{EmbeddingTriggers, Trigger, PLACEHOLDER_ID};
use super::parser::PromptPart;
use crate::backend::models::tokenizer::ClipTokenizer;

/// Prompt tokens per chunk.
pub const CHUNK_TOKENS: usize = 75;
/// Positions per chunk as the text encoder sees them: BOS + 75 + EOS.
pub const CHUNK_LENGTH: usize = CHUNK_TOKENS + 2;
/// A1111's `comma_padding_backtrack` default: how far back a comma may sit to pull the text
/// after it into the next chunk.
const COMMA_BACKTRACK: usize = 20;

/// One chunk, ready for the text encoder: `ids` and `weights` both hold [`CHUNK_LENGTH`] items.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenChunk {
    pub ids: Vec<u32>,
    /// Emphasis multiplier per position; BOS, EOS and padding are 1.0.
    pub weights: Vec<f32>,
    /// Textual-inversion embeddings placed in this chunk, in order.
    pub embeddings: Vec<EmbeddingSlot>,
}

/// Where an embedding's vectors go in a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmbeddingSlot {
    /// Position in [`TokenChunk::ids`] of its first vector (BOS is position 0).
    pub position: usize,
    /// Index into the embeddings the triggers were built from.
    pub embedding: usize,
}

impl TokenChunk {
    /// True when no position carries emphasis, so encoding can skip the reweighting.
    pub fn is_unweighted(&self) -> bool {
        self.weights.iter().all(|w| *w == 1.0)
    }
}

/// The special ids a chunk is built from.
#[derive(Debug, Clone, Copy)]
struct ChunkIds {
    bos: u32,
    eos: u32,
    pad: u32,
    comma: Option<u32>,
}

impl ChunkIds {
    fn of(tokenizer: &ClipTokenizer) -> Self {
        let comma = match tokenizer.encode_words(",").as_slice() {
            [id] => Some(*id),
            _ => None,
        };
        Self {
            bos: tokenizer.bos_id(),
            eos: tokenizer.eos_id(),
            pad: tokenizer.pad_id(),
            comma,
        }
    }

    /// Up to 75 tokens → 77: filled with EOS to 75, wrapped in BOS/EOS. A tokenizer whose pad
    /// is not EOS (SD 2.x, SDXL's second one) pads everything after the first EOS instead,
    /// which is also what diffusers feeds those encoders.
    fn finish(&self, mut ids: Vec<u32>, mut weights: Vec<f32>, mut embeddings: Vec<EmbeddingSlot>) -> TokenChunk {
        ids.resize(CHUNK_TOKENS, self.eos);
        weights.resize(CHUNK_TOKENS, 1.0);
        ids.insert(0, self.bos);
        weights.insert(0, 1.0);
        ids.push(self.eos);
        weights.push(1.0);
        if self.pad != self.eos {
            if let Some(first_eos) = ids.iter().position(|id| *id == self.eos) {
                ids.iter_mut()
                    .skip(first_eos + 1)
                    .for_each(|id| *id = self.pad);
            }
        }
        // Slots were counted from the first prompt token; BOS now comes first.
        embeddings.iter_mut().for_each(|slot| slot.position += 1);
        TokenChunk { ids, weights, embeddings }
    }
}

/// The chunk of an empty prompt: what shorter prompts are padded with.
pub fn empty_chunk(tokenizer: &ClipTokenizer) -> TokenChunk {
    ChunkIds::of(tokenizer).finish(Vec::new(), Vec::new(), Vec::new())
}

/// Tokenizes every text piece on its own (as A1111 does, so `(a)(b)` merged by the parser is
/// one word but `a (b)` is two) and packs the tokens into chunks. Never returns zero chunks.
pub fn chunk_prompt(tokenizer: &ClipTokenizer, parts: &[PromptPart]) -> Vec<TokenChunk> {
    chunk_prompt_with_embeddings(tokenizer, parts, &EmbeddingTriggers::default())
}

/// [`chunk_prompt`] where the names in `triggers` become embedding slots (looked up inside each
/// piece's tokens, as A1111 does).
pub fn chunk_prompt_with_embeddings(
    tokenizer: &ClipTokenizer,
    parts: &[PromptPart],
    triggers: &EmbeddingTriggers,
) -> Vec<TokenChunk> {
    let special = ChunkIds::of(tokenizer);
    let mut builder = ChunkBuilder::new(special);
    for part in parts {
        match part {
            PromptPart::Break => builder.close_chunk(),
            PromptPart::Text { text, weight } => {
                // A1111 builds its weight tensor from these floats as float32.
                let weight = *weight as f32;
                let tokens = tokenizer.encode_words(text);
                let mut position = 0;
                while position < tokens.len() {
                    let token = tokens[position];
                    match triggers.find_at(&tokens, position) {
                        Some(trigger) => {
                            builder.push_embedding(token, trigger, weight);
                            position += trigger.ids.len();
                        }
                        None => {
                            builder.push(token, weight);
                            position += 1;
                        }
                    }
                }
            }
        }
    }
    builder.finish()
}

struct ChunkBuilder {
    special: ChunkIds,
    chunks: Vec<TokenChunk>,
    ids: Vec<u32>,
    weights: Vec<f32>,
    /// Embedding slots of the open chunk, positions counted without BOS.
    embeddings: Vec<EmbeddingSlot>,
    /// Position of the last comma in the open chunk.
    last_comma: Option<usize>,
}

impl ChunkBuilder {
    fn new(special: ChunkIds) -> Self {
        Self {
            special,
            chunks: Vec::new(),
            ids: Vec::with_capacity(CHUNK_TOKENS),
            weights: Vec::with_capacity(CHUNK_TOKENS),
            embeddings: Vec::new(),
            last_comma: None,
        }
    }

    fn close_chunk(&mut self) {
        let ids = std::mem::take(&mut self.ids);
        let weights = std::mem::take(&mut self.weights);
        let embeddings = std::mem::take(&mut self.embeddings);
        self.chunks.push(self.special.finish(ids, weights, embeddings));
        self.last_comma = None;
    }

    fn push(&mut self, token: u32, weight: f32) {
        self.make_room(token);
        self.ids.push(token);
        self.weights.push(weight);
    }

    /// An embedding whose name starts with `token`: its placeholders all go into one chunk,
    /// the next one if this one cannot hold them.
    fn push_embedding(&mut self, token: u32, trigger: &Trigger, weight: f32) {
        self.make_room(token);
        if self.ids.len() + trigger.vectors > CHUNK_TOKENS {
            self.close_chunk();
        }
        self.embeddings.push(EmbeddingSlot { position: self.ids.len(), embedding: trigger.embedding });
        self.ids.extend(std::iter::repeat_n(PLACEHOLDER_ID, trigger.vectors));
        self.weights.extend(std::iter::repeat_n(weight, trigger.vectors));
    }

    /// A1111's bookkeeping before it places the token at hand: remember commas, move the text
    /// after a recent comma out of a full chunk, and close a full chunk.
    fn make_room(&mut self, token: u32) {
        if Some(token) == self.special.comma {
            self.last_comma = Some(self.ids.len());
        } else if self.ids.len() == CHUNK_TOKENS {
            if let Some(comma) = self
                .last_comma
                .filter(|c| CHUNK_TOKENS - c <= COMMA_BACKTRACK)
            {
                let moved_ids = self.ids.split_off(comma + 1);
                let moved_weights = self.weights.split_off(comma + 1);
                // Embeddings after the comma move with their placeholders. (A1111 leaves them
                // in the old chunk, pointing at padding; an embedding is meant never to be
                // split from its positions, so they move here.)
                let split = self.embeddings.partition_point(|slot| slot.position <= comma);
                let mut moved_embeddings = self.embeddings.split_off(split);
                moved_embeddings.iter_mut().for_each(|slot| slot.position -= comma + 1);
                self.close_chunk();
                self.ids = moved_ids;
                self.weights = moved_weights;
                self.embeddings = moved_embeddings;
            }
        }
        // A comma that arrives on a full chunk starts the next one without being remembered
        // (closing the chunk forgets it): A1111 behaves the same.
        if self.ids.len() == CHUNK_TOKENS {
            self.close_chunk();
        }
    }

    fn finish(mut self) -> Vec<TokenChunk> {
        if !self.ids.is_empty() || self.chunks.is_empty() {
            self.close_chunk();
        }
        self.chunks
    }
}

#[cfg(test)]
mod tests;
