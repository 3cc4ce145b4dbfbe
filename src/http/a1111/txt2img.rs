//! `POST /sdapi/v1/txt2img`, with the hires fix (`enable_hr`) as the engine's second pass: see
//! `hires.rs` for the sizes and upscaler names. The images come back at the hires size; `info`
//! and the infotext keep the first pass's `Size` and add A1111's `Hires ...` entries.

use axum::body::Bytes;
use axum::extract::State;
use axum::{Extension, Json};

use super::errors::{A1111Error, A1111ErrorBody, UnprocessableBody};
use super::generation::{fit_images, loaded_model, prepare, run_jobs, PlannedJob};
use super::hires::{check_hires, extra_params, hires_pass};
use super::infotext_fields::parse_request;
use super::request_model::Txt2ImgRequest;
use super::response::{base_extra_params, encoded_images, info_json, InfoContext, Txt2ImgResponse};
use super::A1111Face;
use crate::http::AppState;

#[utoipa::path(post, path = "/sdapi/v1/txt2img", tag = "a1111",
    request_body(content = Txt2ImgRequest, description = "A1111's StableDiffusionProcessingTxt2Img; unknown keys are ignored"),
    responses(
        (status = 200, description = "Images (also after an interrupt: those finished so far)", body = Txt2ImgResponse),
        (status = 400, description = "A value this worker cannot serve (size, steps, batch), or an unknown hires upscaler", body = A1111ErrorBody),
        (status = 413, description = "The body is over the worker's --max-body-mib", body = A1111ErrorBody),
        (status = 422, description = "Wrong types (FastAPI shape), or an unknown script (HTTPException shape)", body = UnprocessableBody),
        (status = 500, description = "Generation failed", body = A1111ErrorBody),
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
    let mut call = prepare(&effective, &state, &face, &model)?;
    let hires = hires_pass(&req, (effective.width(), effective.height()), call.base.cfg_scale, model.size_multiple)?;
    let mut sizes = vec![(call.generation_size, call.output_size)];
    if let Some((pass, output)) = &hires {
        // The second pass runs at the upscaled size: it must fit the worker's size limits too.
        let mut at_hires_size = call.base.clone();
        (at_hires_size.width, at_hires_size.height) = (pass.width, pass.height);
        state.limits.check(&at_hires_size).map_err(|v| A1111Error::bad_request(format!("the hires size {}x{}: {}", pass.width, pass.height, v.problem)))?;
        sizes.insert(0, (pass.output_size(), *output));
        call.base.hires = Some(pass.clone());
    }
    let guard = face.runs.register("scripts_txt2img", call.n_iter);
    let jobs = (0..call.n_iter)
        .map(|batch| PlannedJob { batch, request: call.request_for(batch as usize * call.batch_size as usize) })
        .collect();
    let mut result = run_jobs(&state, &guard.run, jobs).await?;
    result.images = fit_images(std::mem::take(&mut result.images), &call, &sizes)?;
    let mut extra = base_extra_params(&call);
    if let Some((pass, _)) = &hires {
        extra_params(&mut extra, &req, pass);
    }
    let ctx = InfoContext { job_timestamp: &guard.run.job_timestamp, denoising_strength: effective.denoising_strength, extra_generation_params: extra };
    let info = info_json(&effective, &call, &result, &ctx)?;
    Ok(Json(Txt2ImgResponse { images: encoded_images(&result.images, req.common.send_images()), parameters: req, info }))
}
