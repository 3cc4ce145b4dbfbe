//! Checkpoints as A1111 names them: the `--models-dir` library's checkpoints (titles
//! `"relpath [sha256[:10]]"`, stable for the process) plus the model the worker was started
//! with when it lives outside the library (titled `"name [hash10]"`), the one the engine uses
//! now, and A1111's aliases for picking one (`checkpoint_aliases`: title, name, file name,
//! hashes). Nothing is listed for a model still loading, so a title, once shown, never changes.

use std::path::Path;
use std::sync::{Mutex, OnceLock};

use crate::backend::generation_engine::ModelInfo;
use crate::backend::model_library::CheckpointEntry;
use crate::http::AppState;

/// One checkpoint, with what `/sdapi/v1/sd-models` shows and what a job names to use it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub title: String,
    pub model_name: String,
    /// A1111's short hash (`sha256[:10]`).
    pub hash: Option<String>,
    pub sha256: Option<String>,
    pub filename: String,
    pub config: Option<String>,
    /// What a job puts in `GenerationRequest::model`; `None` = the worker's default model.
    pub request_name: Option<String>,
    /// Other names it answers to.
    aliases: Vec<String>,
}

impl Checkpoint {
    fn from_entry(entry: &CheckpointEntry) -> Self {
        let path = entry.path.display().to_string();
        Checkpoint {
            title: entry.title.clone(),
            model_name: entry.model_name.clone(),
            hash: Some(entry.hash.clone()),
            sha256: Some(entry.sha256.clone()),
            filename: path.clone(),
            config: entry.config.as_ref().map(|c| c.display().to_string()),
            request_name: Some(entry.title.clone()),
            aliases: vec![entry.relpath.clone(), entry.stem(), entry.model_name.clone(), entry.hash.clone(), entry.sha256.clone(), path],
        }
    }

    /// The model the engine reports, when it is not a library entry (`--model` given as a path
    /// or repo id): the default model, named `"name [hash10]"`.
    pub fn from_info(info: &ModelInfo) -> Self {
        let title = match &info.hash {
            Some(hash) => format!("{} [{hash}]", info.name),
            None => info.name.clone(),
        };
        let mut aliases = vec![info.name.clone(), info.id.clone()];
        aliases.extend(info.hash.clone());
        Checkpoint {
            title,
            model_name: info.name.clone(),
            hash: info.hash.clone(),
            sha256: None,
            filename: info.id.clone(),
            config: None,
            request_name: None,
            aliases,
        }
    }

    /// Whether `name` is this checkpoint's title or one of its aliases.
    pub fn answers_to(&self, name: &str) -> bool {
        let name = name.trim();
        !name.is_empty() && (self.title == name || self.aliases.iter().any(|a| a == name))
    }
}

/// What an engine reporting only an id can say about its model (SD 1.x's 512 px, multiples
/// of 8, A1111's defaults).
pub fn info_from_id(id: &str) -> ModelInfo {
    let name = Path::new(id.trim_end_matches('/')).file_name().map_or_else(|| id.to_string(), |n| n.to_string_lossy().into_owned());
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

/// Every checkpoint a job can use, and the one the engine uses now.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub checkpoints: Vec<Checkpoint>,
    /// The engine's current model; `None` while the first model loads.
    pub current: Option<Checkpoint>,
    pub info: Option<ModelInfo>,
}

impl Catalog {
    /// The catalog now. `default` is the worker's own model when it is outside the library
    /// (remembered by the face, since the engine only reports the model used last).
    pub fn new(state: &AppState, default: Option<&Checkpoint>) -> Catalog {
        let status = state.engine.status();
        let info = status.model_info.or_else(|| status.model_id.as_deref().map(info_from_id));
        let mut checkpoints: Vec<Checkpoint> = state.library.iter().flat_map(|l| l.checkpoints()).map(|e| Checkpoint::from_entry(&e)).collect();
        let current = info.as_ref().map(|info| match checkpoints.iter().find(|c| c.title == info.id) {
            Some(entry) => entry.clone(),
            None => Checkpoint::from_info(info),
        });
        for extra in [default, current.as_ref()].into_iter().flatten() {
            if !checkpoints.iter().any(|c| c.title == extra.title) {
                checkpoints.insert(0, extra.clone());
            }
        }
        Catalog { checkpoints, current, info }
    }

    /// A checkpoint by any of A1111's aliases.
    pub fn resolve(&self, name: &str) -> Option<&Checkpoint> {
        self.checkpoints.iter().find(|c| c.title == name.trim()).or_else(|| self.checkpoints.iter().find(|c| c.answers_to(name)))
    }
}

/// The face's model choice: A1111's `sd_model_checkpoint`.
///
/// Setting it picks the checkpoint the following jobs name; the engine loads it on the first of
/// them (progress reports that job busy meanwhile), where A1111 loads it inside the options call.
#[derive(Debug, Default)]
pub struct ModelSelection {
    /// The worker's own model when it lies outside the library, seen once the engine loaded it.
    default: OnceLock<Checkpoint>,
    selected: Mutex<Option<Checkpoint>>,
}

impl ModelSelection {
    pub fn catalog(&self, state: &AppState) -> Catalog {
        let catalog = Catalog::new(state, self.default.get());
        if let Some(current) = catalog.current.as_ref().filter(|c| c.request_name.is_none()) {
            let _ = self.default.set(current.clone());
        }
        catalog
    }

    pub fn selected(&self) -> Option<Checkpoint> {
        self.selected.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn select(&self, checkpoint: Checkpoint) {
        *self.selected.lock().unwrap_or_else(|p| p.into_inner()) = Some(checkpoint);
    }

    /// What `sd_model_checkpoint` says: the selected checkpoint, else the engine's current one.
    pub fn active(&self, catalog: &Catalog) -> Option<Checkpoint> {
        self.selected().or_else(|| catalog.current.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_outside_the_library_is_titled_name_and_hash() {
        let mut info = info_from_id("/models/tiny-sd15");
        info.hash = Some("abcdef0123".into());
        let served = Checkpoint::from_info(&info);
        assert_eq!(served.title, "tiny-sd15 [abcdef0123]");
        assert_eq!(served.request_name, None);
        for alias in ["tiny-sd15 [abcdef0123]", "tiny-sd15", "/models/tiny-sd15", "abcdef0123"] {
            assert!(served.answers_to(alias), "{alias}");
        }
        assert!(!served.answers_to("other [abcdef0123]"));
        assert!(!served.answers_to(""));
        let catalog = Catalog { checkpoints: vec![served.clone()], current: Some(served), info: Some(info) };
        assert_eq!(catalog.resolve("abcdef0123").map(|c| c.title.as_str()), Some("tiny-sd15 [abcdef0123]"));
        assert!(catalog.resolve("nope").is_none());
    }
}
