//! Field deserializers that coerce the way A1111's pydantic v1 models do, so the bodies clients
//! already send are accepted: `"20"` and `20.5` for an int (20; floats are truncated), `7` for a
//! float, `5` for a string (`"5"`), `"yes"`/`1` for a bool. `null` counts as "not sent" (the
//! field's default applies) instead of A1111's later 500.
//!
//! A refusal carries pydantic's error type and message (see [`LaxError`]) so the 422 body can
//! name them exactly as FastAPI does.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

/// Marks a custom serde error message as `<type>\u{1f}<msg>`, split again by [`LaxError::parse`].
const SEPARATOR: char = '\u{1f}';

/// Pydantic v1's type and message for a value of the wrong kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaxError {
    pub kind: &'static str,
    pub message: &'static str,
}

impl LaxError {
    pub const INTEGER: LaxError = LaxError { kind: "type_error.integer", message: "value is not a valid integer" };
    pub const FLOAT: LaxError = LaxError { kind: "type_error.float", message: "value is not a valid float" };
    pub const BOOL: LaxError = LaxError { kind: "type_error.bool", message: "value could not be parsed to a boolean" };
    pub const STR: LaxError = LaxError { kind: "type_error.str", message: "str type expected" };
    pub const LIST: LaxError = LaxError { kind: "type_error.list", message: "value is not a valid list" };
    pub const DICT: LaxError = LaxError { kind: "type_error.dict", message: "value is not a valid dict" };

    fn to_serde<E: de::Error>(&self) -> E {
        E::custom(format!("{}{SEPARATOR}{}", self.kind, self.message))
    }

    /// The (type, message) pair from a serde error message, when it came from this module.
    pub fn parse(serde_message: &str) -> Option<(String, String)> {
        let (kind, rest) = serde_message.split_once(SEPARATOR)?;
        // serde_json appends " at line L column C" to custom messages.
        let message = rest.split(" at line ").next().unwrap_or(rest);
        Some((kind.to_string(), message.to_string()))
    }
}

/// Pydantic v1's int coercion.
fn int_from_value(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().filter(|f| f.is_finite() && f.abs() < 9.2e18).map(|f| f.trunc() as i64)),
        Value::Bool(b) => Some(i64::from(*b)),
        Value::String(s) => s.trim().parse::<i64>().ok(),
        _ => None,
    }
}

/// Pydantic v1's float coercion.
fn float_from_value(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::Bool(b) => Some(f64::from(u8::from(*b))),
        Value::String(s) => python_float(s.trim()),
        _ => None,
    }
}

/// Python's `float(str)`: decimal forms plus `inf`/`nan` spellings.
fn python_float(text: &str) -> Option<f64> {
    match text.to_ascii_lowercase().trim_start_matches(['+', '-']) {
        "inf" | "infinity" | "nan" => None, // not a usable number for any field here
        _ => text.parse::<f64>().ok(),
    }
}

/// Pydantic v1's bool coercion.
fn bool_from_value(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => match n.as_f64() {
            Some(0.0) => Some(false),
            Some(1.0) => Some(true),
            _ => None,
        },
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "0" | "off" | "f" | "false" | "n" | "no" => Some(false),
            "1" | "on" | "t" | "true" | "y" | "yes" => Some(true),
            _ => None,
        },
        _ => None,
    }
}

/// Pydantic v1's str coercion: strings, and numbers written as Python's `str()` would.
fn str_from_value(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => i.to_string(),
            (None, Some(f)) => crate::http::a1111::python_json::python_float_repr(f),
            _ => n.to_string(),
        }),
        Value::Bool(b) => Some(if *b { "True" } else { "False" }.to_string()),
        _ => None,
    }
}

fn optional<'de, D, T>(deserializer: D, convert: fn(&Value) -> Option<T>, error: LaxError) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
{
    match Value::deserialize(deserializer)? {
        Value::Null => Ok(None),
        other => convert(&other).map(Some).ok_or_else(|| error.to_serde()),
    }
}

pub fn int<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
    optional(deserializer, int_from_value, LaxError::INTEGER)
}

pub fn float<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<f64>, D::Error> {
    optional(deserializer, float_from_value, LaxError::FLOAT)
}

pub fn boolean<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<bool>, D::Error> {
    optional(deserializer, bool_from_value, LaxError::BOOL)
}

pub fn string<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    optional(deserializer, str_from_value, LaxError::STR)
}

/// A list of strings; each element coerced like [`string`], reported at its index.
pub fn string_list<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Vec<String>>, D::Error> {
    struct ListVisitor;
    impl<'de> Visitor<'de> for ListVisitor {
        type Value = Option<Vec<String>>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a list of strings")
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(self)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(item) = seq.next_element::<LaxString>()? {
                out.push(item.0);
            }
            Ok(Some(out))
        }
        fn visit_map<A: MapAccess<'de>>(self, _map: A) -> Result<Self::Value, A::Error> {
            Err(LaxError::LIST.to_serde())
        }
        fn visit_str<E: de::Error>(self, _v: &str) -> Result<Self::Value, E> {
            Err(LaxError::LIST.to_serde())
        }
        fn visit_bool<E: de::Error>(self, _v: bool) -> Result<Self::Value, E> {
            Err(LaxError::LIST.to_serde())
        }
        fn visit_i64<E: de::Error>(self, _v: i64) -> Result<Self::Value, E> {
            Err(LaxError::LIST.to_serde())
        }
        fn visit_u64<E: de::Error>(self, _v: u64) -> Result<Self::Value, E> {
            Err(LaxError::LIST.to_serde())
        }
        fn visit_f64<E: de::Error>(self, _v: f64) -> Result<Self::Value, E> {
            Err(LaxError::LIST.to_serde())
        }
    }
    deserializer.deserialize_option(ListVisitor)
}

/// One element of [`string_list`].
struct LaxString(String);

impl<'de> Deserialize<'de> for LaxString {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        str_from_value(&value).map(LaxString).ok_or_else(|| LaxError::STR.to_serde())
    }
}

/// Any JSON list (`script_args`, `hr_additional_modules`).
pub fn any_list<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Vec<Value>>, D::Error> {
    match Value::deserialize(deserializer)? {
        Value::Null => Ok(None),
        Value::Array(items) => Ok(Some(items)),
        _ => Err(LaxError::LIST.to_serde()),
    }
}

/// A JSON object (`override_settings`, `alwayson_scripts`).
pub fn dict<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<BTreeMap<String, Value>>, D::Error> {
    match Value::deserialize(deserializer)? {
        Value::Null => Ok(None),
        Value::Object(map) => Ok(Some(map.into_iter().collect())),
        _ => Err(LaxError::DICT.to_serde()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ints_coerce_like_pydantic_v1() {
        assert_eq!(int_from_value(&json!("20")), Some(20));
        assert_eq!(int_from_value(&json!(20.9)), Some(20));
        assert_eq!(int_from_value(&json!(-1.5)), Some(-1));
        assert_eq!(int_from_value(&json!(true)), Some(1));
        assert_eq!(int_from_value(&json!("20.5")), None);
        assert_eq!(int_from_value(&json!([1])), None);
    }

    #[test]
    fn floats_bools_and_strings_coerce() {
        assert_eq!(float_from_value(&json!(7)), Some(7.0));
        assert_eq!(float_from_value(&json!("7.5")), Some(7.5));
        assert_eq!(float_from_value(&json!("seven")), None);
        assert_eq!(bool_from_value(&json!("yes")), Some(true));
        assert_eq!(bool_from_value(&json!(0)), Some(false));
        assert_eq!(bool_from_value(&json!(2)), None);
        assert_eq!(str_from_value(&json!(5)), Some("5".into()));
        assert_eq!(str_from_value(&json!(0.5)), Some("0.5".into()));
        assert_eq!(str_from_value(&json!(["a"])), None);
    }

    #[test]
    fn error_messages_round_trip() {
        let e: serde_json::Error = LaxError::INTEGER.to_serde();
        assert_eq!(LaxError::parse(&e.to_string()), Some(("type_error.integer".into(), "value is not a valid integer".into())));
        assert_eq!(LaxError::parse("plain serde message"), None);
    }
}
