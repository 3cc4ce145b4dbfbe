//! Heartbeats reach a queen as rbee's `WorkerHeartbeat` JSON; a queen without the route is fine.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::routing::post;
use axum::{Json, Router};
use common::{config, TestServer, TEST_TIMEOUT};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread")]
async fn heartbeats_carry_rbee_worker_info() {
    let received: Arc<Mutex<Vec<Value>>> = Arc::default();
    let sink = received.clone();
    let queen = Router::new().route(
        "/v1/worker-heartbeat",
        post(move |Json(body): Json<Value>| {
            let sink = sink.clone();
            async move {
                sink.lock().expect("lock").push(body);
                Json(serde_json::json!({"status": "ok"}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let queen_url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, queen).await });

    let mut cfg = config(&[]);
    cfg.worker_id = Some("worker-cpu-9123".into());
    cfg.port = 9123;
    let server = TestServer::start(cfg, Duration::from_millis(1)).await;
    server.wait_ready().await;
    let task = sd_worker_rbee::heartbeat::spawn(server.state.clone(), queen_url, "cpu:0".into(), Duration::from_millis(50));

    let deadline = tokio::time::Instant::now() + TEST_TIMEOUT;
    while received.lock().expect("lock").len() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "no heartbeats arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    task.abort();
    let beat = received.lock().expect("lock")[0].clone();
    let worker = &beat["worker"];
    assert_eq!(worker["id"], "worker-cpu-9123");
    assert_eq!(worker["model_id"], "tiny-test-model");
    assert_eq!(worker["device"], "cpu:0");
    assert_eq!(worker["port"], 9123);
    assert_eq!(worker["status"], "ready");
    assert_eq!(worker["implementation"], "sd-worker-rbee");
    assert!(worker["version"].is_string());
    let timestamp = beat["timestamp"].as_str().expect("timestamp");
    assert!(chrono::DateTime::parse_from_rfc3339(timestamp).is_ok(), "RFC 3339: {timestamp}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_queen_is_ignored() {
    let server = TestServer::start(config(&[]), Duration::from_millis(1)).await;
    // Port 9 (discard) on localhost: nothing listens; every beat fails quietly.
    let task = sd_worker_rbee::heartbeat::spawn(server.state.clone(), "http://127.0.0.1:9".into(), "cpu:0".into(), Duration::from_millis(20));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!task.is_finished(), "the heartbeat task keeps going after failures");
    task.abort();
    let health = reqwest::get(format!("{}/health", server.url)).await.expect("health");
    assert_eq!(health.status(), 200);
    server.stop().await;
}
