//! Model names: the local model's own id plus OpenAI's image model names as aliases of it. The
//! family of the name a client asks for decides the reply's shape (DALL·E: `url` by default and
//! no extras; GPT image: `b64_json`, resolved settings and `usage`), never which weights run:
//! this worker serves one model.

use axum::extract::{Path, State};
use axum::{Extension, Json};
use serde::Serialize;
use utoipa::ToSchema;

use crate::http::openai::errors::{OpenAiError, OpenAiErrorBody};
use crate::http::openai::OpenAiShared;
use crate::http::AppState;

/// How replies to a model name look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    DallE2,
    /// Like DALL·E 2, plus `revised_prompt` on every image.
    DallE3,
    /// `b64_json` by default, top-level `background/output_format/quality/size`, and `usage`.
    GptImage,
    /// The local model asked for by its own id: `b64_json` by default (works without a reachable
    /// URL) and the GPT-image extras, which carry the settings actually used.
    Local,
}

impl Family {
    pub fn defaults_to_url(self) -> bool {
        matches!(self, Family::DallE2 | Family::DallE3)
    }

    /// Top-level resolved settings and `usage` in the reply.
    pub fn reports_settings(self) -> bool {
        matches!(self, Family::GptImage | Family::Local)
    }
}

/// OpenAI's image model names (the SDK's `ImageModel`), all served by the local model.
pub const OPENAI_ALIASES: &[(&str, Family)] = &[
    ("dall-e-2", Family::DallE2),
    ("dall-e-3", Family::DallE3),
    ("gpt-image-1", Family::GptImage),
    ("gpt-image-1-mini", Family::GptImage),
    ("gpt-image-1.5", Family::GptImage),
    ("gpt-image-2", Family::GptImage),
    ("gpt-image-2-2026-04-21", Family::GptImage),
    ("chatgpt-image-latest", Family::GptImage),
];

/// The endpoint a request came to, which decides the family when `model` is left out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Generations,
    Edits,
    Variations,
}

impl Endpoint {
    /// OpenAI's defaults: generations use dall-e-2 unless a GPT-image-only field is present,
    /// edits use gpt-image-1.5, variations dall-e-2.
    fn default_family(self, gpt_only_field_used: bool) -> Family {
        match self {
            Endpoint::Generations if gpt_only_field_used => Family::GptImage,
            Endpoint::Generations | Endpoint::Variations => Family::DallE2,
            Endpoint::Edits => Family::GptImage,
        }
    }

    /// Prefix of the streaming event types.
    pub fn event_prefix(self) -> &'static str {
        match self {
            Endpoint::Edits => "image_edit",
            Endpoint::Generations | Endpoint::Variations => "image_generation",
        }
    }
}

/// The ids the local model answers to: its loaded id and `--model` as given (they differ when
/// `--model` is a path or the runner shortens it).
pub fn local_model_ids(state: &AppState) -> Vec<String> {
    let mut ids: Vec<String> = state.engine.status().model_id.into_iter().collect();
    if !ids.contains(&state.config.model) {
        ids.push(state.config.model.clone());
    }
    ids
}

/// The family a request's `model` selects, or 404 for a name this worker does not serve.
pub fn resolve_family(
    requested: Option<&str>,
    endpoint: Endpoint,
    gpt_only_field_used: bool,
    local_ids: &[String],
) -> Result<Family, OpenAiError> {
    let Some(name) = requested.map(str::trim).filter(|n| !n.is_empty()) else {
        return Ok(endpoint.default_family(gpt_only_field_used));
    };
    if local_ids.iter().any(|id| id == name) {
        return Ok(Family::Local);
    }
    OPENAI_ALIASES.iter().find(|(alias, _)| *alias == name).map(|(_, family)| *family).ok_or_else(|| model_not_found(name))
}

fn model_not_found(name: &str) -> OpenAiError {
    OpenAiError::not_found(
        "model_not_found",
        format!("The model '{name}' does not exist on this worker; GET /v1/models lists the names it serves."),
    )
    .with_param("model")
}

/// One model (OpenAI's `Model`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ModelObject {
    #[schema(example = "dall-e-3")]
    pub id: String,
    #[schema(example = "model")]
    pub object: &'static str,
    /// Unix seconds (when this worker started).
    pub created: i64,
    /// `local` for the loaded model, `system` for the OpenAI names that alias it.
    #[schema(example = "local")]
    pub owned_by: &'static str,
}

/// `GET /v1/models` (OpenAI's `ListModelsResponse`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ModelList {
    #[schema(example = "list")]
    pub object: &'static str,
    pub data: Vec<ModelObject>,
}

fn catalog(state: &AppState, created: i64) -> Vec<ModelObject> {
    let local = local_model_ids(state).into_iter().map(|id| ModelObject { id, object: "model", created, owned_by: "local" });
    let aliases =
        OPENAI_ALIASES.iter().map(|(alias, _)| ModelObject { id: alias.to_string(), object: "model", created, owned_by: "system" });
    local.chain(aliases).collect()
}

#[utoipa::path(get, path = "/v1/models", tag = "openai",
    responses(
        (status = 200, description = "The local model and the OpenAI names that map to it", body = ModelList),
        (status = 401, description = "Missing or invalid API key (only with --api-key)", body = OpenAiErrorBody),
    ),
    security((), ("bearer" = [])))]
pub async fn list_models(State(state): State<AppState>, Extension(shared): Extension<OpenAiShared>) -> Json<ModelList> {
    Json(ModelList { object: "list", data: catalog(&state, shared.started_at) })
}

#[utoipa::path(get, path = "/v1/models/{model}", tag = "openai",
    params(("model" = String, Path, description = "A model id from `GET /v1/models` (may contain `/`)")),
    responses(
        (status = 200, description = "The model", body = ModelObject),
        (status = 401, description = "Missing or invalid API key (only with --api-key)", body = OpenAiErrorBody),
        (status = 404, description = "Not served here (`code: model_not_found`)", body = OpenAiErrorBody),
    ),
    security((), ("bearer" = [])))]
pub async fn get_model(
    State(state): State<AppState>,
    Extension(shared): Extension<OpenAiShared>,
    Path(model): Path<String>,
) -> Result<Json<ModelObject>, OpenAiError> {
    catalog(&state, shared.started_at).into_iter().find(|m| m.id == model).map(Json).ok_or_else(|| model_not_found(&model))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> Vec<String> {
        vec!["tiny-sd15".to_string()]
    }

    #[test]
    fn a_missing_model_follows_openais_per_endpoint_defaults() {
        assert_eq!(resolve_family(None, Endpoint::Generations, false, &local()).ok(), Some(Family::DallE2));
        assert_eq!(resolve_family(Some(" "), Endpoint::Generations, true, &local()).ok(), Some(Family::GptImage));
        assert_eq!(resolve_family(None, Endpoint::Edits, false, &local()).ok(), Some(Family::GptImage));
        assert_eq!(resolve_family(None, Endpoint::Variations, true, &local()).ok(), Some(Family::DallE2));
    }

    #[test]
    fn names_resolve_to_their_family_and_unknown_names_are_404() {
        assert_eq!(resolve_family(Some("dall-e-3"), Endpoint::Generations, false, &local()).ok(), Some(Family::DallE3));
        assert_eq!(resolve_family(Some("gpt-image-1-mini"), Endpoint::Edits, false, &local()).ok(), Some(Family::GptImage));
        assert_eq!(resolve_family(Some("tiny-sd15"), Endpoint::Generations, false, &local()).ok(), Some(Family::Local));
        let err = resolve_family(Some("midjourney"), Endpoint::Generations, false, &local()).expect_err("unknown");
        assert_eq!((err.status.as_u16(), err.code.as_deref()), (404, Some("model_not_found")));
    }
}
