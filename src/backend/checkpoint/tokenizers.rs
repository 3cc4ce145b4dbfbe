//! Tokenizers for single-file checkpoints, which carry none. Every SD text encoder uses CLIP's
//! BPE vocabulary; they differ only in the pad token: OpenAI CLIP pads with `<|endoftext|>`,
//! OpenCLIP (SD 2.x, SDXL's second encoder) with `!` (id 0), as the diffusers repos configure
//! them. The vocabulary comes from a folder the operator names or, like diffusers'
//! single-file loader, from `openai/clip-vit-large-patch14` in the Hugging Face cache.

use std::path::{Path, PathBuf};

use super::CheckpointError;
use crate::backend::models::hub::{fetch_repo_files, HubOptions};
use crate::backend::models::tokenizer::{ClipTokenizer, SpecialTokens};

const CLIP_TOKENIZER_REPO: &str = "openai/clip-vit-large-patch14";
const VOCAB: &str = "vocab.json";
const MERGES: &str = "merges.txt";

/// Where the CLIP vocabulary comes from.
#[derive(Debug, Clone)]
pub enum TokenizerSource {
    /// A folder with `vocab.json` and `merges.txt`.
    Dir(PathBuf),
    /// `openai/clip-vit-large-patch14` from this Hugging Face cache (downloaded once if missing).
    Hub(HubOptions),
}

/// Which pad token the encoder was trained with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PadStyle {
    OpenAiClip,
    OpenClip,
}

impl TokenizerSource {
    fn folder(&self) -> Result<PathBuf, CheckpointError> {
        match self {
            TokenizerSource::Dir(dir) => Ok(dir.clone()),
            TokenizerSource::Hub(hub) => fetch_repo_files(CLIP_TOKENIZER_REPO, &[VOCAB, MERGES], hub)
                .map_err(|e| CheckpointError::Tokenizer(format!("{e}; or pass a folder with the CLIP vocab.json and merges.txt"))),
        }
    }

    pub fn load(&self, pad: PadStyle) -> Result<ClipTokenizer, CheckpointError> {
        let dir = self.folder()?;
        load_from(&dir, pad)
    }
}

fn load_from(dir: &Path, pad: PadStyle) -> Result<ClipTokenizer, CheckpointError> {
    let mut special = SpecialTokens::default();
    if pad == PadStyle::OpenClip {
        special.pad = "!".to_string();
    }
    ClipTokenizer::from_vocab_and_merges(&dir.join(VOCAB), &dir.join(MERGES), special)
        .map_err(|e| CheckpointError::Tokenizer(format!("{}: {e}", dir.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::models::test_support::fixture;

    #[test]
    fn pad_style_matches_the_diffusers_tokenizers() {
        let source = TokenizerSource::Dir(fixture("clip-tokenizer"));
        let clip = source.load(PadStyle::OpenAiClip).unwrap();
        let open = source.load(PadStyle::OpenClip).unwrap();
        let sdxl_2 = ClipTokenizer::from_dir(&fixture("tiny-sdxl/tokenizer_2")).unwrap();
        assert_eq!(open.pad_id(), 0);
        assert_eq!(open.pad_id(), sdxl_2.pad_id());
        assert_eq!(clip.pad_id(), clip.eos_id());
        let text = "a photo of a cat!";
        assert_eq!(open.encode_padded(text, 77), sdxl_2.encode_padded(text, 77));
    }
}
