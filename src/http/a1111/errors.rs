//! A1111's two error shapes. Handled errors go through A1111's `api_middleware`:
//! `{"error": "<exception class>", "detail": "...", "body": "", "errors": "<str(e)>"}` with the
//! exception's status. Request-validation errors are FastAPI's own: 422
//! `{"detail": [{"loc": ["body", "steps"], "msg": "...", "type": "type_error.integer"}]}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::backend::request::JobError;
use crate::http::a1111::lax::LaxError;
use crate::http::error::ApiError;
use crate::http::json_body::JsonBodyError;

/// A1111's error body for handled errors.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct A1111ErrorBody {
    /// The Python exception class: `HTTPException`, `RuntimeError`, `KeyError`, ...
    #[schema(example = "HTTPException")]
    pub error: String,
    /// `HTTPException.detail`, empty for other exceptions.
    #[schema(example = "Init image not found")]
    pub detail: String,
    /// Always empty (A1111 fills it only in debug builds).
    pub body: String,
    /// `str(exception)`.
    #[schema(example = "404: Init image not found")]
    pub errors: String,
}

/// One step of a validation problem's location: a field name or an array index.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(untagged)]
pub enum LocationStep {
    Field(String),
    Index(u64),
}

/// One FastAPI validation problem.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ValidationIssue {
    /// Where: `["body", "<field>", <index>...]`.
    #[schema(value_type = Vec<LocationStep>)]
    pub loc: Vec<Value>,
    pub msg: String,
    #[serde(rename = "type")]
    pub kind: String,
}

/// FastAPI's 422 body.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ValidationErrorBody {
    pub detail: Vec<ValidationIssue>,
}

/// A1111's 422s come in two shapes: FastAPI's validation body (wrong types) and the handled
/// `HTTPException` body (an unknown script).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(untagged)]
pub enum UnprocessableBody {
    Validation(ValidationErrorBody),
    Handled(A1111ErrorBody),
}

/// An error answered in one of A1111's shapes.
#[derive(Debug, Clone)]
pub enum A1111Error {
    Handled { status: StatusCode, body: A1111ErrorBody, retry_after_secs: Option<u32> },
    Validation(Vec<ValidationIssue>),
}

impl A1111Error {
    /// FastAPI's `HTTPException(status, detail)` after A1111's middleware.
    pub fn http(status: StatusCode, detail: impl Into<String>) -> Self {
        let detail = detail.into();
        let errors = format!("{}: {detail}", status.as_u16());
        A1111Error::Handled {
            status,
            body: A1111ErrorBody { error: "HTTPException".into(), detail, body: String::new(), errors },
            retry_after_secs: None,
        }
    }

    /// Any other Python exception (`RuntimeError`, `KeyError`, ...): empty detail, `str(e)`.
    pub fn exception(status: StatusCode, class: &str, message: impl Into<String>) -> Self {
        A1111Error::Handled {
            status,
            body: A1111ErrorBody { error: class.into(), detail: String::new(), body: String::new(), errors: message.into() },
            retry_after_secs: None,
        }
    }

    /// One validation issue at `loc` (after `"body"`).
    pub fn validation(loc: Vec<Value>, kind: &str, msg: &str) -> Self {
        let mut full = vec![Value::from("body")];
        full.extend(loc);
        A1111Error::Validation(vec![ValidationIssue { loc: full, msg: msg.into(), kind: kind.into() }])
    }

    /// A request the worker cannot serve as asked (bad size, bad image, ...): 400, like A1111's
    /// other refusals.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        A1111Error::http(StatusCode::BAD_REQUEST, detail)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        A1111Error::exception(StatusCode::INTERNAL_SERVER_ERROR, "RuntimeError", message)
    }

    pub fn status(&self) -> StatusCode {
        match self {
            A1111Error::Handled { status, .. } => *status,
            A1111Error::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
        }
    }

    /// A serde error from parsing a body: FastAPI's 422 naming the field at `path`.
    pub fn from_serde(path: &serde_path_to_error::Path, error: &serde_json::Error) -> Self {
        let loc: Vec<Value> = path
            .iter()
            .filter_map(|segment| match segment {
                serde_path_to_error::Segment::Map { key } => Some(Value::from(key.as_str())),
                serde_path_to_error::Segment::Seq { index } => Some(Value::from(*index)),
                serde_path_to_error::Segment::Enum { variant } => Some(Value::from(variant.as_str())),
                serde_path_to_error::Segment::Unknown => None,
            })
            .collect();
        let text = error.to_string();
        match LaxError::parse(&text) {
            Some((kind, msg)) => A1111Error::validation(loc, &kind, &msg),
            None if error.is_syntax() || error.is_eof() => A1111Error::json_decode(&text),
            None => {
                let msg = text.split(" at line ").next().unwrap_or(&text).to_string();
                A1111Error::validation(loc, "type_error", &msg)
            }
        }
    }

    /// A body serde_json refuses: a number beyond `f64` is a 422 naming its field, anything
    /// else FastAPI's `value_error.jsondecode`.
    pub fn from_json_body(error: &JsonBodyError) -> Self {
        match &error.field {
            Some(field) => A1111Error::validation(vec![Value::from(field.as_str())], "value_error.number", "number out of range"),
            None => A1111Error::json_decode(&error.message),
        }
    }

    /// A body that is not JSON: FastAPI answers 422 `value_error.jsondecode`.
    pub fn json_decode(message: &str) -> Self {
        let msg = format!("Expecting value: {message}");
        A1111Error::Validation(vec![ValidationIssue {
            loc: vec![Value::from("body"), Value::from(0)],
            msg,
            kind: "value_error.jsondecode".into(),
        }])
    }
}

impl From<ApiError> for A1111Error {
    /// Shared plumbing errors (queue full, bad base64, shutting down) in A1111's shape, keeping
    /// the status and the retry hint.
    fn from(e: ApiError) -> Self {
        let message = e.message.clone();
        match A1111Error::http(e.status, message) {
            A1111Error::Handled { status, body, .. } => A1111Error::Handled { status, body, retry_after_secs: e.retry_after_secs },
            other => other,
        }
    }
}

impl From<JobError> for A1111Error {
    fn from(e: JobError) -> Self {
        match e {
            JobError::InvalidRequest { field, message } => A1111Error::bad_request(format!("{field}: {message}")),
            JobError::ModelUnavailable(message) => A1111Error::http(StatusCode::SERVICE_UNAVAILABLE, message),
            JobError::TimedOut { .. } => A1111Error::http(StatusCode::GATEWAY_TIMEOUT, e.to_string()),
            JobError::Internal(message) => A1111Error::internal(message),
        }
    }
}

impl IntoResponse for A1111Error {
    fn into_response(self) -> Response {
        match self {
            A1111Error::Handled { status, body, retry_after_secs } => {
                let mut response = (status, Json(body)).into_response();
                if let Some(secs) = retry_after_secs {
                    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
                }
                response
            }
            A1111Error::Validation(detail) => (StatusCode::UNPROCESSABLE_ENTITY, Json(ValidationErrorBody { detail })).into_response(),
        }
    }
}

/// Python's `repr()` of a string, as A1111's messages quote names (`model 'x' not found`).
pub fn python_repr(text: &str) -> String {
    let quote = if text.contains('\'') && !text.contains('"') { '"' } else { '\'' };
    let mut out = String::with_capacity(text.len() + 2);
    out.push(quote);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_exception_shape() {
        let A1111Error::Handled { status, body, .. } = A1111Error::http(StatusCode::NOT_FOUND, "Init image not found") else {
            panic!("handled")
        };
        assert_eq!(status, 404);
        assert_eq!(
            serde_json::to_value(body).expect("json"),
            serde_json::json!({"error": "HTTPException", "detail": "Init image not found", "body": "", "errors": "404: Init image not found"})
        );
    }

    #[test]
    fn python_repr_quotes_like_python() {
        assert_eq!(python_repr("abc"), "'abc'");
        assert_eq!(python_repr("it's"), "\"it's\"");
        assert_eq!(python_repr("a'b\"c"), "'a\\'b\"c'");
    }
}
