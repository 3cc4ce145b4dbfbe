//! OpenAI face: streaming frames, errors in OpenAI's shape with the right statuses and retry
//! headers, the queue limit, auth, and cancel-on-disconnect.

mod openai_support;

use std::time::Duration;

use openai_support::{b64decode, client, image_size, png_bytes, sse_frames, Multipart, TestServer, TEST_TIMEOUT};
use reqwest::StatusCode;
use sd_worker_rbee::backend::generation_engine::EngineState;
use sd_worker_rbee::config::Config;
use serde_json::{json, Value};

async fn generate(server: &TestServer, body: Value) -> reqwest::Response {
    client().post(server.at("/v1/images/generations")).json(&body).send().await.expect("request sent")
}

/// Status, the `error` object, and the `x-should-retry` header of an error reply.
async fn error_of(response: reqwest::Response) -> (StatusCode, Value, Option<String>) {
    let status = response.status();
    assert!(response.headers().contains_key("x-request-id"), "every response carries x-request-id");
    let retry = response.headers().get("x-should-retry").map(|v| v.to_str().expect("ascii").to_string());
    let body: Value = response.json().await.expect("json error body");
    let error = body["error"].clone();
    for key in ["message", "type", "param", "code"] {
        assert!(error.get(key).is_some(), "error.{key} missing: {body}");
    }
    (status, error, retry)
}

#[tokio::test]
async fn streaming_sends_the_partials_asked_for_then_completed() {
    let server = TestServer::start_default().await;
    let response =
        generate(&server, json!({"model":"gpt-image-1","prompt":"x","stream":true,"partial_images":2,"steps":6,"size":"48x80"})).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"].to_str().expect("ascii").starts_with("text/event-stream"));
    let frames = sse_frames(&response.text().await.expect("body"));
    let names: Vec<&str> = frames.iter().map(|f| f.event.as_deref().unwrap_or("")).collect();
    assert_eq!(names, ["image_generation.partial_image", "image_generation.partial_image", "image_generation.completed"]);
    for (i, frame) in frames.iter().enumerate() {
        assert!(!frame.data.contains('\n'), "data is one line");
        let data: Value = serde_json::from_str(&frame.data).expect("json data");
        assert_eq!(data["type"].as_str(), frame.event.as_deref(), "type repeats the event name");
        assert_eq!(image_size(&b64decode(data["b64_json"].as_str().expect("b64_json"))), (48, 80));
        assert_eq!((data["size"].as_str(), data["quality"].as_str()), (Some("48x80"), Some("medium")));
        assert_eq!((data["background"].as_str(), data["output_format"].as_str()), (Some("opaque"), Some("png")));
        assert!(data["created_at"].is_i64());
        if i < 2 {
            assert_eq!(data["partial_image_index"], i);
        } else {
            assert!(data["usage"]["input_tokens_details"]["text_tokens"].is_u64(), "{data}");
        }
    }
}

#[tokio::test]
async fn streamed_edits_use_image_edit_events_and_text_booleans() {
    let server = TestServer::start_default().await;
    let image = png_bytes(&image::DynamicImage::ImageRgb8(image::RgbImage::from_pixel(64, 64, image::Rgb([9, 9, 9]))));
    let (content_type, body) = Multipart::new()
        .file("image", "upload", &image)
        .text("prompt", "x")
        .text("stream", "true")
        .text("partial_images", "1")
        .text("steps", "4")
        .finish();
    let response = client().post(server.at("/v1/images/edits")).header("content-type", content_type).body(body).send().await.expect("sent");
    assert_eq!(response.status(), StatusCode::OK);
    let frames = sse_frames(&response.text().await.expect("body"));
    let names: Vec<&str> = frames.iter().map(|f| f.event.as_deref().unwrap_or("")).collect();
    assert_eq!(names, ["image_edit.partial_image", "image_edit.completed"]);
}

#[tokio::test]
async fn a_failure_mid_stream_is_an_error_event_the_sdk_raises() {
    let server = TestServer::start_default().await;
    let response = generate(&server, json!({"prompt":"fail now","stream":true,"partial_images":1})).await;
    assert_eq!(response.status(), StatusCode::OK, "the stream had started");
    let frames = sse_frames(&response.text().await.expect("body"));
    let last = frames.last().expect("an error frame");
    assert_eq!(last.event.as_deref(), Some("error"));
    let data: Value = serde_json::from_str(&last.data).expect("json");
    assert_eq!(data["type"], "error");
    assert_eq!(data["error"]["type"], "server_error");
    assert!(data["error"]["message"].as_str().expect("message").contains("injected failure"));
}

#[tokio::test]
async fn a_failed_job_is_a_500_the_sdk_must_not_retry() {
    let server = TestServer::start_default().await;
    let (status, error, retry) = error_of(generate(&server, json!({"prompt":"fail please"})).await).await;
    assert_eq!(
        (status, error["type"].as_str(), retry.as_deref()),
        (StatusCode::INTERNAL_SERVER_ERROR, Some("server_error"), Some("false"))
    );
}

#[tokio::test]
async fn invalid_requests_are_400s_naming_the_param() {
    let server = TestServer::start_default().await;
    let cases = [
        (json!({"prompt":"x","size":"big"}), "size", "invalid_size"),
        (json!({"prompt":"x","size":"512"}), "size", "invalid_size"),
        (json!({"prompt":"x","size":"9000x9000"}), "size", "invalid_size"),
        (json!({"prompt":"x","background":"transparent"}), "background", "invalid_value"),
        (json!({"prompt":"x","n":"abc"}), "n", "invalid_value"),
        (json!({"prompt":"x","n":0}), "n", "invalid_value"),
        (json!({"prompt":"x","quality":"ultra"}), "quality", "invalid_value"),
        (json!({"prompt":"x","sampler":"Nope"}), "sampler", "invalid_value"),
        (json!({"n":1}), "prompt", "missing_required_parameter"),
    ];
    for (body, param, code) in cases {
        let (status, error, retry) = error_of(generate(&server, body.clone()).await).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!((error["param"].as_str(), error["code"].as_str()), (Some(param), Some(code)), "{body}: {error}");
        assert_eq!(error["type"], "invalid_request_error");
        assert_eq!(retry.as_deref(), Some("false"));
    }
    let response = client().post(server.at("/v1/images/generations")).body("{not json").send().await.expect("sent");
    assert_eq!(error_of(response).await.0, StatusCode::BAD_REQUEST);
    let (status, error, _) = error_of(generate(&server, json!({"prompt":"x","model":"sdxl-unknown"})).await).await;
    assert_eq!((status, error["code"].as_str()), (StatusCode::NOT_FOUND, Some("model_not_found")));
}

#[tokio::test]
async fn unreadable_uploads_are_400s_about_the_file() {
    let server = TestServer::start_default().await;
    let (content_type, body) = Multipart::new().file("image", "x.png", b"definitely not an image").text("prompt", "x").finish();
    let response = client().post(server.at("/v1/images/edits")).header("content-type", content_type).body(body).send().await.expect("sent");
    let (status, error, _) = error_of(response).await;
    assert_eq!((status, error["param"].as_str()), (StatusCode::BAD_REQUEST, Some("image")));
    assert!(error["message"].as_str().expect("message").starts_with("Invalid file 'image'"));
    let (content_type, body) = Multipart::new().text("prompt", "x").finish();
    let response = client().post(server.at("/v1/images/edits")).header("content-type", content_type).body(body).send().await.expect("sent");
    let (status, error, _) = error_of(response).await;
    assert_eq!((status, error["code"].as_str()), (StatusCode::BAD_REQUEST, Some("missing_required_parameter")));
    let response = client().post(server.at("/v1/images/variations")).json(&json!({"image":"x"})).send().await.expect("sent");
    assert_eq!(error_of(response).await.0, StatusCode::BAD_REQUEST, "variations need multipart");
}

#[tokio::test]
async fn a_full_queue_is_a_429_with_retry_after() {
    let mut config = Config::defaults();
    config.queue_capacity = 1;
    let server = TestServer::start(config).await;
    let slow = json!({"prompt":"slow","steps":100});
    let running = tokio::spawn({
        let url = server.at("/v1/images/generations");
        let body = slow.clone();
        async move { client().post(url).json(&body).send().await }
    });
    let deadline = tokio::time::Instant::now() + TEST_TIMEOUT;
    while server.state.engine.status().state != EngineState::Busy {
        assert!(tokio::time::Instant::now() < deadline, "the first job never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let waiting = tokio::spawn({
        let url = server.at("/v1/images/generations");
        async move { client().post(url).json(&slow).send().await }
    });
    while server.state.engine.queue_len() == 0 {
        assert!(tokio::time::Instant::now() < deadline, "the second job never queued");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let refused = generate(&server, json!({"prompt":"x"})).await;
    assert_eq!(refused.headers().get("retry-after").map(|v| v.to_str().expect("ascii").to_string()).as_deref(), Some("5"));
    let (status, error, retry) = error_of(refused).await;
    assert_eq!((status, error["code"].as_str(), retry.as_deref()), (StatusCode::TOO_MANY_REQUESTS, Some("queue_full"), Some("true")));
    running.abort();
    waiting.abort();
}

#[tokio::test]
async fn closing_a_stream_cancels_its_job() {
    let server = TestServer::start_default().await;
    let mut response = generate(&server, json!({"prompt":"slow","stream":true,"steps":150})).await;
    assert_eq!(response.status(), StatusCode::OK);
    let deadline = tokio::time::Instant::now() + TEST_TIMEOUT;
    while server.state.engine.status().state != EngineState::Busy {
        assert!(tokio::time::Instant::now() < deadline, "the job never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Read whatever arrived (keep-alives), then hang up ~15 s before the job would end.
    let _ = tokio::time::timeout(Duration::from_millis(300), response.chunk()).await;
    drop(response);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while server.state.engine.status().state == EngineState::Busy {
        assert!(tokio::time::Instant::now() < deadline, "the job kept running after the client left");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn with_an_api_key_bad_keys_are_401_and_image_links_stay_open() {
    let mut config = Config::defaults();
    config.api_keys = vec!["sk-right".into()];
    let server = TestServer::start(config).await;
    for key in [None, Some("sk-wrong")] {
        let mut request = client().post(server.at("/v1/images/generations")).json(&json!({"prompt":"x"}));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.expect("sent");
        assert_eq!(response.headers().get("www-authenticate").map(|v| v.as_bytes()), Some(&b"Bearer"[..]));
        let (status, error, _) = error_of(response).await;
        assert_eq!((status, error["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("invalid_api_key")), "{key:?}");
    }
    let ok =
        client().post(server.at("/v1/images/generations")).bearer_auth("sk-right").json(&json!({"prompt":"x"})).send().await.expect("sent");
    assert_eq!(ok.status(), StatusCode::OK);
    let reply: Value = ok.json().await.expect("json");
    let file = client().get(reply["data"][0]["url"].as_str().expect("url")).send().await.expect("fetch");
    assert_eq!(file.status(), StatusCode::OK, "links are capabilities; no key needed");
    let models = client().get(server.at("/v1/models")).send().await.expect("sent");
    assert_eq!(models.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn while_the_model_loads_requests_get_a_retryable_503() {
    let state = openai_support::unloaded_state(Duration::from_secs(30));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/v1/images/generations", listener.local_addr().expect("address"));
    tokio::spawn(sd_worker_rbee::http::serve(listener, state, std::future::pending()));
    let response = client().post(url).json(&json!({"prompt":"x"})).send().await.expect("sent");
    assert_eq!(response.headers().get("retry-after").map(|v| v.as_bytes()), Some(&b"5"[..]));
    let (status, error, retry) = error_of(response).await;
    assert_eq!((status, error["code"].as_str(), retry.as_deref()), (StatusCode::SERVICE_UNAVAILABLE, Some("model_loading"), Some("true")));
}

#[tokio::test]
async fn a_client_that_gives_up_waiting_cancels_its_job() {
    let server = TestServer::start_default().await;
    let impatient = reqwest::Client::builder().timeout(Duration::from_millis(500)).build().expect("client");
    let result = impatient.post(server.at("/v1/images/generations")).json(&json!({"prompt":"slow","steps":150})).send().await;
    assert!(result.is_err(), "the client timed out");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while server.state.engine.status().state == EngineState::Busy {
        assert!(tokio::time::Instant::now() < deadline, "the job kept running after the client left");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(server.state.engine.status().jobs_done, 1, "the job ended early (cancelled), it did not run 15 s");
}
