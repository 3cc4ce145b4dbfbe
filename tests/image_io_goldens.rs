//! image_io against what A1111 1.10 produces with Pillow 13 / OpenCV 5 / piexif 1.1.3
//! (tests/fixtures/image_io/make_goldens.py wrote every file compared here).

use sd_worker_rbee::backend::image_io::{
    blur_mask, decode_rgb, fill_masked_area, overlay_original, read_infotext, resize_image, resize_mask, CropRegion, ResizeMode,
    DEFAULT_MAX_PIXELS,
};
use sd_worker_rbee::backend::request::{MaskImage, RgbImage};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/image_io/");
const INFOTEXT: &str = "a cat, 猫\nNegative prompt: dog\nSteps: 20, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7.0, Seed: 1, Size: 53x31";

fn read(name: &str) -> Vec<u8> {
    std::fs::read(format!("{DIR}{name}")).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn rgb(name: &str) -> RgbImage {
    decode_rgb(&read(name), DEFAULT_MAX_PIXELS).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// A greyscale PNG as a mask (decode gives equal R, G, B).
fn mask(name: &str) -> MaskImage {
    let image = rgb(name);
    MaskImage {
        width: image.width,
        height: image.height,
        pixels: image.pixels.chunks(3).map(|p| p[0]).collect(),
    }
}

/// (max |a - b|, number of differing bytes).
fn diff(a: &[u8], b: &[u8]) -> (u8, usize) {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).fold((0, 0), |(max, n), (x, y)| {
        (max.max(x.abs_diff(*y)), n + usize::from(x != y))
    })
}

#[test]
fn resize_modes_match_pillow_bit_for_bit() {
    let source = rgb("source.png");
    assert_eq!((source.width, source.height), (53, 31));
    for (mode, w, h) in [
        (0, 96, 64),
        (0, 24, 40),
        (1, 64, 64),
        (1, 40, 96),
        (2, 64, 64),
        (2, 128, 40),
        (2, 61, 64),
    ] {
        let golden = rgb(&format!("resize_mode{mode}_{w}x{h}.png"));
        let ours = resize_image(&source, w, h, ResizeMode::from_a1111(mode).expect("mode")).expect("resize");
        assert_eq!((ours.width, ours.height), (golden.width, golden.height));
        let (max, count) = diff(&ours.pixels, &golden.pixels);
        assert_eq!(
            (max, count),
            (0, 0),
            "mode {mode} {w}x{h}: max diff {max}, {count} bytes differ"
        );
    }
    let golden = mask("mask_resize_mode0_80x72.png");
    let ours = resize_mask(&mask("mask.png"), 80, 72, ResizeMode::JustResize).expect("resize");
    assert_eq!(diff(&ours.pixels, &golden.pixels), (0, 0));
}

#[test]
fn mask_blur_matches_opencv_bit_for_bit() {
    for (source, name, sx, sy) in [
        ("mask.png", "mask_blur4.png", 4.0, 4.0),
        ("mask.png", "mask_blur2x.png", 2.0, 0.0),
        ("mask_noisy.png", "mask_noisy_blur1x3.png", 1.0, 3.0),
        ("mask_noisy.png", "mask_noisy_blur32x7.png", 32.0, 7.0),
    ] {
        let golden = mask(name);
        let ours = blur_mask(&mask(source), sx, sy).expect("blur");
        let (max, count) = diff(&ours.pixels, &golden.pixels);
        assert_eq!((max, count), (0, 0), "{name}: max diff {max}, {count} bytes differ");
    }
}

#[test]
fn infotext_written_by_a1111_is_read_back() {
    for name in ["a1111.png", "a1111.jpg", "a1111.webp"] {
        assert_eq!(
            read_infotext(&read(name)).expect(name).as_deref(),
            Some(INFOTEXT),
            "{name}"
        );
    }
}

#[test]
fn inpainting_fill_matches_a1111_on_pillow_bit_for_bit() {
    let ours = fill_masked_area(&rgb("inpaint_image.png"), &mask("inpaint_mask.png")).expect("fill");
    let golden = rgb("inpaint_fill.png");
    assert_eq!(diff(&ours.pixels, &golden.pixels), (0, 0));
}

#[test]
fn overlay_matches_a1111_apply_overlay_bit_for_bit() {
    let (original, mask) = (rgb("inpaint_image.png"), mask("inpaint_mask.png"));
    let generated = rgb("inpaint_generated.png");
    let paste_to = CropRegion { x1: 6, y1: 3, x2: 30, y2: 22 };
    let ours = overlay_original(&generated, &original, &mask, Some(paste_to)).expect("overlay");
    assert_eq!(diff(&ours.pixels, &rgb("inpaint_overlay_crop.png").pixels), (0, 0));
    // Where the mask is 0 the original comes back exactly.
    for (i, &m) in mask.pixels.iter().enumerate() {
        if m == 0 {
            assert_eq!(ours.pixels[i * 3..i * 3 + 3], original.pixels[i * 3..i * 3 + 3], "pixel {i}");
        }
    }
    let whole = resize_image(&generated, original.width, original.height, ResizeMode::JustResize).expect("resize");
    let ours = overlay_original(&whole, &original, &mask, None).expect("overlay");
    assert_eq!(diff(&ours.pixels, &rgb("inpaint_overlay_whole.png").pixels), (0, 0));
}
