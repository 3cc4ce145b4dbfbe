//! The error body every native route answers with, `{"error":{"code","message"}}` (rbee's auth
//! middleware shape), plus constructors for the statuses faces need. Other faces with their own
//! error shapes (OpenAI, A1111) map [`ApiError`]'s parts onto their body instead.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::backend::generation_engine::SubmitError;
use crate::backend::request::JobError;
use crate::backend::request_queue::QueueError;

/// Seconds a client is told to wait before retrying when the queue is full.
pub const QUEUE_FULL_RETRY_AFTER_SECS: u32 = 5;

/// The code a full queue is reported with.
pub const QUEUE_FULL_CODE: &str = "QUEUE_FULL";

/// `{"error": {...}}`
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong, for a program (`code`) and a person (`message`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable upper-case code, e.g. `INVALID_REQUEST`, `QUEUE_FULL`, `INVALID_API_KEY`.
    #[schema(example = "INVALID_REQUEST")]
    pub code: String,
    /// One sentence saying what was wrong and what is allowed.
    #[schema(example = "width must be between 64 and 2048 pixels, got 4096")]
    pub message: String,
    /// The request field at fault, when one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "width")]
    pub field: Option<String>,
}

/// An HTTP error: status, code, message and, for 503s, a retry hint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
    pub retry_after_secs: Option<u32>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), field: None, retry_after_secs: None }
    }

    /// 400 `INVALID_REQUEST` about one field; `message` should start with the field name.
    pub fn invalid_field(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError { field: Some(field.into()), ..ApiError::new(StatusCode::BAD_REQUEST, "INVALID_REQUEST", message) }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, code, message)
    }

    pub fn service_unavailable(code: &'static str, message: impl Into<String>, retry_after_secs: Option<u32>) -> Self {
        ApiError { retry_after_secs, ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, message) }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", message)
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody { error: ErrorDetail { code: self.code.to_string(), message: self.message.clone(), field: self.field.clone() } }
    }
}

impl From<SubmitError> for ApiError {
    fn from(e: SubmitError) -> Self {
        match e {
            SubmitError::Queue(QueueError::Full { .. }) => {
                ApiError::service_unavailable(QUEUE_FULL_CODE, e.to_string(), Some(QUEUE_FULL_RETRY_AFTER_SECS))
            }
            SubmitError::Queue(QueueError::Closed) => ApiError::service_unavailable("SHUTTING_DOWN", e.to_string(), None),
            SubmitError::ModelUnavailable(_) => ApiError::service_unavailable("MODEL_UNAVAILABLE", e.to_string(), None),
        }
    }
}

/// The stable code a job failure is reported with (SSE `error` events, job status).
pub fn job_error_code(e: &JobError) -> &'static str {
    match e {
        JobError::InvalidRequest { .. } => "INVALID_REQUEST",
        JobError::ModelUnavailable(_) => "MODEL_UNAVAILABLE",
        JobError::TimedOut { .. } => "TIMEOUT",
        JobError::Internal(_) => "GENERATION_ERROR",
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        if let Some(secs) = self.retry_after_secs {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}
