//! Reading the tokenizer files diffusers and HF ship: `vocab.json` + `merges.txt`, or one
//! `tokenizer.json`, plus `tokenizer_config.json` / `special_tokens_map.json` for the special
//! tokens and the maximum length.

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;

use crate::backend::models::error::{read_json, ModelError};

/// Vocabulary and merges in rank order, whichever file format they came from.
#[derive(Debug)]
pub(super) struct VocabAndMerges {
    pub vocab: HashMap<String, u32>,
    pub merges: Vec<(String, String)>,
}

/// Special tokens by their text, and the sequence length the text encoder was trained on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecialTokens {
    pub bos: String,
    pub eos: String,
    pub unk: String,
    pub pad: String,
    pub model_max_length: usize,
}

impl Default for SpecialTokens {
    /// CLIP's own values (SD 1.x and SDXL `tokenizer`).
    fn default() -> Self {
        Self {
            bos: "<|startoftext|>".to_owned(),
            eos: "<|endoftext|>".to_owned(),
            unk: "<|endoftext|>".to_owned(),
            pad: "<|endoftext|>".to_owned(),
            model_max_length: 77,
        }
    }
}

/// Some configs say `model_max_length: 1e30` for "unbounded"; CLIP cannot go past its
/// position table anyway, so anything absurd falls back to the default.
const MAX_SANE_LENGTH: u64 = 1 << 16;

impl SpecialTokens {
    /// Defaults, overridden by `tokenizer_config.json`, then by `special_tokens_map.json`
    /// (transformers gives the map precedence). Missing files are fine.
    pub fn from_dir(dir: &Path) -> Result<Self, ModelError> {
        Self::default().overridden_from_dir(dir)
    }

    /// `self`, overridden by whichever of the two config files exist in `dir`.
    pub fn overridden_from_dir(mut self, dir: &Path) -> Result<Self, ModelError> {
        for name in ["tokenizer_config.json", "special_tokens_map.json"] {
            let path = dir.join(name);
            if path.is_file() {
                self.apply_json(&read_json(&path)?);
            }
        }
        Ok(self)
    }

    fn apply_json(&mut self, json: &Value) {
        let slots = [
            ("bos_token", &mut self.bos),
            ("eos_token", &mut self.eos),
            ("unk_token", &mut self.unk),
            ("pad_token", &mut self.pad),
        ];
        for (key, slot) in slots {
            if let Some(content) = json.get(key).and_then(token_content) {
                *slot = content;
            }
        }
        if let Some(length) = json.get("model_max_length").and_then(Value::as_u64) {
            if (2..=MAX_SANE_LENGTH).contains(&length) {
                self.model_max_length = usize::try_from(length).unwrap_or(77);
            }
        }
    }
}

/// A special token is written either as a plain string or as an AddedToken object.
fn token_content(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Object(fields) => fields.get("content")?.as_str().map(str::to_owned),
        _ => None,
    }
}

pub(super) fn read_vocab_and_merges(
    vocab_path: &Path,
    merges_path: &Path,
) -> Result<VocabAndMerges, ModelError> {
    let vocab: HashMap<String, u32> = read_json(vocab_path)?;
    let text = std::fs::read_to_string(merges_path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            ModelError::MissingFile {
                path: merges_path.to_path_buf(),
            }
        } else {
            ModelError::io(merges_path, e)
        }
    })?;
    let mut merges = Vec::new();
    for (line_number, line) in text.lines().enumerate() {
        // The first line is a `#version: 0.2` header; blank lines carry nothing.
        if line.starts_with("#version") || line.trim().is_empty() {
            continue;
        }
        let (left, right) = line.split_once(' ').ok_or_else(|| {
            ModelError::bad_config(
                merges_path,
                format!(
                    "line {}: expected two space-separated symbols",
                    line_number + 1
                ),
            )
        })?;
        merges.push((left.to_owned(), right.to_owned()));
    }
    Ok(VocabAndMerges { vocab, merges })
}

/// Reads `model.vocab` and `model.merges` of an HF `tokenizer.json` (merges either as
/// `"a b"` strings, the older format, or as `["a", "b"]` pairs), plus the added tokens, and the
/// pad token if the file configures padding.
pub(super) fn read_tokenizer_json(
    path: &Path,
) -> Result<(VocabAndMerges, Option<String>), ModelError> {
    let json: Value = read_json(path)?;
    let model = json
        .get("model")
        .ok_or_else(|| ModelError::bad_config(path, "no `model` section"))?;
    if let Some(kind) = model.get("type").and_then(Value::as_str) {
        if kind != "BPE" {
            return Err(ModelError::bad_config(
                path,
                format!("model type {kind}, expected BPE"),
            ));
        }
    }
    let vocab_json = model
        .get("vocab")
        .and_then(Value::as_object)
        .ok_or_else(|| ModelError::bad_config(path, "no `model.vocab` object"))?;
    let mut vocab = HashMap::with_capacity(vocab_json.len());
    for (token, id) in vocab_json {
        let id = id
            .as_u64()
            .and_then(|id| u32::try_from(id).ok())
            .ok_or_else(|| ModelError::bad_config(path, format!("bad id for token {token:?}")))?;
        vocab.insert(token.clone(), id);
    }
    // Added tokens live outside `model.vocab` in some files; they need ids all the same.
    for added in json
        .get("added_tokens")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let content = added.get("content").and_then(Value::as_str);
        let id = added
            .get("id")
            .and_then(Value::as_u64)
            .and_then(|id| u32::try_from(id).ok());
        if let (Some(content), Some(id)) = (content, id) {
            vocab.entry(content.to_owned()).or_insert(id);
        }
    }

    let merges_json = model
        .get("merges")
        .and_then(Value::as_array)
        .ok_or_else(|| ModelError::bad_config(path, "no `model.merges` array"))?;
    let mut merges = Vec::with_capacity(merges_json.len());
    for merge in merges_json {
        let pair = match merge {
            Value::String(s) => s.split_once(' ').map(|(l, r)| (l.to_owned(), r.to_owned())),
            Value::Array(parts) => match parts.as_slice() {
                [Value::String(l), Value::String(r)] => Some((l.clone(), r.clone())),
                _ => None,
            },
            _ => None,
        };
        merges
            .push(pair.ok_or_else(|| ModelError::bad_config(path, format!("bad merge {merge}")))?);
    }

    let pad_token = json
        .get("padding")
        .and_then(|padding| padding.get("pad_token"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    Ok((VocabAndMerges { vocab, merges }, pad_token))
}
