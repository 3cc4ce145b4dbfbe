//! The worker's `--api-key` check with OpenAI's 401 body, so the SDK raises
//! `AuthenticationError`. With no keys configured any (or no) bearer token is accepted: SDK users
//! must set some key, usually a dummy one.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::http::auth::AuthFailure;
use crate::http::openai::errors::OpenAiError;
use crate::http::AppState;

pub async fn require_api_key(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match state.api_keys.check(request.headers()) {
        Ok(()) => next.run(request).await,
        Err(AuthFailure::Missing) => OpenAiError::unauthorized(
            "You didn't provide an API key. Send it as 'Authorization: Bearer <key>' (this worker runs with --api-key).",
        )
        .into_response(),
        Err(AuthFailure::Invalid) => OpenAiError::unauthorized("Incorrect API key provided.").into_response(),
    }
}
