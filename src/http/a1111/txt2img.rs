//! `POST /sdapi/v1/txt2img`.
//!
//! Hires fix: the fields are accepted and validated as A1111 validates them (an unknown
//! `hr_upscaler` is A1111's 500), but the engine has no second pass yet, so the call runs the
//! first pass only, logs that, and says nothing about hires in `info` or the infotext.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};

use super::errors::{A1111Error, A1111ErrorBody, ValidationErrorBody};
use super::generation::{fit_to_output, loaded_model, prepare, run_jobs, PlannedJob};
use super::infotext_fields::parse_request;
use super::lists::{BUILTIN_UPSCALERS, LATENT_UPSCALE_MODES};
use super::request_model::Txt2ImgRequest;
use super::response::{base_extra_params, encoded_images, info_json, InfoContext, Txt2ImgResponse};
use super::A1111Face;
use crate::http::AppState;

/// A1111 checks the hires upscaler name before running (`could not find upscaler named X`).
fn check_hires(req: &Txt2ImgRequest) -> Result<(), A1111Error> {
    if req.enable_hr != Some(true) {
        return Ok(());
    }
    let upscaler = req.hr_upscaler.as_deref().unwrap_or("Latent");
    if !LATENT_UPSCALE_MODES.contains(&upscaler) && !BUILTIN_UPSCALERS.contains(&upscaler) {
        return Err(A1111Error::exception(StatusCode::INTERNAL_SERVER_ERROR, "Exception", format!("could not find upscaler named {upscaler}")));
    }
    tracing::warn!("hires fix (enable_hr) is not supported by the engine yet; running the first pass only");
    Ok(())
}

#[utoipa::path(post, path = "/sdapi/v1/txt2img", tag = "a1111",
    request_body(content = Txt2ImgRequest, description = "A1111's StableDiffusionProcessingTxt2Img; unknown keys are ignored"),
    responses(
        (status = 200, description = "Images (also after an interrupt: those finished so far)", body = Txt2ImgResponse),
        (status = 400, description = "A value this worker cannot serve (size, steps, batch)", body = A1111ErrorBody),
        (status = 413, description = "The body is over the worker's --max-body-mib", body = A1111ErrorBody),
        (status = 422, description = "Wrong types (FastAPI shape), or an unknown script", body = ValidationErrorBody),
        (status = 500, description = "Unknown hires upscaler, or generation failed", body = A1111ErrorBody),
        (status = 503, description = "Queue full (see Retry-After), or the model is unavailable", body = A1111ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying (queue full only)"))),
        (status = 504, description = "The job ran past the worker's --job-timeout", body = A1111ErrorBody),
    ),
    security((), ("basic" = []), ("bearer" = [])))]
pub async fn txt2img(State(state): State<AppState>, Extension(face): Extension<A1111Face>, body: Bytes) -> Result<Json<Txt2ImgResponse>, A1111Error> {
    let req: Txt2ImgRequest = parse_request(&body)?;
    // Legacy first-phase size: non-zero values replace width/height (A1111's __post_init__);
    // `parameters` still echoes the request as sent.
    let mut effective = req.common.clone();
    if let (Some(w), Some(h)) = (req.firstphase_width, req.firstphase_height) {
        if w != 0 || h != 0 {
            effective.width = Some(w);
            effective.height = Some(h);
        }
    }
    check_hires(&req)?;
    let model = loaded_model(&state).await?;
    let call = prepare(&effective, &state, &face, &model)?;
    let guard = face.runs.register("scripts_txt2img", call.n_iter);
    let jobs = (0..call.n_iter)
        .map(|batch| {
            let mut request = call.base.clone();
            request.seed = Some(call.seeds.batch_seed(batch as usize, call.batch_size as usize));
            PlannedJob { batch, request }
        })
        .collect();
    let mut result = run_jobs(&state, &guard.run, jobs).await?;
    result.images = fit_to_output(std::mem::take(&mut result.images), &call)?;
    let ctx = InfoContext {
        job_timestamp: &guard.run.job_timestamp,
        denoising_strength: effective.denoising_strength,
        extra_generation_params: base_extra_params(&call),
    };
    let info = info_json(&effective, &call, &result, &ctx)?;
    Ok(Json(Txt2ImgResponse { images: encoded_images(&result.images, req.common.send_images()), parameters: req, info }))
}
