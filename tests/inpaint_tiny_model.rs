//! A1111's inpainting modes through the engine on the tiny fixture models: "Only masked" gives
//! an image of the init image's size with every pixel outside the mask unchanged, each masked
//! content mode changes what is generated (and is written in the infotext), a blank mask falls
//! back to plain img2img.

use std::path::Path;
use std::sync::Arc;

use candle_core::Device;
use sd_worker_rbee::backend::generation_engine::GenerationEngine;
use sd_worker_rbee::backend::image_io::{decode_rgb, expand_crop_region, mask_crop_region, DEFAULT_MAX_PIXELS};
use sd_worker_rbee::backend::models::hub::HubOptions;
use sd_worker_rbee::backend::pipeline::{load_runner, LoadOptions};
use sd_worker_rbee::backend::request::{
    GeneratedImage, GenerationRequest, InitImage, InpaintArea, JobEvent, MaskImage, MaskSpec, MaskedContent, RgbImage,
};

fn engine(model: &str) -> Arc<GenerationEngine> {
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(model);
    let hub = HubOptions { cache_dir: std::env::temp_dir().join("sd-worker-rbee-no-hub"), endpoint: Some("http://127.0.0.1:9".into()) };
    let opts = LoadOptions::new(model.to_string_lossy(), hub, Device::Cpu);
    GenerationEngine::start(4, move || load_runner(&opts, None))
}

/// A busy init image, so a changed pixel cannot hide.
fn init_image(width: u32, height: u32) -> RgbImage {
    let pixels = (0..height).flat_map(|y| (0..width).flat_map(move |x| [(x * 5 + y) as u8, (y * 3) as u8, (x * y) as u8])).collect();
    RgbImage { width, height, pixels }
}

/// White (repaint) inside `x1..x2` × `y1..y2`.
fn box_mask(width: u32, height: u32, (x1, y1, x2, y2): (u32, u32, u32, u32)) -> MaskImage {
    let pixels = (0..height).flat_map(|y| (0..width).map(move |x| if (x1..x2).contains(&x) && (y1..y2).contains(&y) { 255 } else { 0 })).collect();
    MaskImage { width, height, pixels }
}

fn request(init: &RgbImage, mask: MaskSpec, strength: f64) -> GenerationRequest {
    let mut r = GenerationRequest::new("a red ball");
    r.width = 64;
    r.height = 64;
    r.steps = 3;
    r.seed = Some(11);
    r.init_image = Some(InitImage { image: init.clone(), strength });
    r.mask = Some(mask);
    r
}

fn run(engine: &GenerationEngine, req: GenerationRequest) -> GeneratedImage {
    let mut job = engine.submit(req).expect("accepted");
    let mut image = None;
    while let Some(event) = job.events.blocking_recv() {
        match event {
            JobEvent::Image(i) => image = Some(i),
            JobEvent::Failed(e) => panic!("job failed: {e}"),
            e if e.is_terminal() => break,
            _ => {}
        }
    }
    image.expect("an image")
}

fn pixels(image: &GeneratedImage) -> RgbImage {
    decode_rgb(&image.bytes, DEFAULT_MAX_PIXELS).expect("decodes")
}

#[test]
fn only_masked_pastes_the_generated_crop_into_the_init_image() {
    let engine = engine("tiny-sd15");
    let init = init_image(96, 80);
    let boxed = (40, 30, 56, 42);
    let mask = MaskSpec { area: InpaintArea::OnlyMasked { padding: 8 }, blur: 2, ..MaskSpec::new(box_mask(96, 80, boxed)) };
    let image = run(&engine, request(&init, mask, 0.9));
    assert_eq!((image.width, image.height), (96, 80));
    let out = pixels(&image);
    assert_eq!((out.width, out.height), (96, 80));
    // The blurred mask's bounding box (the blur-2 kernel reaches 5 px: 35..61 x 25..47), padded
    // by 8 (27..69 x 17..55) and made square for 64x64 processing (y grows by 4: 15..57).
    let mut blurred = box_mask(96, 80, boxed);
    blurred = sd_worker_rbee::backend::image_io::blur_mask(&blurred, 2.0, 2.0).expect("blur");
    let bbox = mask_crop_region(&blurred, 8).expect("non-blank");
    let region = expand_crop_region(bbox, 64, 64, 96, 80);
    assert_eq!((region.x1, region.y1, region.x2, region.y2), (27, 15, 69, 57));
    let (mut outside_changed, mut inside_changed) = (0, 0);
    for y in 0..80u32 {
        for x in 0..96u32 {
            let i = (y * 96 + x) as usize;
            let same = out.pixels[i * 3..i * 3 + 3] == init.pixels[i * 3..i * 3 + 3];
            let in_region = (region.x1..region.x2).contains(&x) && (region.y1..region.y2).contains(&y);
            if blurred.pixels[i] == 0 && !same {
                outside_changed += 1;
            }
            if !in_region {
                assert!(same, "pixel ({x}, {y}) outside the crop region changed");
            }
            if blurred.pixels[i] > 0 && !same {
                inside_changed += 1;
            }
        }
    }
    assert_eq!(outside_changed, 0, "unmasked pixels changed");
    assert!(inside_changed > 100, "only {inside_changed} masked pixels changed");
    assert!(image.infotext.contains("Inpaint area: Only masked, Masked area padding: 8"), "{}", image.infotext);
    assert!(image.infotext.contains("Size: 64x64"), "{}", image.infotext);
}

#[test]
fn a_blank_mask_with_only_masked_runs_plain_img2img() {
    let engine = engine("tiny-sd15");
    let init = init_image(96, 80);
    let mask = MaskSpec { area: InpaintArea::OnlyMasked { padding: 8 }, ..MaskSpec::new(box_mask(96, 80, (0, 0, 0, 0))) };
    let image = run(&engine, request(&init, mask, 0.5));
    assert_eq!((image.width, image.height), (64, 64));
    assert!(!image.infotext.contains("Inpaint area"), "{}", image.infotext);
}

#[test]
fn masked_content_modes_change_the_start_and_are_reported() {
    for model in ["tiny-sd15", "tiny-sd15-inpaint"] {
        let engine = engine(model);
        let init = init_image(64, 64);
        let mut outputs = Vec::new();
        for content in [MaskedContent::Original, MaskedContent::Fill, MaskedContent::LatentNoise, MaskedContent::LatentNothing] {
            let mask = MaskSpec { content, ..MaskSpec::new(box_mask(64, 64, (16, 16, 48, 40))) };
            let image = run(&engine, request(&init, mask.clone(), 1.0));
            let again = run(&engine, request(&init, mask, 1.0));
            assert_eq!(image.bytes, again.bytes, "{model} {content:?}: reruns differ");
            match content.infotext_label() {
                Some(label) => assert!(image.infotext.contains(&format!("Masked content: {label}")), "{}", image.infotext),
                None => assert!(!image.infotext.contains("Masked content"), "{}", image.infotext),
            }
            outputs.push((content, pixels(&image).pixels));
        }
        for (i, (a, pa)) in outputs.iter().enumerate() {
            for (b, pb) in &outputs[i + 1..] {
                assert_ne!(pa, pb, "{model}: {a:?} and {b:?} gave the same image");
            }
        }
    }
}

#[test]
fn whole_image_overlay_returns_the_unmasked_pixels_exactly() {
    let engine = engine("tiny-sd15");
    let init = init_image(64, 64);
    let boxed = (16, 16, 48, 40);
    let with = |overlay_original: bool| {
        let mask = MaskSpec { overlay_original, ..MaskSpec::new(box_mask(64, 64, boxed)) };
        pixels(&run(&engine, request(&init, mask, 0.8)))
    };
    let plain = with(false);
    let overlaid = with(true);
    let mut drift = 0u32;
    for y in 0..64u32 {
        for x in 0..64u32 {
            let i = ((y * 64 + x) * 3) as usize;
            if (boxed.0..boxed.2).contains(&x) && (boxed.1..boxed.3).contains(&y) {
                assert_eq!(overlaid.pixels[i..i + 3], plain.pixels[i..i + 3], "pixel ({x},{y}) inside the mask is the generated one");
            } else {
                assert_eq!(overlaid.pixels[i..i + 3], init.pixels[i..i + 3], "pixel ({x},{y}) outside the mask");
                drift += u32::from(plain.pixels[i].abs_diff(init.pixels[i]));
            }
        }
    }
    assert!(drift > 0, "without the overlay the VAE round trip changes unmasked pixels (diffusers' behaviour)");
}
