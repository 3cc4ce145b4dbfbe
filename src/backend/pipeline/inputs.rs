//! The init image and mask of a request as the denoising loop needs them, prepared the way
//! A1111's img2img does: "Only masked" cuts the mask's crop region out of the init image (at
//! its own size) and scales it to the request's size, "fill" replaces the masked pixels by the
//! surrounding colours, and what is needed to paste the result back is kept.

use crate::backend::generation_engine::RunError;
use crate::backend::image_io::{
    blur_mask, crop_mask, crop_rgb, expand_crop_region, fill_masked_area, invert_mask, mask_crop_region, overlay_original, resize_image,
    resize_mask, resize_rgb, CropRegion, ImageIoError, ResizeMode,
};
use crate::backend::request::{GenerationRequest, InpaintArea, MaskImage, MaskSpec, MaskedContent, RgbImage};

/// Init image and mask at the request's size (cropped for "Only masked", the init image filled
/// for "fill"), the mask blurred/inverted as asked.
pub struct PreparedInputs {
    pub init: Option<RgbImage>,
    pub mask: Option<MaskImage>,
    /// What the masked area starts from (only meaningful with a mask).
    pub content: MaskedContent,
    /// "Only masked": how the generated image goes back into the init image.
    pub paste_back: Option<PasteBack>,
}

/// The init image, the mask it is pasted back through and, for "Only masked", where the generated
/// crop goes (A1111's `overlay_images`, `mask_for_overlay` and `paste_to`).
pub struct PasteBack {
    pub original: RgbImage,
    pub mask: MaskImage,
    /// "Only masked": the crop region and its padding; `None` for the whole image.
    pub region: Option<(CropRegion, u32)>,
}

impl PasteBack {
    /// The final image: `generated` (scaled into the crop region for "Only masked") composited
    /// under the original's unmasked pixels.
    pub fn apply(&self, generated: &RgbImage) -> Result<RgbImage, ImageIoError> {
        overlay_original(generated, &self.original, &self.mask, self.region.map(|(region, _)| region))
    }
}

/// A1111's whole-picture `mask_for_overlay`: the (blurred) mask doubled and clipped, so the
/// original shows through fully outside the mask and half-way into its blurred edge.
fn doubled(mask: &MaskImage) -> MaskImage {
    MaskImage { width: mask.width, height: mask.height, pixels: mask.pixels.iter().map(|&v| v.saturating_mul(2)).collect() }
}

impl PreparedInputs {
    /// The infotext entries of the inpainting steps that ran, in A1111's order.
    pub fn infotext_entries(&self) -> Vec<(String, String)> {
        let mut entries = Vec::new();
        if let Some((_, padding)) = self.paste_back.as_ref().and_then(|paste| paste.region) {
            entries.push(("Inpaint area".to_string(), "Only masked".to_string()));
            entries.push(("Masked area padding".to_string(), padding.to_string()));
        }
        if let (Some(_), Some(label)) = (&self.mask, self.content.infotext_label()) {
            entries.push(("Masked content".to_string(), label.to_string()));
        }
        entries
    }
}

fn invalid(field: &str, e: ImageIoError) -> RunError {
    super::generate::invalid(field, e.to_string())
}

/// The mask at `width`×`height`, inverted then blurred as the spec asks.
fn shaped_mask(spec: &MaskSpec, width: u32, height: u32) -> Result<MaskImage, RunError> {
    let mut mask = if (spec.mask.width, spec.mask.height) != (width, height) {
        resize_mask(&spec.mask, width, height, ResizeMode::JustResize).map_err(|e| invalid("mask", e))?
    } else {
        spec.mask.clone()
    };
    if spec.invert {
        mask = invert_mask(&mask);
    }
    if spec.blur > 0 {
        mask = blur_mask(&mask, f64::from(spec.blur), f64::from(spec.blur)).map_err(|e| invalid("mask_blur", e))?;
    }
    Ok(mask)
}

fn fit(image: &RgbImage, width: u32, height: u32) -> Result<RgbImage, RunError> {
    if (image.width, image.height) == (width, height) {
        return Ok(image.clone());
    }
    resize_rgb(image, width, height).map_err(|e| invalid("init_image", e))
}

pub fn prepare_inputs(req: &GenerationRequest) -> Result<PreparedInputs, RunError> {
    let (width, height) = (req.width, req.height);
    let Some(init) = &req.init_image else {
        return Ok(PreparedInputs { init: None, mask: None, content: MaskedContent::Original, paste_back: None });
    };
    let Some(spec) = &req.mask else {
        return Ok(PreparedInputs { init: Some(fit(&init.image, width, height)?), mask: None, content: MaskedContent::Original, paste_back: None });
    };
    let (image, mask, paste_back) = match spec.area {
        InpaintArea::WholeImage => {
            let image = fit(&init.image, width, height)?;
            let mask = shaped_mask(spec, width, height)?;
            let paste = spec.overlay_original.then(|| PasteBack { original: image.clone(), mask: doubled(&mask), region: None });
            (image, mask, paste)
        }
        InpaintArea::OnlyMasked { padding } => {
            // The mask is shaped at the init image's size, where the crop region is found.
            let original = &init.image;
            let full_mask = shaped_mask(spec, original.width, original.height)?;
            let Some(bbox) = mask_crop_region(&full_mask, padding) else {
                // A1111: a blank mask cannot be cropped to; it runs plain img2img instead.
                return Ok(PreparedInputs { init: Some(fit(original, width, height)?), mask: None, content: MaskedContent::Original, paste_back: None });
            };
            let region = expand_crop_region(bbox, width, height, original.width, original.height);
            let crop_image = crop_rgb(original, region).map_err(|e| invalid("init_image", e))?;
            let crop_mask = crop_mask(&full_mask, region).map_err(|e| invalid("mask", e))?;
            // A1111 scales both with resize mode 2 ("resize and fill") to the processing size.
            let image = resize_image(&crop_image, width, height, ResizeMode::ResizeAndFill).map_err(|e| invalid("init_image", e))?;
            let mask = resize_mask(&crop_mask, width, height, ResizeMode::ResizeAndFill).map_err(|e| invalid("mask", e))?;
            let paste = PasteBack { original: original.clone(), mask: full_mask, region: Some((region, padding)) };
            (image, mask, Some(paste))
        }
    };
    let image = match spec.content {
        MaskedContent::Fill => fill_masked_area(&image, &mask).map_err(|e| invalid("mask", e))?,
        _ => image,
    };
    Ok(PreparedInputs { init: Some(image), mask: Some(mask), content: spec.content, paste_back })
}
