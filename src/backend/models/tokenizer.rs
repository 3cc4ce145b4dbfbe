//! CLIP's BPE tokenizer, behaving like transformers' `CLIPTokenizer` (the `tokenizers`-backed
//! one diffusers uses): NFC, whitespace collapsed, lowercase, special tokens split off, CLIP's
//! regex word split, byte-level BPE with `</w>`, wrapped in `<|startoftext|>` / `<|endoftext|>`.
//!
//! OpenAI's `simple_tokenizer` additionally runs `ftfy` and HTML-unescapes; transformers does
//! not, and diffusers feeds transformers' ids to the text encoders, so neither is done here.

mod bpe;
mod files;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use regex::Regex;
use unicode_normalization::UnicodeNormalization;

pub use files::SpecialTokens;

use crate::backend::models::error::ModelError;
use bpe::{bytes_to_unicode, BpeMerges, END_OF_WORD};
use files::{read_tokenizer_json, read_vocab_and_merges, VocabAndMerges};

/// CLIP's word split. Contractions first, then letter runs, single digits, and runs of
/// anything else that is not whitespace; whitespace is dropped.
const CLIP_WORD_PATTERN: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

/// Prompts are user input, so the per-word cache is emptied once it holds this many words
/// instead of growing without bound.
const WORD_CACHE_CAPACITY: usize = 100_000;

/// A piece of normalised text: either a special token (already an id) or plain text.
enum Segment<'a> {
    Special(u32),
    Text(&'a str),
}

#[derive(Debug)]
pub struct ClipTokenizer {
    vocab: HashMap<String, u32>,
    merges: BpeMerges,
    byte_chars: [char; 256],
    word_pattern: Regex,
    /// Tokens cut out of the text before BPE (transformers does this for every special token,
    /// which is how SDXL's `tokenizer_2` turns each "!" into its pad id 0), longest first so
    /// that a longer token wins over a prefix of it.
    split_tokens: Vec<(String, u32)>,
    bos_id: u32,
    eos_id: u32,
    pad_id: u32,
    unk_id: u32,
    model_max_length: usize,
    /// BPE ids per word: prompts repeat words heavily and BPE is the expensive part.
    word_cache: Mutex<HashMap<String, Vec<u32>>>,
}

impl ClipTokenizer {
    /// Loads a diffusers `tokenizer/` folder: `vocab.json` + `merges.txt` when present,
    /// otherwise `tokenizer.json`; special tokens and max length from the config files.
    pub fn from_dir(dir: &Path) -> Result<Self, ModelError> {
        let vocab_path = dir.join("vocab.json");
        let merges_path = dir.join("merges.txt");
        if vocab_path.is_file() && merges_path.is_file() {
            return Self::from_vocab_and_merges(
                &vocab_path,
                &merges_path,
                SpecialTokens::from_dir(dir)?,
            );
        }
        let json_path = dir.join("tokenizer.json");
        if json_path.is_file() {
            return Self::from_tokenizer_json(&json_path);
        }
        Err(ModelError::MissingFile { path: vocab_path })
    }

    pub fn from_vocab_and_merges(
        vocab_path: &Path,
        merges_path: &Path,
        special_tokens: SpecialTokens,
    ) -> Result<Self, ModelError> {
        let files = read_vocab_and_merges(vocab_path, merges_path)?;
        Self::build(files, special_tokens, vocab_path)
    }

    /// Loads an HF `tokenizer.json`. Its pad token (if it configures padding) and any
    /// `tokenizer_config.json` / `special_tokens_map.json` next to it are honoured.
    pub fn from_tokenizer_json(path: &Path) -> Result<Self, ModelError> {
        let (files, pad_token) = read_tokenizer_json(path)?;
        let mut special_tokens = SpecialTokens::default();
        if let Some(pad) = pad_token {
            special_tokens.pad = pad;
        }
        if let Some(dir) = path.parent() {
            special_tokens = special_tokens.overridden_from_dir(dir)?;
        }
        Self::build(files, special_tokens, path)
    }

    fn build(
        files: VocabAndMerges,
        special_tokens: SpecialTokens,
        source: &Path,
    ) -> Result<Self, ModelError> {
        let VocabAndMerges { vocab, merges } = files;
        let id_of = |token: &str, role: &str| {
            vocab.get(token).copied().ok_or_else(|| {
                ModelError::bad_config(source, format!("{role} token {token:?} not in vocabulary"))
            })
        };
        let bos_id = id_of(&special_tokens.bos, "bos")?;
        let eos_id = id_of(&special_tokens.eos, "eos")?;
        let pad_id = id_of(&special_tokens.pad, "pad")?;
        let unk_id = vocab.get(&special_tokens.unk).copied().unwrap_or(eos_id);

        let mut split_tokens: Vec<(String, u32)> = Vec::new();
        for (token, id) in [
            (&special_tokens.bos, bos_id),
            (&special_tokens.eos, eos_id),
            (&special_tokens.unk, unk_id),
            (&special_tokens.pad, pad_id),
        ] {
            if !token.is_empty() && !split_tokens.iter().any(|(t, _)| t == token) {
                split_tokens.push((token.clone(), id));
            }
        }
        split_tokens.sort_by_key(|(token, _)| std::cmp::Reverse(token.len()));

        let merges = BpeMerges::new(merges.iter().map(|(l, r)| (l.as_str(), r.as_str())), &vocab);
        if merges.len() == 0 {
            return Err(ModelError::bad_config(source, "no usable BPE merges"));
        }
        let word_pattern = Regex::new(CLIP_WORD_PATTERN)
            .map_err(|e| ModelError::bad_config(source, format!("word pattern: {e}")))?;

        Ok(Self {
            vocab,
            merges,
            byte_chars: bytes_to_unicode(),
            word_pattern,
            split_tokens,
            bos_id,
            eos_id,
            pad_id,
            unk_id,
            model_max_length: special_tokens.model_max_length,
            word_cache: Mutex::new(HashMap::new()),
        })
    }

    pub fn bos_id(&self) -> u32 {
        self.bos_id
    }

    pub fn eos_id(&self) -> u32 {
        self.eos_id
    }

    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// The sequence length the configs ask for (77 for every CLIP in SD).
    pub fn model_max_length(&self) -> usize {
        self.model_max_length
    }

    /// `<|startoftext|>` + ids + `<|endoftext|>`, neither truncated nor padded.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut ids = vec![self.bos_id];
        ids.extend(self.encode_words(text));
        ids.push(self.eos_id);
        ids
    }

    /// What the pipelines feed the text encoder: `<|startoftext|>`, the first
    /// `max_length - 2` ids, `<|endoftext|>`, then the pad id up to exactly `max_length`.
    pub fn encode_padded(&self, text: &str, max_length: usize) -> Vec<u32> {
        let mut words = self.encode_words(text);
        words.truncate(max_length.saturating_sub(2));
        let mut ids = Vec::with_capacity(max_length);
        ids.push(self.bos_id);
        ids.extend(words);
        ids.push(self.eos_id);
        ids.truncate(max_length);
        ids.resize(max_length, self.pad_id);
        ids
    }

    /// Ids of `text` without `<|startoftext|>` / `<|endoftext|>`, for callers that assemble
    /// sequences from fragments (prompt weighting, long-prompt chunking).
    pub fn encode_words(&self, text: &str) -> Vec<u32> {
        let normalized = normalize(text);
        let mut ids = Vec::new();
        for segment in self.split_special_tokens(&normalized) {
            match segment {
                Segment::Special(id) => ids.push(id),
                Segment::Text(text) => {
                    for word in self.word_pattern.find_iter(text) {
                        self.push_word_ids(word.as_str(), &mut ids);
                    }
                }
            }
        }
        ids
    }

    /// Cuts `text` at every occurrence of a split token, leftmost first.
    fn split_special_tokens<'a>(&self, text: &'a str) -> Vec<Segment<'a>> {
        let mut segments = Vec::new();
        let mut plain_start = 0;
        let mut pos = 0;
        while pos < text.len() {
            let rest = &text[pos..];
            let found = self
                .split_tokens
                .iter()
                .find(|(token, _)| rest.starts_with(token.as_str()));
            if let Some((token, id)) = found {
                if plain_start < pos {
                    segments.push(Segment::Text(&text[plain_start..pos]));
                }
                segments.push(Segment::Special(*id));
                pos += token.len();
                plain_start = pos;
            } else {
                pos += rest.chars().next().map_or(1, char::len_utf8);
            }
        }
        if plain_start < text.len() {
            segments.push(Segment::Text(&text[plain_start..]));
        }
        segments
    }

    fn push_word_ids(&self, word: &str, ids: &mut Vec<u32>) {
        // A poisoned lock only means another thread panicked mid-insert; the map is still a
        // valid cache, so keep using it.
        let mut cache = self
            .word_cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(cached) = cache.get(word) {
            ids.extend_from_slice(cached);
            return;
        }
        let word_ids = self.bpe_word(word);
        ids.extend_from_slice(&word_ids);
        if cache.len() >= WORD_CACHE_CAPACITY {
            cache.clear();
        }
        cache.insert(word.to_owned(), word_ids);
    }

    /// BPE ids of one word: its UTF-8 bytes as byte-characters, `</w>` on the last one.
    fn bpe_word(&self, word: &str) -> Vec<u32> {
        if let Some(&id) = self.vocab.get(word) {
            // Special tokens matched by the word pattern (e.g. "<|endoftext|>") map directly.
            if id == self.bos_id || id == self.eos_id {
                return vec![id];
            }
        }
        let bytes = word.as_bytes();
        let mut symbols = Vec::with_capacity(bytes.len());
        let mut symbol = String::new();
        for (i, &byte) in bytes.iter().enumerate() {
            symbol.clear();
            symbol.push(self.byte_chars[usize::from(byte)]);
            if i + 1 == bytes.len() {
                symbol.push_str(END_OF_WORD);
            }
            symbols.push(self.vocab.get(&symbol).copied().unwrap_or(self.unk_id));
        }
        self.merges.apply(symbols)
    }
}

/// transformers' normaliser for CLIP: NFC, every whitespace run to one space, lowercase.
fn normalize(text: &str) -> String {
    let composed: String = text.nfc().collect();
    composed
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

#[cfg(test)]
mod tests;
