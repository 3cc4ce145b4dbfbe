//! `POST /sdapi/v1/img2img`, inpainting included (a `mask`).
//!
//! Honoured: init_images (raw base64 or `data:` URLs; one image repeated over the batch, or N ≤
//! batch_size images, one per image of each batch), resize_mode 0–3, denoising_strength, mask,
//! mask_blur(_x/_y), inpainting_mask_invert, inpainting_fill 0–3, inpaint_full_res ("Only
//! masked", the API default) with inpaint_full_res_padding, include_init_images, and the output
//! size width×height (not the init image's; with "Only masked" the init image's, as in A1111).
//! The mask is made binary, inverted and blurred here at its own size, as A1111 does before
//! anything else; the engine does the cropping, filling and pasting back. Not done: A1111's
//! overlay of the original pixels outside the mask when inpainting the whole picture.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};

use super::errors::{A1111Error, A1111ErrorBody, UnprocessableBody};
use serde_json::Value;

use super::generation::{fit_images, loaded_model, prepare, run_jobs, PlannedJob, PreparedCall};
use super::img2img_inputs::{fit_init_image, fit_mask, init_image, mask_image, parse_hex_color, MaskOptions};
use super::infotext_fields::parse_request;
use super::request_model::{defaults, Img2ImgRequest};
use super::response::{base_extra_params, encoded_images, info_json, Img2ImgResponse, InfoContext};
use super::A1111Face;
use crate::backend::image_io::ResizeMode;
use crate::backend::request::{InitImage, InpaintArea, MaskSpec, MaskedContent, RgbImage};
use crate::http::AppState;

/// The decoded inputs of a call: at the generation size, or at their own size for "Only masked".
struct Inputs {
    images: Vec<RgbImage>,
    mask: Option<MaskSpec>,
    /// What the infotext says about the mask preparation done here.
    mask_infotext: Vec<(String, String)>,
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

/// `inpainting_fill`: A1111 fills for anything but 1, and names only 0, 2 and 3.
fn masked_content(req: &Img2ImgRequest) -> MaskedContent {
    let value = req.inpainting_fill.unwrap_or(0);
    MaskedContent::from_a1111(value).unwrap_or_else(|| {
        tracing::warn!(inpainting_fill = value, "unknown inpainting_fill; filling as A1111 does for any value but 1");
        MaskedContent::Fill
    })
}

fn inpaint_area(req: &Img2ImgRequest) -> InpaintArea {
    if req.inpaint_full_res.unwrap_or(true) {
        InpaintArea::OnlyMasked { padding: req.inpaint_full_res_padding.unwrap_or(0).clamp(0, i64::from(u32::MAX)) as u32 }
    } else {
        InpaintArea::WholeImage
    }
}

/// The entries A1111 writes for the mask steps done here: `Mask mode`, then `Mask blur`.
fn mask_infotext(options: &MaskOptions) -> Vec<(String, String)> {
    let mut entries = Vec::new();
    if options.invert {
        entries.push(("Mask mode".to_string(), "Inpaint not masked".to_string()));
    }
    if options.blur_x > 0.0 || options.blur_y > 0.0 {
        if options.blur_x == options.blur_y {
            entries.push(("Mask blur".to_string(), (options.blur_x as i64).to_string()));
        } else {
            entries.push(("Mask blur x".to_string(), (options.blur_x as i64).to_string()));
            entries.push(("Mask blur y".to_string(), (options.blur_y as i64).to_string()));
        }
    }
    entries
}

fn decode_inputs(req: &Img2ImgRequest, texts: &[String], state: &AppState, face: &A1111Face, call: &PreparedCall) -> Result<Inputs, A1111Error> {
    let mode = resize_mode(req)?;
    let (width, height) = call.generation_size;
    let max_pixels = state.limits.max_input_pixels;
    let background = face.options.get("img2img_background_color").and_then(|v| v.as_str().map(parse_hex_color)).unwrap_or([255, 255, 255]);
    let flattened = texts
        .iter()
        .enumerate()
        .map(|(i, text)| init_image(&format!("init_images[{i}]"), text, max_pixels, background))
        .collect::<Result<Vec<_>, _>>()?;
    let fitted = |images: &[RgbImage]| images.iter().map(|image| fit_init_image(image, width, height, mode)).collect::<Result<Vec<_>, _>>();
    let Some(text) = req.mask.as_deref().filter(|m| !m.is_empty()) else {
        return Ok(Inputs { images: fitted(&flattened)?, mask: None, mask_infotext: Vec::new() });
    };
    let options = mask_options(req);
    let mask_infotext = mask_infotext(&options);
    let area = inpaint_area(req);
    // A1111 always composites the init image back outside the mask.
    let spec = |mask| MaskSpec { content: masked_content(req), area, overlay_original: true, ..MaskSpec::new(mask) };
    match area {
        InpaintArea::WholeImage => {
            let mask = mask_image(text, max_pixels, options, Some((width, height, mode)))?;
            Ok(Inputs { images: fitted(&flattened)?, mask: Some(spec(mask)), mask_infotext })
        }
        InpaintArea::OnlyMasked { .. } => {
            let mask = mask_image(text, max_pixels, options, None)?;
            if mask.pixels.iter().all(|&v| v == 0) {
                // A1111 cannot crop to a blank mask and runs plain img2img (the blur is still reported).
                tracing::info!("Unable to perform \"Inpaint Only mask\" because mask is blank, switch to img2img mode.");
                return Ok(Inputs { images: fitted(&flattened)?, mask: None, mask_infotext });
            }
            // The images keep their size; A1111 scales the mask to the image's where they differ.
            let mask = match flattened.first() {
                Some(first) if (first.width, first.height) != (mask.width, mask.height) => fit_mask(&mask, first.width, first.height, mode)?,
                _ => mask,
            };
            Ok(Inputs { images: flattened, mask: Some(spec(mask)), mask_infotext })
        }
    }
}

/// `extra_generation_params` entries of the mask, in A1111's order and JSON types.
fn mask_extra_params(req: &Img2ImgRequest, inputs: &Inputs) -> Vec<(String, Value)> {
    let mut extra = Vec::new();
    if req.mask.as_deref().is_none_or(str::is_empty) {
        return extra;
    }
    for (key, value) in &inputs.mask_infotext {
        // The blur is an int in A1111's dict; the mode a string.
        extra.push((key.clone(), value.parse::<i64>().map(Value::from).unwrap_or_else(|_| Value::from(value.as_str()))));
    }
    let Some(spec) = &inputs.mask else {
        return extra;
    };
    if let InpaintArea::OnlyMasked { padding } = spec.area {
        extra.push(("Inpaint area".to_string(), Value::from("Only masked")));
        extra.push(("Masked area padding".to_string(), Value::from(padding)));
    }
    if let Some(label) = spec.content.infotext_label() {
        extra.push(("Masked content".to_string(), Value::from(label)));
    }
    extra
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
            request.infotext_extra = inputs.mask_infotext.clone();
            jobs.push(PlannedJob { batch, request });
        }
    }
    jobs
}

#[utoipa::path(post, path = "/sdapi/v1/img2img", tag = "a1111",
    request_body(content = Img2ImgRequest, description = "A1111's StableDiffusionProcessingImg2Img; unknown keys are ignored"),
    responses(
        (status = 200, description = "Images (also after an interrupt: those finished so far)", body = Img2ImgResponse),
        (status = 400, description = "An unreadable image, more init images than batch_size, or a value this worker cannot serve", body = A1111ErrorBody),
        (status = 413, description = "The body is over the worker's --max-body-mib", body = A1111ErrorBody),
        (status = 404, description = "No init_images", body = A1111ErrorBody),
        (status = 422, description = "Wrong types (FastAPI shape), or an unknown script (HTTPException shape)", body = UnprocessableBody),
        (status = 500, description = "Generation failed", body = A1111ErrorBody),
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
        // A1111 lets this RuntimeError escape as a 500; the request is what is wrong: 400.
        return Err(A1111Error::exception(
            StatusCode::BAD_REQUEST,
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
    let mask_extra = mask_extra_params(&req, &inputs);
    let only_masked = matches!(inputs.mask.as_ref().map(|m| m.area), Some(InpaintArea::OnlyMasked { .. }));
    let jobs = plan_jobs(&call, inputs, strength);
    if let Some(job) = jobs.first() {
        state.limits.check(&job.request).map_err(|v| A1111Error::bad_request(format!("denoising_strength {}", v.problem)))?;
    }
    let guard = face.runs.register("scripts_img2img", call.n_iter);
    let mut result = run_jobs(&state, &guard.run, jobs).await?;
    // "Only masked" images come back at the init image's size, which is what A1111 returns.
    let resized = [(call.generation_size, call.output_size)];
    result.images = fit_images(std::mem::take(&mut result.images), &call, if only_masked { &[] } else { &resized })?;

    let mut extra = base_extra_params(&call);
    extra.insert("Denoising strength", strength);
    for (key, value) in mask_extra {
        extra.insert(&key, value);
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
