//! A1111's state, control and list endpoints, and its error shapes, over real HTTP against the
//! stand-in engine.

mod a1111_common;

use std::time::Duration;

use a1111_common::{config, get, info, post, TestServer, FAKE_HASH, FAKE_TITLE, TEST_TIMEOUT};
use serde_json::{json, Value};

const FAST: Duration = Duration::from_millis(1);

#[tokio::test(flavor = "multi_thread")]
async fn lists_have_a1111_shapes_and_nothing_a_frontend_probes_is_404() {
    let server = TestServer::fake(config(&[], 8), FAST, 8).await;
    let (status, models) = get(&server.url("/sdapi/v1/sd-models")).await;
    assert_eq!(status, 200);
    assert_eq!(models, json!([{"title": FAKE_TITLE, "model_name": "fake-sd", "hash": FAKE_HASH, "sha256": null, "filename": "fake-sd", "config": null}]));
    let (_, samplers) = get(&server.url("/sdapi/v1/samplers")).await;
    let names: Vec<&str> = samplers.as_array().expect("list").iter().filter_map(|s| s["name"].as_str()).collect();
    assert_eq!(names, ["DPM++ 2M", "DPM++ 2M SDE", "Euler a", "Euler", "LMS", "Heun", "DDIM", "UniPC", "LCM", "DDPM"]);
    assert_eq!(samplers[0], json!({"name": "DPM++ 2M", "aliases": ["k_dpmpp_2m"], "options": {"scheduler": "karras"}}));
    let (_, schedulers) = get(&server.url("/sdapi/v1/schedulers")).await;
    assert_eq!(schedulers[0], json!({"name": "automatic", "label": "Automatic", "aliases": null, "default_rho": -1.0, "need_inner_model": false}));
    let (_, upscalers) = get(&server.url("/sdapi/v1/upscalers")).await;
    assert_eq!(upscalers[0], json!({"name": "None", "model_name": null, "model_path": null, "model_url": null, "scale": 4.0}));
    let (_, modes) = get(&server.url("/sdapi/v1/latent-upscale-modes")).await;
    assert_eq!(modes[0], json!({"name": "Latent"}));
    assert_eq!(modes.as_array().map(Vec::len), Some(6));
    assert_eq!(get(&server.url("/sdapi/v1/scripts")).await.1, json!({"txt2img": [], "img2img": []}));
    assert_eq!(get(&server.url("/sdapi/v1/embeddings")).await.1, json!({"loaded": {}, "skipped": {}}));
    for path in ["sd-vae", "sd-modules", "loras", "prompt-styles", "hypernetworks", "face-restorers", "realesrgan-models", "script-info", "extensions"] {
        assert_eq!(get(&server.url(&format!("/sdapi/v1/{path}"))).await, (200, json!([])), "{path}");
    }
    let (_, memory) = get(&server.url("/sdapi/v1/memory")).await;
    let (total, used) = (memory["ram"]["total"].as_f64().expect("total"), memory["ram"]["used"].as_f64().expect("used"));
    assert!(total > used && used > 1e6, "real figures: {memory}");
    assert_eq!(memory["ram"]["free"].as_f64(), Some(total - used));
    let (_, flags) = get(&server.url("/sdapi/v1/cmd-flags")).await;
    assert_eq!((flags["api"].clone(), flags["ckpt"].clone()), (json!(true), json!("fake-sd")));
    assert_eq!(get(&server.url("/internal/ping")).await, (200, json!({})));
    for path in ["refresh-checkpoints", "refresh-loras", "refresh-vae", "refresh-embeddings"] {
        assert_eq!(post(&server.url(&format!("/sdapi/v1/{path}")), &json!({})).await, (200, Value::Null), "{path}");
    }
    for path in ["unload-checkpoint", "reload-checkpoint"] {
        assert_eq!(post(&server.url(&format!("/sdapi/v1/{path}")), &json!({})).await, (200, json!({})), "{path}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn options_round_trip_the_whole_dict_and_refuse_like_a1111() {
    let server = TestServer::fake(config(&[], 8), FAST, 8).await;
    let (status, mut options) = get(&server.url("/sdapi/v1/options")).await;
    assert_eq!(status, 200);
    assert_eq!((options["sd_model_checkpoint"].clone(), options["sd_checkpoint_hash"].clone()), (json!(FAKE_TITLE), json!(FAKE_HASH)));
    assert_eq!((options["CLIP_stop_at_last_layers"].clone(), options["randn_source"].clone(), options["samples_format"].clone()), (json!(1), json!("GPU"), json!("png")));
    assert!(options.get("forge_preset").is_none());
    assert!(options.as_object().map_or(0, |o| o.len()) > 250, "a complete dict");

    // Open WebUI's model switch: GET, change the checkpoint (to the one served), POST it all back.
    options["sd_model_checkpoint"] = json!(FAKE_TITLE);
    options["CLIP_stop_at_last_layers"] = json!(2);
    assert_eq!(post(&server.url("/sdapi/v1/options"), &options).await, (200, Value::Null));
    assert_eq!(get(&server.url("/sdapi/v1/options")).await.1["CLIP_stop_at_last_layers"], 2);
    // The model name and hash are aliases too.
    assert_eq!(post(&server.url("/sdapi/v1/options"), &json!({"sd_model_checkpoint": "fake-sd"})).await.0, 200);

    let (status, body) = post(&server.url("/sdapi/v1/options"), &json!({"sd_model_checkpoint": "other.safetensors [abcdef0123]"})).await;
    assert_eq!((status, body), (400, json!({"error": "RuntimeError", "detail": "", "body": "", "errors": "model 'other.safetensors [abcdef0123]' not found"})));
    let (status, body) = post(&server.url("/sdapi/v1/options"), &json!({"not_an_option": true})).await;
    assert_eq!((status, body["error"].clone(), body["errors"].clone()), (400, json!("KeyError"), json!("'not_an_option'")));
    assert_eq!(post(&server.url("/sdapi/v1/options"), &json!({"not_an_option": null})).await.0, 200, "null values are skipped");
    assert_eq!(post(&server.url("/sdapi/v1/options"), &json!({"randn_source": "quantum"})).await.0, 400);
    let (status, body) = post(&server.url("/sdapi/v1/options"), &json!([1, 2])).await;
    assert_eq!((status, body["detail"][0]["type"].clone()), (422, json!("type_error.dict")));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_use_a1111_and_fastapi_shapes() {
    let server = TestServer::fake(config(&[], 8), FAST, 8).await;
    let txt2img = server.url("/sdapi/v1/txt2img");
    let (status, body) = post(&txt2img, &json!({"steps": "many"})).await;
    assert_eq!((status, body), (422, json!({"detail": [{"loc": ["body", "steps"], "msg": "value is not a valid integer", "type": "type_error.integer"}]})));
    let response = reqwest::Client::new().post(&txt2img).header("content-type", "application/json").body("{not json").send().await.expect("send");
    assert_eq!(response.status(), 422);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["detail"][0]["type"], "value_error.jsondecode");
    let (status, body) = post(&txt2img, &json!({"prompt": "x", "script_name": "x/y/z plot"})).await;
    assert_eq!((status, body["detail"].clone()), (422, json!("Script 'x/y/z plot' not found")));
    let (status, body) = post(&txt2img, &json!({"prompt": "x", "alwayson_scripts": {"ADetailer": {"args": []}}})).await;
    assert_eq!((status, body["detail"].clone()), (422, json!("always on script ADetailer not found")));
    let (status, body) = post(&txt2img, &json!({"prompt": "x", "enable_hr": true, "hr_upscaler": "4x-UltraSharp"})).await;
    assert_eq!((status, body["errors"].clone()), (400, json!("could not find upscaler named 4x-UltraSharp")));
    let (status, body) = post(&txt2img, &json!({"prompt": "x", "width": 16, "height": 64})).await;
    assert_eq!((status, body["error"].clone()), (400, json!("HTTPException")));
    assert!(body["detail"].as_str().is_some_and(|d| d.starts_with("width must be between")), "{body}");

    let img2img = server.url("/sdapi/v1/img2img");
    let (status, body) = post(&img2img, &json!({"prompt": "x"})).await;
    assert_eq!((status, body), (404, json!({"error": "HTTPException", "detail": "Init image not found", "body": "", "errors": "404: Init image not found"})));
    let (status, body) = post(&img2img, &json!({"prompt": "x", "width": 64, "height": 64, "init_images": ["!!!not base64!!!"]})).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["detail"].as_str().is_some_and(|d| d.contains("Invalid encoded image")), "{body}");
    let (status, body) = post(&img2img, &json!({"prompt": "x", "width": 64, "height": 64, "init_images": ["aGVsbG8="]})).await;
    assert_eq!(status, 400, "not an image: {body}");
    let (status, body) = post(&img2img, &json!({"prompt": "x", "init_images": ["a", "b"], "batch_size": 1})).await;
    assert_eq!((status, body["errors"].clone()), (400, json!("bad number of images passed: 2; expecting 1 or less")));
    let (status, body) = post(&server.url("/sdapi/v1/png-info"), &json!({})).await;
    assert_eq!((status, body["detail"][0]["loc"].clone()), (422, json!(["body", "image"])));
    let (status, _) = post(&server.url("/sdapi/v1/png-info"), &json!({"image": "%%%"})).await;
    assert_eq!(status, 400);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_queue_answers_503_with_retry_after() {
    let server = TestServer::fake(config(&[], 1), Duration::from_millis(20), 8).await;
    let url = server.url("/sdapi/v1/txt2img");
    let long = json!({"prompt": "x", "steps": 100, "width": 64, "height": 64});
    let running = tokio::spawn({
        let (url, long) = (url.clone(), long.clone());
        async move { post(&url, &long).await }
    });
    wait_for_step(&server).await;
    let waiting = tokio::spawn({
        let (url, long) = (url.clone(), long.clone());
        async move { post(&url, &long).await }
    });
    let deadline = tokio::time::Instant::now() + TEST_TIMEOUT;
    while server.state.engine.queue_len() < 1 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let response = reqwest::Client::new().post(&url).json(&long).send().await.expect("send");
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("5"));
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"], "HTTPException");
    // Interrupt ends the running call (200), then the waiting one.
    assert_eq!(post(&server.url("/sdapi/v1/interrupt"), &json!({})).await, (200, json!({})));
    assert_eq!(running.await.expect("join").0, 200);
    wait_for_step(&server).await;
    post(&server.url("/sdapi/v1/interrupt"), &json!({})).await;
    assert_eq!(waiting.await.expect("join").0, 200);
    server.stop().await;
}

async fn wait_for_step(server: &TestServer) {
    let deadline = tokio::time::Instant::now() + TEST_TIMEOUT;
    loop {
        let (_, p) = get(&server.url("/sdapi/v1/progress?skip_current_image=true")).await;
        if p["state"]["sampling_step"].as_i64().unwrap_or(0) > 0 {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "no step: {p}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn progress_interrupt_and_skip_follow_a1111() {
    let server = TestServer::fake(config(&[], 8), Duration::from_millis(15), 8).await;
    let (_, idle) = get(&server.url("/sdapi/v1/progress")).await;
    assert_eq!((idle["progress"].clone(), idle["eta_relative"].clone(), idle["current_image"].clone()), (json!(0.0), json!(0.0), Value::Null));
    let keys: Vec<&String> = idle["state"].as_object().expect("state").keys().collect();
    assert_eq!(keys.len(), 9, "{keys:?}");
    for key in ["skipped", "interrupted", "stopping_generation", "job", "job_count", "job_timestamp", "job_no", "sampling_step", "sampling_steps"] {
        assert!(idle["state"].get(key).is_some(), "{key}");
    }

    // During a 3-batch call: progress rises, job_count is n_iter, previews come every 10 steps.
    let url = server.url("/sdapi/v1/txt2img");
    let call = tokio::spawn({
        let url = url.clone();
        async move { post(&url, &json!({"prompt": "x", "steps": 30, "n_iter": 3, "width": 64, "height": 64, "seed": 500})).await }
    });
    let deadline = tokio::time::Instant::now() + TEST_TIMEOUT;
    let busy = loop {
        let (_, p) = get(&server.url("/sdapi/v1/progress")).await;
        if p["current_image"].is_string() {
            break p;
        }
        assert!(tokio::time::Instant::now() < deadline, "no preview: {p}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!((busy["state"]["job_count"].clone(), busy["state"]["job"].clone()), (json!(3), json!("Batch 1 out of 3")));
    let progress = busy["progress"].as_f64().expect("progress");
    assert!(progress > 0.01 && progress < 1.0, "{busy}");
    assert!(busy["eta_relative"].as_f64().expect("eta") > 0.0);
    let (_, no_image) = get(&server.url("/sdapi/v1/progress?skip_current_image=true")).await;
    assert_eq!(no_image["current_image"], Value::Null);

    // Skip cuts batch 1 short (no image); batch 2 runs; interrupt stops it there and the call
    // answers 200 with the image batch 2 had when interrupted (A1111 decodes what it has).
    assert_eq!(post(&server.url("/sdapi/v1/skip"), &json!({})).await, (200, Value::Null));
    let deadline = tokio::time::Instant::now() + TEST_TIMEOUT;
    loop {
        let (_, p) = get(&server.url("/sdapi/v1/progress?skip_current_image=true")).await;
        if p["state"]["job_no"] == 1 && p["state"]["sampling_step"].as_i64().unwrap_or(0) > 0 {
            assert_eq!(p["state"]["job"], "Batch 2 out of 3");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "batch 2 never ran: {p}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(post(&server.url("/sdapi/v1/interrupt"), &json!({})).await, (200, json!({})));
    let (status, body) = tokio::time::timeout(TEST_TIMEOUT, call).await.expect("ends").expect("join");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["images"].as_array().map(Vec::len), Some(1), "the skipped batch has none, the interrupted one its image");
    assert!(info(&body)["infotexts"][0].as_str().expect("infotext").contains("Seed: 501"), "{body}");
    assert_eq!(info(&body)["all_seeds"], json!([500, 501, 502]));
    assert_eq!(server.requests().len(), 2, "no third batch after the interrupt");
    server.wait_idle().await;

    // Interrupting while idle does nothing; the next call runs normally.
    assert_eq!(post(&server.url("/sdapi/v1/interrupt"), &json!({})).await.0, 200);
    let (status, body) = post(&url, &json!({"prompt": "x", "steps": 2, "width": 64, "height": 64})).await;
    assert_eq!((status, body["images"].as_array().map(Vec::len)), (200, Some(1)));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn api_keys_mean_basic_auth_on_sdapi_routes() {
    let server = TestServer::fake(config(&["s3cret"], 8), FAST, 8).await;
    let client = reqwest::Client::new();
    let options = server.url("/sdapi/v1/options");
    let response = client.get(&options).send().await.expect("send");
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers().get("www-authenticate").and_then(|v| v.to_str().ok()), Some("Basic"));
    let body: Value = response.json().await.expect("json");
    assert_eq!(body, json!({"error": "HTTPException", "detail": "Not authenticated", "body": "", "errors": "401: Not authenticated"}));
    let wrong = client.get(&options).basic_auth("user", Some("nope")).send().await.expect("send");
    assert_eq!(wrong.status(), 401);
    assert_eq!(wrong.json::<Value>().await.expect("json")["detail"], "Incorrect username or password");
    assert_eq!(client.get(&options).basic_auth("anyone", Some("s3cret")).send().await.expect("send").status(), 200);
    assert_eq!(client.get(&options).bearer_auth("s3cret").send().await.expect("send").status(), 200);
    // A1111 leaves the Lora extension's routes open; here they need the key like every other
    // state route. /internal/ping stays open (a liveness probe).
    assert_eq!(client.get(server.url("/sdapi/v1/loras")).send().await.expect("send").status(), 401);
    assert_eq!(client.get(server.url("/sdapi/v1/loras")).basic_auth("u", Some("s3cret")).send().await.expect("send").status(), 200);
    assert_eq!(client.get(server.url("/internal/ping")).send().await.expect("send").status(), 200);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn progress_reports_busy_while_the_model_loads() {
    let (release, released) = std::sync::mpsc::channel::<()>();
    let recorded = a1111_common::Recorded::default();
    let record = recorded.clone();
    let server = TestServer::start_with(config(&[], 8), recorded, move || {
        let _ = released.recv();
        Ok(a1111_common::FakeSd { step_delay: FAST, size_multiple: 8, recorded: record })
    })
    .await;
    let (_, p) = get(&server.url("/sdapi/v1/progress")).await;
    assert_eq!((p["state"]["job_count"].clone(), p["state"]["job"].clone()), (json!(1), json!("Loading model")));
    assert_eq!(get(&server.url("/sdapi/v1/sd-models")).await.1, json!([]), "no title before the hash is known");
    assert_eq!(get(&server.url("/sdapi/v1/options")).await.1["sd_model_checkpoint"], Value::Null);
    // A call made while loading waits for the model.
    let call = tokio::spawn({
        let url = server.url("/sdapi/v1/txt2img");
        async move { post(&url, &json!({"prompt": "x", "steps": 1, "width": 64, "height": 64})).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    release.send(()).expect("release the loader");
    assert_eq!(call.await.expect("join").0, 200);
    server.wait_idle().await;
    server.stop().await;
}

#[test]
fn every_a1111_route_is_in_the_openapi_document() {
    let doc = sd_worker_rbee::http::openapi::document();
    let routes = [
        "txt2img", "img2img", "png-info", "progress", "interrupt", "skip", "options", "sd-models", "samplers", "schedulers", "upscalers",
        "latent-upscale-modes", "sd-vae", "sd-modules", "loras", "embeddings", "prompt-styles", "scripts", "script-info", "extensions",
        "hypernetworks", "face-restorers", "realesrgan-models", "memory", "cmd-flags", "refresh-checkpoints", "refresh-loras", "refresh-vae",
        "refresh-embeddings", "unload-checkpoint", "reload-checkpoint",
    ];
    for route in routes {
        let path = format!("/sdapi/v1/{route}");
        assert!(doc.paths.paths.contains_key(&path), "{path} missing from the OpenAPI document");
    }
    assert!(doc.paths.paths.contains_key("/internal/ping"));
}
