//! Request bodies parsed to a `serde_json::Value` first (every face does, to name failing
//! fields). JSON's grammar allows numbers no `f64` holds (`1e999`, `-1e400`); serde_json refuses
//! them with "number out of range" and a position, but no field name. [`parse_value`] finds the
//! object key the number belongs to, so faces can name the field as they do for any bad value.

use std::sync::LazyLock;

use axum::http::{header, HeaderMap};
use regex::Regex;
use serde_json::Value;

/// Whether `headers` say the body is JSON (`application/json`, any case, parameters allowed).
pub fn has_json_content_type(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("application/json"))
}

/// Why a body is not usable JSON, with the field when the fault is one value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct JsonBodyError {
    /// serde_json's message, position included.
    pub message: String,
    /// The object key of an out-of-range number; `None` for syntax errors.
    pub field: Option<String>,
}

/// The key right before the number being read: `"key" : -1e99` at the end of the text so far.
static KEY_BEFORE_NUMBER: LazyLock<Option<Regex>> = LazyLock::new(|| Regex::new(r#""((?:[^"\\]|\\.)*)"\s*:\s*[-+0-9.eE]*$"#).ok());

/// Parse `body` as JSON.
pub fn parse_value(body: &[u8]) -> Result<Value, JsonBodyError> {
    serde_json::from_slice(body).map_err(|e| {
        let message = e.to_string();
        let field = message.starts_with("number out of range").then(|| key_at(body, e.line(), e.column())).flatten();
        JsonBodyError { message, field }
    })
}

/// The object key whose value is being read at 1-based `line`:`column` (serde_json's position,
/// in bytes, just past the offending number).
fn key_at(body: &[u8], line: usize, column: usize) -> Option<String> {
    let line_start: usize = body.split(|&b| b == b'\n').take(line.saturating_sub(1)).map(|l| l.len() + 1).sum();
    let end = (line_start + column).min(body.len());
    let before = String::from_utf8_lossy(&body[..end]);
    // serde_json stops right after the number, or on its last digit.
    let before = before.trim_end_matches(|c: char| !(c.is_ascii_digit() || "+-.eE".contains(c)));
    let captures = KEY_BEFORE_NUMBER.as_ref()?.captures(before)?;
    let raw = captures.get(1)?.as_str();
    // The key is a JSON string: unescape it the way the parser would have.
    serde_json::from_str::<String>(&format!("\"{raw}\"")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_numbers_name_their_key() {
        for (body, field) in [
            (r#"{"prompt":"x","steps":1e999}"#, "steps"),
            (r#"{"cfg_scale": -1e400, "steps": 2}"#, "cfg_scale"),
            ("{\n  \"a\": 1,\n  \"width\" :\n 1E999\n}", "width"),
            (r#"{"outer":{"in\"ner":1e999}}"#, "in\"ner"),
        ] {
            let err = parse_value(body.as_bytes()).expect_err(body);
            assert!(err.message.contains("number out of range"), "{}", err.message);
            assert_eq!(err.field.as_deref(), Some(field), "{body}");
        }
    }

    #[test]
    fn syntax_errors_and_numbers_in_lists_name_no_field() {
        assert_eq!(parse_value(br#"{"steps": }"#).expect_err("syntax").field, None);
        assert_eq!(parse_value(br#"{"sizes": [1e999]}"#).expect_err("in a list").field, None);
        assert_eq!(parse_value(br#"{"steps": 99999999999999999999999}"#).expect("a big integer is an f64"), serde_json::json!({"steps": 1e23}));
    }
}
