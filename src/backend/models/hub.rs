//! Where a model comes from: a diffusers folder or a single-file `.safetensors` checkpoint on
//! disk, or a Hugging Face repo id resolved through `hf-hub` into the standard cache
//! (`HF_HOME`), offline once cached.

use std::path::{Path, PathBuf};

use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Cache, Repo};

/// The diffusers pipeline components we read, by their folder name in `model_index.json`.
const COMPONENTS: &[&str] = &["unet", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler"];

/// Small files each component folder may hold (whichever exist are fetched).
const CONFIG_FILES: &[&str] = &[
    "config.json",
    "scheduler_config.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
];

/// How a resolved model is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelFormat {
    /// A diffusers pipeline folder (`model_index.json`, `unet/`, `vae/`, ...).
    DiffusersFolder,
    /// One A1111/LDM `.safetensors` checkpoint (see `backend::checkpoint`).
    SingleFile,
}

/// A model resolved to a local diffusers folder or single-file checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedModel {
    /// What the user called it (repo id or path as given), reported back in `/v1/models`.
    pub id: String,
    /// The folder, or the checkpoint file.
    pub path: PathBuf,
    pub format: ModelFormat,
}

#[derive(Debug, thiserror::Error)]
pub enum ModelSourceError {
    #[error("no model at '{0}': it is neither a diffusers folder nor a Hugging Face repo id; pass --model PATH to a diffusers folder")]
    NotFound(String),
    #[error("'{path}' is not a diffusers pipeline folder (no model_index.json or unet/config.json); pass --model PATH to a folder that has them")]
    NotAPipeline { path: PathBuf },
    #[error("'{path}' is a pickle checkpoint (.ckpt/.pt/.bin): loading one can run arbitrary code, so it is refused; convert it to .safetensors and pass that")]
    PickleRefused { path: PathBuf },
    #[error("'{path}' is not a model file: pass --model PATH to a .safetensors checkpoint or a diffusers folder")]
    NotAModelFile { path: PathBuf },
    #[error("model '{repo}' is not in the local Hugging Face cache ({cache}) and could not be downloaded ({reason}); run with --model PATH to a local diffusers folder, or make the Hub reachable")]
    Download { repo: String, cache: PathBuf, reason: String },
}

/// How to reach the Hub; tests point it at a folder they built and at an unreachable endpoint.
#[derive(Debug, Clone)]
pub struct HubOptions {
    pub cache_dir: PathBuf,
    /// `None` = hf-hub's default (`HF_ENDPOINT` or huggingface.co).
    pub endpoint: Option<String>,
}

impl HubOptions {
    /// `HF_HOME`/hub or ~/.cache/huggingface/hub, as every HF tool uses.
    pub fn from_env() -> Self {
        HubOptions { cache_dir: Cache::from_env().path().clone(), endpoint: None }
    }
}

/// Turn `--model` into a local folder: an existing path is used as is; `org/name` is looked up in
/// the cache first and downloaded only when something is missing.
pub fn resolve_model(spec: &str, hub: &HubOptions) -> Result<ResolvedModel, ModelSourceError> {
    let path = Path::new(spec);
    if path.is_dir() {
        return if is_pipeline_dir(path) {
            Ok(ResolvedModel { id: spec.to_string(), path: path.to_path_buf(), format: ModelFormat::DiffusersFolder })
        } else {
            Err(ModelSourceError::NotAPipeline { path: path.to_path_buf() })
        };
    }
    if path.is_file() {
        return single_file(spec, path);
    }
    if !looks_like_repo_id(spec) {
        return Err(ModelSourceError::NotFound(spec.to_string()));
    }
    if let Some(dir) = cached_snapshot(spec, &hub.cache_dir) {
        tracing::info!(repo = spec, dir = %dir.display(), "using cached model");
        return Ok(ResolvedModel { id: spec.to_string(), path: dir, format: ModelFormat::DiffusersFolder });
    }
    let dir = download(spec, hub).map_err(|reason| ModelSourceError::Download {
        repo: spec.to_string(),
        cache: hub.cache_dir.clone(),
        reason,
    })?;
    Ok(ResolvedModel { id: spec.to_string(), path: dir, format: ModelFormat::DiffusersFolder })
}

/// A file given as the model: a `.safetensors` checkpoint; pickles are refused by name.
fn single_file(spec: &str, path: &Path) -> Result<ResolvedModel, ModelSourceError> {
    let extension = path.extension().map(|e| e.to_string_lossy().to_lowercase()).unwrap_or_default();
    match extension.as_str() {
        "safetensors" => Ok(ResolvedModel { id: spec.to_string(), path: path.to_path_buf(), format: ModelFormat::SingleFile }),
        "ckpt" | "pt" | "pth" | "bin" | "pkl" => Err(ModelSourceError::PickleRefused { path: path.to_path_buf() }),
        _ => Err(ModelSourceError::NotAModelFile { path: path.to_path_buf() }),
    }
}

fn is_pipeline_dir(dir: &Path) -> bool {
    dir.join("model_index.json").is_file() || dir.join("unet").join("config.json").is_file()
}

fn looks_like_repo_id(spec: &str) -> bool {
    let mut parts = spec.split('/');
    let valid = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    matches!((parts.next(), parts.next(), parts.next()), (Some(org), Some(name), None) if valid(org) && valid(name) && !name.starts_with('.'))
}

/// The snapshot folder of a fully cached repo: `models--org--name/snapshots/<refs/main>/`, holding
/// `model_index.json` and, for every component it names, a config and a weights file.
fn cached_snapshot(repo_id: &str, cache_dir: &Path) -> Option<PathBuf> {
    let cache = Cache::new(cache_dir.to_path_buf());
    let index = cache.repo(Repo::model(repo_id.to_string())).get("model_index.json")?;
    let dir = index.parent()?.to_path_buf();
    let components = pipeline_components(&index).ok()?;
    components.iter().all(|c| component_is_complete(&dir.join(c), c)).then_some(dir)
}

/// Component folder names listed in `model_index.json` that we load.
fn pipeline_components(index: &Path) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(index).map_err(|e| e.to_string())?;
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    let obj = json.as_object().ok_or("model_index.json is not an object")?;
    Ok(COMPONENTS
        .iter()
        .filter(|c| obj.get(**c).and_then(|v| v.as_array()).is_some_and(|a| a.first().is_some_and(|lib| !lib.is_null())))
        .map(|c| c.to_string())
        .collect())
}

fn component_is_complete(dir: &Path, component: &str) -> bool {
    match component {
        "scheduler" => dir.join("scheduler_config.json").is_file(),
        "tokenizer" | "tokenizer_2" => {
            dir.join("tokenizer.json").is_file() || (dir.join("vocab.json").is_file() && dir.join("merges.txt").is_file())
        }
        _ => dir.join("config.json").is_file() && has_safetensors(dir),
    }
}

fn has_safetensors(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .map(|entries| entries.flatten().any(|e| e.file_name().to_string_lossy().ends_with(".safetensors")))
        .unwrap_or(false)
}

/// Download what a diffusers pipeline needs (configs, tokenizer files, one safetensors weights
/// file per network, preferring the fp16 variant: half the bytes, and we upcast on load anyway).
fn download(repo_id: &str, hub: &HubOptions) -> Result<PathBuf, String> {
    let mut builder = ApiBuilder::from_cache(Cache::new(hub.cache_dir.clone())).with_progress(false).with_retries(1);
    if let Some(endpoint) = &hub.endpoint {
        builder = builder.with_endpoint(endpoint.clone());
    }
    let api = builder.build().map_err(|e| e.to_string())?;
    let repo = api.model(repo_id.to_string());
    let info = repo.info().map_err(|e| e.to_string())?;
    let files: Vec<String> = info.siblings.into_iter().map(|s| s.rfilename).collect();
    let index = repo.get("model_index.json").map_err(|e| e.to_string())?;
    let dir = index.parent().ok_or("cache path has no parent")?.to_path_buf();
    for component in pipeline_components(&index)? {
        let wanted = files_for_component(&component, &files);
        if wanted.is_empty() {
            return Err(format!("the repo has no usable files for '{component}' (safetensors weights are required)"));
        }
        for file in wanted {
            tracing::info!(repo = repo_id, file = %file, "downloading");
            repo.get(&file).map_err(|e| format!("{file}: {e}"))?;
        }
    }
    Ok(dir)
}

/// Named files of a Hub repo (no `model_index.json` needed), from the cache when all are
/// there, else downloaded into it. Returns the snapshot folder holding them.
pub fn fetch_repo_files(repo_id: &str, files: &[&str], hub: &HubOptions) -> Result<PathBuf, ModelSourceError> {
    let cache = Cache::new(hub.cache_dir.clone());
    let cached: Option<Vec<PathBuf>> = files.iter().map(|f| cache.repo(Repo::model(repo_id.to_string())).get(f)).collect();
    if let Some(dir) = cached.as_ref().and_then(|paths| paths.first()).and_then(|p| p.parent()) {
        return Ok(dir.to_path_buf());
    }
    let download = || -> Result<PathBuf, String> {
        let mut builder = ApiBuilder::from_cache(cache.clone()).with_progress(false).with_retries(1);
        if let Some(endpoint) = &hub.endpoint {
            builder = builder.with_endpoint(endpoint.clone());
        }
        let repo = builder.build().map_err(|e| e.to_string())?.model(repo_id.to_string());
        let mut dir = None;
        for file in files {
            tracing::info!(repo = repo_id, file = %file, "downloading");
            let path = repo.get(file).map_err(|e| format!("{file}: {e}"))?;
            dir = path.parent().map(Path::to_path_buf);
        }
        dir.ok_or_else(|| "no files requested".to_string())
    };
    download().map_err(|reason| ModelSourceError::Download { repo: repo_id.to_string(), cache: hub.cache_dir.clone(), reason })
}

/// The files of one component folder to fetch, chosen from the repo's file list.
fn files_for_component(component: &str, files: &[String]) -> Vec<String> {
    let prefix = format!("{component}/");
    let in_folder: Vec<&str> = files
        .iter()
        .filter_map(|f| f.strip_prefix(&prefix))
        .filter(|f| !f.contains('/'))
        .collect();
    let mut out: Vec<String> = in_folder
        .iter()
        .filter(|f| CONFIG_FILES.contains(f))
        .map(|f| format!("{prefix}{f}"))
        .collect();
    let weights: Vec<&&str> = in_folder.iter().filter(|f| f.ends_with(".safetensors")).collect();
    let fp16 = weights.iter().find(|f| f.ends_with(".fp16.safetensors"));
    let plain = weights.iter().find(|f| !f.contains(".fp16.") && !f.contains(".bf16."));
    if let Some(w) = fp16.or(plain).or(weights.first()) {
        out.push(format!("{prefix}{w}"));
    } else if !matches!(component, "scheduler" | "tokenizer" | "tokenizer_2") {
        return Vec::new();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tiny-sd15");

    /// Copy a diffusers folder into a Hugging Face cache layout: blobs + snapshot + refs/main.
    fn build_cache(cache: &Path, repo_id: &str, source: &Path, skip: Option<&str>) {
        let repo_dir = cache.join(format!("models--{}", repo_id.replace('/', "--")));
        let rev = "0123456789abcdef0123456789abcdef01234567";
        let snapshot = repo_dir.join("snapshots").join(rev);
        for entry in walk(source) {
            let rel = entry.strip_prefix(source).expect("inside source");
            if skip.is_some_and(|s| rel.to_string_lossy() == s) {
                continue;
            }
            let dst = snapshot.join(rel);
            std::fs::create_dir_all(dst.parent().expect("has parent")).expect("mkdir");
            std::fs::copy(&entry, &dst).expect("copy");
        }
        std::fs::create_dir_all(repo_dir.join("refs")).expect("mkdir refs");
        std::fs::write(repo_dir.join("refs").join("main"), rev).expect("write ref");
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).expect("readable").flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
        out
    }

    fn offline(cache: &Path) -> HubOptions {
        // Port 9 on loopback refuses at once: a download attempt fails fast instead of hanging.
        HubOptions { cache_dir: cache.to_path_buf(), endpoint: Some("http://127.0.0.1:9".into()) }
    }

    #[test]
    fn a_cached_repo_resolves_offline_to_its_snapshot() {
        let tmp = tempfile::tempdir().expect("tempdir");
        build_cache(tmp.path(), "acme/tiny-sd", Path::new(FIXTURE), None);
        let resolved = resolve_model("acme/tiny-sd", &offline(tmp.path())).expect("resolves from cache");
        assert_eq!(resolved.id, "acme/tiny-sd");
        assert!(resolved.path.ends_with("snapshots/0123456789abcdef0123456789abcdef01234567"));
        assert!(resolved.path.join("unet/diffusion_pytorch_model.safetensors").is_file());
    }

    #[test]
    fn an_incomplete_cache_and_no_hub_gives_one_clear_sentence() {
        let tmp = tempfile::tempdir().expect("tempdir");
        build_cache(tmp.path(), "acme/tiny-sd", Path::new(FIXTURE), Some("unet/diffusion_pytorch_model.safetensors"));
        let err = resolve_model("acme/tiny-sd", &offline(tmp.path())).expect_err("unet weights missing");
        let msg = err.to_string();
        assert!(matches!(err, ModelSourceError::Download { .. }), "{msg}");
        assert!(msg.contains("acme/tiny-sd") && msg.contains("--model PATH"), "{msg}");
    }

    #[test]
    fn folders_files_and_nonsense_are_told_apart() {
        assert_eq!(resolve_model(FIXTURE, &offline(Path::new("/nonexistent"))).expect("folder").path, PathBuf::from(FIXTURE));
        let file = format!("{FIXTURE}/model_index.json");
        assert!(matches!(resolve_model(&file, &offline(Path::new("/x"))), Err(ModelSourceError::NotAModelFile { .. })));
        let single = format!("{FIXTURE}/unet/diffusion_pytorch_model.safetensors");
        let resolved = resolve_model(&single, &offline(Path::new("/x"))).expect("a .safetensors file resolves");
        assert_eq!(resolved.format, ModelFormat::SingleFile);
        let tmp = tempfile::tempdir().expect("tempdir");
        let ckpt = tmp.path().join("model.ckpt");
        std::fs::write(&ckpt, b"x").expect("write");
        let err = resolve_model(ckpt.to_str().expect("utf-8"), &offline(Path::new("/x"))).expect_err("pickle");
        assert!(matches!(err, ModelSourceError::PickleRefused { .. }) && err.to_string().contains(".safetensors"), "{err}");
        let not_pipeline = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/golden");
        assert!(matches!(resolve_model(not_pipeline, &offline(Path::new("/x"))), Err(ModelSourceError::NotAPipeline { .. })));
        assert!(matches!(resolve_model("no such thing", &offline(Path::new("/x"))), Err(ModelSourceError::NotFound(_))));
    }

    #[test]
    fn weights_choice_prefers_fp16_and_skips_other_formats() {
        let files: Vec<String> = [
            "unet/config.json",
            "unet/diffusion_pytorch_model.safetensors",
            "unet/diffusion_pytorch_model.fp16.safetensors",
            "unet/diffusion_pytorch_model.bin",
            "unet/nested/x.safetensors",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(files_for_component("unet", &files), vec!["unet/config.json", "unet/diffusion_pytorch_model.fp16.safetensors"]);
        assert!(files_for_component("vae", &files).is_empty());
    }
}
