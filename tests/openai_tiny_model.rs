//! The OpenAI face on the real pipeline: the tiny SD 1.5 fixture (64 px native, 4 px grid)
//! generates, edits, varies and streams through the same routes clients use.

mod openai_support;

use openai_support::{b64decode, client, image_size, png_bytes, sse_frames, Multipart, TestServer};
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn generate(server: &TestServer, body: Value) -> Value {
    let response = client().post(server.at("/v1/images/generations")).json(&body).send().await.expect("sent");
    let status = response.status();
    let reply: Value = response.json().await.expect("json");
    assert_eq!(status, StatusCode::OK, "{reply}");
    reply
}

fn images(reply: &Value) -> Vec<Vec<u8>> {
    reply["data"].as_array().expect("data").iter().map(|d| b64decode(d["b64_json"].as_str().expect("b64_json"))).collect()
}

#[tokio::test]
async fn the_tiny_model_reports_its_own_size_and_defaults() {
    let server = TestServer::start_tiny().await;
    let info = server.state.engine.status().model_info.expect("the pipeline describes its model");
    assert_eq!((info.native_size, info.size_multiple), (64, 4));
    let reply = generate(&server, json!({"model":"gpt-image-1","prompt":"a red square","seed":3,"steps":3})).await;
    assert_eq!(reply["size"], "64x64", "auto = the model's native size");
    assert_eq!(image_size(&images(&reply)[0]), (64, 64));
}

#[tokio::test]
async fn seeds_make_n_distinct_images_and_reproduce_them() {
    let server = TestServer::start_tiny().await;
    let body = json!({"model":"gpt-image-1","prompt":"a blue circle","n":2,"seed":11,"steps":3,"size":"100x60"});
    let first = images(&generate(&server, body.clone()).await);
    assert_eq!(first.len(), 2);
    assert!(first.iter().all(|bytes| image_size(bytes) == (100, 60)), "resized to the exact request");
    assert_ne!(first[0], first[1], "seed and seed+1 differ");
    let again = images(&generate(&server, body).await);
    assert_eq!(first, again, "the same seed gives the same images");
}

#[tokio::test]
async fn edits_and_variations_run_on_the_pipeline() {
    let server = TestServer::start_tiny().await;
    let picture =
        png_bytes(&image::DynamicImage::ImageRgb8(image::RgbImage::from_fn(64, 64, |x, y| image::Rgb([x as u8 * 4, y as u8 * 4, 128]))));
    let mask = png_bytes(&image::DynamicImage::ImageRgba8(image::RgbaImage::from_fn(64, 64, |x, _| {
        image::Rgba([0, 0, 0, if x < 32 { 0 } else { 255 }])
    })));
    let (content_type, body) = Multipart::new()
        .file("image", "upload", &picture)
        .file("mask", "upload", &mask)
        .text("prompt", "a green field")
        .text("steps", "3")
        .text("seed", "1")
        .finish();
    let response = client().post(server.at("/v1/images/edits")).header("content-type", content_type).body(body).send().await.expect("sent");
    assert_eq!(response.status(), StatusCode::OK);
    let reply: Value = response.json().await.expect("json");
    assert_eq!(image_size(&images(&reply)[0]), (64, 64));

    let (content_type, body) = Multipart::new()
        .file("image", "upload", &picture)
        .text("response_format", "b64_json")
        .text("steps", "4")
        .text("size", "48x48")
        .finish();
    let response =
        client().post(server.at("/v1/images/variations")).header("content-type", content_type).body(body).send().await.expect("sent");
    assert_eq!(response.status(), StatusCode::OK);
    let reply: Value = response.json().await.expect("json");
    assert_eq!(image_size(&images(&reply)[0]), (48, 48));
}

#[tokio::test]
async fn streaming_shows_pipeline_previews_as_partial_images() {
    let server = TestServer::start_tiny().await;
    let body = json!({"model":"gpt-image-1","prompt":"x","stream":true,"partial_images":2,"steps":6,"output_format":"jpeg"});
    let response = client().post(server.at("/v1/images/generations")).json(&body).send().await.expect("sent");
    assert_eq!(response.status(), StatusCode::OK);
    let frames = sse_frames(&response.text().await.expect("body"));
    let kinds: Vec<&str> = frames.iter().map(|f| f.event.as_deref().unwrap_or("")).collect();
    assert_eq!(kinds, ["image_generation.partial_image", "image_generation.partial_image", "image_generation.completed"]);
    for frame in &frames {
        let data: Value = serde_json::from_str(&frame.data).expect("json");
        let bytes = b64decode(data["b64_json"].as_str().expect("b64_json"));
        assert_eq!(image::guess_format(&bytes).expect("format"), image::ImageFormat::Jpeg);
        assert_eq!(image_size(&bytes), (64, 64));
    }
}

#[tokio::test]
async fn a_json_edit_with_data_urls_equals_the_multipart_edit() {
    use base64::Engine as _;
    let server = TestServer::start_tiny().await;
    let picture = png_bytes(&image::DynamicImage::ImageRgb8(image::RgbImage::from_fn(64, 64, |x, y| image::Rgb([x as u8 * 4, 90, y as u8 * 4]))));
    let mask = png_bytes(&image::DynamicImage::ImageRgba8(image::RgbaImage::from_fn(64, 64, |_, y| {
        image::Rgba([0, 0, 0, if y < 20 { 0 } else { 255 }])
    })));
    let (content_type, body) = Multipart::new()
        .file("image", "upload", &picture)
        .file("mask", "upload", &mask)
        .text("prompt", "a kite")
        .text("steps", "3")
        .text("seed", "5")
        .finish();
    let response = client().post(server.at("/v1/images/edits")).header("content-type", content_type).body(body).send().await.expect("sent");
    assert_eq!(response.status(), StatusCode::OK);
    let multipart: Value = response.json().await.expect("json");

    let data_url = |bytes: &[u8]| format!("data:image/png;base64,{}", base64::engine::general_purpose::STANDARD.encode(bytes));
    let json_body = json!({"images": [{"image_url": data_url(&picture)}], "mask": {"image_url": data_url(&mask)},
                           "prompt": "a kite", "steps": 3, "seed": 5});
    let response = client().post(server.at("/v1/images/edits")).json(&json_body).send().await.expect("sent");
    assert_eq!(response.status(), StatusCode::OK);
    let from_json: Value = response.json().await.expect("json");
    assert_eq!(images(&from_json), images(&multipart), "both forms run the same edit");

    let remote = json!({"images": [{"image_url": "http://169.254.169.254/latest"}], "prompt": "x"});
    let response = client().post(server.at("/v1/images/edits")).json(&remote).send().await.expect("sent");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let error: Value = response.json().await.expect("json");
    assert_eq!(error["error"]["param"], "images[0].image_url", "{error}");
}
