//! Optional bearer-token auth. With no keys configured every route is open; with keys, job routes
//! need `Authorization: Bearer <key>`. Keys are compared in constant time so response timing does
//! not reveal how much of a guess was right: the SHA-256 digests of the presented token and of each
//! key are compared, so not even a key's length shows (a plain slice compare returns early on a
//! length mismatch).

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::http::error::ApiError;
use crate::http::AppState;

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No `Authorization: Bearer ...` header.
    Missing,
    /// A token that matches no configured key.
    Invalid,
}

/// The accepted keys, held as SHA-256 digests; empty = auth disabled.
#[derive(Clone, Default)]
pub struct ApiKeys(Vec<[u8; 32]>);

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeys({} key(s))", self.0.len())
    }
}

impl ApiKeys {
    pub fn new<I: IntoIterator<Item = S>, S: Into<String>>(keys: I) -> Self {
        ApiKeys(keys.into_iter().map(Into::into).filter(|k| !k.is_empty()).map(|k| Sha256::digest(k.as_bytes()).into()).collect())
    }

    pub fn is_enabled(&self) -> bool {
        !self.0.is_empty()
    }

    /// Check a request's `Authorization` header (always `Ok` when auth is disabled).
    pub fn check(&self, headers: &HeaderMap) -> Result<(), AuthFailure> {
        if !self.is_enabled() {
            return Ok(());
        }
        let token = bearer_token(headers).ok_or(AuthFailure::Missing)?;
        self.check_token(token)
    }

    /// Check a bare token (faces with other header conventions extract it themselves).
    pub fn check_token(&self, token: &str) -> Result<(), AuthFailure> {
        // Compare against every key without stopping early.
        let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let matched = self.0.iter().fold(subtle::Choice::from(0), |acc, key| acc | key.ct_eq(&presented));
        if bool::from(matched) {
            Ok(())
        } else {
            Err(AuthFailure::Invalid)
        }
    }
}

/// The token of `Authorization: Bearer <token>` (scheme case-insensitive), if present.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// rbee's 401 body for a failure.
pub fn unauthorized(failure: AuthFailure) -> Response {
    let error = match failure {
        AuthFailure::Missing => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "MISSING_API_KEY",
            "this route needs an API key: send the header 'Authorization: Bearer <key>'",
        ),
        AuthFailure::Invalid => ApiError::new(StatusCode::UNAUTHORIZED, "INVALID_API_KEY", "the API key is not valid for this worker"),
    };
    let mut response = error.into_response();
    response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// Middleware for routes that need a key when keys are configured.
pub async fn require_api_key(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match state.api_keys.check(request.headers()) {
        Ok(()) => next.run(request).await,
        Err(failure) => unauthorized(failure),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(auth).expect("ascii"));
        h
    }

    #[test]
    fn disabled_auth_accepts_anything() {
        assert_eq!(ApiKeys::new(Vec::<String>::new()).check(&HeaderMap::new()), Ok(()));
        assert!(!ApiKeys::new([""]).is_enabled(), "an empty key does not enable auth");
    }

    #[test]
    fn missing_wrong_and_right_keys() {
        let keys = ApiKeys::new(["alpha", "beta"]);
        assert_eq!(keys.check(&HeaderMap::new()), Err(AuthFailure::Missing));
        assert_eq!(keys.check(&headers("Basic abc")), Err(AuthFailure::Missing));
        assert_eq!(keys.check(&headers("Bearer alph")), Err(AuthFailure::Invalid));
        assert_eq!(keys.check(&headers("Bearer beta")), Ok(()));
        assert_eq!(keys.check(&headers("bearer  alpha ")), Ok(()));
    }
}
