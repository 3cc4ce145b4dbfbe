//! Limits and validation on every face, against the real server with the tiny model and tight
//! limits: each malformed or over-limit request must be a 4xx in the face's own error shape that
//! names the field; never a 5xx, a panic or a hang. One table per face; every failing case is
//! reported at once. Also: the per-job timeout ends a running job as a failed job.

mod common;

use std::io::Cursor;
use std::time::Duration;

use base64::Engine as _;
use common::{post_job, tiny_config, SseReader, TestServer};
use serde_json::{json, Value};

/// The limits the sweep runs under (the tiny model's native size is 64 px).
fn tight_config() -> sd_worker_rbee::config::Config {
    let mut config = tiny_config(&[]);
    config.max_side = 128;
    config.max_pixels = 64 * 128;
    config.max_steps = 3;
    config.max_images = 2;
    config.max_prompt_chars = 40;
    config.max_body_mib = 1;
    config.max_input_pixels = 128 * 128;
    config
}

/// 41 characters: one over `max_prompt_chars`.
const LONG_TEXT: &str = "a prompt that is one character too long!!";

fn png(width: u32, height: u32) -> Vec<u8> {
    let image = image::RgbImage::from_fn(width, height, |x, y| image::Rgb([x as u8, y as u8, 90]));
    let mut bytes = Vec::new();
    image.write_to(&mut Cursor::new(&mut bytes), image::ImageFormat::Png).expect("encode");
    bytes
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A PNG whose header says 0x0 pixels (no encoder writes one; a hostile client can).
fn zero_size_png() -> Vec<u8> {
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = 0xffff_ffffu32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
            }
        }
        !crc
    }
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend((data.len() as u32).to_be_bytes());
        let start = out.len();
        out.extend(kind);
        out.extend(data);
        let crc = crc32(&out[start..]);
        out.extend(crc.to_be_bytes());
    }
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    chunk(&mut out, b"IHDR", &[0, 0, 0, 0, 0, 0, 0, 0, 8, 2, 0, 0, 0]);
    chunk(&mut out, b"IEND", &[]);
    out
}

fn truncated_png() -> Vec<u8> {
    let mut bytes = png(64, 64);
    bytes.truncate(bytes.len() / 2);
    bytes
}

/// Image payloads every face must refuse, with a name for the report.
fn bad_images() -> Vec<(&'static str, String)> {
    let good = b64(&png(64, 64));
    vec![
        ("garbage base64", "!!!not base64 at all!!!".to_string()),
        ("truncated base64", good[..good.len() - 3].to_string()),
        ("truncated PNG", b64(&truncated_png())),
        ("non-image bytes", b64(b"hello, this is not an image")),
        ("zero-size PNG", b64(&zero_size_png())),
        ("empty string", String::new()),
        ("too many decoded pixels", b64(&png(160, 160))),
    ]
}

/// A JSON object from raw `key: value` texts, so values JSON libraries refuse to build (`1e999`)
/// can be sent; `overrides` replace or add keys of `base`.
fn raw_json(base: &[(&str, String)], overrides: &[(&str, &str)]) -> String {
    let mut entries: Vec<String> = base
        .iter()
        .filter(|(key, _)| !overrides.iter().any(|(k, _)| k == key))
        .map(|(key, value)| format!("{key:?}:{value}"))
        .collect();
    entries.extend(overrides.iter().map(|(key, value)| format!("{key:?}:{value}")));
    format!("{{{}}}", entries.join(","))
}

fn quoted(text: &str) -> String {
    Value::from(text).to_string()
}

/// What a case must get back.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// A 4xx naming this field in the face's shape.
    Refused(&'static str),
    /// A 4xx in the face's shape, no one field at fault.
    Rejected,
    /// 413 in the face's shape.
    TooLarge,
    /// Not an error at all (a value the face accepts by design).
    Accepted,
}

enum Body {
    Json(String),
    Multipart(Vec<Part>),
}

struct Part {
    name: &'static str,
    file: Option<Vec<u8>>,
    text: String,
}

fn file(name: &'static str, bytes: Vec<u8>) -> Part {
    Part { name, file: Some(bytes), text: String::new() }
}

fn text(name: &'static str, value: &str) -> Part {
    Part { name, file: None, text: value.to_string() }
}

struct Case {
    name: String,
    path: &'static str,
    body: Body,
    expect: Expect,
}

fn case(name: impl Into<String>, path: &'static str, body: Body, expect: Expect) -> Case {
    Case { name: name.into(), path, body, expect }
}

async fn send(client: &reqwest::Client, url: &str, case: &Case) -> Result<(u16, String), String> {
    let request = client.post(format!("{url}{}", case.path));
    let request = match &case.body {
        Body::Json(text) => request.header("content-type", "application/json").body(text.clone()),
        Body::Multipart(parts) => {
            let boundary = "limits-test-boundary-7d1f";
            let mut body = Vec::new();
            for part in parts {
                body.extend(format!("--{boundary}\r\n").as_bytes());
                match &part.file {
                    Some(bytes) => {
                        body.extend(format!("Content-Disposition: form-data; name=\"{}\"; filename=\"x.png\"\r\nContent-Type: image/png\r\n\r\n", part.name).as_bytes());
                        body.extend(bytes);
                    }
                    None => {
                        body.extend(format!("Content-Disposition: form-data; name=\"{}\"\r\n\r\n", part.name).as_bytes());
                        body.extend(part.text.as_bytes());
                    }
                }
                body.extend(b"\r\n");
            }
            body.extend(format!("--{boundary}--\r\n").as_bytes());
            request.header("content-type", format!("multipart/form-data; boundary={boundary}")).body(body)
        }
    };
    let response = request.send().await.map_err(|e| format!("no answer: {e}"))?;
    let status = response.status().as_u16();
    let body = response.text().await.map_err(|e| format!("unreadable body: {e}"))?;
    Ok((status, body))
}

/// Run every case; `names_field(body, field)` checks the face's shape names the field.
async fn sweep(url: &str, cases: &[Case], names_field: fn(&Value, &str) -> bool, is_face_shape: fn(&Value) -> bool) {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client");
    let mut failures = Vec::new();
    for case in cases {
        let (status, body) = match send(&client, url, case).await {
            Ok(answer) => answer,
            Err(e) => {
                failures.push(format!("{}: {e}", case.name));
                continue;
            }
        };
        let json: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        let short: String = body.chars().take(300).collect();
        let ok = match case.expect {
            Expect::Accepted => (200..300).contains(&status),
            Expect::Rejected => (400..500).contains(&status) && is_face_shape(&json),
            Expect::TooLarge => status == 413 && is_face_shape(&json),
            Expect::Refused(field) => (400..500).contains(&status) && is_face_shape(&json) && names_field(&json, field),
        };
        if !ok {
            failures.push(format!("{} (expected {:?}): {status} {short}", case.name, case.expect));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

/// More than the 1 MiB body limit, inside a valid JSON string.
fn oversized_text() -> String {
    "x".repeat(1024 * 1024 + 10)
}

// ---------------------------------------------------------------------------------------------
// native

fn native_cases() -> Vec<Case> {
    let generation: Vec<(&str, String)> = vec![
        ("operation", quoted("image_generation")),
        ("prompt", quoted("x")),
        ("width", "64".into()),
        ("height", "64".into()),
        ("steps", "2".into()),
    ];
    let gen = |name: &str, overrides: &[(&str, &str)], expect: Expect| case(format!("generation {name}"), "/v1/jobs", Body::Json(raw_json(&generation, overrides)), expect);
    let long = quoted(LONG_TEXT);
    let big = quoted(&oversized_text());
    let mut cases = vec![
        gen("valid", &[], Expect::Accepted),
        gen("empty prompt (unconditional)", &[("prompt", r#""""#)], Expect::Accepted),
        gen("guidance 1e999", &[("guidance_scale", "1e999")], Expect::Refused("guidance_scale")),
        gen("guidance -1e999", &[("guidance_scale", "-1e999")], Expect::Refused("guidance_scale")),
        gen("width 1e999", &[("width", "1e999")], Expect::Refused("width")),
        gen("steps huge int", &[("steps", "99999999999999999999999")], Expect::Refused("steps")),
        gen("steps 2^32", &[("steps", "4294967296")], Expect::Refused("steps")),
        gen("seed 1e999", &[("seed", "1e999")], Expect::Refused("seed")),
        gen("seed 2^64", &[("seed", "18446744073709551616")], Expect::Refused("seed")),
        gen("width negative", &[("width", "-64")], Expect::Refused("width")),
        gen("steps negative", &[("steps", "-1")], Expect::Refused("steps")),
        gen("guidance negative", &[("guidance_scale", "-1")], Expect::Refused("guidance_scale")),
        gen("num_images negative", &[("num_images", "-1")], Expect::Refused("num_images")),
        gen("num_images zero", &[("num_images", "0")], Expect::Refused("num_images")),
        gen("steps wrong type", &[("steps", r#""ten""#)], Expect::Refused("steps")),
        gen("prompt wrong type", &[("prompt", "5")], Expect::Refused("prompt")),
        gen("prompt null", &[("prompt", "null")], Expect::Refused("prompt")),
        gen("steps null", &[("steps", "null")], Expect::Refused("steps")),
        gen("width float", &[("width", "64.5")], Expect::Refused("width")),
        gen("loras wrong type", &[("loras", r#""a""#)], Expect::Refused("loras")),
        gen("sampler empty", &[("sampler", r#""""#)], Expect::Refused("sampler")),
        gen("sampler unknown", &[("sampler", r#""Nope""#)], Expect::Refused("sampler")),
        gen("scheduler unknown", &[("scheduler", r#""nope""#)], Expect::Refused("scheduler")),
        gen("rng unknown", &[("rng", r#""gpu""#)], Expect::Refused("rng")),
        gen("output_format empty", &[("output_format", r#""""#)], Expect::Refused("output_format")),
        gen("output_quality 1e999", &[("output_quality", "1e999")], Expect::Refused("output_quality")),
        gen("clip_skip zero", &[("clip_skip", "0")], Expect::Refused("clip_skip")),
        gen("preview_every negative", &[("preview_every", "-1")], Expect::Refused("preview_every")),
        gen("width over max side", &[("width", "256")], Expect::Refused("width")),
        gen("width x height over max pixels", &[("width", "128"), ("height", "128")], Expect::Refused("height")),
        gen("steps over max", &[("steps", "4")], Expect::Refused("steps")),
        gen("num_images over max", &[("num_images", "3")], Expect::Refused("num_images")),
        gen("prompt too long", &[("prompt", &long)], Expect::Refused("prompt")),
        gen("negative prompt too long", &[("negative_prompt", &long)], Expect::Refused("negative_prompt")),
        gen("body over max", &[("negative_prompt", &big)], Expect::TooLarge),
        case("operation unknown", "/v1/jobs", Body::Json(r#"{"operation":"nope","prompt":"x"}"#.into()), Expect::Refused("operation")),
        case("operation null", "/v1/jobs", Body::Json(r#"{"operation":null,"prompt":"x"}"#.into()), Expect::Refused("operation")),
    ];
    let good = quoted(&b64(&png(64, 64)));
    for (what, image) in bad_images() {
        let image = quoted(&image);
        let body = raw_json(&generation, &[("operation", r#""image_transform""#), ("input_image", &image)]);
        cases.push(case(format!("transform input_image {what}"), "/v1/jobs", Body::Json(body), Expect::Refused("input_image")));
        let body = raw_json(&generation, &[("operation", r#""image_inpaint""#), ("init_image", &good), ("mask_image", &image)]);
        cases.push(case(format!("inpaint mask_image {what}"), "/v1/jobs", Body::Json(body), Expect::Refused("mask_image")));
    }
    let transform = |overrides: &[(&str, &str)]| {
        let mut all = vec![("operation", r#""image_transform""#), ("input_image", good.as_str())];
        all.extend_from_slice(overrides);
        Body::Json(raw_json(&generation, &all))
    };
    cases.push(case("transform valid", "/v1/jobs", transform(&[]), Expect::Accepted));
    cases.push(case("transform strength 1e999", "/v1/jobs", transform(&[("strength", "1e999")]), Expect::Refused("strength")));
    cases.push(case("transform strength negative", "/v1/jobs", transform(&[("strength", "-0.5")]), Expect::Refused("strength")));
    cases.push(case("transform input_image null", "/v1/jobs", transform(&[("input_image", "null")]), Expect::Refused("input_image")));
    let over_pixels = quoted(&b64(&png(128, 128)));
    cases.push(case("transform input over max pixels", "/v1/jobs", transform(&[("input_image", &over_pixels)]), Expect::Refused("input_image")));
    let small_mask = quoted(&b64(&png(32, 32)));
    let body = raw_json(&generation, &[("operation", r#""image_inpaint""#), ("init_image", &good), ("mask_image", &small_mask)]);
    cases.push(case("inpaint mask of another size", "/v1/jobs", Body::Json(body), Expect::Refused("mask_image")));
    cases
}

fn native_shape(body: &Value) -> bool {
    body["error"]["code"].is_string() && body["error"]["message"].is_string()
}

fn native_names(body: &Value, field: &str) -> bool {
    body["error"]["field"] == field
}

#[tokio::test(flavor = "multi_thread")]
async fn native_face_refuses_every_bad_value_with_a_400_naming_the_field() {
    let server = TestServer::start_tiny(tight_config()).await;
    server.wait_ready().await;
    sweep(&server.url, &native_cases(), native_names, native_shape).await;
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// OpenAI

fn openai_cases() -> Vec<Case> {
    let generation: Vec<(&str, String)> = vec![("prompt", quoted("x")), ("size", quoted("64x64")), ("steps", "2".into()), ("response_format", quoted("b64_json"))];
    let gen = |name: &str, overrides: &[(&str, &str)], expect: Expect| {
        case(format!("generations {name}"), "/v1/images/generations", Body::Json(raw_json(&generation, overrides)), expect)
    };
    let long = quoted(LONG_TEXT);
    let big = quoted(&oversized_text());
    let mut cases = vec![
        gen("valid", &[], Expect::Accepted),
        gen("n null (the SDK's default)", &[("n", "null")], Expect::Accepted),
        gen("n 1e999", &[("n", "1e999")], Expect::Refused("n")),
        gen("n huge int", &[("n", "99999999999999999999999")], Expect::Refused("n")),
        gen("n negative", &[("n", "-1")], Expect::Refused("n")),
        gen("n wrong type", &[("n", r#""two""#)], Expect::Refused("n")),
        gen("n over max", &[("n", "3")], Expect::Refused("n")),
        gen("steps 1e999", &[("steps", "1e999")], Expect::Refused("steps")),
        gen("steps negative", &[("steps", "-2")], Expect::Refused("steps")),
        gen("steps over max", &[("steps", "4")], Expect::Refused("steps")),
        gen("cfg_scale 1e999", &[("cfg_scale", "1e999")], Expect::Refused("cfg_scale")),
        gen("cfg_scale negative", &[("cfg_scale", "-1")], Expect::Refused("cfg_scale")),
        gen("seed 1e999", &[("seed", "1e999")], Expect::Refused("seed")),
        gen("strength 1e999", &[("strength", "1e999")], Expect::Refused("strength")),
        gen("prompt null", &[("prompt", "null")], Expect::Refused("prompt")),
        gen("prompt empty", &[("prompt", r#""""#)], Expect::Refused("prompt")),
        gen("prompt wrong type", &[("prompt", "[1]")], Expect::Refused("prompt")),
        gen("prompt too long", &[("prompt", &long)], Expect::Refused("prompt")),
        gen("negative prompt too long", &[("negative_prompt", &long)], Expect::Refused("negative_prompt")),
        gen("size empty (= auto)", &[("size", r#""""#)], Expect::Accepted),
        gen("size zero", &[("size", r#""0x0""#)], Expect::Refused("size")),
        gen("size negative", &[("size", r#""64x-64""#)], Expect::Refused("size")),
        gen("size huge", &[("size", r#""99999999999x64""#)], Expect::Refused("size")),
        gen("size over max pixels", &[("size", r#""128x128""#)], Expect::Refused("size")),
        gen("quality unknown", &[("quality", r#""ultra""#)], Expect::Refused("quality")),
        gen("response_format unknown", &[("response_format", r#""gif""#)], Expect::Refused("response_format")),
        gen("output_format empty", &[("output_format", r#""""#)], Expect::Refused("output_format")),
        gen("output_compression 1e999", &[("output_compression", "1e999")], Expect::Refused("output_compression")),
        gen("sampler unknown", &[("sampler", r#""nope""#)], Expect::Refused("sampler")),
        gen("scheduler unknown", &[("scheduler", r#""nope""#)], Expect::Refused("scheduler")),
        gen("stream wrong type", &[("stream", r#""yes please""#)], Expect::Refused("stream")),
        gen("partial_images negative", &[("partial_images", "-1")], Expect::Refused("partial_images")),
        gen("body over max", &[("negative_prompt", &big)], Expect::TooLarge),
    ];
    let good = png(64, 64);
    let edit = |image: Vec<u8>, extra: Vec<Part>| {
        let mut parts = vec![file("image", image), text("prompt", "x"), text("size", "64x64"), text("steps", "2"), text("response_format", "b64_json")];
        parts.extend(extra);
        Body::Multipart(parts)
    };
    cases.push(case("edits valid", "/v1/images/edits", edit(good.clone(), vec![]), Expect::Accepted));
    for (what, image) in bad_images() {
        let bytes = base64::engine::general_purpose::STANDARD.decode(&image).unwrap_or_else(|_| image.into_bytes());
        cases.push(case(format!("edits image {what}"), "/v1/images/edits", edit(bytes.clone(), vec![]), Expect::Refused("image")));
        cases.push(case(format!("edits mask {what}"), "/v1/images/edits", edit(good.clone(), vec![file("mask", bytes.clone())]), Expect::Refused("mask")));
        let parts = vec![file("image", bytes), text("size", "64x64"), text("steps", "2"), text("response_format", "b64_json")];
        cases.push(case(format!("variations image {what}"), "/v1/images/variations", Body::Multipart(parts), Expect::Refused("image")));
    }
    cases.push(case("edits mask of another size", "/v1/images/edits", edit(good.clone(), vec![file("mask", png(32, 32))]), Expect::Refused("mask")));
    cases.push(case("edits no image", "/v1/images/edits", Body::Multipart(vec![text("prompt", "x")]), Expect::Refused("image")));
    cases.push(case("edits n wrong type", "/v1/images/edits", edit(good.clone(), vec![text("n", "two")]), Expect::Refused("n")));
    cases.push(case("edits n 1e999", "/v1/images/edits", edit(good.clone(), vec![text("n", "1e999")]), Expect::Refused("n")));
    cases.push(case("edits steps negative", "/v1/images/edits", edit(good.clone(), vec![text("steps", "-3")]), Expect::Refused("steps")));
    cases.push(case("edits body over max", "/v1/images/edits", edit(good, vec![text("negative_prompt", &oversized_text())]), Expect::TooLarge));
    cases.push(case("edits not multipart", "/v1/images/edits", Body::Json("{}".into()), Expect::Rejected));
    cases
}

fn openai_shape(body: &Value) -> bool {
    let error = &body["error"];
    error["message"].is_string() && error["type"].is_string() && error.get("param").is_some() && error.get("code").is_some()
}

fn openai_names(body: &Value, field: &str) -> bool {
    body["error"]["param"] == field
}

#[tokio::test(flavor = "multi_thread")]
async fn openai_face_refuses_every_bad_value_with_a_4xx_naming_the_param() {
    let server = TestServer::start_tiny(tight_config()).await;
    server.wait_ready().await;
    sweep(&server.url, &openai_cases(), openai_names, openai_shape).await;
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// A1111

fn a1111_cases() -> Vec<Case> {
    let txt2img: Vec<(&str, String)> = vec![("prompt", quoted("x")), ("width", "64".into()), ("height", "64".into()), ("steps", "2".into())];
    let t2i = |name: &str, overrides: &[(&str, &str)], expect: Expect| case(format!("txt2img {name}"), "/sdapi/v1/txt2img", Body::Json(raw_json(&txt2img, overrides)), expect);
    let long = quoted(LONG_TEXT);
    let big = quoted(&oversized_text());
    let mut cases = vec![
        t2i("valid", &[], Expect::Accepted),
        // A1111 treats these as "not sent" or falls back, and so does the face.
        t2i("prompt null", &[("prompt", "null")], Expect::Accepted),
        t2i("prompt empty", &[("prompt", r#""""#)], Expect::Accepted),
        t2i("sampler unknown (A1111 falls back)", &[("sampler_name", r#""nope""#)], Expect::Accepted),
        t2i("steps 1e999", &[("steps", "1e999")], Expect::Refused("steps")),
        t2i("steps huge int", &[("steps", "99999999999999999999999")], Expect::Refused("steps")),
        t2i("steps negative", &[("steps", "-1")], Expect::Refused("steps")),
        t2i("steps wrong type", &[("steps", r#""ten""#)], Expect::Refused("steps")),
        t2i("steps over max", &[("steps", "4")], Expect::Refused("steps")),
        t2i("cfg_scale 1e999", &[("cfg_scale", "1e999")], Expect::Refused("cfg_scale")),
        t2i("cfg_scale -1e999", &[("cfg_scale", "-1e999")], Expect::Refused("cfg_scale")),
        t2i("cfg_scale negative", &[("cfg_scale", "-1")], Expect::Refused("cfg_scale")),
        t2i("cfg_scale wrong type", &[("cfg_scale", r#""abc""#)], Expect::Refused("cfg_scale")),
        t2i("width 1e999", &[("width", "1e999")], Expect::Refused("width")),
        t2i("width negative", &[("width", "-64")], Expect::Refused("width")),
        t2i("width over max side", &[("width", "256")], Expect::Refused("width")),
        t2i("width x height over max pixels", &[("width", "128"), ("height", "128")], Expect::Refused("width x height")),
        t2i("batch_size over max", &[("batch_size", "3")], Expect::Refused("batch_size")),
        t2i("batch_size 1e999", &[("batch_size", "1e999")], Expect::Refused("batch_size")),
        t2i("n_iter negative", &[("n_iter", "-1")], Expect::Refused("n_iter")),
        t2i("seed 1e999", &[("seed", "1e999")], Expect::Refused("seed")),
        t2i("seed huge int", &[("seed", "99999999999999999999999")], Expect::Refused("seed")),
        t2i("denoising_strength 1e999", &[("denoising_strength", "1e999")], Expect::Refused("denoising_strength")),
        t2i("prompt wrong type", &[("prompt", "[1]")], Expect::Refused("prompt")),
        t2i("prompt too long", &[("prompt", &long)], Expect::Refused("prompt")),
        t2i("negative prompt too long", &[("negative_prompt", &long)], Expect::Refused("negative_prompt")),
        t2i("clip skip 1e999", &[("override_settings", r#"{"CLIP_stop_at_last_layers":1e999}"#)], Expect::Refused("CLIP_stop_at_last_layers")),
        t2i("override_settings wrong type", &[("override_settings", "5")], Expect::Refused("override_settings")),
        t2i("body over max", &[("negative_prompt", &big)], Expect::TooLarge),
    ];
    let img2img: Vec<(&str, String)> = vec![
        ("prompt", quoted("x")),
        ("width", "64".into()),
        ("height", "64".into()),
        ("steps", "2".into()),
        ("init_images", format!("[{}]", quoted(&b64(&png(64, 64))))),
    ];
    let i2i = |name: &str, overrides: &[(&str, &str)], expect: Expect| case(format!("img2img {name}"), "/sdapi/v1/img2img", Body::Json(raw_json(&img2img, overrides)), expect);
    cases.push(i2i("valid", &[], Expect::Accepted));
    cases.push(i2i("denoising_strength 1e999", &[("denoising_strength", "1e999")], Expect::Refused("denoising_strength")));
    cases.push(i2i("denoising_strength negative", &[("denoising_strength", "-1")], Expect::Refused("denoising_strength")));
    // A1111's own answer: 404 "Init image not found".
    cases.push(i2i("init_images null", &[("init_images", "null")], Expect::Rejected));
    cases.push(i2i("init_images empty", &[("init_images", "[]")], Expect::Rejected));
    cases.push(i2i("init_images wrong type", &[("init_images", r#""abc""#)], Expect::Refused("init_images")));
    // A1111 resizes the mask to the image: a mask of another size is valid there.
    let small_mask = quoted(&b64(&png(32, 32)));
    cases.push(i2i("mask of another size (A1111 resizes it)", &[("mask", &small_mask)], Expect::Accepted));
    for (what, image) in bad_images() {
        let list = format!("[{}]", quoted(&image));
        cases.push(i2i(&format!("init_images {what}"), &[("init_images", &list)], Expect::Refused("init_images")));
        let mask = quoted(&image);
        // An empty mask is "no mask" in A1111.
        let expect = if image.is_empty() { Expect::Accepted } else { Expect::Refused("mask") };
        cases.push(i2i(&format!("mask {what}"), &[("mask", &mask)], expect));
        // PNG Info reads the text chunks only, as PIL's lazy open does: an image whose pixels
        // are cut off, absent or too many still has readable (empty) metadata.
        let body = raw_json(&[("image", quoted(&image))], &[]);
        let reads_metadata_only = ["truncated PNG", "zero-size PNG", "too many decoded pixels"].contains(&what);
        let expect = if reads_metadata_only { Expect::Accepted } else { Expect::Refused("image") };
        cases.push(case(format!("png-info {what}"), "/sdapi/v1/png-info", Body::Json(body), expect));
    }
    cases
}

fn a1111_shape(body: &Value) -> bool {
    match &body["detail"] {
        Value::Array(issues) => issues.iter().all(|issue| issue["loc"].is_array() && issue["msg"].is_string() && issue["type"].is_string()),
        Value::String(_) => body["error"].is_string() && body["errors"].is_string(),
        _ => false,
    }
}

fn a1111_names(body: &Value, field: &str) -> bool {
    match &body["detail"] {
        Value::Array(issues) => issues.iter().any(|issue| issue["loc"].as_array().is_some_and(|loc| loc.iter().any(|part| part == field))),
        Value::String(detail) => detail.contains(field),
        _ => false,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a1111_face_refuses_every_bad_value_with_a_4xx_naming_the_field() {
    let server = TestServer::start_tiny(tight_config()).await;
    server.wait_ready().await;
    sweep(&server.url, &a1111_cases(), a1111_names, a1111_shape).await;
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// per-job timeout

#[tokio::test(flavor = "multi_thread")]
async fn a_job_running_past_the_timeout_fails_with_a_timed_out_error() {
    let mut config = tiny_config(&[]);
    config.job_timeout_secs = 1;
    let server = TestServer::start_tiny(config).await;
    server.wait_ready().await;
    // The tiny model needs well over a second for 8 images of 150 steps.
    let body = json!({"operation": "image_generation", "prompt": "x", "width": 64, "height": 64, "steps": 150, "num_images": 8, "seed": 1, "preview_every": 0});
    let response = post_job(&server.url, &body, None).await;
    assert_eq!(response.status(), 200);
    let created: Value = response.json().await.expect("json");
    let stream_url = format!("{}{}", server.url, created["sse_url"].as_str().expect("sse_url"));
    let started = std::time::Instant::now();
    let mut reader = SseReader::open(&stream_url, None).await;
    let frames = reader.until_final().await;
    let steps = frames.iter().filter(|f| f.event.as_deref() == Some("progress")).count();
    assert!(steps < 1200, "stopped early, after {steps} steps");
    let error = frames.iter().find(|f| f.event.as_deref() == Some("error")).expect("an error event").json();
    assert!(error.to_string().contains("timed out after 1 s"), "{error}");
    assert!(frames.last().is_some_and(|f| f.data.starts_with("[ERROR]")), "{:?}", frames.last());
    assert!(started.elapsed() < Duration::from_secs(10), "stopped within a step of the deadline: {:?}", started.elapsed());
    // The engine is free again: the next job starts and ends (on a busy machine even one step
    // of it may take longer than a second, so either end is fine).
    let short = json!({"operation": "image_generation", "prompt": "x", "width": 64, "height": 64, "steps": 1, "seed": 1});
    let (_, next_url) = common::submit(&server.url, &short).await;
    let frames = SseReader::open(&next_url, None).await.until_final().await;
    assert!(frames.iter().any(|f| f.event.as_deref() == Some("started")), "{frames:?}");
    assert!(frames.last().is_some_and(|f| f.data == "[DONE]" || f.data.contains("timed out after 1 s")), "{:?}", frames.last());
    server.stop().await;
}
