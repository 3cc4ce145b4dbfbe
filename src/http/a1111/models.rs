//! The checkpoint this worker serves, named as A1111 names checkpoints: title
//! `"<name> [<sha256[:10]>]"`, `model_name`, hashes, and the aliases A1111 accepts for it
//! (`checkpoint_aliases`). Nothing is listed until the model is loaded, so a title, once shown,
//! never changes.

use crate::backend::generation_engine::ModelInfo;
use crate::http::AppState;

#[derive(Debug, Clone)]
pub struct ServedCheckpoint {
    /// `None` while the model loads (or after it failed to).
    info: Option<ModelInfo>,
    /// `--model` as given.
    configured: String,
}

/// What can be said of a model from its id alone, for runners that report no [`ModelInfo`]
/// (SD 1.x's 512 px, multiples of 8, A1111's defaults).
pub fn info_from_id(id: &str) -> ModelInfo {
    let name = id.trim_end_matches('/').rsplit('/').next().unwrap_or(id).to_string();
    ModelInfo {
        id: id.to_string(),
        name,
        hash: None,
        family: "sd",
        native_size: 512,
        size_multiple: 8,
        default_steps: 20,
        default_cfg_scale: 7.0,
        inpainting: false,
    }
}

impl ServedCheckpoint {
    pub fn current(state: &AppState) -> Self {
        let status = state.engine.status();
        let info = status.model_info.or_else(|| status.model_id.as_deref().map(info_from_id));
        ServedCheckpoint { info, configured: state.config.model.clone() }
    }

    pub fn loaded(info: ModelInfo) -> Self {
        let configured = info.id.clone();
        ServedCheckpoint { info: Some(info), configured }
    }

    pub fn info(&self) -> Option<&ModelInfo> {
        self.info.as_ref()
    }

    /// A1111's `title`: `name [hash10]`, or the bare name when the hash is unknown.
    pub fn title(&self) -> Option<String> {
        let info = self.info.as_ref()?;
        Some(match &info.hash {
            Some(hash) => format!("{} [{hash}]", info.name),
            None => info.name.clone(),
        })
    }

    /// A1111's `model_name` (`sd_model_name` in `info`).
    pub fn model_name(&self) -> Option<&str> {
        self.info.as_ref().map(|i| i.name.as_str())
    }

    /// A1111's short hash: the first 10 hex digits of the weights' sha256.
    pub fn short_hash(&self) -> Option<&str> {
        self.info.as_ref().and_then(|i| i.hash.as_deref())
    }

    /// Whether `name` is one of this checkpoint's A1111 aliases: the title, the name, the id,
    /// the short hash, or `--model` as given.
    pub fn matches(&self, name: &str) -> bool {
        let name = name.trim();
        if name.is_empty() {
            return false;
        }
        if name == self.configured {
            return true;
        }
        let Some(info) = &self.info else {
            return false;
        };
        let title = self.title();
        let aliases = [Some(info.name.as_str()), Some(info.id.as_str()), title.as_deref(), info.hash.as_deref()];
        #[allow(clippy::let_and_return)] // the temporary `title` must outlive the iterator
        let matched = aliases.into_iter().flatten().any(|alias| alias == name);
        matched
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_and_aliases() {
        let mut info = info_from_id("org/tiny-sd15");
        info.hash = Some("abcdef0123".into());
        let served = ServedCheckpoint::loaded(info);
        assert_eq!(served.title().as_deref(), Some("tiny-sd15 [abcdef0123]"));
        for alias in ["tiny-sd15 [abcdef0123]", "tiny-sd15", "org/tiny-sd15", "abcdef0123"] {
            assert!(served.matches(alias), "{alias}");
        }
        assert!(!served.matches("other [abcdef0123]"));
        assert!(!served.matches(""));
    }
}
