//! `GET/POST /sdapi/v1/options`: A1111's settings dict, and the settings a job runs with.
//!
//! GET returns every option (A1111's keys and defaults) with the live model title; POST accepts
//! back anything GET returned (Open WebUI posts the whole dict), refuses unknown keys with A1111's
//! `KeyError` body, and answers A1111's `RuntimeError: model 'x' not found` body for a checkpoint
//! title this worker does not serve, both as 400 (A1111 lets them escape as 500s; the request is
//! what is wrong, and a 5xx would tell clients to retry). The options the worker acts on are validated and interpreted by
//! [`JobSettings`]: `CLIP_stop_at_last_layers`, `sdxl_clip_l_skip`, `randn_source`, `samples_format`,
//! `jpeg_quality`, `webp_lossless`, `live_previews_enable`, `show_progress_every_n_steps`,
//! `enable_prompt_comments`, `sd_vae`. The others are stored and echoed only.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde_json::{Map, Value};

use super::errors::{python_repr, A1111Error, A1111ErrorBody, ValidationErrorBody};
use super::models::{Catalog, Checkpoint};
use super::A1111Face;
use crate::backend::request::{OutputFormat, PreviewPolicy, RngKind};
use crate::http::AppState;

/// Options computed from the engine, not stored.
const LIVE_KEYS: &[&str] = &["sd_model_checkpoint", "sd_checkpoint_hash"];

/// A1111 1.10's options and defaults (`options_defaults.json`).
const DEFAULT_OPTIONS_JSON: &str = include_str!("options_defaults.json");

/// A1111 1.10's options with their defaults: every key clients read or write, and the rest of the
/// commonly exported set so a dict posted back by a client is recognised.
fn default_options() -> BTreeMap<String, Value> {
    // Parsed at run time from a file: far too many keys for `json!`. The test below keeps it valid.
    match serde_json::from_str::<Value>(DEFAULT_OPTIONS_JSON) {
        Ok(Value::Object(map)) => map.into_iter().collect(),
        _ => BTreeMap::new(),
    }
}

/// The settings one job runs with: the stored options with the request's `override_settings`.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSettings {
    pub clip_skip: u32,
    /// `sdxl_clip_l_skip`: clip skip also moves SDXL's CLIP-L layer.
    pub sdxl_clip_l_skip: bool,
    pub rng: RngKind,
    pub output_format: OutputFormat,
    pub preview: PreviewPolicy,
    pub strip_prompt_comments: bool,
    pub eta_noise_seed_delta: i64,
    /// `sd_vae`: a VAE from the models folder; `None` for "Automatic"/"None" (the checkpoint's).
    pub vae: Option<String>,
    /// `override_settings.sd_model_checkpoint`, when it names a known checkpoint.
    pub checkpoint: Option<Checkpoint>,
}

/// Largest `CLIP_stop_at_last_layers` A1111's UI allows.
const MAX_CLIP_SKIP: i64 = 12;

fn invalid(key: &str, expected: &str, value: &Value) -> A1111Error {
    A1111Error::bad_request(format!("option {key} must be {expected}, got {value}"))
}

fn int_in(key: &str, value: &Value, min: i64, max: i64) -> Result<i64, A1111Error> {
    let number = value.as_i64().or_else(|| value.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64));
    number.filter(|n| (min..=max).contains(n)).ok_or_else(|| invalid(key, &format!("an integer from {min} to {max}"), value))
}

fn bool_of(key: &str, value: &Value) -> Result<bool, A1111Error> {
    value.as_bool().ok_or_else(|| invalid(key, "true or false", value))
}

fn one_of<'a>(key: &str, value: &'a Value, allowed: &[&str]) -> Result<&'a str, A1111Error> {
    value
        .as_str()
        .filter(|s| allowed.contains(s))
        .ok_or_else(|| invalid(key, &format!("one of {}", allowed.join(", ")), value))
}

/// Refuse a value the worker could not act on, for the options it interprets.
fn validate_known(key: &str, value: &Value) -> Result<(), A1111Error> {
    match key {
        "CLIP_stop_at_last_layers" => int_in(key, value, 1, MAX_CLIP_SKIP).map(drop),
        "randn_source" => one_of(key, value, &["GPU", "CPU", "NV"]).map(drop),
        "samples_format" => one_of(key, value, &["png", "jpg", "jpeg", "webp"]).map(drop),
        "jpeg_quality" => int_in(key, value, 1, 100).map(drop),
        "show_progress_every_n_steps" => int_in(key, value, -1, 1000).map(drop),
        "eta_noise_seed_delta" => int_in(key, value, i64::MIN, i64::MAX).map(drop),
        "webp_lossless" | "live_previews_enable" | "enable_prompt_comments" | "sdxl_clip_l_skip" => bool_of(key, value).map(drop),
        "sd_vae" => value.as_str().map(drop).ok_or_else(|| invalid(key, "a VAE name, \"Automatic\" or \"None\"", value)),
        _ => Ok(()),
    }
}

impl JobSettings {
    /// Read the interpreted options from `options` (already validated when stored).
    fn from_options(options: &BTreeMap<String, Value>) -> Result<JobSettings, A1111Error> {
        let get = |key: &str| options.get(key).cloned().unwrap_or(Value::Null);
        let clip_skip = int_in("CLIP_stop_at_last_layers", &get("CLIP_stop_at_last_layers"), 1, MAX_CLIP_SKIP)?;
        let rng = match one_of("randn_source", &get("randn_source"), &["GPU", "CPU", "NV"])? {
            "CPU" => RngKind::TorchCpu,
            // "NV" is A1111's CPU re-implementation of CUDA's Philox: the same numbers as "GPU".
            _ => RngKind::Philox,
        };
        let quality = int_in("jpeg_quality", &get("jpeg_quality"), 1, 100)? as u8;
        let output_format = match one_of("samples_format", &get("samples_format"), &["png", "jpg", "jpeg", "webp"])? {
            "jpg" | "jpeg" => OutputFormat::Jpeg { quality },
            "webp" if bool_of("webp_lossless", &get("webp_lossless"))? => OutputFormat::Webp { quality: 100 },
            "webp" => OutputFormat::Webp { quality },
            _ => OutputFormat::Png,
        };
        let every = int_in("show_progress_every_n_steps", &get("show_progress_every_n_steps"), -1, 1000)?;
        let preview = if bool_of("live_previews_enable", &get("live_previews_enable"))? && every > 0 {
            PreviewPolicy::EveryNSteps(every as u32)
        } else {
            PreviewPolicy::None
        };
        Ok(JobSettings {
            clip_skip: clip_skip as u32,
            sdxl_clip_l_skip: bool_of("sdxl_clip_l_skip", &get("sdxl_clip_l_skip"))?,
            rng,
            output_format,
            preview,
            strip_prompt_comments: bool_of("enable_prompt_comments", &get("enable_prompt_comments"))?,
            eta_noise_seed_delta: int_in("eta_noise_seed_delta", &get("eta_noise_seed_delta"), i64::MIN, i64::MAX)?,
            checkpoint: None,
            vae: get("sd_vae").as_str().map(str::trim).filter(|v| !v.is_empty() && *v != "Automatic" && *v != "None").map(str::to_string),
        })
    }
}

/// The face's options, shared by every request.
pub struct OptionsStore {
    values: Mutex<BTreeMap<String, Value>>,
}

impl Default for OptionsStore {
    fn default() -> Self {
        OptionsStore { values: Mutex::new(default_options()) }
    }
}

impl OptionsStore {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Value>> {
        self.values.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Every option, with the live model keys filled in from the active checkpoint.
    pub fn snapshot(&self, active: Option<&Checkpoint>) -> Map<String, Value> {
        let mut map: Map<String, Value> = self.lock().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        map.insert("sd_model_checkpoint".into(), active.map_or(Value::Null, |c| Value::from(c.title.clone())));
        // A1111 keeps the full sha256 here (webuiapi matches it against `sd-models`' sha256);
        // a model outside the models folder only has the short hash.
        let hash = active.and_then(|c| c.sha256.clone().or_else(|| c.hash.clone())).unwrap_or_default();
        map.insert("sd_checkpoint_hash".into(), Value::from(hash));
        map
    }

    /// One stored option.
    pub fn get(&self, key: &str) -> Option<Value> {
        self.lock().get(key).cloned()
    }

    /// A1111's `set_config`: the checkpoint first, then every key; nothing changes unless all
    /// keys are acceptable. Returns the checkpoint the update selects, if it names one.
    pub fn apply(&self, update: &Map<String, Value>, catalog: &Catalog) -> Result<Option<Checkpoint>, A1111Error> {
        let mut selected = None;
        if let Some(checkpoint) = update.get("sd_model_checkpoint").filter(|v| !v.is_null()) {
            let name = checkpoint.as_str().map(str::to_string).unwrap_or_else(|| checkpoint.to_string());
            match catalog.resolve(&name) {
                Some(found) => selected = Some(found.clone()),
                None => {
                    return Err(A1111Error::exception(
                        StatusCode::BAD_REQUEST,
                        "RuntimeError",
                        format!("model {} not found", python_repr(&name)),
                    ))
                }
            }
        }
        let mut values = self.lock();
        for (key, value) in update {
            if value.is_null() || LIVE_KEYS.contains(&key.as_str()) {
                continue;
            }
            if !values.contains_key(key) {
                return Err(A1111Error::exception(StatusCode::BAD_REQUEST, "KeyError", python_repr(key)));
            }
            validate_known(key, value)?;
        }
        for (key, value) in update {
            if !value.is_null() && !LIVE_KEYS.contains(&key.as_str()) {
                values.insert(key.clone(), value.clone());
            }
        }
        Ok(selected)
    }

    /// The settings for a job: stored options, then `override_settings`. Unknown override keys
    /// are ignored (logged), and an unknown checkpoint is dropped, as A1111 drops it.
    pub fn job_settings<'a>(&self, overrides: impl Iterator<Item = (&'a String, &'a Value)>, catalog: &Catalog) -> Result<JobSettings, A1111Error> {
        let mut values = self.lock().clone();
        let mut checkpoint = None;
        for (key, value) in overrides {
            if value.is_null() {
                continue;
            }
            if key == "sd_model_checkpoint" {
                checkpoint = catalog.resolve(value.as_str().unwrap_or_default()).cloned();
                if checkpoint.is_none() {
                    tracing::warn!(checkpoint = %value, "override_settings names an unknown checkpoint; using the current one (as A1111 does)");
                }
                continue;
            }
            if !values.contains_key(key) {
                tracing::warn!(key = %key, "ignoring unknown override_settings key");
                continue;
            }
            validate_known(key, value)?;
            values.insert(key.clone(), value.clone());
        }
        Ok(JobSettings { checkpoint, ..JobSettings::from_options(&values)? })
    }
}

#[utoipa::path(get, path = "/sdapi/v1/options", tag = "a1111",
    responses((status = 200, description = "Every option with its value", body = Object)))]
pub async fn get_options(State(state): State<AppState>, Extension(face): Extension<A1111Face>) -> Json<Map<String, Value>> {
    let catalog = face.models.catalog(&state);
    Json(face.options.snapshot(face.models.active(&catalog).as_ref()))
}

#[utoipa::path(post, path = "/sdapi/v1/options", tag = "a1111",
    request_body(content = Object, description = "Options to set; the whole dict GET returned is accepted"),
    responses(
        (status = 200, description = "Set (A1111 answers `null`)", body = Option<Object>),
        (status = 400, description = "A value the worker cannot use, an unknown key (`KeyError`) or an unknown \
            checkpoint (`RuntimeError`). A1111 answers the last two with 500; a bad request is the client's error, so 400 here \
            (same body)", body = A1111ErrorBody),
        (status = 413, description = "The body is over the worker's --max-body-mib", body = A1111ErrorBody),
        (status = 422, description = "The body is not a JSON object", body = ValidationErrorBody),
    ))]
pub async fn set_options(State(state): State<AppState>, Extension(face): Extension<A1111Face>, body: Bytes) -> Result<Json<Value>, A1111Error> {
    let value: Value = crate::http::json_body::parse_value(&body).map_err(|e| A1111Error::from_json_body(&e))?;
    let Value::Object(update) = value else {
        return Err(A1111Error::validation(Vec::new(), "type_error.dict", "value is not a valid dict"));
    };
    let catalog = face.models.catalog(&state);
    if let Some(checkpoint) = face.options.apply(&update, &catalog)? {
        face.models.select(checkpoint);
    }
    Ok(Json(Value::Null))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use crate::http::a1111::models::{info_from_id, Checkpoint};

    fn served() -> Catalog {
        let mut info = info_from_id("models/tiny-sd15");
        info.hash = Some("0123456789".into());
        let current = Checkpoint::from_info(&info);
        Catalog { checkpoints: vec![current.clone()], current: Some(current), info: Some(info) }
    }

    #[test]
    fn the_defaults_file_is_a_json_object_with_the_keys_clients_read() {
        let defaults = default_options();
        for key in ["sd_model_checkpoint", "sd_vae", "CLIP_stop_at_last_layers", "samples_format", "randn_source", "eta_noise_seed_delta", "live_previews_enable"] {
            assert!(defaults.contains_key(key), "{key}");
        }
        assert!(!defaults.contains_key("forge_preset"), "SillyTavern would take us for Forge");
    }

    #[test]
    fn defaults_give_a1111_job_settings() {
        let store = OptionsStore::default();
        let settings = store.job_settings(std::iter::empty(), &served()).expect("defaults are valid");
        assert_eq!((settings.clip_skip, settings.sdxl_clip_l_skip), (1, false));
        assert_eq!(settings.rng, RngKind::Philox);
        assert_eq!(settings.output_format, OutputFormat::Png);
        assert_eq!(settings.preview, PreviewPolicy::EveryNSteps(10));
    }

    #[test]
    fn the_whole_dict_posts_back_and_overrides_apply() {
        let store = OptionsStore::default();
        let catalog = served();
        let mut all = store.snapshot(catalog.current.as_ref());
        assert_eq!(all["sd_model_checkpoint"], "tiny-sd15 [0123456789]");
        all.insert("randn_source".into(), Value::from("CPU"));
        all.insert("CLIP_stop_at_last_layers".into(), Value::from(2));
        let selected = store.apply(&all, &catalog).expect("accepted");
        assert_eq!(selected.map(|c| c.title), Some("tiny-sd15 [0123456789]".to_string()));
        let settings = store.job_settings(std::iter::empty(), &served()).expect("valid");
        assert_eq!((settings.rng, settings.clip_skip), (RngKind::TorchCpu, 2));
        let overrides: BTreeMap<String, Value> =
            [("CLIP_stop_at_last_layers".to_string(), Value::from(3)), ("sdxl_clip_l_skip".to_string(), Value::from(true)), ("forge_additional_modules".to_string(), json!([]))].into();
        let settings = store.job_settings(overrides.iter(), &served()).expect("valid");
        assert_eq!((settings.clip_skip, settings.sdxl_clip_l_skip), (3, true));
    }

    #[test]
    fn unknown_keys_and_checkpoints_are_refused_like_a1111() {
        let store = OptionsStore::default();
        let err = store.apply(&json!({"no_such_option": 1}).as_object().cloned().unwrap_or_default(), &served()).expect_err("KeyError");
        let A1111Error::Handled { status, body, .. } = err else { panic!("handled") };
        assert_eq!((status.as_u16(), body.error.as_str(), body.errors.as_str()), (400, "KeyError", "'no_such_option'"));
        let err = store.apply(&json!({"sd_model_checkpoint": "other.safetensors"}).as_object().cloned().unwrap_or_default(), &served());
        let Err(A1111Error::Handled { body, .. }) = err else { panic!("refused") };
        assert_eq!((body.error.as_str(), body.errors.as_str()), ("RuntimeError", "model 'other.safetensors' not found"));
        let err = store.apply(&json!({"CLIP_stop_at_last_layers": "two"}).as_object().cloned().unwrap_or_default(), &served());
        assert_eq!(err.expect_err("bad value").status(), 400);
        // Nothing was half-applied.
        assert_eq!(store.get("CLIP_stop_at_last_layers"), Some(Value::from(1)));
    }
}
