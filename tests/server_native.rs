//! The rbee native face over real HTTP: a server on an ephemeral port driven with reqwest.

mod common;

use std::time::Duration;

use common::{base64_png, config, decode_base64_image, load_tiny, names, post_job, submit, tiny_config, SseReader, TestServer, TEST_TIMEOUT, TINY_SD15};
use serde_json::{json, Value};

const FAST: Duration = Duration::from_millis(2);

/// An rbee generation request as the queen would send it, for the tiny model.
fn generation(steps: u32, preview_every: u32) -> Value {
    json!({"operation": "image_generation", "hive_id": "localhost", "model": TINY_SD15, "prompt": "a red fox",
           "steps": steps, "width": 64, "height": 96, "seed": 42, "preview_every": preview_every})
}

/// The same for the stand-in runner's server.
fn painted(steps: u32, preview_every: u32) -> Value {
    let mut body = generation(steps, preview_every);
    body["model"] = json!("tiny-test-model");
    body
}

/// The shape every successful stream has: queued, started, progress 1..=total (with previews
/// after some steps), then one complete per image, then [DONE]. `total` is what `started` says
/// (img2img runs fewer steps than requested, as diffusers does).
fn assert_successful_stream(frames: &[common::SseFrame], images: usize) {
    let names = names(frames);
    assert_eq!(names.first().map(String::as_str), Some("queued"), "{names:?}");
    assert_eq!(names.get(1).map(String::as_str), Some("started"), "{names:?}");
    assert_eq!(names.last().map(String::as_str), Some("[DONE]"), "{names:?}");
    let total = frames[1].json()["total_steps"].as_u64().expect("total_steps");
    assert!(total >= 1);
    let progress: Vec<u64> = frames.iter().filter(|f| f.event.as_deref() == Some("progress")).map(|f| f.json()["step"].as_u64().expect("step")).collect();
    assert_eq!(progress, (1..=total).collect::<Vec<_>>());
    for frame in frames.iter().filter(|f| f.event.as_deref() == Some("progress")) {
        assert_eq!(frame.json()["total"].as_u64(), Some(total));
    }
    let first_preview = names.iter().position(|n| n == "preview").expect("a preview");
    let first_progress = names.iter().position(|n| n == "progress").expect("a progress");
    let first_complete = names.iter().position(|n| n == "complete").expect("a complete");
    assert!(first_progress < first_preview && first_preview < first_complete, "{names:?}");
    assert_eq!(names.iter().filter(|n| *n == "complete").count(), images);
    for frame in frames.iter().filter(|f| f.event.is_some()) {
        assert_eq!(frame.json()["type"].as_str(), frame.event.as_deref(), "data.type equals the event name");
    }
}

fn completes(frames: &[common::SseFrame]) -> Vec<Value> {
    frames.iter().filter(|f| f.event.as_deref() == Some("complete")).map(|f| f.json()).collect()
}

/// Poll `GET /v1/jobs/{id}` until the job has `status`.
async fn wait_for_status(server: &TestServer, job_id: &str, status: &str) -> Value {
    let deadline = tokio::time::Instant::now() + TEST_TIMEOUT;
    loop {
        let body: Value = reqwest::get(format!("{}/v1/jobs/{job_id}", server.url)).await.expect("GET").json().await.expect("json");
        if body["status"] == status {
            return body;
        }
        assert!(tokio::time::Instant::now() < deadline, "job never reached {status}: {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn root_and_health_answer_while_the_model_loads_and_early_jobs_wait() {
    let (release, released) = std::sync::mpsc::channel::<()>();
    let server = TestServer::start_with(tiny_config(&[]), move || {
        let _ = released.recv();
        load_tiny()
    })
    .await;
    let client = reqwest::Client::new();

    let root = client.get(&server.url).send().await.expect("GET /");
    assert_eq!(root.status(), 200);
    assert!(root.headers().contains_key("x-request-id"), "every response carries x-request-id");
    let root: Value = root.json().await.expect("json");
    assert_eq!(root["state"], "loading");

    let health: Value = client.get(format!("{}/health", server.url)).send().await.expect("health").json().await.expect("json");
    assert_eq!(health, json!({"status": "healthy"}));

    for path in ["/v1/ready", "/ready"] {
        let ready = client.get(format!("{}{path}", server.url)).send().await.expect("ready");
        assert_eq!(ready.status(), 503);
        let body: Value = ready.json().await.expect("json");
        assert_eq!((body["ready"].clone(), body["state"].clone(), body["model_loaded"].clone()), (json!(false), json!("loading"), json!(false)));
    }

    let echoed = client.get(format!("{}/health", server.url)).header("x-request-id", "trace-123").send().await.expect("health");
    assert_eq!(echoed.headers()["x-request-id"], "trace-123");

    // A job sent while loading waits and runs once the model is there.
    let (_, stream_url) = submit(&server.url, &generation(2, 1)).await;
    release.send(()).expect("release the loader");
    let frames = SseReader::open(&stream_url, None).await.until_final().await;
    assert_successful_stream(&frames, 1);

    let ready: Value = client.get(format!("{}/v1/ready", server.url)).send().await.expect("ready").json().await.expect("json");
    assert_eq!((ready["ready"].clone(), ready["state"].clone(), ready["model"].clone()), (json!(true), json!("idle"), json!(TINY_SD15)));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn image_generation_streams_progress_preview_complete_done() {
    let server = TestServer::start_tiny(tiny_config(&[])).await;
    let mut body = generation(4, 2);
    body["num_images"] = json!(2);
    let (job_id, stream_url) = submit(&server.url, &body).await;
    assert!(job_id.starts_with("job-"));
    let frames = SseReader::open(&stream_url, None).await.until_final().await;
    assert_successful_stream(&frames, 2);

    let started = frames[1].json();
    assert_eq!((started["job_id"].as_str(), started["seed"].as_u64(), started["total_steps"].as_u64()), (Some(job_id.as_str()), Some(42), Some(8)));
    let progress = frames.iter().find(|f| f.event.as_deref() == Some("progress")).expect("progress").json();
    assert_eq!((progress["step"].clone(), progress["total"].clone(), progress["percent"].clone()), (json!(1), json!(8), json!(12.5)));
    let preview = frames.iter().find(|f| f.event.as_deref() == Some("preview")).expect("preview").json();
    assert_eq!(preview["format"], "png");
    assert_eq!(decode_base64_image(preview["image"].as_str().expect("image")).dimensions(), (64, 96));

    let images = completes(&frames);
    for (i, complete) in images.iter().enumerate() {
        assert_eq!(complete["format"], "png");
        assert_eq!((complete["width"].clone(), complete["height"].clone()), (json!(64), json!(96)));
        assert_eq!(complete["seed"], json!(42 + i));
        assert_eq!(complete["index"], json!(i));
        assert!(complete["infotext"].as_str().expect("infotext").contains(&format!("Seed: {}", 42 + i)));
        let png = decode_base64_image(complete["image"].as_str().expect("image"));
        assert_eq!(png.dimensions(), (64, 96), "the PNG decodes to the requested size");
    }
    assert_ne!(images[0]["image"], images[1]["image"], "image i uses seed + i");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn image_transform_streams_an_image_of_the_input_size() {
    let server = TestServer::start_tiny(tiny_config(&[])).await;
    let input = image::RgbImage::from_fn(64, 96, |x, y| image::Rgb([(x * 4) as u8, (y * 2) as u8, 90]));
    let body = json!({"operation": "image_transform", "hive_id": "h", "model": TINY_SD15, "prompt": "make it green",
                      "steps": 4, "strength": 0.5, "seed": 7, "input_image": format!("data:image/png;base64,{}", base64_png(&input)),
                      "preview_every": 1});
    let (_, stream_url) = submit(&server.url, &body).await;
    let frames = SseReader::open(&stream_url, None).await.until_final().await;
    assert_successful_stream(&frames, 1);
    assert_eq!(frames[1].json()["total_steps"], 2, "strength 0.5 of 4 steps runs 2, as diffusers does");
    let output = decode_base64_image(completes(&frames)[0]["image"].as_str().expect("image"));
    assert_eq!(output.dimensions(), (64, 96));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn image_inpaint_streams_an_image_of_the_init_size() {
    let server = TestServer::start_tiny(tiny_config(&[])).await;
    let init = image::RgbImage::from_pixel(64, 64, image::Rgb([0, 0, 255]));
    let mask = image::RgbImage::from_fn(64, 64, |x, _| if x < 32 { image::Rgb([255, 255, 255]) } else { image::Rgb([0, 0, 0]) });
    let body = json!({"operation": "image_inpaint", "hive_id": "h", "model": TINY_SD15, "prompt": "a red patch",
                      "steps": 3, "seed": 3, "init_image": base64_png(&init), "mask_image": base64_png(&mask), "preview_every": 1});
    let (_, stream_url) = submit(&server.url, &body).await;
    let frames = SseReader::open(&stream_url, None).await.until_final().await;
    assert_successful_stream(&frames, 1);
    let output = decode_base64_image(completes(&frames)[0]["image"].as_str().expect("image"));
    assert_eq!(output.dimensions(), (64, 64));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn input_images_and_masks_reach_the_runner_intact() {
    // The stand-in runner paints what it receives, so pixels show what the face passed on.
    let server = TestServer::start(config(&[]), FAST).await;
    // 70 x 64 is snapped down to 64 x 64 (multiples of 8).
    let input = image::RgbImage::from_pixel(70, 64, image::Rgb([10, 200, 30]));
    let body = json!({"operation": "image_transform", "prompt": "x", "steps": 1, "input_image": base64_png(&input)});
    let (_, stream_url) = submit(&server.url, &body).await;
    let frames = SseReader::open(&stream_url, None).await.until_final().await;
    let output = decode_base64_image(completes(&frames)[0]["image"].as_str().expect("image"));
    assert_eq!(output.dimensions(), (64, 64));
    assert_eq!(output.get_pixel(32, 32).0, [10, 200, 30]);

    let init = image::RgbImage::from_pixel(64, 64, image::Rgb([0, 0, 255]));
    let mask = image::RgbImage::from_fn(64, 64, |x, _| if x < 32 { image::Rgb([255, 255, 255]) } else { image::Rgb([0, 0, 0]) });
    let body = json!({"operation": "image_inpaint", "prompt": "x", "steps": 1, "init_image": base64_png(&init), "mask_image": base64_png(&mask)});
    let (_, stream_url) = submit(&server.url, &body).await;
    let frames = SseReader::open(&stream_url, None).await.until_final().await;
    let output = decode_base64_image(completes(&frames)[0]["image"].as_str().expect("image"));
    assert_eq!(output.get_pixel(10, 10).0, [255, 0, 0], "white = repaint");
    assert_eq!(output.get_pixel(50, 10).0, [0, 0, 255], "black = keep");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_mid_run_ends_with_cancelled_and_the_next_job_runs() {
    let server = TestServer::start_tiny(tiny_config(&[])).await;
    let client = reqwest::Client::new();
    let mut long = generation(150, 0);
    long["num_images"] = json!(8);
    let (job_id, stream_url) = submit(&server.url, &long).await;
    let mut reader = SseReader::open(&stream_url, None).await;
    while reader.next().await.expect("events").event.as_deref() != Some("progress") {}

    let cancelled = client.delete(format!("{}/v1/jobs/{job_id}", server.url)).send().await.expect("DELETE");
    assert_eq!(cancelled.status(), 200);
    assert_eq!(cancelled.json::<Value>().await.expect("json"), json!({"job_id": job_id, "status": "cancelled"}));
    let rest = reader.until_final().await;
    assert_eq!(rest.last().map(|f| f.data.as_str()), Some("[CANCELLED]"));
    assert!(rest.iter().all(|f| f.event.as_deref() != Some("complete")), "no image after a cancel");

    let again = client.delete(format!("{}/v1/jobs/{job_id}", server.url)).send().await.expect("DELETE again");
    assert_eq!(again.status(), 409);
    assert_eq!(again.json::<Value>().await.expect("json")["error"]["code"], "JOB_FINISHED");
    wait_for_status(&server, &job_id, "cancelled").await;

    let (_, next_url) = submit(&server.url, &generation(2, 1)).await;
    let frames = SseReader::open(&next_url, None).await.until_final().await;
    assert_successful_stream(&frames, 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_and_a_late_subscriber_see_the_whole_job() {
    let server = TestServer::start_tiny(tiny_config(&[])).await;
    let (job_id, stream_url) = submit(&server.url, &generation(5, 1)).await;
    let mut first = SseReader::open(&stream_url, None).await;
    let mut second = SseReader::open(&stream_url, None).await;
    let (a, b) = tokio::join!(first.until_final(), second.until_final());
    assert_successful_stream(&a, 1);
    assert_eq!(names(&a), names(&b));
    assert_eq!(completes(&a), completes(&b));

    let late = SseReader::open(&stream_url, None).await.until_final().await;
    // A late subscriber gets the history, with only the latest preview kept.
    let late_names = names(&late);
    assert_eq!(late_names.iter().filter(|n| *n == "preview").count(), 1);
    assert_eq!(late_names.iter().filter(|n| *n == "progress").count(), 5);
    assert_eq!(completes(&late), completes(&a));

    let status = wait_for_status(&server, &job_id, "completed").await;
    assert_eq!((status["step"].clone(), status["total_steps"].clone(), status["percent"].clone()), (json!(5), json!(5), json!(100.0)));
    assert_eq!((status["seed"].clone(), status["width"].clone(), status["height"].clone()), (json!(42), json!(64), json!(96)));
    assert_eq!(status["images"][0]["image"], completes(&a)[0]["image"]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn closing_the_only_stream_cancels_the_job() {
    let server = TestServer::start_tiny(tiny_config(&[])).await;
    let mut long = generation(150, 0);
    long["num_images"] = json!(8);
    let (job_id, stream_url) = submit(&server.url, &long).await;
    let mut reader = SseReader::open(&stream_url, None).await;
    while reader.next().await.expect("events").event.as_deref() != Some("progress") {}
    drop(reader);
    let status = wait_for_status(&server, &job_id, "cancelled").await;
    assert!(status["step"].as_u64().expect("step") < 1200, "stopped early: {status}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn keep_alive_comments_fill_quiet_gaps() {
    let server = TestServer::start(config(&[]), Duration::from_millis(2500)).await;
    let (_, stream_url) = submit(&server.url, &painted(1, 0)).await;
    let mut reader = SseReader::open(&stream_url, None).await;
    let frames = reader.until_final().await;
    assert_eq!(frames.last().map(|f| f.data.as_str()), Some("[DONE]"));
    assert!(reader.comments >= 1, "a 2.5 s step must be bridged by keep-alive comments");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_400_naming_the_field() {
    let server = TestServer::start_tiny(tiny_config(&[])).await;
    let client = reqwest::Client::new();

    let bad_json = client.post(format!("{}/v1/jobs", server.url)).header("content-type", "application/json").body("{\"operation\": ").send().await.expect("POST");
    assert_eq!(bad_json.status(), 400);
    let body: Value = bad_json.json().await.expect("json error body");
    assert_eq!(body["error"]["code"], "INVALID_JSON");

    let cases = [
        (json!({"operation": "worker_spawn", "prompt": "x"}), "UNSUPPORTED_OPERATION", Some("operation"), "image_generation"),
        (json!({"operation": "image_generation"}), "INVALID_REQUEST", Some("prompt"), "prompt is required"),
        (json!({"operation": "image_generation", "prompt": "x", "width": 4096}), "INVALID_REQUEST", Some("width"), "2048"),
        (json!({"operation": "image_generation", "prompt": "x", "height": 100}), "INVALID_REQUEST", Some("height"), "multiple of 8"),
        (json!({"operation": "image_generation", "prompt": "x", "steps": "ten"}), "INVALID_REQUEST", Some("steps"), "steps"),
        (json!({"operation": "image_generation", "prompt": "x", "output_format": "gif"}), "INVALID_REQUEST", Some("output_format"), "png"),
        (json!({"operation": "image_generation", "prompt": "x", "model": "someone/else"}), "INVALID_REQUEST", Some("model"), "not served here"),
        (json!({"operation": "image_transform", "prompt": "x", "input_image": "@@not-base64@@"}), "INVALID_REQUEST", Some("input_image"), "base64"),
        (json!({"operation": "image_inpaint", "prompt": "x", "init_image": "aGVsbG8=", "mask_image": "aGVsbG8="}), "INVALID_REQUEST", Some("init_image"), "not a PNG, JPEG or WebP"),
    ];
    for (body, code, field, mentions) in cases {
        let response = post_job(&server.url, &body, None).await;
        assert_eq!(response.status(), 400, "{body}");
        let error: Value = response.json().await.expect("json error body");
        assert_eq!(error["error"]["code"], code, "{error}");
        assert_eq!(error["error"]["field"].as_str(), field, "{error}");
        let message = error["error"]["message"].as_str().expect("message");
        assert!(message.contains(mentions), "message {message:?} should mention {mentions:?}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_jobs_get_404() {
    let server = TestServer::start(config(&[]), FAST).await;
    let client = reqwest::Client::new();
    for response in [
        client.get(format!("{}/v1/jobs/job-nope/stream", server.url)).send().await.expect("stream"),
        client.get(format!("{}/v1/jobs/job-nope", server.url)).send().await.expect("get"),
        client.delete(format!("{}/v1/jobs/job-nope", server.url)).send().await.expect("delete"),
    ] {
        assert_eq!(response.status(), 404);
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["error"]["code"], "JOB_NOT_FOUND");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_queue_answers_503_with_retry_after_and_shutdown_cancels_everything() {
    let mut cfg = config(&[]);
    cfg.queue_capacity = 1;
    let server = TestServer::start(cfg, Duration::from_millis(20)).await;
    let (_, running_url) = submit(&server.url, &painted(150, 0)).await;
    let mut running = SseReader::open(&running_url, None).await;
    while running.next().await.expect("events").event.as_deref() != Some("started") {}
    let (_, waiting_url) = submit(&server.url, &painted(1, 0)).await;
    let refused = post_job(&server.url, &painted(1, 0), None).await;
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "5");
    let body: Value = refused.json().await.expect("json");
    assert_eq!(body["error"]["code"], "QUEUE_FULL");

    // Shutdown ends the running and the waiting job with [CANCELLED].
    let mut waiting = SseReader::open(&waiting_url, None).await;
    let stop = tokio::spawn(server.stop());
    assert_eq!(running.until_final().await.last().map(|f| f.data.clone()), Some("[CANCELLED]".into()));
    assert_eq!(waiting.until_final().await.last().map(|f| f.data.clone()), Some("[CANCELLED]".into()));
    stop.await.expect("stopped");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_model_that_fails_to_load_is_reported_and_the_server_stays_up() {
    let server = TestServer::start_with(config(&[]), || {
        let hub = sd_worker_rbee::backend::models::hub::HubOptions { cache_dir: std::env::temp_dir().join("sd-worker-rbee-empty-hf"), endpoint: None };
        sd_worker_rbee::backend::pipeline::load_runner(
            &sd_worker_rbee::backend::pipeline::LoadOptions::new("/no/such/model", hub, candle_core::Device::Cpu),
            None,
        )
    })
    .await;
    let client = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + TEST_TIMEOUT;
    let ready = loop {
        let ready: Value = client.get(format!("{}/v1/ready", server.url)).send().await.expect("ready").json().await.expect("json");
        if ready["state"] != "loading" {
            break ready;
        }
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!((ready["state"].clone(), ready["ready"].clone()), (json!("error"), json!(false)));
    assert!(ready["error"].as_str().expect("error message").contains("--model PATH"));
    assert_eq!(client.get(&server.url).send().await.expect("GET /").status(), 200);
    let refused = post_job(&server.url, &painted(1, 0), None).await;
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.json::<Value>().await.expect("json")["error"]["code"], "MODEL_UNAVAILABLE");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_openapi_document_and_swagger_ui_are_served() {
    let server = TestServer::start(config(&["k"]), FAST).await;
    let served: Value = reqwest::get(format!("{}/api-docs/openapi.json", server.url)).await.expect("doc").json().await.expect("json");
    let generated = serde_json::to_value(sd_worker_rbee::http::openapi::document()).expect("doc json");
    assert_eq!(served, generated);
    let ui = reqwest::get(format!("{}/swagger-ui/", server.url)).await.expect("swagger ui");
    assert_eq!(ui.status(), 200, "Swagger UI is open even with auth on");
    assert!(ui.text().await.expect("html").contains("swagger"), "Swagger UI page");
    server.stop().await;
}
