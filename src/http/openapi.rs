//! The OpenAPI document: a base (title, auth scheme, shared error schema) merged with every
//! face's own annotated paths. Served at `/api-docs/openapi.json`; `openapi/openapi.json` is the
//! committed copy (`UPDATE_OPENAPI=1 cargo test --test openapi` rewrites it).

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::http::error::{ErrorBody, ErrorDetail};
use crate::http::FACES;

pub const OPENAPI_JSON_PATH: &str = "/api-docs/openapi.json";
pub const SWAGGER_UI_PATH: &str = "/swagger-ui";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "sd-worker-rbee",
        description = "Stable Diffusion image-generation worker for rbee. Job routes need \
            `Authorization: Bearer <key>` when the worker runs with `--api-key`."
    ),
    components(schemas(ErrorBody, ErrorDetail)),
    modifiers(&BearerAuth)
)]
struct BaseApi;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()));
    }
}

/// The whole document, as served.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = BaseApi::openapi();
    for face in FACES {
        doc.merge((face.openapi)());
    }
    doc
}

/// The document as committed in `openapi/openapi.json` (pretty JSON, trailing newline).
pub fn document_json() -> Result<String, serde_json::Error> {
    let mut json = document().to_pretty_json()?;
    json.push('\n');
    Ok(json)
}
