//! axum answers some errors itself, before a handler runs, as plain text: a body over the size
//! limit (413, "length limit exceeded"), a wrong content type (415), a missing multipart boundary
//! (400). Each face wraps its routes with [`reshape`] so those errors reach its clients in the
//! face's own error shape too, like every error the handlers make.

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

use crate::http::json_body::has_json_content_type;

/// Builds a face's error response from a status and a message.
pub type ErrorShape = fn(StatusCode, String) -> Response;

/// Most of a plain-text error body kept as the message (axum's are one short line).
const MAX_PLAIN_BODY: usize = 16 * 1024;

/// What [`reshape`] needs: the face's shape and the body limit to quote in 413s.
#[derive(Clone, Copy)]
pub struct FaceErrors {
    pub shape: ErrorShape,
    pub max_body_mib: u32,
}

/// Middleware: re-answer error responses that are not JSON in the face's shape.
pub async fn reshape(State(face): State<FaceErrors>, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || has_json_content_type(response.headers()) {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, MAX_PLAIN_BODY).await.map(|b| String::from_utf8_lossy(&b).trim().to_string()).unwrap_or_default();
    let message = match status {
        StatusCode::PAYLOAD_TOO_LARGE => body_too_large_message(face.max_body_mib),
        _ if text.is_empty() => status.canonical_reason().unwrap_or("request refused").to_string(),
        _ => text,
    };
    let mut reshaped = (face.shape)(status, message);
    // Keep what the original said besides its body (`Allow` on a 405, ...).
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH && !reshaped.headers().contains_key(name) {
            reshaped.headers_mut().insert(name.clone(), value.clone());
        }
    }
    reshaped
}

/// The one wording of a 413, for the middleware and for handlers that read bodies themselves.
pub fn body_too_large_message(max_body_mib: u32) -> String {
    format!("the request body is larger than this worker accepts ({max_body_mib} MiB, --max-body-mib), uploaded images included")
}
