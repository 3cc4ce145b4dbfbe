//! The one EXIF field A1111 uses: `UserComment` (tag 0x9286 in the Exif IFD) holding the
//! infotext as `b"UNICODE\0" + text.encode("utf-16-be")`, the way `piexif.helper.UserComment`
//! writes it for JPEG and WebP. We write a minimal big-endian TIFF structure (as piexif does) and
//! read any byte order.

const TAG_EXIF_IFD_POINTER: u16 = 0x8769;
const TAG_USER_COMMENT: u16 = 0x9286;
const TYPE_LONG: u16 = 4;
const TYPE_UNDEFINED: u16 = 7;
const UNICODE_PREFIX: &[u8; 8] = b"UNICODE\0";
const ASCII_PREFIX: &[u8; 8] = b"ASCII\0\0\0";

/// A TIFF/EXIF payload (no `Exif\0\0` marker) whose Exif IFD holds `UserComment` = `text`.
pub(crate) fn user_comment_exif(text: &str) -> Vec<u8> {
    let mut comment = UNICODE_PREFIX.to_vec();
    comment.extend(text.encode_utf16().flat_map(u16::to_be_bytes));

    // Layout: header (8) | IFD0: count, 1 entry, next (18) | Exif IFD: count, 1 entry, next (18) | comment.
    const IFD0_OFFSET: u32 = 8;
    const EXIF_IFD_OFFSET: u32 = IFD0_OFFSET + 18;
    const COMMENT_OFFSET: u32 = EXIF_IFD_OFFSET + 18;

    let mut out = Vec::with_capacity(COMMENT_OFFSET as usize + comment.len());
    out.extend_from_slice(b"MM\0\x2a");
    out.extend_from_slice(&IFD0_OFFSET.to_be_bytes());
    write_ifd_with_one_entry(&mut out, TAG_EXIF_IFD_POINTER, TYPE_LONG, 1, EXIF_IFD_OFFSET);
    // The comment is never <= 4 bytes (the prefix alone is 8), so it always lives at an offset.
    write_ifd_with_one_entry(
        &mut out,
        TAG_USER_COMMENT,
        TYPE_UNDEFINED,
        comment.len() as u32,
        COMMENT_OFFSET,
    );
    out.extend_from_slice(&comment);
    out
}

fn write_ifd_with_one_entry(out: &mut Vec<u8>, tag: u16, kind: u16, count: u32, value: u32) {
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&tag.to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&count.to_be_bytes());
    out.extend_from_slice(&value.to_be_bytes());
    out.extend_from_slice(&0u32.to_be_bytes());
}

/// A bounds-checked reader of a TIFF structure in either byte order.
struct Tiff<'a> {
    data: &'a [u8],
    big_endian: bool,
}

/// One IFD entry: tag, count, and where its 4-byte value/offset field sits.
struct IfdEntry {
    tag: u16,
    count: u32,
    value_at: usize,
}

impl<'a> Tiff<'a> {
    fn new(exif: &'a [u8]) -> Option<Tiff<'a>> {
        let data = exif.strip_prefix(b"Exif\0\0").unwrap_or(exif);
        let big_endian = match data.get(0..4)? {
            b"MM\0\x2a" => true,
            b"II\x2a\0" => false,
            _ => return None,
        };
        Some(Tiff { data, big_endian })
    }

    fn u16_at(&self, at: usize) -> Option<u16> {
        let b: [u8; 2] = self.data.get(at..at.checked_add(2)?)?.try_into().ok()?;
        Some(if self.big_endian {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        })
    }

    fn u32_at(&self, at: usize) -> Option<u32> {
        let b: [u8; 4] = self.data.get(at..at.checked_add(4)?)?.try_into().ok()?;
        Some(if self.big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        })
    }

    fn entries(&self, ifd_offset: usize) -> Option<Vec<IfdEntry>> {
        let count = usize::from(self.u16_at(ifd_offset)?);
        (0..count)
            .map(|i| {
                let at = ifd_offset + 2 + i * 12;
                // Read the value field now so a truncated IFD fails here.
                self.u32_at(at + 8)?;
                Some(IfdEntry {
                    tag: self.u16_at(at)?,
                    count: self.u32_at(at + 4)?,
                    value_at: at + 8,
                })
            })
            .collect()
    }

    /// Bytes of an entry whose type has 1-byte elements (UNDEFINED, ASCII, BYTE).
    fn byte_value(&self, entry: &IfdEntry) -> Option<&'a [u8]> {
        let len = entry.count as usize;
        // Values of up to 4 bytes are stored inline in the entry's value field.
        let offset = if len <= 4 {
            entry.value_at
        } else {
            self.u32_at(entry.value_at)? as usize
        };
        self.data.get(offset..offset.checked_add(len)?)
    }
}

/// The raw `UserComment` bytes: from the Exif IFD, or from IFD0 where some writers put it.
fn user_comment_bytes(exif: &[u8]) -> Option<&[u8]> {
    let tiff = Tiff::new(exif)?;
    let ifd0 = tiff.entries(tiff.u32_at(4)? as usize)?;
    let exif_ifd = ifd0
        .iter()
        .find(|e| e.tag == TAG_EXIF_IFD_POINTER)
        .and_then(|e| tiff.entries(tiff.u32_at(e.value_at)? as usize));
    let comment = exif_ifd
        .iter()
        .flatten()
        .chain(ifd0.iter())
        .find(|e| e.tag == TAG_USER_COMMENT)?;
    tiff.byte_value(comment)
}

/// The `UserComment` text, decoded as A1111's `read_info_from_image` does: the charset prefix
/// picks UTF-16-BE or ASCII (undecodable units become U+FFFD); a short, UNDEFINED or unknown
/// prefix makes it decode the whole field as UTF-8 dropping invalid bytes. JIS (Shift-JIS) has
/// no decoder here and takes that UTF-8 fallback too.
pub(crate) fn read_user_comment(exif: &[u8]) -> Option<String> {
    let raw = user_comment_bytes(exif)?;
    let (prefix, body) = (raw.get(..8), raw.get(8..).unwrap_or(&[]));
    let text = match prefix {
        Some(p) if p == UNICODE_PREFIX => {
            let units = body.chunks(2).map(|c| match c {
                [hi, lo] => Ok(u16::from_be_bytes([*hi, *lo])),
                _ => Err(()),
            });
            let mut out = String::with_capacity(body.len() / 2);
            let mut complete = Vec::with_capacity(body.len() / 2);
            let mut odd_tail = false;
            for u in units {
                match u {
                    Ok(v) => complete.push(v),
                    Err(()) => odd_tail = true,
                }
            }
            out.extend(char::decode_utf16(complete).map(|r| r.unwrap_or(char::REPLACEMENT_CHARACTER)));
            if odd_tail {
                out.push(char::REPLACEMENT_CHARACTER);
            }
            out
        }
        Some(p) if p == ASCII_PREFIX => body
            .iter()
            .map(|&b| {
                if b.is_ascii() {
                    b as char
                } else {
                    char::REPLACEMENT_CHARACTER
                }
            })
            .collect(),
        // UNDEFINED and unknown prefixes make piexif raise and A1111 fall back to UTF-8. JIS
        // would be Shift-JIS there but has no decoder here, so it takes the same fallback.
        _ => utf8_dropping_invalid(raw),
    };
    Some(text)
}

/// Python's `bytes.decode("utf8", errors="ignore")`.
fn utf8_dropping_invalid(bytes: &[u8]) -> String {
    bytes.utf8_chunks().map(|chunk| chunk.valid()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_comment_round_trips_including_non_bmp_text() {
        let text = "a cat, 猫 🐱\nNegative prompt: dog";
        let exif = user_comment_exif(text);
        assert_eq!(&exif[..4], b"MM\0\x2a");
        assert_eq!(read_user_comment(&exif).as_deref(), Some(text));
        // Readers must also accept the `Exif\0\0` marker JPEG APP1 segments carry.
        let mut marked = b"Exif\0\0".to_vec();
        marked.extend_from_slice(&exif);
        assert_eq!(read_user_comment(&marked).as_deref(), Some(text));
    }

    #[test]
    fn little_endian_ascii_comment_in_ifd0_is_read() {
        // II header, IFD0 at 8 with one UserComment entry (ASCII prefix) pointing at offset 26.
        let mut exif = b"II\x2a\0".to_vec();
        exif.extend_from_slice(&8u32.to_le_bytes());
        exif.extend_from_slice(&1u16.to_le_bytes());
        exif.extend_from_slice(&TAG_USER_COMMENT.to_le_bytes());
        exif.extend_from_slice(&TYPE_UNDEFINED.to_le_bytes());
        let comment = b"ASCII\0\0\0Steps: 20\xff";
        exif.extend_from_slice(&(comment.len() as u32).to_le_bytes());
        exif.extend_from_slice(&26u32.to_le_bytes());
        exif.extend_from_slice(&0u32.to_le_bytes());
        exif.extend_from_slice(comment);
        assert_eq!(read_user_comment(&exif).as_deref(), Some("Steps: 20\u{fffd}"));
    }

    #[test]
    fn garbage_and_truncated_exif_give_none() {
        assert_eq!(read_user_comment(b""), None);
        assert_eq!(read_user_comment(b"MM\0\x2a\0\0\0\x08\0\x05"), None);
        let exif = user_comment_exif("hello");
        assert_eq!(read_user_comment(&exif[..exif.len() - 3]), None);
    }

    #[test]
    fn unknown_prefix_falls_back_to_lossy_utf8() {
        let mut tiff = user_comment_exif("xx");
        let start = tiff.len() - 12;
        tiff[start..start + 8].copy_from_slice(b"FOOBAR\0\0");
        // Whole field decoded as UTF-8 with the invalid/NUL-free parts kept: "FOOBAR\0\0\0x\0x".
        assert_eq!(read_user_comment(&tiff).as_deref(), Some("FOOBAR\0\0\0x\0x"));
    }
}
