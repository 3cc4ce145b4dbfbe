//! Round trips through every format, the metadata A1111 readers look for, and the refusals.

use base64::Engine;

use super::*;
use crate::backend::request::{OutputFormat, RgbImage};

fn test_image(width: u32, height: u32) -> RgbImage {
    let mut pixels = Vec::with_capacity((width * height * 3) as usize);
    for y in 0..height {
        for x in 0..width {
            pixels.extend_from_slice(&[(x * 7 % 256) as u8, (y * 13 % 256) as u8, ((x + y) * 3 % 256) as u8]);
        }
    }
    RgbImage { width, height, pixels }
}

/// Smooth content, so JPEG's error stays small and measurable.
fn smooth_image(width: u32, height: u32) -> RgbImage {
    let mut pixels = Vec::with_capacity((width * height * 3) as usize);
    for y in 0..height {
        for x in 0..width {
            pixels.extend_from_slice(&[(x * 255 / width) as u8, (y * 255 / height) as u8, 128]);
        }
    }
    RgbImage { width, height, pixels }
}

/// (type, data) of every chunk after the signature.
fn png_chunks(bytes: &[u8]) -> Vec<([u8; 4], Vec<u8>)> {
    let mut out = Vec::new();
    let mut at = 8;
    while at + 8 <= bytes.len() {
        let len = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        let kind: [u8; 4] = bytes[at + 4..at + 8].try_into().unwrap();
        out.push((kind, bytes[at + 8..at + 8 + len].to_vec()));
        at += 12 + len;
    }
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

const LATIN1_INFOTEXT: &str = "café, (masterpiece:1.2)\nNegative prompt: blurry\n\
Steps: 20, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7.0, Seed: 1, Size: 64x48";
const UNICODE_INFOTEXT: &str =
    "猫, 🐱 on a sofa\nSteps: 20, Sampler: Euler, Schedule type: Automatic, CFG scale: 7.0, Seed: 2, Size: 64x48";

#[test]
fn png_round_trips_losslessly_with_text_right_after_ihdr() {
    let image = test_image(64, 48);
    let bytes = encode_png(&image, Some(LATIN1_INFOTEXT)).expect("encode");
    assert_eq!(decode_rgb(&bytes, DEFAULT_MAX_PIXELS).expect("decode"), image);

    let chunks = png_chunks(&bytes);
    let kinds: Vec<&[u8; 4]> = chunks.iter().map(|(k, _)| k).collect();
    assert_eq!(kinds[0], b"IHDR");
    assert_eq!(kinds[1], b"tEXt", "tEXt must follow IHDR directly");
    assert_eq!(kinds[2], b"IDAT");
    assert_eq!(*kinds.last().unwrap(), b"IEND");
    // keyword, NUL, then the text in Latin-1 (é is the single byte 0xE9).
    let mut expected = b"parameters\0".to_vec();
    expected.extend(LATIN1_INFOTEXT.chars().map(|c| c as u32 as u8));
    assert_eq!(chunks[1].1, expected);
    assert!(chunks[1].1.contains(&0xE9));

    assert_eq!(read_infotext(&bytes).expect("read").as_deref(), Some(LATIN1_INFOTEXT));
}

#[test]
fn non_latin1_text_goes_in_an_uncompressed_itxt_chunk() {
    let bytes = encode_png(&test_image(64, 48), Some(UNICODE_INFOTEXT)).expect("encode");
    let chunks = png_chunks(&bytes);
    assert_eq!(&chunks[1].0, b"iTXt");
    // keyword NUL, compression flag 0, method 0, empty language NUL, empty translated keyword NUL, UTF-8.
    let mut expected = b"parameters\0\0\0\0\0".to_vec();
    expected.extend_from_slice(UNICODE_INFOTEXT.as_bytes());
    assert_eq!(chunks[1].1, expected);
    assert!(!chunks.iter().any(|(k, _)| k == b"tEXt"));
    assert_eq!(read_infotext(&bytes).expect("read").as_deref(), Some(UNICODE_INFOTEXT));
}

#[test]
fn png_without_text_reads_none() {
    let bytes = encode_png(&test_image(8, 8), None).expect("encode");
    assert!(!png_chunks(&bytes).iter().any(|(k, _)| k == b"tEXt" || k == b"iTXt"));
    assert_eq!(read_infotext(&bytes).expect("read"), None);
}

/// A PNG with `extra` chunks inserted before IEND (text after IDAT, as some tools write it).
fn png_with_trailing_chunks(extra: &[(&[u8; 4], Vec<u8>)]) -> Vec<u8> {
    let bytes = encode_png(&test_image(8, 8), None).expect("encode");
    let iend_at = bytes.len() - 12;
    let mut out = bytes[..iend_at].to_vec();
    for (kind, data) in extra {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut typed = kind.to_vec();
        typed.extend_from_slice(data);
        out.extend_from_slice(&typed);
        out.extend_from_slice(&crc32(&typed).to_be_bytes());
    }
    out.extend_from_slice(&bytes[iend_at..]);
    out
}

#[test]
fn ztxt_and_text_after_idat_are_read() {
    // zlib stream with one stored (uncompressed) deflate block holding "Steps: 5".
    let text = b"Steps: 5";
    let mut zlib = vec![0x78, 0x01, 0x01];
    zlib.extend_from_slice(&(text.len() as u16).to_le_bytes());
    zlib.extend_from_slice(&(!(text.len() as u16)).to_le_bytes());
    zlib.extend_from_slice(text);
    let adler = {
        let (mut a, mut b) = (1u32, 0u32);
        for &c in text {
            a = (a + u32::from(c)) % 65521;
            b = (b + a) % 65521;
        }
        (b << 16) | a
    };
    zlib.extend_from_slice(&adler.to_be_bytes());
    let mut ztxt = b"parameters\0\0".to_vec();
    ztxt.extend_from_slice(&zlib);
    let bytes = png_with_trailing_chunks(&[(b"zTXt", ztxt)]);
    assert_eq!(read_infotext(&bytes).expect("read").as_deref(), Some("Steps: 5"));

    // Other keywords are ignored.
    let bytes = png_with_trailing_chunks(&[(b"tEXt", b"Comment\0hello".to_vec())]);
    assert_eq!(read_infotext(&bytes).expect("read"), None);
}

#[test]
fn png_exif_user_comment_overrides_parameters_like_a1111() {
    let mut with_text = encode_png(&test_image(8, 8), Some("from text chunk")).expect("encode");
    let iend_at = with_text.len() - 12;
    let iend = with_text.split_off(iend_at);
    let exif = exif::user_comment_exif("from exif");
    with_text.extend_from_slice(&(exif.len() as u32).to_be_bytes());
    let mut typed = b"eXIf".to_vec();
    typed.extend_from_slice(&exif);
    with_text.extend_from_slice(&typed);
    with_text.extend_from_slice(&crc32(&typed).to_be_bytes());
    with_text.extend_from_slice(&iend);
    assert_eq!(read_infotext(&with_text).expect("read").as_deref(), Some("from exif"));
}

#[test]
fn jpeg_round_trips_with_exif_user_comment() {
    let image = smooth_image(64, 48);
    let bytes = encode_jpeg(&image, 95, Some(UNICODE_INFOTEXT)).expect("encode");
    assert_eq!(detect_format(&bytes).expect("sniff"), ImageKind::Jpeg);
    let decoded = decode_rgb(&bytes, DEFAULT_MAX_PIXELS).expect("decode");
    assert_eq!((decoded.width, decoded.height), (64, 48));
    let mean_abs_error = image
        .pixels
        .iter()
        .zip(&decoded.pixels)
        .map(|(a, b)| f64::from(a.abs_diff(*b)))
        .sum::<f64>()
        / image.pixels.len() as f64;
    assert!(mean_abs_error < 3.0, "JPEG q95 mean abs error {mean_abs_error}");

    // APP1 "Exif\0\0" + big-endian TIFF, holding b"UNICODE\0" + UTF-16-BE text.
    let app1 = bytes
        .windows(10)
        .position(|w| w[0] == 0xFF && w[1] == 0xE1 && &w[4..10] == b"Exif\0\0");
    assert!(app1.is_some(), "no EXIF APP1 segment");
    let mut comment = b"UNICODE\0".to_vec();
    comment.extend(UNICODE_INFOTEXT.encode_utf16().flat_map(u16::to_be_bytes));
    assert!(bytes.windows(comment.len()).any(|w| w == comment.as_slice()));
    assert_eq!(read_infotext(&bytes).expect("read").as_deref(), Some(UNICODE_INFOTEXT));

    let plain = encode_jpeg(&image, 80, None).expect("encode");
    assert_eq!(read_infotext(&plain).expect("read"), None);
    assert!(plain.len() < bytes.len());
}

#[test]
fn jpeg_skips_an_infotext_too_long_for_app1() {
    let long_text = "a".repeat(40_000);
    let bytes = encode_jpeg(&smooth_image(16, 16), 80, Some(&long_text)).expect("encode");
    assert!(decode_rgb(&bytes, DEFAULT_MAX_PIXELS).is_ok());
    assert_eq!(read_infotext(&bytes).expect("read"), None);
}

#[test]
fn webp_is_lossless_and_carries_exif_in_vp8x() {
    let image = test_image(64, 48);
    let bytes = encode_webp(&image, 75, Some(LATIN1_INFOTEXT)).expect("encode");
    assert_eq!(&bytes[0..4], b"RIFF");
    assert_eq!(&bytes[8..16], b"WEBPVP8X");
    assert!(bytes.windows(4).any(|w| w == b"EXIF"));
    assert_eq!(decode_rgb(&bytes, DEFAULT_MAX_PIXELS).expect("decode"), image);
    assert_eq!(read_infotext(&bytes).expect("read").as_deref(), Some(LATIN1_INFOTEXT));
    let plain = encode_webp(&image, 75, None).expect("encode");
    assert_eq!(read_infotext(&plain).expect("read"), None);
}

#[test]
fn encode_image_dispatches_on_output_format() {
    let image = test_image(16, 16);
    for (format, kind) in [
        (OutputFormat::Png, ImageKind::Png),
        (OutputFormat::Jpeg { quality: 90 }, ImageKind::Jpeg),
        (OutputFormat::Webp { quality: 90 }, ImageKind::WebP),
    ] {
        let bytes = encode_image(&image, format, Some("x")).expect("encode");
        assert_eq!(detect_format(&bytes).expect("sniff"), kind);
    }
    let broken = RgbImage {
        width: 4,
        height: 4,
        pixels: vec![0; 3],
    };
    assert!(matches!(encode_png(&broken, None), Err(ImageIoError::InvalidImage(_))));
}

#[test]
fn rgba_decode_keeps_alpha_and_rgb_decode_drops_it() {
    let mut rgba = image::RgbaImage::new(4, 2);
    for (i, pixel) in rgba.pixels_mut().enumerate() {
        *pixel = image::Rgba([i as u8 * 10, 100, 200, if i % 2 == 0 { 0 } else { 255 }]);
    }
    let mut png = Vec::new();
    rgba.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .expect("png");

    let decoded = decode_rgba(&png, DEFAULT_MAX_PIXELS).expect("rgba");
    assert!(decoded.has_alpha);
    assert_eq!(decoded.pixels, rgba.as_raw().clone());
    let rgb = decode_rgb(&png, DEFAULT_MAX_PIXELS).expect("rgb");
    let expected: Vec<u8> = rgba.as_raw().chunks(4).flat_map(|p| [p[0], p[1], p[2]]).collect();
    assert_eq!(rgb.pixels, expected, "alpha dropped, not composited");

    let opaque = decode_rgba(&encode_png(&test_image(4, 2), None).expect("png"), DEFAULT_MAX_PIXELS).expect("rgba");
    assert!(!opaque.has_alpha);
    assert!(opaque.pixels.chunks(4).all(|p| p[3] == 255));
}

#[test]
fn exif_orientation_is_applied() {
    // Orientation 6 (rotate 90 degrees clockwise) in IFD0 of a 4x2 JPEG: decoded as 2x4.
    let mut tiff = b"MM\0\x2a\0\0\0\x08\0\x01".to_vec();
    tiff.extend_from_slice(&[0x01, 0x12, 0x00, 0x03, 0, 0, 0, 1, 0x00, 0x06, 0, 0]);
    tiff.extend_from_slice(&[0, 0, 0, 0]);
    let mut jpeg = Vec::new();
    let mut encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90);
    image::ImageEncoder::set_exif_metadata(&mut encoder, tiff).expect("exif");
    image::ImageEncoder::write_image(
        encoder,
        &smooth_image(4, 2).pixels,
        4,
        2,
        image::ExtendedColorType::Rgb8,
    )
    .expect("jpeg");
    let decoded = decode_rgb(&jpeg, DEFAULT_MAX_PIXELS).expect("decode");
    assert_eq!((decoded.width, decoded.height), (2, 4));
}

#[test]
fn base64_accepts_raw_data_urls_whitespace_and_missing_padding() {
    let png = encode_png(&test_image(5, 3), None).expect("png");
    let b64 = base64::engine::general_purpose::STANDARD.encode(&png);
    assert_eq!(decode_base64(&b64).expect("raw"), png);
    assert_eq!(
        decode_base64(&format!("data:image/png;base64,{b64}")).expect("data url"),
        png
    );
    // The media type is not trusted: a PNG labelled JPEG still decodes as PNG.
    let labelled_wrong = decode_base64(&format!("DATA:image/jpeg;BASE64,{b64}")).expect("data url");
    assert_eq!(
        decode_rgb(&labelled_wrong, DEFAULT_MAX_PIXELS).expect("decode"),
        test_image(5, 3)
    );
    let wrapped: String = b64
        .as_bytes()
        .chunks(20)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join("\r\n ");
    assert_eq!(decode_base64(&format!("  {wrapped}\n")).expect("wrapped"), png);
    assert_eq!(decode_base64(b64.trim_end_matches('=')).expect("unpadded"), png);
    let url_safe = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&png);
    assert_eq!(decode_base64(&url_safe).expect("url-safe"), png);

    assert!(matches!(
        decode_base64("not base64 !!!"),
        Err(ImageIoError::BadBase64(_))
    ));
    assert!(matches!(decode_base64(""), Err(ImageIoError::BadBase64(_))));
    assert!(matches!(
        decode_base64("data:image/png,abc"),
        Err(ImageIoError::BadBase64(_))
    ));
    assert!(matches!(
        decode_base64("data:image/png;base64"),
        Err(ImageIoError::BadBase64(_))
    ));
}

#[test]
fn oversized_headers_are_refused_before_decoding() {
    // A PNG whose IHDR claims 100000x100000 followed by an IDAT holding a few bytes of a zlib
    // stream: the refusal must come from the header, since decoding would fail (or explode).
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut bomb = b"\x89PNG\r\n\x1a\n".to_vec();
    bomb.extend_from_slice(&13u32.to_be_bytes());
    bomb.extend_from_slice(&ihdr);
    bomb.extend_from_slice(&crc32(&ihdr).to_be_bytes());
    let idat = b"IDAT\x78\x9c\x00".to_vec();
    bomb.extend_from_slice(&3u32.to_be_bytes());
    bomb.extend_from_slice(&idat);
    bomb.extend_from_slice(&crc32(&idat).to_be_bytes());
    let err = decode_rgb(&bomb, DEFAULT_MAX_PIXELS).expect_err("bomb");
    assert_eq!(
        err,
        ImageIoError::TooLarge {
            width: 100_000,
            height: 100_000,
            limit: DEFAULT_MAX_PIXELS
        }
    );
    assert!(matches!(
        decode_rgba(&bomb, DEFAULT_MAX_PIXELS),
        Err(ImageIoError::TooLarge { .. })
    ));

    // A real JPEG and WebP over a small limit.
    let jpeg = encode_jpeg(&test_image(64, 48), 80, None).expect("jpeg");
    assert_eq!(
        decode_rgb(&jpeg, 1000),
        Err(ImageIoError::TooLarge {
            width: 64,
            height: 48,
            limit: 1000
        })
    );
    let webp = encode_webp(&test_image(64, 48), 80, None).expect("webp");
    assert_eq!(
        decode_rgb(&webp, 3071),
        Err(ImageIoError::TooLarge {
            width: 64,
            height: 48,
            limit: 3071
        })
    );
    assert!(decode_rgb(&webp, 3072).is_ok());
}

#[test]
fn garbage_gives_clear_errors() {
    assert!(matches!(
        decode_rgb(b"", DEFAULT_MAX_PIXELS),
        Err(ImageIoError::UnsupportedFormat(_))
    ));
    assert!(matches!(
        decode_rgb(b"GIF89a....", DEFAULT_MAX_PIXELS),
        Err(ImageIoError::UnsupportedFormat(_))
    ));
    assert!(matches!(
        read_infotext(b"hello world"),
        Err(ImageIoError::UnsupportedFormat(_))
    ));
    let mut truncated = encode_png(&test_image(32, 32), None).expect("png");
    truncated.truncate(60);
    assert!(matches!(
        decode_rgb(&truncated, DEFAULT_MAX_PIXELS),
        Err(ImageIoError::Decode(_))
    ));
    assert!(matches!(
        decode_rgb(b"\xFF\xD8\xFF\xE0garbage", DEFAULT_MAX_PIXELS),
        Err(ImageIoError::Decode(_))
    ));
    assert!(matches!(
        decode_rgb(b"RIFF\0\0\0\0WEBPVP8 ", DEFAULT_MAX_PIXELS),
        Err(ImageIoError::Decode(_))
    ));
    assert_eq!(read_infotext(&truncated).expect("read"), None);
}
