//! OpenAI Images face against a real server: reply shapes per model family, sizes, formats,
//! seeds, extras, edits (mask conversion, `image[]`), variations, `url` links and models.

mod openai_support;

use openai_support::{b64decode, client, image_size, png_bytes, Multipart, TestServer};
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn post_json(server: &TestServer, path: &str, body: Value) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let response = client().post(server.at(path)).bearer_auth("sk-anything").json(&body).send().await.expect("request sent");
    let (status, headers) = (response.status(), response.headers().clone());
    (status, headers, response.json().await.expect("json body"))
}

async fn post_form(server: &TestServer, path: &str, form: Multipart) -> (StatusCode, Value) {
    let (content_type, body) = form.finish();
    let response = client().post(server.at(path)).header("content-type", content_type).body(body).send().await.expect("request sent");
    (response.status(), response.json().await.expect("json body"))
}

fn b64_images(reply: &Value) -> Vec<Vec<u8>> {
    reply["data"].as_array().expect("data array").iter().map(|item| b64decode(item["b64_json"].as_str().expect("b64_json"))).collect()
}

fn solid_png(width: u32, height: u32, rgb: [u8; 3]) -> Vec<u8> {
    png_bytes(&image::DynamicImage::ImageRgb8(image::RgbImage::from_pixel(width, height, image::Rgb(rgb))))
}

#[tokio::test]
async fn gpt_image_replies_are_b64_at_the_exact_size_with_settings_and_usage() {
    let server = TestServer::start_default().await;
    let (status, headers, reply) =
        post_json(&server, "/v1/images/generations", json!({"model":"gpt-image-1","prompt":"a fox","n":2,"size":"96x64","seed":7})).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert!(headers.contains_key("x-request-id"));
    let images = b64_images(&reply);
    assert_eq!(images.len(), 2);
    assert!(images.iter().all(|bytes| image_size(bytes) == (96, 64)));
    assert_ne!(images[0], images[1], "n images with one seed must differ");
    assert_eq!((reply["data"][0]["seed"].as_u64(), reply["data"][1]["seed"].as_u64()), (Some(7), Some(8)));
    assert_eq!((reply["background"].as_str(), reply["output_format"].as_str()), (Some("opaque"), Some("png")));
    assert_eq!((reply["quality"].as_str(), reply["size"].as_str()), (Some("medium"), Some("96x64")));
    for key in ["input_tokens", "output_tokens", "total_tokens"] {
        assert!(reply["usage"][key].is_u64(), "usage.{key}: {reply}");
    }
    assert!(reply["usage"]["input_tokens_details"]["text_tokens"].is_u64());
    assert!(reply["created"].is_i64());
    // 96x64 is generated on the model's grid near its 64 px native size, then resized.
    let ran = server.last_request();
    assert_eq!((ran.width % 8, ran.height % 8, ran.num_images, ran.seed), (0, 0, 2, Some(7)));
}

#[tokio::test]
async fn a_bare_prompt_is_dall_e_2_with_a_working_url_at_the_native_size() {
    let server = TestServer::start_default().await;
    let (status, _, reply) = post_json(&server, "/v1/images/generations", json!({"prompt":"a lighthouse"})).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()), Some(vec!["created".to_string(), "data".to_string()]));
    let url = reply["data"][0]["url"].as_str().expect("url");
    assert!(url.starts_with(&server.at("/v1/images/files/")), "{url}");
    let file = client().get(url).send().await.expect("fetch");
    assert_eq!(file.status(), StatusCode::OK);
    assert_eq!(file.headers()["content-type"], "image/png");
    assert!(file.headers()["cache-control"].to_str().expect("ascii").starts_with("private, max-age="));
    assert_eq!(image_size(&file.bytes().await.expect("body")), (64, 64));
    let missing = client().get(server.at("/v1/images/files/00000000000000000000000000000000.png")).send().await.expect("fetch");
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let body: Value = missing.json().await.expect("json");
    assert_eq!(body["error"]["type"], "invalid_request_error");
}

#[tokio::test]
async fn public_url_decides_the_link_prefix() {
    let mut config = sd_worker_rbee::config::Config::defaults();
    config.public_url = Some("https://images.example/sd/".into());
    let server = TestServer::start(config).await;
    let (_, _, reply) = post_json(&server, "/v1/images/generations", json!({"prompt":"x","model":"dall-e-2"})).await;
    let url = reply["data"][0]["url"].as_str().expect("url");
    assert!(url.starts_with("https://images.example/sd/v1/images/files/"), "{url}");
}

#[tokio::test]
async fn dall_e_3_echoes_the_prompt_and_honours_b64_json() {
    let server = TestServer::start_default().await;
    let (status, _, reply) = post_json(
        &server,
        "/v1/images/generations",
        json!({"model":"dall-e-3","prompt":"a castle","response_format":"b64_json","style":"natural","quality":"hd","size":"1024x1024"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply["data"][0]["revised_prompt"], "a castle");
    assert_eq!(image_size(&b64_images(&reply)[0]), (1024, 1024));
    assert!(reply.get("usage").is_none() && reply.get("size").is_none());
    assert_eq!(server.last_request().steps, 6, "hd = 1.5x the model's 4 default steps");
}

#[tokio::test]
async fn sdk_nulls_are_defaults_and_sd_extras_reach_the_engine() {
    let server = TestServer::start_default().await;
    let body = json!({
        "prompt": "a cat", "model": null, "n": null, "size": null, "quality": null, "style": null, "response_format": "b64_json",
        "output_format": null, "output_compression": null, "background": null, "moderation": null, "stream": null,
        "partial_images": null, "user": null, "some_future_field": {"x": 1},
        "negative_prompt": "blurry", "seed": 99, "steps": 3, "cfg_scale": 4.5, "sampler": "Euler a", "scheduler": "Karras"
    });
    let (status, _, reply) = post_json(&server, "/v1/images/generations", body).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let ran = server.last_request();
    assert_eq!((ran.negative_prompt.as_str(), ran.seed, ran.steps, ran.cfg_scale), ("blurry", Some(99), 3, 4.5));
    assert_eq!((ran.sampler.a1111_name(), ran.schedule.label()), ("Euler a", "Karras"));
    let (_, _, _) = post_json(&server, "/v1/images/generations", json!({"prompt":"x","guidance_scale":2.0,"quality":"low"})).await;
    let ran = server.last_request();
    assert_eq!((ran.cfg_scale, ran.steps), (2.0, 2), "guidance_scale alias; low = half the default steps");
}

#[tokio::test]
async fn a_fixed_seed_reproduces_the_same_image() {
    let server = TestServer::start_default().await;
    let body = json!({"model":"gpt-image-1","prompt":"same","seed":1234});
    let (_, _, first) = post_json(&server, "/v1/images/generations", body.clone()).await;
    let (_, _, second) = post_json(&server, "/v1/images/generations", body).await;
    assert_eq!(b64_images(&first), b64_images(&second));
}

#[tokio::test]
async fn output_formats_are_encoded_as_asked() {
    let server = TestServer::start_default().await;
    for (format, size, expected) in [
        ("jpeg", "64x64", image::ImageFormat::Jpeg),
        ("webp", "100x50", image::ImageFormat::WebP),
        ("png", "30x90", image::ImageFormat::Png),
    ] {
        let body = json!({"prompt":"x","output_format":format,"output_compression":50,"size":size});
        let (status, _, reply) = post_json(&server, "/v1/images/generations", body).await;
        assert_eq!(status, StatusCode::OK, "{reply}");
        assert_eq!(reply["output_format"], format);
        let bytes = &b64_images(&reply)[0];
        assert_eq!(image::guess_format(bytes).expect("known format"), expected);
        let (w, h) = size.split_once('x').map(|(w, h)| (w.parse().expect("w"), h.parse().expect("h"))).expect("WxH");
        assert_eq!(image_size(bytes), (w, h));
    }
}

#[tokio::test]
async fn edits_repaint_the_transparent_area_of_the_mask() {
    let server = TestServer::start_default().await;
    let image = solid_png(64, 64, [0, 0, 255]);
    // Left half transparent (edit), right half opaque (keep).
    let mask = image::RgbaImage::from_fn(64, 64, |x, _| image::Rgba([0, 0, 0, if x < 32 { 0 } else { 255 }]));
    let form = Multipart::new()
        .file("image", "upload", &image)
        .file("mask", "upload", &png_bytes(&image::DynamicImage::ImageRgba8(mask)))
        .text("prompt", "a red square")
        .text("n", "1")
        .text("seed", "5");
    let (status, reply) = post_form(&server, "/v1/images/edits", form).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let ran = server.last_request();
    let mask = ran.mask.expect("inpainting mask").mask;
    assert_eq!((mask.pixels[0], mask.pixels[63]), (255, 0), "transparent = repaint (white), opaque = keep (black)");
    assert_eq!(ran.init_image.map(|i| i.strength), Some(1.0));
    let out = image::load_from_memory(&b64_images(&reply)[0]).expect("decodes").to_rgb8();
    assert_eq!(out.dimensions(), (64, 64));
    assert_eq!(out.get_pixel(60, 10).0, [0, 0, 255], "the kept half is the input");
    assert_ne!(out.get_pixel(4, 10).0, [0, 0, 255], "the masked half was repainted");
}

#[tokio::test]
async fn edits_take_image_arrays_default_to_the_input_size_and_honour_input_fidelity() {
    let server = TestServer::start_default().await;
    let form = Multipart::new()
        .file("image[]", "a.png", &solid_png(80, 48, [10, 200, 10]))
        .file("image[]", "b.png", &solid_png(32, 32, [200, 10, 10]))
        .text("prompt", "make it autumn")
        .text("input_fidelity", "high");
    let (status, reply) = post_form(&server, "/v1/images/edits", form).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(image_size(&b64_images(&reply)[0]), (80, 48), "size auto = the input image's size");
    assert_eq!(reply["size"], "80x48");
    let ran = server.last_request();
    assert!(ran.mask.is_none());
    assert_eq!(ran.init_image.map(|i| i.strength), Some(0.5));
    let form = Multipart::new().file("image", "a.png", &solid_png(64, 64, [1, 2, 3])).text("prompt", "x").text("size", "128x128");
    let (status, reply) = post_form(&server, "/v1/images/edits", form).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(image_size(&b64_images(&reply)[0]), (128, 128));
    assert_eq!(server.last_request().init_image.map(|i| i.strength), Some(0.75));
}

#[tokio::test]
async fn variations_are_img2img_of_the_image_with_an_empty_prompt() {
    let server = TestServer::start_default().await;
    let form = Multipart::new().file("image", "in.png", &solid_png(64, 64, [90, 90, 90])).text("n", "2").text("size", "256x256");
    let (status, reply) = post_form(&server, "/v1/images/variations", form).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let ran = server.last_request();
    assert_eq!((ran.prompt.as_str(), ran.num_images), ("", 2));
    assert_eq!(ran.init_image.map(|i| i.strength), Some(0.65));
    let urls: Vec<&str> = reply["data"].as_array().expect("data").iter().map(|d| d["url"].as_str().expect("url")).collect();
    assert_eq!(urls.len(), 2);
    for url in urls {
        let bytes = client().get(url).send().await.expect("fetch").bytes().await.expect("body");
        assert_eq!(image_size(&bytes), (256, 256));
    }
}

#[tokio::test]
async fn models_list_the_local_model_and_the_openai_names() {
    let server = TestServer::start_default().await;
    let list: Value = client().get(server.at("/v1/models")).send().await.expect("list").json().await.expect("json");
    assert_eq!(list["object"], "list");
    let ids: Vec<&str> = list["data"].as_array().expect("data").iter().map(|m| m["id"].as_str().expect("id")).collect();
    for id in ["stand-in", "stabilityai/sd-turbo", "dall-e-2", "dall-e-3", "gpt-image-1", "gpt-image-1-mini", "gpt-image-1.5"] {
        assert!(ids.contains(&id), "{id} missing from {ids:?}");
    }
    for model in list["data"].as_array().expect("data") {
        assert_eq!(model["object"], "model");
        assert!(model["created"].is_i64() && model["owned_by"].is_string());
    }
    for id in ["dall-e-3", "stabilityai/sd-turbo"] {
        let one = client().get(server.at(&format!("/v1/models/{id}"))).send().await.expect("retrieve");
        assert_eq!(one.status(), StatusCode::OK, "{id}");
        assert_eq!(one.json::<Value>().await.expect("json")["id"], id);
    }
    let missing = client().get(server.at("/v1/models/sdxl-base")).send().await.expect("retrieve");
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(missing.json::<Value>().await.expect("json")["error"]["code"], "model_not_found");
}

#[tokio::test]
async fn the_routes_also_answer_without_the_v1_prefix() {
    let server = TestServer::start_default().await;
    let (status, _, reply) = post_json(&server, "/images/generations", json!({"prompt":"x","response_format":"b64_json"})).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(client().get(server.at("/models")).send().await.expect("list").status(), StatusCode::OK);
}

#[test]
fn every_openai_route_is_documented() {
    let doc = sd_worker_rbee::http::openapi::document();
    for path in [
        "/v1/images/generations",
        "/v1/images/edits",
        "/v1/images/variations",
        "/v1/models",
        "/v1/models/{model}",
        "/v1/images/files/{file}",
    ] {
        assert!(doc.paths.paths.contains_key(path), "{path} missing from the OpenAPI document");
    }
}
