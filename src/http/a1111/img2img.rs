//! `POST /sdapi/v1/img2img`, inpainting included (a `mask`).
//!
//! Honoured: init_images (raw base64 or `data:` URLs; one image repeated over the batch, or N ≤
//! batch_size images, one per image of each batch), resize_mode 0–3, denoising_strength, mask,
//! mask_blur(_x/_y), inpainting_mask_invert, include_init_images, and the output size
//! width×height (not the init image's). Accepted but not applied, because the engine has no
//! support for them yet (logged per call): inpaint_full_res ("Only masked": the whole picture is
//! inpainted), inpainting_fill other than "original" (the engine keeps the original latents
//! under the mask as a starting point), and A1111's overlay of the original pixels outside the
//! mask.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};

use super::errors::{A1111Error, A1111ErrorBody, ValidationErrorBody};
use super::generation::{fit_to_output, loaded_model, prepare, run_jobs, PlannedJob, PreparedCall};
use super::img2img_inputs::{fit_init_image, init_image, mask_image, parse_hex_color, MaskOptions};
use super::infotext_fields::parse_request;
use super::request_model::{defaults, Img2ImgRequest};
use super::response::{base_extra_params, encoded_images, info_json, Img2ImgResponse, InfoContext};
use super::A1111Face;
use crate::backend::image_io::ResizeMode;
use crate::backend::request::{InitImage, MaskSpec, RgbImage};
use crate::http::AppState;

/// The decoded inputs of a call, at the generation size.
struct Inputs {
    images: Vec<RgbImage>,
    mask: Option<MaskSpec>,
}

fn resize_mode(req: &Img2ImgRequest) -> Result<ResizeMode, A1111Error> {
    let value = req.resize_mode.unwrap_or(0);
    ResizeMode::from_a1111(value).ok_or_else(|| A1111Error::bad_request(format!("resize_mode must be 0, 1, 2 or 3, got {value}")))
}

fn mask_options(req: &Img2ImgRequest) -> MaskOptions {
    // `mask_blur` sets both axes (A1111's property setter).
    let (x, y) = match req.mask_blur {
        Some(both) => (both, both),
        None => (req.mask_blur_x.unwrap_or(defaults::MASK_BLUR), req.mask_blur_y.unwrap_or(defaults::MASK_BLUR)),
    };
    MaskOptions {
        invert: req.inpainting_mask_invert.unwrap_or(0) != 0,
        blur_x: x.max(0) as f64,
        blur_y: y.max(0) as f64,
        round: req.mask_round.unwrap_or(true),
    }
}

fn decode_inputs(req: &Img2ImgRequest, texts: &[String], state: &AppState, face: &A1111Face, call: &PreparedCall) -> Result<Inputs, A1111Error> {
    let mode = resize_mode(req)?;
    let (width, height) = call.generation_size;
    let max_pixels = state.limits.max_input_pixels;
    let background = face.options.get("img2img_background_color").and_then(|v| v.as_str().map(parse_hex_color)).unwrap_or([255, 255, 255]);
    let images = texts
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let image = init_image(&format!("init_images[{i}]"), text, max_pixels, background)?;
            fit_init_image(&image, width, height, mode)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mask = match req.mask.as_deref().filter(|m| !m.is_empty()) {
        Some(text) => {
            let mask = mask_image(text, max_pixels, mask_options(req), width, height, mode)?;
            if req.inpaint_full_res.unwrap_or(true) {
                tracing::warn!("inpaint_full_res (\"Only masked\") is not supported by the engine yet; inpainting the whole picture");
            }
            if req.inpainting_fill.unwrap_or(0) != 1 {
                tracing::warn!(fill = req.inpainting_fill.unwrap_or(0), "inpainting_fill modes other than 1 (original) are not supported by the engine yet; using original");
            }
            Some(MaskSpec::new(mask))
        }
        None => None,
    };
    Ok(Inputs { images, mask })
}

/// One job per batch when one init image serves the whole batch; one job per image otherwise.
fn plan_jobs(call: &PreparedCall, inputs: Inputs, strength: f64) -> Vec<PlannedJob> {
    let per_batch = inputs.images.len().max(1);
    let mut jobs = Vec::new();
    for batch in 0..call.n_iter {
        for (k, image) in inputs.images.iter().enumerate() {
            let first_image = batch as usize * call.batch_size as usize + k;
            let mut request = call.request_for(first_image);
            if per_batch > 1 {
                request.num_images = 1;
            }
            request.init_image = Some(InitImage { image: image.clone(), strength });
            request.mask = inputs.mask.clone();
            jobs.push(PlannedJob { batch, request });
        }
    }
    jobs
}

#[utoipa::path(post, path = "/sdapi/v1/img2img", tag = "a1111",
    request_body(content = Img2ImgRequest, description = "A1111's StableDiffusionProcessingImg2Img; unknown keys are ignored"),
    responses(
        (status = 200, description = "Images (also after an interrupt: those finished so far)", body = Img2ImgResponse),
        (status = 400, description = "An unreadable image, or a value this worker cannot serve", body = A1111ErrorBody),
        (status = 413, description = "The body is over the worker's --max-body-mib", body = A1111ErrorBody),
        (status = 404, description = "No init_images", body = A1111ErrorBody),
        (status = 422, description = "Wrong types (FastAPI shape), or an unknown script", body = ValidationErrorBody),
        (status = 500, description = "More init images than batch_size, or generation failed", body = A1111ErrorBody),
        (status = 503, description = "Queue full (see Retry-After), or the model is unavailable", body = A1111ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying (queue full only)"))),
        (status = 504, description = "The job ran past the worker's --job-timeout", body = A1111ErrorBody),
    ),
    security((), ("basic" = []), ("bearer" = [])))]
pub async fn img2img(State(state): State<AppState>, Extension(face): Extension<A1111Face>, body: Bytes) -> Result<Json<Img2ImgResponse>, A1111Error> {
    let mut req: Img2ImgRequest = parse_request(&body)?;
    let texts = req.init_images.clone().unwrap_or_default();
    if texts.is_empty() {
        return Err(A1111Error::http(StatusCode::NOT_FOUND, "Init image not found"));
    }
    let mut effective = req.common.clone();
    let batch_size = effective.batch_size();
    if texts.len() as i64 > batch_size {
        return Err(A1111Error::exception(
            StatusCode::INTERNAL_SERVER_ERROR,
            "RuntimeError",
            format!("bad number of images passed: {}; expecting {batch_size} or less", texts.len()),
        ));
    }
    if texts.len() > 1 {
        effective.batch_size = Some(texts.len() as i64);
    }
    let model = loaded_model(&state).await?;
    let call = prepare(&effective, &state, &face, &model)?;
    let strength = effective.denoising_strength();
    let inputs = decode_inputs(&req, &texts, &state, &face, &call)?;
    let has_mask = inputs.mask.is_some();
    let jobs = plan_jobs(&call, inputs, strength);
    if let Some(job) = jobs.first() {
        state.limits.check(&job.request).map_err(|v| A1111Error::bad_request(format!("denoising_strength {}", v.problem)))?;
    }
    let guard = face.runs.register("scripts_img2img", call.n_iter);
    let mut result = run_jobs(&state, &guard.run, jobs).await?;
    result.images = fit_to_output(std::mem::take(&mut result.images), &call)?;

    let mut extra = base_extra_params(&call);
    extra.insert("Denoising strength", strength);
    if has_mask {
        let options = mask_options(&req);
        if options.blur_x == options.blur_y {
            extra.insert("Mask blur", options.blur_x as i64);
        } else {
            extra.insert("Mask blur x", options.blur_x as i64);
            extra.insert("Mask blur y", options.blur_y as i64);
        }
    }
    let ctx = InfoContext { job_timestamp: &guard.run.job_timestamp, denoising_strength: Some(strength), extra_generation_params: extra };
    let info = info_json(&effective, &call, &result, &ctx)?;
    let images = encoded_images(&result.images, effective.send_images());
    if req.include_init_images != Some(true) {
        req.init_images = None;
        req.mask = None;
    }
    Ok(Json(Img2ImgResponse { images, parameters: req, info }))
}
