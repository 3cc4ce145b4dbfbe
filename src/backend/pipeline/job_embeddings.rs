//! The textual-inversion embeddings a job's prompts name, loaded from the models folder and
//! fitted to the job's model, with a warning for each named one that cannot be used.
//!
//! A1111 registers every embedding of the folder that fits the loaded model and matches them
//! in any prompt. Only the embeddings a prompt names are loaded here (a token-level check before
//! chunking), which selects the same ones; the names are matched again, exactly, as prompts are
//! chunked.

use std::sync::Arc;

use super::model::SdModel;
use crate::backend::model_library::ModelLibrary;
use crate::backend::prompt::embeddings::{PromptTokens, TextualInversion};
use crate::backend::prompt::schedule::prompt_schedule;

/// The embeddings for one job.
#[derive(Debug, Default)]
pub struct JobEmbeddings {
    pub embeddings: Vec<Arc<TextualInversion>>,
    /// One line per named embedding that was not applied, and why.
    pub warnings: Vec<String>,
}

impl JobEmbeddings {
    /// A1111's `TI hashes` value for the embeddings at `used` (indices into `embeddings`):
    /// `name: hash` with `:` and `,` removed from names, joined by `, `.
    pub fn hashes(&self, used: &[usize]) -> Option<String> {
        let entries: Vec<String> = used
            .iter()
            .filter_map(|index| self.embeddings.get(*index))
            .map(|e| format!("{}: {}", e.name.replace([':', ','], ""), e.hash))
            .collect();
        (!entries.is_empty()).then(|| entries.join(", "))
    }
}

/// The embeddings `prompts` (prompt and negative prompt, editing syntax included) name, read
/// from `library` and fitted to `model`'s text encoders. `steps` expands prompt editing.
pub fn job_embeddings(library: Option<&ModelLibrary>, model: &SdModel, prompts: &[&str], steps: usize) -> JobEmbeddings {
    let mut job = JobEmbeddings::default();
    let Some(library) = library else {
        return job;
    };
    let texts: Vec<String> = prompts
        .iter()
        .flat_map(|prompt| prompt_schedule(prompt, steps))
        .map(|entry| entry.text)
        .collect();
    // SDXL's two tokenizers share CLIP's vocabulary; the first one decides what is named.
    let tokenizer = model.tokenizer.as_ref();
    let tokens = PromptTokens::new(tokenizer, texts.iter().map(String::as_str));
    let widths = encoder_widths(model);
    for entry in library.embeddings() {
        if job.embeddings.iter().any(|e| e.name == entry.name) || !tokens.mentions(tokenizer, &entry.name) {
            continue;
        }
        let Some(loaded) = library.lookup_embedding(&entry.name) else {
            job.warnings.push(format!("embedding '{}' could not be read (see the log); it was not applied", entry.name));
            continue;
        };
        match TextualInversion::fit(&loaded.name, &loaded.hash, &loaded.vectors, &widths) {
            Ok(fitted) => job.embeddings.push(Arc::new(fitted)),
            Err(e) => job.warnings.push(format!("{e}; it was not applied")),
        }
    }
    for pickle in library.pickle_embeddings() {
        if tokens.mentions(tokenizer, &pickle.name) && !job.embeddings.iter().any(|e| e.name == pickle.name) {
            job.warnings.push(format!(
                "embedding '{}' is a pickle file ({}), which is never loaded because unpickling can run code; convert it to .safetensors",
                pickle.name,
                pickle.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
            ));
        }
    }
    job
}

/// The hidden width of each text encoder, in the order conditioning uses them.
fn encoder_widths(model: &SdModel) -> Vec<usize> {
    let mut widths = vec![model.text_encoder.config().hidden_size];
    if let Some(second) = &model.second {
        widths.push(second.encoder.config().hidden_size);
    }
    widths
}
