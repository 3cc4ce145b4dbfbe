//! The committed `openapi/openapi.json` must match what the handlers generate.
//! Regenerate with: `UPDATE_OPENAPI=1 cargo test --test openapi`

use std::path::Path;

const COMMITTED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json");

#[test]
fn committed_openapi_matches_the_handlers() {
    let generated = sd_worker_rbee::http::openapi::document_json().expect("the document serializes");
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(COMMITTED, &generated).expect("write openapi/openapi.json");
        return;
    }
    let committed = std::fs::read_to_string(Path::new(COMMITTED)).unwrap_or_default();
    assert!(
        committed == generated,
        "openapi/openapi.json is out of date with the handlers; regenerate it with \
         `UPDATE_OPENAPI=1 cargo test --test openapi` and commit the result"
    );
}

#[test]
fn every_native_route_is_documented() {
    let doc = sd_worker_rbee::http::openapi::document();
    for path in ["/", "/health", "/v1/ready", "/ready", "/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/stream"] {
        assert!(doc.paths.paths.contains_key(path), "{path} missing from the OpenAPI document");
    }
}
