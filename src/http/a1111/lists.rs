//! The lists and small endpoints frontends probe: models, samplers, schedulers, upscalers, VAEs,
//! LoRAs, embeddings (from the `--models-dir` library), styles, scripts, ..., memory and
//! command-line flags, plus the refresh and (un)load calls. Lists of things this worker does not
//! have are empty, never a 404.

use axum::extract::State;
use axum::{Extension, Json};
use serde::Serialize;
use serde_json::{json, Value};
use utoipa::ToSchema;

use super::samplers::{sampler_items, scheduler_items, SamplerItem, SchedulerItem};
use super::errors::{A1111Error, A1111ErrorBody};
use super::A1111Face;
use crate::http::AppState;

/// `/sdapi/v1/sd-models` item.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SdModelItem {
    /// What `sd_model_checkpoint` is set to: `name [hash10]`.
    #[schema(example = "tiny-sd15 [0123456789]")]
    pub title: String,
    pub model_name: String,
    pub hash: Option<String>,
    pub sha256: Option<String>,
    pub filename: String,
    pub config: Option<String>,
}

/// `/sdapi/v1/upscalers` item.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UpscalerItem {
    pub name: String,
    pub model_name: Option<String>,
    pub model_path: Option<String>,
    pub model_url: Option<String>,
    pub scale: f64,
}

/// `{name}` items (`latent-upscale-modes`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct NamedItem {
    pub name: String,
}

/// A1111's latent upscale modes (hires fix in latent space).
pub const LATENT_UPSCALE_MODES: &[&str] =
    &["Latent", "Latent (antialiased)", "Latent (bicubic)", "Latent (bicubic antialiased)", "Latent (nearest)", "Latent (nearest-exact)"];

/// The pixel-space upscalers A1111 always has (no model files).
pub const BUILTIN_UPSCALERS: &[&str] = &["None", "Lanczos", "Nearest"];

#[utoipa::path(get, path = "/sdapi/v1/sd-models", tag = "a1111",
    responses((status = 200, description = "The models folder's checkpoints and the worker's own model (not listed while it loads)", body = Vec<SdModelItem>)))]
pub async fn sd_models(State(state): State<AppState>, Extension(face): Extension<A1111Face>) -> Json<Vec<SdModelItem>> {
    let catalog = face.models.catalog(&state);
    Json(
        catalog
            .checkpoints
            .into_iter()
            .map(|c| SdModelItem { title: c.title, model_name: c.model_name, hash: c.hash, sha256: c.sha256, filename: c.filename, config: c.config })
            .collect(),
    )
}

/// `/sdapi/v1/loras` item (the built-in Lora extension's shape).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LoraItem {
    /// What prompts use: `<lora:name:1.0>`.
    pub name: String,
    pub alias: String,
    pub path: String,
    #[schema(value_type = Object)]
    pub metadata: serde_json::Map<String, Value>,
}

/// `/sdapi/v1/sd-vae` and `/sd-modules` item.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct VaeItem {
    pub model_name: String,
    pub filename: String,
}

#[utoipa::path(get, path = "/sdapi/v1/loras", tag = "a1111",
    responses((status = 200, description = "LoRA files in the models folder", body = Vec<LoraItem>)))]
pub async fn loras(State(state): State<AppState>) -> Json<Vec<LoraItem>> {
    let entries = state.library.iter().flat_map(|l| l.loras());
    Json(
        entries
            .map(|e| LoraItem {
                name: e.name,
                alias: e.alias,
                path: e.path.display().to_string(),
                metadata: e.metadata.into_iter().map(|(k, v)| (k, Value::from(v))).collect(),
            })
            .collect(),
    )
}

fn vae_items(state: &AppState) -> Vec<VaeItem> {
    let entries = state.library.iter().flat_map(|l| l.vaes());
    entries.map(|e| VaeItem { model_name: e.model_name, filename: e.path.display().to_string() }).collect()
}

#[utoipa::path(get, path = "/sdapi/v1/sd-vae", tag = "a1111",
    responses((status = 200, description = "VAE files in the models folder", body = Vec<VaeItem>)))]
pub async fn sd_vae(State(state): State<AppState>) -> Json<Vec<VaeItem>> {
    Json(vae_items(&state))
}

#[utoipa::path(get, path = "/sdapi/v1/sd-modules", tag = "a1111",
    responses((status = 200, description = "Forge's module list: the VAE files (text encoders are not listed separately)", body = Vec<VaeItem>)))]
pub async fn sd_modules(State(state): State<AppState>) -> Json<Vec<VaeItem>> {
    Json(vae_items(&state))
}

#[utoipa::path(get, path = "/sdapi/v1/embeddings", tag = "a1111",
    responses((status = 200, description = "Textual-inversion embeddings in the models folder", body = Object)))]
pub async fn embeddings(State(state): State<AppState>) -> Json<Value> {
    let loaded: serde_json::Map<String, Value> = state
        .library
        .iter()
        .flat_map(|l| l.embeddings())
        .map(|e| (e.name.clone(), json!({"step": null, "sd_checkpoint": null, "sd_checkpoint_name": null, "shape": e.shape, "vectors": e.vectors})))
        .collect();
    Json(json!({"loaded": loaded, "skipped": {}}))
}

/// Rescan the models folder (off the async runtime: new checkpoints are hashed).
async fn rescan(state: &AppState) -> Result<Json<Value>, A1111Error> {
    if let Some(library) = state.library.clone() {
        tokio::task::spawn_blocking(move || library.refresh())
            .await
            .map_err(|e| A1111Error::internal(e.to_string()))?
            .map_err(|e| A1111Error::internal(e.to_string()))?;
    }
    Ok(Json(Value::Null))
}

/// A rescan endpoint (A1111 has one per kind; one scan here covers them all).
macro_rules! refresh_answer {
    ($name:ident, $path:literal, $what:literal) => {
        #[utoipa::path(post, path = $path, tag = "a1111",
            responses(
                (status = 200, description = concat!("The models folder was rescanned for ", $what, " (A1111 answers `null`)"), body = Option<Object>),
                (status = 500, description = "The models folder could not be read", body = A1111ErrorBody),
            ))]
        pub async fn $name(State(state): State<AppState>) -> Result<Json<Value>, A1111Error> {
            rescan(&state).await
        }
    };
}

refresh_answer!(refresh_checkpoints, "/sdapi/v1/refresh-checkpoints", "checkpoints");
refresh_answer!(refresh_loras, "/sdapi/v1/refresh-loras", "LoRAs");
refresh_answer!(refresh_vae, "/sdapi/v1/refresh-vae", "VAEs");
refresh_answer!(refresh_embeddings, "/sdapi/v1/refresh-embeddings", "embeddings");

#[utoipa::path(get, path = "/sdapi/v1/samplers", tag = "a1111",
    responses((status = 200, description = "Samplers this worker runs, A1111 names and aliases", body = Vec<SamplerItem>)))]
pub async fn samplers() -> Json<Vec<SamplerItem>> {
    Json(sampler_items())
}

#[utoipa::path(get, path = "/sdapi/v1/schedulers", tag = "a1111",
    responses((status = 200, description = "Schedules this worker runs", body = Vec<SchedulerItem>)))]
pub async fn schedulers() -> Json<Vec<SchedulerItem>> {
    Json(scheduler_items())
}

#[utoipa::path(get, path = "/sdapi/v1/upscalers", tag = "a1111",
    responses((status = 200, description = "A1111's built-in upscalers", body = Vec<UpscalerItem>)))]
pub async fn upscalers() -> Json<Vec<UpscalerItem>> {
    Json(
        BUILTIN_UPSCALERS
            .iter()
            .map(|name| UpscalerItem { name: name.to_string(), model_name: None, model_path: None, model_url: None, scale: 4.0 })
            .collect(),
    )
}

#[utoipa::path(get, path = "/sdapi/v1/latent-upscale-modes", tag = "a1111",
    responses((status = 200, description = "Latent upscale modes", body = Vec<NamedItem>)))]
pub async fn latent_upscale_modes() -> Json<Vec<NamedItem>> {
    Json(LATENT_UPSCALE_MODES.iter().map(|name| NamedItem { name: name.to_string() }).collect())
}

/// Handlers whose answer is a fixed JSON value: the lists of things this worker has none of,
/// and the calls that have nothing to do.
macro_rules! fixed_answer {
    ($(#[$doc:meta])* $name:ident, $method:ident, $path:literal, $description:literal, $body:ty, $value:expr) => {
        $(#[$doc])*
        #[utoipa::path($method, path = $path, tag = "a1111",
            responses((status = 200, description = $description, body = $body)))]
        pub async fn $name() -> Json<Value> {
            Json($value)
        }
    };
}

fixed_answer!(prompt_styles, get, "/sdapi/v1/prompt-styles", "Prompt styles (none defined)", [Object], json!([]));
fixed_answer!(scripts, get, "/sdapi/v1/scripts", "Scripts (none)", Object, json!({"txt2img": [], "img2img": []}));
fixed_answer!(script_info, get, "/sdapi/v1/script-info", "Script details (none)", [Object], json!([]));
fixed_answer!(extensions, get, "/sdapi/v1/extensions", "Extensions (none)", [Object], json!([]));
fixed_answer!(hypernetworks, get, "/sdapi/v1/hypernetworks", "Hypernetworks (none)", [Object], json!([]));
fixed_answer!(face_restorers, get, "/sdapi/v1/face-restorers", "Face restorers (none)", [Object], json!([]));
fixed_answer!(realesrgan_models, get, "/sdapi/v1/realesrgan-models", "Real-ESRGAN models (none)", [Object], json!([]));
fixed_answer!(ping, get, "/internal/ping", "The server is up", Object, json!({}));

#[utoipa::path(post, path = "/sdapi/v1/unload-checkpoint", tag = "a1111",
    responses((status = 200, description = "Answered as A1111 does; the worker keeps its one model loaded", body = Object)))]
pub async fn unload_checkpoint() -> Json<Value> {
    tracing::info!("unload-checkpoint: this worker keeps its model loaded (it serves only that model)");
    Json(json!({}))
}

#[utoipa::path(post, path = "/sdapi/v1/reload-checkpoint", tag = "a1111",
    responses((status = 200, description = "The model is loaded (it never leaves memory)", body = Object)))]
pub async fn reload_checkpoint() -> Json<Value> {
    Json(json!({}))
}

/// One `key: value kB` line of a `/proc` status file, in bytes.
fn proc_kib(text: &str, key: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(':')?;
        let kib: f64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kib * 1024.0)
    })
}

/// A1111's RAM figures: `used` is this process's resident size, `total` the machine's memory.
fn ram_figures() -> Value {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    match (proc_kib(&meminfo, "MemTotal"), proc_kib(&status, "VmRSS")) {
        (Some(total), Some(used)) => json!({"free": total - used, "used": used, "total": total}),
        _ => json!({"error": "memory figures are only available on Linux (/proc)"}),
    }
}

#[utoipa::path(get, path = "/sdapi/v1/memory", tag = "a1111",
    responses((status = 200, description = "RAM (bytes) and accelerator memory", body = Object)))]
pub async fn memory() -> Json<Value> {
    let cuda = if cfg!(feature = "cuda") {
        json!({"error": "per-device memory statistics are not tracked by this worker"})
    } else {
        json!({"error": "unavailable"})
    };
    Json(json!({"ram": ram_figures(), "cuda": cuda}))
}

#[utoipa::path(get, path = "/sdapi/v1/cmd-flags", tag = "a1111",
    responses((status = 200, description = "The A1111 command-line flags this worker's configuration amounts to", body = Object)))]
pub async fn cmd_flags(State(state): State<AppState>, Extension(_face): Extension<A1111Face>) -> Json<Value> {
    let config = &state.config;
    Json(json!({
        "api": true,
        "nowebui": true,
        "listen": config.host != "127.0.0.1" && config.host != "localhost",
        "port": config.port,
        "ckpt": config.model,
        "ckpt_dir": config.models_dir.as_ref().map(|d| d.display().to_string()),
        "vae_dir": null,
        "lora_dir": null,
        "embeddings_dir": null,
        "hypernetwork_dir": null,
        "data_dir": ".",
        "device_id": config.device.to_string(),
        "api_auth": if state.api_keys.is_enabled() { Value::from("<set>") } else { Value::Null },
        "api_log": false,
        "api_server_stop": false,
        "cors_allow_origins": "*",
        "no_half": !cfg!(feature = "cuda"),
        "precision": "autocast",
        "use_cpu": if cfg!(any(feature = "cuda", feature = "metal")) { json!([]) } else { json!(["all"]) },
        "skip_torch_cuda_test": true,
        "xformers": false,
        "medvram": false,
        "lowvram": false,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_lines_parse_to_bytes() {
        assert_eq!(proc_kib("MemTotal:       24684096 kB\nMemFree: 1 kB\n", "MemTotal"), Some(24684096.0 * 1024.0));
        assert_eq!(proc_kib("VmRSS:\t  1000 kB\n", "VmRSS"), Some(1024000.0));
        assert_eq!(proc_kib("", "VmRSS"), None);
    }

    #[test]
    fn ram_figures_are_real_numbers_here() {
        let ram = ram_figures();
        let total = ram["total"].as_f64().expect("Linux has /proc");
        let used = ram["used"].as_f64().expect("used");
        assert!(total > used && used > 0.0, "{ram}");
    }
}
