//! Reading the A1111 infotext back out of an encoded image (the `/sdapi/v1/png-info` job),
//! following A1111's `read_info_from_image`: the PNG `parameters` text (tEXt, iTXt or zTXt),
//! overridden by a non-empty EXIF `UserComment` (JPEG APP1, WebP `EXIF` chunk, PNG `eXIf`).
//! Only container chunks are walked; no pixel data is decoded. NovelAI metadata conversion and
//! GIF comments are not supported.

use super::decode::{detect_format, ImageKind};
use super::exif::read_user_comment;
use super::ImageIoError;

const PNG_SIGNATURE: &[u8; 8] = b"\x89PNG\r\n\x1a\n";
const PARAMETERS_KEYWORD: &str = "parameters";
/// Cap on a decompressed zTXt/iTXt text (a compressed-text bomb stops here).
const MAX_DECOMPRESSED_TEXT: usize = 4 * 1024 * 1024;

/// The infotext embedded in a PNG, JPEG or WebP file; `Ok(None)` when it carries none.
/// Unknown formats are an error; truncated or malformed containers yield whatever was found
/// before the damage.
pub fn read_infotext(bytes: &[u8]) -> Result<Option<String>, ImageIoError> {
    let (parameters, exif) = match detect_format(bytes)? {
        ImageKind::Png => png_parameters_and_exif(bytes),
        ImageKind::Jpeg => (None, jpeg_exif(bytes)),
        ImageKind::WebP => (None, webp_exif(bytes)),
    };
    let user_comment = exif.and_then(read_user_comment).filter(|text| !text.is_empty());
    Ok(user_comment.or(parameters))
}

/// One PNG chunk: its type and the whole raw chunk (length, type, data, CRC).
struct PngChunk<'a> {
    kind: [u8; 4],
    data: &'a [u8],
    raw: &'a [u8],
}

fn png_chunks(bytes: &[u8]) -> impl Iterator<Item = PngChunk<'_>> {
    let mut at = PNG_SIGNATURE.len();
    std::iter::from_fn(move || {
        let len = u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?) as usize;
        let kind: [u8; 4] = bytes.get(at + 4..at + 8)?.try_into().ok()?;
        let end = at.checked_add(12)?.checked_add(len)?;
        let raw = bytes.get(at..end)?;
        let chunk = PngChunk {
            kind,
            data: &raw[8..8 + len],
            raw,
        };
        at = end;
        Some(chunk)
    })
}

/// The last `parameters` text chunk (PIL keeps the last of equal keys) and the `eXIf` data.
fn png_parameters_and_exif(bytes: &[u8]) -> (Option<String>, Option<&[u8]>) {
    let mut ihdr = None;
    let mut parameters = None;
    let mut exif = None;
    for chunk in png_chunks(bytes) {
        match &chunk.kind {
            b"IHDR" => ihdr = Some(chunk.raw),
            b"tEXt" | b"zTXt" | b"iTXt" if chunk.data.starts_with(b"parameters\0") => {
                if let Some(text) = ihdr.and_then(|ihdr| decode_text_chunk(ihdr, chunk.raw)) {
                    parameters = Some(text);
                }
            }
            b"eXIf" => exif = Some(chunk.data),
            b"IEND" => break,
            _ => {}
        }
    }
    (parameters, exif)
}

/// Decode one text chunk with the `png` crate's own parser (Latin-1, UTF-8, zlib with a size
/// cap) by feeding it a minimal stream: signature, the file's IHDR, the chunk.
fn decode_text_chunk(ihdr_raw: &[u8], text_raw: &[u8]) -> Option<String> {
    let mut stream = Vec::with_capacity(PNG_SIGNATURE.len() + ihdr_raw.len() + text_raw.len());
    stream.extend_from_slice(PNG_SIGNATURE);
    stream.extend_from_slice(ihdr_raw);
    stream.extend_from_slice(text_raw);
    let mut decoder = png::StreamingDecoder::new();
    let mut rest = &stream[..];
    while !rest.is_empty() {
        let (consumed, _) = decoder.update(rest, None).ok()?;
        if consumed == 0 {
            break;
        }
        rest = &rest[consumed..];
    }
    let info = decoder.info()?;
    if let Some(chunk) = info
        .uncompressed_latin1_text
        .iter()
        .find(|c| c.keyword == PARAMETERS_KEYWORD)
    {
        return Some(chunk.text.clone());
    }
    if let Some(chunk) = info
        .compressed_latin1_text
        .iter()
        .find(|c| c.keyword == PARAMETERS_KEYWORD)
    {
        let mut chunk = chunk.clone();
        chunk.decompress_text_with_limit(MAX_DECOMPRESSED_TEXT).ok()?;
        return chunk.get_text().ok();
    }
    if let Some(chunk) = info.utf8_text.iter().find(|c| c.keyword == PARAMETERS_KEYWORD) {
        let mut chunk = chunk.clone();
        chunk.decompress_text_with_limit(MAX_DECOMPRESSED_TEXT).ok()?;
        return chunk.get_text().ok();
    }
    None
}

/// The payload of the first APP1 `Exif` segment before the scan data (PIL keeps the first).
fn jpeg_exif(bytes: &[u8]) -> Option<&[u8]> {
    let mut at = 2; // after SOI
    loop {
        if *bytes.get(at)? != 0xFF {
            return None;
        }
        // Markers may be preceded by any number of 0xFF fill bytes.
        while *bytes.get(at + 1)? == 0xFF {
            at += 1;
        }
        let marker = *bytes.get(at + 1)?;
        match marker {
            0xD9 | 0xDA => return None, // EOI, SOS: no metadata after this point
            0x01 | 0xD0..=0xD7 => {
                at += 2;
                continue;
            }
            _ => {}
        }
        let len = usize::from(u16::from_be_bytes(bytes.get(at + 2..at + 4)?.try_into().ok()?));
        let payload = bytes.get(at + 4..(at + 2).checked_add(len)?)?;
        if marker == 0xE1 && payload.starts_with(b"Exif\0\0") {
            return Some(payload);
        }
        at += 2 + len;
    }
}

/// The payload of the `EXIF` chunk of a RIFF/WebP file.
fn webp_exif(bytes: &[u8]) -> Option<&[u8]> {
    let mut at = 12; // "RIFF", size, "WEBP"
    loop {
        let fourcc = bytes.get(at..at + 4)?;
        let len = u32::from_le_bytes(bytes.get(at + 4..at + 8)?.try_into().ok()?) as usize;
        let data = bytes.get(at + 8..(at + 8).checked_add(len)?)?;
        if fourcc == b"EXIF" {
            return Some(data);
        }
        // Chunks are padded to an even size.
        at = at + 8 + len + (len & 1);
    }
}
