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
