//! A1111's `--api-auth` as this worker offers it: with API keys configured, `/sdapi/v1/*` needs
//! HTTP Basic auth whose password is a key (any user name), or `Authorization: Bearer <key>`.
//! Refusals are A1111's 401s (`Not authenticated` / `Incorrect username or password`, with
//! `WWW-Authenticate: Basic`). An empty `Authorization` header is fine when no keys are set
//! (Open WebUI always sends one).

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;

use super::errors::A1111Error;
use crate::http::auth::{bearer_token, AuthFailure};
use crate::http::AppState;

/// The key an `Authorization` header carries: the Basic password or the Bearer token.
fn presented_key(headers: &axum::http::HeaderMap) -> Option<String> {
    if let Some(token) = bearer_token(headers) {
        return Some(token.to_string());
    }
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let credentials = String::from_utf8(decoded).ok()?;
    credentials.split_once(':').map(|(_, password)| password.to_string())
}

fn unauthorized(failure: AuthFailure) -> Response {
    let detail = match failure {
        AuthFailure::Missing => "Not authenticated",
        AuthFailure::Invalid => "Incorrect username or password",
    };
    let mut response = A1111Error::http(StatusCode::UNAUTHORIZED, detail).into_response();
    response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic"));
    response
}

/// Middleware for the protected A1111 routes.
pub async fn require_api_auth(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if !state.api_keys.is_enabled() {
        return next.run(request).await;
    }
    match presented_key(request.headers()) {
        None => unauthorized(AuthFailure::Missing),
        Some(key) => match state.api_keys.check_token(&key) {
            Ok(()) => next.run(request).await,
            Err(failure) => unauthorized(failure),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderMap;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(value).expect("ascii"));
        h
    }

    #[test]
    fn basic_password_or_bearer_token() {
        let basic = base64::engine::general_purpose::STANDARD.encode("user:s3cret");
        assert_eq!(presented_key(&headers(&format!("Basic {basic}"))).as_deref(), Some("s3cret"));
        assert_eq!(presented_key(&headers("Bearer tok")).as_deref(), Some("tok"));
        assert_eq!(presented_key(&headers("")), None);
        assert_eq!(presented_key(&HeaderMap::new()), None);
    }
}
