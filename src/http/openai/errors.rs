//! OpenAI's error body, `{"error":{"message","type","param","code"}}` with all four keys, and the
//! headers the official SDKs act on: `Retry-After` (how long to back off) and `x-should-retry`
//! (without `false` the SDK resubmits a failed job twice, which for a deterministic failure only
//! triples the wasted work).

use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::backend::request::JobError;
use crate::http::error::{ApiError, QUEUE_FULL_CODE, QUEUE_FULL_RETRY_AFTER_SECS};

static SHOULD_RETRY: HeaderName = HeaderName::from_static("x-should-retry");

/// Seconds a client is told to wait while the model is still loading.
pub const MODEL_LOADING_RETRY_AFTER_SECS: u32 = 5;

/// `{"error": {...}}` as OpenAI sends it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OpenAiErrorBody {
    pub error: OpenAiErrorDetail,
}

/// What went wrong. `param` and `code` are `null` when they do not apply.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OpenAiErrorDetail {
    #[schema(example = "size: '100x' is not a valid size; use WIDTHxHEIGHT (e.g. 1024x1024) or auto")]
    pub message: String,
    /// `invalid_request_error`, `authentication_error`, `rate_limit_exceeded` or `server_error`.
    #[serde(rename = "type")]
    #[schema(example = "invalid_request_error")]
    pub kind: String,
    #[schema(example = "size")]
    pub param: Option<String>,
    #[schema(example = "invalid_size")]
    pub code: Option<String>,
}

/// An error response in OpenAI's shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenAiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub message: String,
    pub param: Option<String>,
    pub code: Option<String>,
    pub retry_after_secs: Option<u32>,
    /// Whether trying the same request again could succeed (queue full, model still loading).
    pub retryable: bool,
}

impl OpenAiError {
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        OpenAiError { status, kind, message: message.into(), param: None, code: None, retry_after_secs: None, retryable: false }
    }

    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(code.into());
        self
    }

    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    /// 400 about one request field; `message` should name it.
    pub fn invalid_param(param: impl Into<String>, code: &str, message: impl Into<String>) -> Self {
        OpenAiError { param: Some(param.into()), ..OpenAiError::new(StatusCode::BAD_REQUEST, "invalid_request_error", message) }
            .with_code(code)
    }

    pub fn missing_param(param: &str) -> Self {
        OpenAiError::invalid_param(param, "missing_required_parameter", format!("Missing required parameter: '{param}'."))
    }

    pub fn invalid_request(code: &str, message: impl Into<String>) -> Self {
        OpenAiError::new(StatusCode::BAD_REQUEST, "invalid_request_error", message).with_code(code)
    }

    pub fn not_found(code: &str, message: impl Into<String>) -> Self {
        OpenAiError::new(StatusCode::NOT_FOUND, "invalid_request_error", message).with_code(code)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        OpenAiError::new(StatusCode::UNAUTHORIZED, "invalid_request_error", message).with_code("invalid_api_key")
    }

    pub fn server_error(message: impl Into<String>) -> Self {
        OpenAiError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", message)
    }

    /// An error axum answered before a handler ran (body too large, wrong content type).
    pub fn from_status(status: StatusCode, message: impl Into<String>) -> Self {
        let kind = if status.is_server_error() { "server_error" } else { "invalid_request_error" };
        let code = match status {
            StatusCode::PAYLOAD_TOO_LARGE => "request_too_large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
            StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
            _ => "invalid_request",
        };
        OpenAiError::new(status, kind, message).with_code(code)
    }

    /// 504: the job ran past the worker's per-job time limit. Retrying the same job would time
    /// out again, so the SDK is told not to.
    pub fn timed_out(message: impl Into<String>) -> Self {
        OpenAiError::new(StatusCode::GATEWAY_TIMEOUT, "server_error", message).with_code("timeout")
    }

    /// 503 that clears up by itself (model loading): the SDK may retry after `retry_after_secs`.
    pub fn temporarily_unavailable(code: &str, message: impl Into<String>, retry_after_secs: u32) -> Self {
        OpenAiError {
            retry_after_secs: Some(retry_after_secs),
            retryable: true,
            ..OpenAiError::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", message).with_code(code)
        }
    }

    /// 503 that retrying will not fix (the model failed to load, the worker is stopping).
    pub fn unavailable(code: &str, message: impl Into<String>) -> Self {
        OpenAiError::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", message).with_code(code)
    }

    pub fn queue_full(message: impl Into<String>) -> Self {
        OpenAiError {
            retry_after_secs: Some(QUEUE_FULL_RETRY_AFTER_SECS),
            retryable: true,
            ..OpenAiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limit_exceeded", message).with_code("queue_full")
        }
    }

    pub fn body(&self) -> OpenAiErrorBody {
        OpenAiErrorBody {
            error: OpenAiErrorDetail {
                message: self.message.clone(),
                kind: self.kind.to_string(),
                param: self.param.clone(),
                code: self.code.clone(),
            },
        }
    }
}

/// The shared plumbing (`AppState::submit`, image decoding) reports [`ApiError`]s; keep their
/// status, field and message, and put them in OpenAI's shape.
impl From<ApiError> for OpenAiError {
    fn from(e: ApiError) -> Self {
        // The shared plumbing answers a full queue with 503; OpenAI clients expect 429, which
        // the SDK retries after `Retry-After`.
        if e.code == QUEUE_FULL_CODE {
            return OpenAiError::queue_full(e.message);
        }
        let status = e.status;
        let kind = match status {
            StatusCode::TOO_MANY_REQUESTS => "rate_limit_exceeded",
            s if s.is_server_error() => "server_error",
            _ => "invalid_request_error",
        };
        OpenAiError {
            status,
            kind,
            message: e.message,
            param: e.field,
            code: Some(e.code.to_ascii_lowercase()),
            retryable: e.retry_after_secs.is_some(),
            retry_after_secs: e.retry_after_secs,
        }
    }
}

impl From<&JobError> for OpenAiError {
    fn from(e: &JobError) -> Self {
        match e {
            JobError::InvalidRequest { field, message } => {
                OpenAiError::invalid_param(field.clone(), "invalid_value", format!("{field}: {message}"))
            }
            JobError::ModelUnavailable(_) => OpenAiError::unavailable("model_unavailable", e.to_string()),
            JobError::TimedOut { .. } => OpenAiError::timed_out(e.to_string()),
            JobError::Internal(_) => OpenAiError::server_error(e.to_string()),
        }
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        let headers = response.headers_mut();
        if let Some(secs) = self.retry_after_secs {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        headers.insert(SHOULD_RETRY.clone(), HeaderValue::from_static(if self.retryable { "true" } else { "false" }));
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::generation_engine::SubmitError;
    use crate::backend::request_queue::QueueError;

    #[test]
    fn every_key_is_present_even_when_null() {
        let json = serde_json::to_value(OpenAiError::server_error("boom").body()).expect("serializes");
        assert_eq!(json, serde_json::json!({"error":{"message":"boom","type":"server_error","param":null,"code":null}}));
    }

    #[test]
    fn queue_full_is_a_retryable_429_with_retry_after() {
        let full = ApiError::from(SubmitError::Queue(QueueError::Full { capacity: 2 }));
        let response = OpenAiError::from(full).into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "5");
        assert_eq!(response.headers()["x-should-retry"], "true");
    }

    #[test]
    fn deterministic_failures_tell_the_sdk_not_to_retry() {
        let response = OpenAiError::from(&JobError::Internal("out of memory".into())).into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(response.headers()["x-should-retry"], "false");
    }
}
