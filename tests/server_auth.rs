//! Bearer auth: job routes need a key when keys are configured; health routes never do.

mod common;

use std::time::Duration;

use common::{config, post_job, SseReader, TestServer};
use serde_json::{json, Value};

fn job() -> Value {
    json!({"operation": "image_generation", "prompt": "x", "steps": 1, "width": 64, "height": 64, "preview_every": 0})
}

#[tokio::test(flavor = "multi_thread")]
async fn with_keys_job_routes_need_a_valid_bearer_token() {
    let server = TestServer::start(config(&["key-one", "key-two"]), Duration::from_millis(1)).await;
    let client = reqwest::Client::new();

    let missing = post_job(&server.url, &job(), None).await;
    assert_eq!(missing.status(), 401);
    assert_eq!(missing.json::<Value>().await.expect("json")["error"]["code"], "MISSING_API_KEY");

    let invalid = post_job(&server.url, &job(), Some("key-three")).await;
    assert_eq!(invalid.status(), 401);
    let body: Value = invalid.json().await.expect("json");
    assert_eq!(body["error"]["code"], "INVALID_API_KEY");
    assert!(body["error"]["message"].is_string());

    for path in ["/v1/jobs/job-x", "/v1/jobs/job-x/stream"] {
        let response = client.get(format!("{}{path}", server.url)).send().await.expect("GET");
        assert_eq!(response.status(), 401, "{path}");
    }
    let delete = client.delete(format!("{}/v1/jobs/job-x", server.url)).send().await.expect("DELETE");
    assert_eq!(delete.status(), 401);

    for path in ["/", "/health", "/v1/ready", "/ready"] {
        let response = client.get(format!("{}{path}", server.url)).send().await.expect("GET");
        assert_ne!(response.status(), 401, "{path} stays open");
    }

    let accepted = post_job(&server.url, &job(), Some("key-two")).await;
    assert_eq!(accepted.status(), 200);
    let sse_url = accepted.json::<Value>().await.expect("json")["sse_url"].as_str().expect("sse_url").to_string();
    let frames = SseReader::open(&format!("{}{sse_url}", server.url), Some("key-one")).await.until_final().await;
    assert_eq!(frames.last().map(|f| f.data.as_str()), Some("[DONE]"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn without_keys_everything_is_open() {
    let server = TestServer::start(config(&[]), Duration::from_millis(1)).await;
    let accepted = post_job(&server.url, &job(), None).await;
    assert_eq!(accepted.status(), 200);
    // A stray header does not matter when auth is off.
    let also = post_job(&server.url, &job(), Some("anything")).await;
    assert_eq!(also.status(), 200);
    server.stop().await;
}

/// Routes anyone may call when keys are set: liveness and readiness probes (the hive polls them),
/// A1111's `/internal/ping` liveness probe, the API description, Prometheus scrapes, and url-image files (their 128-bit token is the
/// credential, as OpenAI's signed URLs are).
const OPEN_ROUTES: &[&str] = &["/", "/health", "/v1/ready", "/ready", "/internal/ping", "/metrics", "/v1/images/files/{file}", "/images/files/{file}"];

#[tokio::test(flavor = "multi_thread")]
async fn with_keys_every_documented_route_of_every_face_needs_one() {
    let server = TestServer::start(config(&["key-one"]), Duration::from_millis(1)).await;
    let client = reqwest::Client::new();
    let document: Value = client.get(format!("{}/api-docs/openapi.json", server.url)).send().await.expect("GET").json().await.expect("json");
    let paths = document["paths"].as_object().expect("paths");
    let mut checked = 0;
    let mut wrong = Vec::new();
    for (path, operations) in paths {
        let concrete = path.split('/').map(|part| if part.starts_with('{') { "x" } else { part }).collect::<Vec<_>>().join("/");
        for method in operations.as_object().expect("operations").keys() {
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            let response = client.request(method.clone(), format!("{}{concrete}", server.url)).send().await.expect("sent");
            let open = OPEN_ROUTES.contains(&path.as_str());
            let refused = response.status() == 401 && response.headers().contains_key("www-authenticate");
            if open == refused {
                wrong.push(format!("{method} {path}: {} (meant to be {})", response.status(), if open { "open" } else { "401" }));
            }
            checked += 1;
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    assert!(checked > 40, "the sweep covered only {checked} operations");
    server.stop().await;
}

async fn preflight(server: &TestServer, origin: &str) -> reqwest::Response {
    reqwest::Client::new()
        .request(reqwest::Method::OPTIONS, format!("{}/v1/jobs", server.url))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization, content-type")
        .send()
        .await
        .expect("preflight")
}

#[tokio::test(flavor = "multi_thread")]
async fn cors_is_off_by_default_and_allows_only_configured_origins() {
    let server = TestServer::start(config(&[]), Duration::from_millis(1)).await;
    let response = preflight(&server, "http://evil.example").await;
    assert!(!response.headers().contains_key("access-control-allow-origin"), "no CORS without --cors-origin");
    server.stop().await;

    let mut configured = config(&[]);
    configured.cors_origins = vec!["http://localhost:3000".into()];
    let server = TestServer::start(configured, Duration::from_millis(1)).await;
    let allowed = preflight(&server, "http://localhost:3000").await;
    assert_eq!(allowed.headers()["access-control-allow-origin"], "http://localhost:3000");
    let other = preflight(&server, "http://evil.example").await;
    assert!(!other.headers().contains_key("access-control-allow-origin"), "an unlisted origin gets no grant");
    let reply = reqwest::Client::new().get(format!("{}/health", server.url)).header("origin", "http://localhost:3000").send().await.expect("GET");
    let exposed = reply.headers()["access-control-expose-headers"].to_str().expect("ascii").to_string();
    assert!(exposed.contains("x-request-id") && exposed.contains("retry-after"), "{exposed}");
    server.stop().await;
}
