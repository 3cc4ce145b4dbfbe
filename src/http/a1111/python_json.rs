//! `json.dumps(obj)` as Python writes it with default arguments, which is how A1111 builds the
//! `info` string clients `json.loads`: `", "` and `": "` separators, `ensure_ascii` (`\uXXXX`
//! escapes, surrogate pairs above U+FFFF) and floats in `repr` form (`7.0`, `1e-05`).

use std::io::{self, Write};

use serde::Serialize;
use serde_json::ser::{CharEscape, Formatter, Serializer};

pub use crate::backend::infotext::python_float_repr;

/// `json.dumps(value)`.
pub fn dumps<T: Serialize + ?Sized>(value: &T) -> Result<String, serde_json::Error> {
    let mut out = Vec::new();
    let mut serializer = Serializer::with_formatter(&mut out, PythonFormatter);
    value.serialize(&mut serializer)?;
    // The formatter only ever writes ASCII.
    Ok(String::from_utf8_lossy(&out).into_owned())
}

struct PythonFormatter;

impl Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + Write>(&mut self, writer: &mut W, first: bool) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + Write>(&mut self, writer: &mut W, first: bool) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + Write>(&mut self, writer: &mut W) -> io::Result<()> {
        writer.write_all(b": ")
    }

    fn write_f64<W: ?Sized + Write>(&mut self, writer: &mut W, value: f64) -> io::Result<()> {
        // Python writes NaN/Infinity unquoted; serde_json never passes them here (it writes
        // null), which is what A1111's `default=lambda o: None` would give for odd values too.
        writer.write_all(python_float_repr(value).as_bytes())
    }

    fn write_f32<W: ?Sized + Write>(&mut self, writer: &mut W, value: f32) -> io::Result<()> {
        self.write_f64(writer, f64::from(value))
    }

    fn write_string_fragment<W: ?Sized + Write>(&mut self, writer: &mut W, fragment: &str) -> io::Result<()> {
        for c in fragment.chars() {
            if c.is_ascii() {
                writer.write_all(&[c as u8])?;
            } else {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    write!(writer, "\\u{unit:04x}")?;
                }
            }
        }
        Ok(())
    }

    fn write_char_escape<W: ?Sized + Write>(&mut self, writer: &mut W, escape: CharEscape) -> io::Result<()> {
        let text = match escape {
            CharEscape::Quote => "\\\"".to_string(),
            CharEscape::ReverseSolidus => "\\\\".to_string(),
            CharEscape::Solidus => "/".to_string(),
            CharEscape::Backspace => "\\b".to_string(),
            CharEscape::FormFeed => "\\f".to_string(),
            CharEscape::LineFeed => "\\n".to_string(),
            CharEscape::CarriageReturn => "\\r".to_string(),
            CharEscape::Tab => "\\t".to_string(),
            CharEscape::AsciiControl(byte) => format!("\\u{byte:04x}"),
        };
        writer.write_all(text.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn matches_python_json_dumps() {
        let value = json!({"prompt": "caf\u{e9} \u{1f98a}\n\"q\"", "cfg_scale": 7.0, "all_seeds": [1, 2], "x": null, "b": true, "s": 1e-5});
        // serde_json::Value sorts keys; Python keeps insertion order, which structs give.
        assert_eq!(
            dumps(&value).expect("dumps"),
            r#"{"all_seeds": [1, 2], "b": true, "cfg_scale": 7.0, "prompt": "caf\u00e9 \ud83e\udd8a\n\"q\"", "s": 1e-05, "x": null}"#
        );
    }
}
