//! What the three image endpoints share once a request is parsed: check the model is loaded,
//! plan, submit, then either stream or wait and answer with an `ImagesResponse`.

use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::backend::generation_engine::{EngineState, ModelInfo};
use crate::backend::request::GenerationRequest;
use crate::backend::request_limits::RequestLimits;
use crate::http::job_registry::JobStatus;
use crate::http::openai::errors::{OpenAiError, MODEL_LOADING_RETRY_AFTER_SECS};
use crate::http::openai::models::local_model_ids;
use crate::http::openai::output::{finish_image, OutputImage};
use crate::http::openai::plan::{plan, ImageParams};
use crate::http::openai::response::{images_response, UrlTarget};
use crate::http::openai::stream::stream_response;
use crate::http::openai::url_images::public_base;
use crate::http::openai::OpenAiShared;
use crate::http::AppState;

/// For a runner that does not describe its model: what [`GenerationRequest::new`] assumes (an
/// SD 1.x model at 512 px) on the limits' grid.
fn assumed_model_info(id: String) -> ModelInfo {
    let defaults = GenerationRequest::new("");
    ModelInfo {
        name: id.clone(),
        id,
        hash: None,
        family: "sd",
        native_size: defaults.width,
        size_multiple: RequestLimits::default().side_multiple,
        default_steps: defaults.steps,
        default_cfg_scale: defaults.cfg_scale,
        inpainting: false,
    }
}

/// The loaded model's facts, or why requests cannot run yet.
fn loaded_model(state: &AppState) -> Result<ModelInfo, OpenAiError> {
    let status = state.engine.status();
    match (status.model_info, status.state) {
        (Some(info), _) => Ok(info),
        (None, EngineState::Idle | EngineState::Busy) => Ok(assumed_model_info(status.model_id.unwrap_or_default())),
        (None, EngineState::Error(message)) => Err(OpenAiError::unavailable("model_unavailable", message)),
        (None, EngineState::Stopped) => Err(OpenAiError::unavailable("shutting_down", "the worker is shutting down")),
        (None, _) => Err(OpenAiError::temporarily_unavailable(
            "model_loading",
            "the model is still loading; retry in a few seconds",
            MODEL_LOADING_RETRY_AFTER_SECS,
        )),
    }
}

/// Run CPU-heavy image work (decoding, resizing, encoding) on the blocking pool, so the async
/// workers keep serving other requests and streams.
pub async fn off_runtime<T: Send + 'static>(work: impl FnOnce() -> Result<T, OpenAiError> + Send + 'static) -> Result<T, OpenAiError> {
    tokio::task::spawn_blocking(work).await.unwrap_or_else(|e| Err(OpenAiError::server_error(format!("image processing stopped: {e}"))))
}

/// Run one parsed image request to its reply.
pub async fn run_image_request(
    state: &AppState,
    shared: &OpenAiShared,
    headers: &HeaderMap,
    params: ImageParams,
) -> Result<Response, OpenAiError> {
    let model = loaded_model(state)?;
    let job = plan(params, &model, &state.limits, &local_model_ids(state))?;
    let reply = job.reply;
    let record = state.submit(super::FACE.name, job.request)?;
    let created = chrono::Utc::now().timestamp();
    tracing::info!(job_id = %record.id(), family = ?reply.family, size = %reply.size_label(), stream = reply.stream, "openai image job accepted");
    if reply.stream {
        return Ok(stream_response(record, reply, created));
    }
    // Dropping this future (the client hung up) cancels the job.
    let outcome = record.outcome().await;
    match outcome.status {
        JobStatus::Completed => {}
        JobStatus::Failed => {
            return Err(outcome.error.as_ref().map(OpenAiError::from).unwrap_or_else(|| OpenAiError::server_error("the job failed")))
        }
        _ => return Err(OpenAiError::unavailable("cancelled", "the job was cancelled before it finished")),
    }
    let settings = reply.clone();
    let images = off_runtime(move || {
        outcome
            .images
            .iter()
            .map(|image| finish_image(image, settings.width, settings.height, settings.encoding))
            .collect::<Result<Vec<OutputImage>, _>>()
    })
    .await?;
    let fallback_host = format!("{}:{}", state.config.host, state.config.port);
    let urls = UrlTarget { store: &shared.urls, base: public_base(state.config.public_url.as_deref(), headers, &fallback_host) };
    Ok(Json(images_response(images, &reply, &urls, created)).into_response())
}
