//! `/sdapi/v1/txt2img`, `/img2img` and `/png-info` over real HTTP against the stand-in engine:
//! wire shapes, A1111 defaults, seeds, sampler resolution, settings and what reaches the engine.

mod a1111_common;

use std::time::Duration;

use a1111_common::{b64_decode, config, decode_png, info, png_b64, post, TestServer, FAKE_TITLE};
use sd_worker_rbee::backend::request::{InpaintArea, MaskedContent, OutputFormat, PreviewPolicy, RngKind, SamplerKind, ScheduleKind};
use serde_json::{json, Value};

const FAST: Duration = Duration::from_millis(1);

/// A1111 1.10's `Processed.js()` keys, in order.
const INFO_KEYS: &[&str] = &[
    "prompt",
    "all_prompts",
    "negative_prompt",
    "all_negative_prompts",
    "seed",
    "all_seeds",
    "subseed",
    "all_subseeds",
    "subseed_strength",
    "width",
    "height",
    "sampler_name",
    "cfg_scale",
    "steps",
    "batch_size",
    "restore_faces",
    "face_restoration_model",
    "sd_model_name",
    "sd_model_hash",
    "sd_vae_name",
    "sd_vae_hash",
    "seed_resize_from_w",
    "seed_resize_from_h",
    "denoising_strength",
    "extra_generation_params",
    "index_of_first_image",
    "infotexts",
    "styles",
    "job_timestamp",
    "clip_skip",
    "is_using_inpainting_conditioning",
    "version",
];

/// The keys of the `info` string in the order they are written.
fn info_key_order(info_text: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut depth = 0usize;
    let mut chars = info_text.chars().peekable();
    let mut in_string = false;
    let mut current = String::new();
    let mut expect_key = false;
    while let Some(c) = chars.next() {
        if in_string {
            match c {
                '\\' => {
                    chars.next();
                }
                '"' => {
                    in_string = false;
                    if depth == 1 && expect_key {
                        keys.push(current.clone());
                        expect_key = false;
                    }
                }
                c => current.push(c),
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                current.clear();
            }
            '{' | '[' => {
                depth += 1;
                if depth == 1 {
                    expect_key = true;
                }
            }
            '}' | ']' => depth -= 1,
            ',' if depth == 1 => expect_key = true,
            ':' if depth == 1 => expect_key = false,
            _ => {}
        }
    }
    keys
}

#[tokio::test(flavor = "multi_thread")]
async fn txt2img_answers_images_parameters_and_a1111_info() {
    let server = TestServer::fake(config(&[], 8), FAST, 8).await;
    let (status, body) = post(&server.url("/sdapi/v1/txt2img"), &json!({"prompt": "a red fox", "steps": 3, "width": 64, "height": 64, "seed": 42})).await;
    assert_eq!(status, 200, "{body}");
    let images = body["images"].as_array().expect("images");
    assert_eq!(images.len(), 1);
    let png = decode_png(images[0].as_str().expect("b64"));
    assert_eq!(png.dimensions(), (64, 64));

    // `parameters` echoes the request with A1111's API defaults filled in.
    let p = &body["parameters"];
    assert_eq!((p["steps"].clone(), p["seed"].clone(), p["cfg_scale"].clone(), p["sampler_index"].clone()), (json!(3), json!(42), json!(7.0), json!("Euler")));
    assert_eq!((p["sampler_name"].clone(), p["n_iter"].clone(), p["enable_hr"].clone(), p["denoising_strength"].clone()), (Value::Null, json!(1), json!(false), json!(0.75)));

    let info_text = body["info"].as_str().expect("info string");
    assert_eq!(info_key_order(info_text), INFO_KEYS, "info keys in A1111's order");
    assert!(info_text.contains("\"cfg_scale\": 7.0, "), "Python json.dumps separators and float repr: {info_text}");
    let info = info(&body);
    assert_eq!((info["seed"].clone(), info["all_seeds"].clone(), info["sampler_name"].clone()), (json!(42), json!([42]), json!("Euler")));
    assert_eq!(info["extra_generation_params"], json!({"Schedule type": "Automatic"}));
    assert_eq!((info["sd_model_name"].clone(), info["sd_model_hash"].clone()), (json!("fake-sd"), json!("0123456789")));
    assert_eq!((info["all_prompts"].clone(), info["clip_skip"].clone()), (json!(["a red fox"]), json!(1)));
    let infotext = info["infotexts"][0].as_str().expect("infotext");
    assert!(infotext.starts_with("a red fox\nSteps: 3, Sampler: Euler, Schedule type: Automatic, CFG scale: 7.0, Seed: 42, Size: 64x64"), "{infotext}");
    assert!(!infotext.contains("RNG:"), "GPU (Philox) is A1111's default and not written");

    // What the engine was asked: A1111 defaults, Philox noise, previews every 10 steps.
    let req = &server.requests()[0];
    assert_eq!((req.sampler, req.schedule, req.rng, req.cfg_scale, req.seed, req.num_images), (SamplerKind::Euler, ScheduleKind::Automatic, RngKind::Philox, 7.0, Some(42), 1));
    assert_eq!((req.preview, req.output_format, req.clip_skip), (PreviewPolicy::EveryNSteps(10), OutputFormat::Png, 1));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn batches_get_consecutive_seeds_and_one_engine_job_each() {
    let server = TestServer::fake(config(&[], 8), FAST, 8).await;
    let (status, body) = post(&server.url("/sdapi/v1/txt2img"), &json!({"prompt": "x", "steps": 2, "width": 64, "height": 64, "seed": 1000, "batch_size": 2, "n_iter": 2})).await;
    assert_eq!(status, 200, "{body}");
    let parsed = info(&body);
    assert_eq!(parsed["all_seeds"], json!([1000, 1001, 1002, 1003]));
    assert_eq!(parsed["infotexts"].as_array().map(Vec::len), Some(4));
    for (i, text) in parsed["infotexts"].as_array().expect("infotexts").iter().enumerate() {
        assert!(text.as_str().expect("str").contains(&format!("Seed: {}", 1000 + i)), "{text}");
    }
    let images: Vec<_> = body["images"].as_array().expect("images").iter().map(|i| decode_png(i.as_str().expect("b64"))).collect();
    assert_eq!(images.len(), 4);
    assert_ne!(images[0], images[1], "distinct seeds give distinct images");
    let jobs = server.requests();
    assert_eq!(jobs.iter().map(|r| (r.seed, r.num_images)).collect::<Vec<_>>(), vec![(Some(1000), 2), (Some(1002), 2)]);

    // seed -1 is random in 0..4294967294, and images still go seed + i.
    let (_, body) = post(&server.url("/sdapi/v1/txt2img"), &json!({"prompt": "x", "steps": 1, "width": 64, "height": 64, "batch_size": 2})).await;
    let seeds = info(&body)["all_seeds"].clone();
    let first = seeds[0].as_i64().expect("seed");
    assert!((0..4_294_967_294).contains(&first));
    assert_eq!(seeds, json!([first, first + 1]));
    assert_eq!(body["parameters"]["seed"], -1, "parameters keep the request's -1");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sampler_names_resolve_as_a1111_does() {
    let server = TestServer::fake(config(&[], 8), FAST, 8).await;
    let cases = [
        (json!({"sampler_name": "DPM++ 2M Karras"}), SamplerKind::DpmPp2m, ScheduleKind::Karras, "DPM++ 2M", "Karras"),
        (json!({"sampler_name": "Euler a", "scheduler": "exponential"}), SamplerKind::EulerAncestral, ScheduleKind::Exponential, "Euler a", "Exponential"),
        (json!({"sampler_index": "k_euler_a"}), SamplerKind::EulerAncestral, ScheduleKind::Automatic, "Euler a", "Automatic"),
        (json!({"sampler_name": "no such sampler"}), SamplerKind::DpmPp2m, ScheduleKind::Karras, "DPM++ 2M", "Karras"),
        (json!({"sampler_name": "", "sampler_index": "DDIM"}), SamplerKind::Ddim, ScheduleKind::Automatic, "DDIM", "Automatic"),
        (json!({"sampler_name": "UniPC", "scheduler": "Karras"}), SamplerKind::UniPc, ScheduleKind::Karras, "UniPC", "Karras"),
    ];
    for (i, (fields, sampler, schedule, name, label)) in cases.into_iter().enumerate() {
        let mut body = json!({"prompt": "x", "steps": 1, "width": 64, "height": 64});
        for (k, v) in fields.as_object().expect("object") {
            body[k] = v.clone();
        }
        let (status, response) = post(&server.url("/sdapi/v1/txt2img"), &body).await;
        assert_eq!(status, 200, "{response}");
        let req = &server.requests()[i];
        assert_eq!((req.sampler, req.schedule), (sampler, schedule), "{fields}");
        let info = info(&response);
        assert_eq!((info["sampler_name"].as_str(), info["extra_generation_params"]["Schedule type"].as_str()), (Some(name), Some(label)), "{fields}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn options_and_override_settings_reach_the_engine() {
    let server = TestServer::fake(config(&[], 8), FAST, 8).await;
    let body = json!({"prompt": "x", "steps": 1, "width": 64, "height": 64, "seed": 5,
                      "override_settings": {"CLIP_stop_at_last_layers": 2, "randn_source": "CPU", "sd_vae": "Automatic", "forge_additional_modules": []}});
    let (status, response) = post(&server.url("/sdapi/v1/txt2img"), &body).await;
    assert_eq!(status, 200, "{response}");
    let req = &server.requests()[0];
    assert_eq!((req.clip_skip, req.rng), (2, RngKind::TorchCpu));
    let info = info(&response);
    assert_eq!(info["clip_skip"], 2);
    let infotext = info["infotexts"][0].as_str().expect("infotext");
    assert!(infotext.contains("Clip skip: 2") && infotext.contains("RNG: CPU"), "{infotext}");

    // Stored options apply to later jobs; samples_format switches the encoding.
    let (status, _) = post(&server.url("/sdapi/v1/options"), &json!({"samples_format": "jpg", "jpeg_quality": 70, "show_progress_every_n_steps": -1})).await;
    assert_eq!(status, 200);
    let (status, response) = post(&server.url("/sdapi/v1/txt2img"), &json!({"prompt": "x", "steps": 1, "width": 64, "height": 64})).await;
    assert_eq!(status, 200, "{response}");
    let req = &server.requests()[1];
    assert_eq!((req.output_format, req.preview, req.rng), (OutputFormat::Jpeg { quality: 70 }, PreviewPolicy::None, RngKind::Philox));
    let bytes = b64_decode(response["images"][0].as_str().expect("b64"));
    assert_eq!(&bytes[..2], &[0xFF, 0xD8], "a JPEG");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sizes_round_to_8_and_odd_model_multiples_are_resized_back() {
    // A model that needs multiples of 16: 72x72 is made at 80x80 and resized to what was asked.
    let server = TestServer::fake(config(&[], 8), FAST, 16).await;
    let (status, body) = post(&server.url("/sdapi/v1/txt2img"), &json!({"prompt": "x", "steps": 1, "width": 75, "height": 72, "seed": 3})).await;
    assert_eq!(status, 200, "{body}");
    let req = &server.requests()[0];
    assert_eq!((req.width, req.height), (80, 80));
    let png = decode_png(body["images"][0].as_str().expect("b64"));
    assert_eq!(png.dimensions(), (72, 72), "75 rounds down to 72 as A1111's latents do");
    let info = info(&body);
    assert_eq!((info["width"].clone(), info["height"].clone()), (json!(75), json!(72)));
    assert!(info["infotexts"][0].as_str().expect("infotext").contains("Size: 72x72"));
    // The PNG carries the corrected infotext too.
    let (status, parsed) = post(&server.url("/sdapi/v1/png-info"), &json!({"image": body["images"][0]})).await;
    assert_eq!(status, 200);
    assert_eq!((parsed["parameters"]["Size-1"].clone(), parsed["parameters"]["Size-2"].clone()), (json!("72"), json!("72")));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn img2img_inpainting_prepares_init_image_and_mask_like_a1111() {
    let server = TestServer::fake(config(&[], 8), FAST, 8).await;
    // A 32x16 init image with a transparent half, a mask that is white on its right half.
    let init = {
        let mut image = image::RgbaImage::from_pixel(32, 16, image::Rgba([0, 0, 255, 255]));
        for x in 0..16 {
            for y in 0..16 {
                image.put_pixel(x, y, image::Rgba([0, 0, 0, 0]));
            }
        }
        let mut bytes = Vec::new();
        image.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png).expect("encode");
        format!("data:image/png;base64,{}", base64::Engine::encode(&base64::engine::general_purpose::STANDARD, bytes))
    };
    let mask = {
        let image = image::GrayImage::from_fn(64, 64, |x, _| image::Luma([if x >= 32 { 255 } else { 0 }]));
        let mut bytes = Vec::new();
        image.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png).expect("encode");
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, bytes)
    };
    let body = json!({"prompt": "a cat", "steps": 4, "width": 64, "height": 64, "seed": 9, "denoising_strength": 0.5,
                      "init_images": [init], "mask": mask, "mask_blur": 0, "batch_size": 2, "inpaint_full_res": false});
    let (status, response) = post(&server.url("/sdapi/v1/img2img"), &body).await;
    assert_eq!(status, 200, "{response}");
    let req = &server.requests()[0];
    assert_eq!((req.width, req.height, req.num_images, req.seed), (64, 64, 2, Some(9)));
    let init = req.init_image.as_ref().expect("init image");
    assert_eq!((init.image.width, init.image.height, init.strength), (64, 64, 0.5));
    // Transparent pixels were flattened onto white before resizing.
    assert_eq!(&init.image.pixels[..3], &[255, 255, 255]);
    assert_eq!(&init.image.pixels[(63 * 3)..(63 * 3 + 3)], &[0, 0, 255]);
    let mask = req.mask.as_ref().expect("mask");
    assert_eq!((mask.mask.width, mask.blur, mask.invert), (64, 0, false));
    assert_eq!((mask.content, mask.area), (MaskedContent::Fill, InpaintArea::WholeImage), "inpainting_fill defaults to 0, fill");
    assert_eq!((mask.mask.pixels[0], mask.mask.pixels[63]), (0, 255));
    let whole_info = info(&response);
    // No `Mask blur` for a blur of 0, as in A1111.
    assert_eq!(whole_info["extra_generation_params"], json!({"Schedule type": "Automatic", "Denoising strength": 0.5, "Masked content": "fill"}));
    assert_eq!((whole_info["denoising_strength"].clone(), whole_info["all_seeds"].clone()), (json!(0.5), json!([9, 10])));
    assert_eq!(response["parameters"]["init_images"], Value::Null, "include_init_images defaults to false");
    assert_eq!(response["parameters"]["mask"], Value::Null);
    assert_eq!(response["images"].as_array().map(Vec::len), Some(2));

    // The API default is "Only masked": the init image keeps its size, the (blurred) mask is
    // brought to it, and the engine crops; the other masked contents are passed on.
    let only_masked = json!({"prompt": "a cat", "steps": 4, "width": 64, "height": 64, "seed": 9, "init_images": [body["init_images"][0]], "mask": body["mask"],
                             "mask_blur": 3, "inpaint_full_res_padding": 12, "inpainting_fill": 2});
    let (status, response) = post(&server.url("/sdapi/v1/img2img"), &only_masked).await;
    assert_eq!(status, 200, "{response}");
    let req = server.requests().last().cloned().expect("request");
    let init_image = &req.init_image.as_ref().expect("init image").image;
    assert_eq!((init_image.width, init_image.height), (32, 16));
    let spec = req.mask.as_ref().expect("mask");
    assert_eq!((spec.mask.width, spec.mask.height, spec.blur), (32, 16, 0));
    assert_eq!((spec.content, spec.area), (MaskedContent::LatentNoise, InpaintArea::OnlyMasked { padding: 12 }));
    assert_eq!(req.infotext_extra, vec![("Mask blur".to_string(), "3".to_string())]);
    assert_eq!(
        info(&response)["extra_generation_params"],
        json!({"Schedule type": "Automatic", "Denoising strength": 0.75, "Mask blur": 3, "Inpaint area": "Only masked",
               "Masked area padding": 12, "Masked content": "latent noise"})
    );
    let before = server.requests().len();

    // inpainting_mask_invert flips it; include_init_images echoes the inputs.
    let mut inverted = body.clone();
    inverted["inpainting_mask_invert"] = json!(1);
    inverted["include_init_images"] = json!(true);
    inverted["resize_mode"] = json!(1);
    let (status, response) = post(&server.url("/sdapi/v1/img2img"), &inverted).await;
    assert_eq!(status, 200, "{response}");
    let inverted_request = server.requests()[before].clone();
    let mask = &inverted_request.mask.clone().expect("mask").mask;
    assert_eq!((mask.pixels[0], mask.pixels[63]), (255, 0));
    assert_eq!(inverted_request.infotext_extra, vec![("Mask mode".to_string(), "Inpaint not masked".to_string())]);
    assert_eq!(info(&response)["extra_generation_params"]["Mask mode"], "Inpaint not masked");
    assert!(response["parameters"]["init_images"].is_array());

    // Two init images, batch_size 2: one engine job per image, each with its own seed.
    let two = json!({"prompt": "a", "steps": 1, "width": 64, "height": 64, "seed": 20, "batch_size": 2,
                     "init_images": [png_b64(8, 8, [255, 0, 0, 255]), png_b64(8, 8, [0, 255, 0, 255])]});
    let (status, response) = post(&server.url("/sdapi/v1/img2img"), &two).await;
    assert_eq!(status, 200, "{response}");
    let jobs = server.requests();
    let last_two = &jobs[jobs.len() - 2..];
    assert_eq!(last_two.iter().map(|r| (r.seed, r.num_images)).collect::<Vec<_>>(), vec![(Some(20), 1), (Some(21), 1)]);
    assert_eq!(&last_two[1].init_image.as_ref().expect("init").image.pixels[..3], &[0, 255, 0]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn png_info_parses_our_output_and_a1111s() {
    let server = TestServer::fake(config(&[], 8), FAST, 8).await;
    let (_, body) = post(&server.url("/sdapi/v1/txt2img"), &json!({"prompt": "a fox, (detailed:1.2)", "negative_prompt": "blurry", "steps": 2, "width": 64, "height": 64, "seed": 77})).await;
    let (status, parsed) = post(&server.url("/sdapi/v1/png-info"), &json!({"image": body["images"][0]})).await;
    assert_eq!(status, 200, "{parsed}");
    assert_eq!(parsed["info"], info(&body)["infotexts"][0]);
    let p = &parsed["parameters"];
    assert_eq!((p["Prompt"].clone(), p["Negative prompt"].clone(), p["Seed"].clone(), p["Steps"].clone()), (json!("a fox, (detailed:1.2)"), json!("blurry"), json!("77"), json!("2")));
    assert_eq!((p["Sampler"].clone(), p["Clip skip"].clone(), p["RNG"].clone()), (json!("Euler"), json!("1"), json!("GPU")));
    assert_eq!(parsed["items"], json!({}));

    // An A1111-written PNG (data: URL), and an image without infotext.
    let a1111 = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/image_io/a1111.png")).expect("fixture");
    let url = format!("data:image/png;base64,{}", base64::Engine::encode(&base64::engine::general_purpose::STANDARD, a1111));
    let (status, parsed) = post(&server.url("/sdapi/v1/png-info"), &json!({"image": url})).await;
    assert_eq!(status, 200, "{parsed}");
    assert!(parsed["info"].as_str().is_some_and(|t| t.contains("Steps: ")), "{parsed}");
    let (status, parsed) = post(&server.url("/sdapi/v1/png-info"), &json!({"image": png_b64(4, 4, [1, 2, 3, 255])})).await;
    assert_eq!((status, parsed["info"].clone()), (200, json!("")));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn client_extra_keys_and_the_infotext_field_are_handled() {
    let server = TestServer::fake(config(&[], 8), FAST, 8).await;
    // SillyTavern's body: extra keys, Forge's hires fields, save_images, override_settings.
    let body = json!({"prompt": "girl, <lora:style:0.8> # a comment", "negative_prompt": "bad", "sampler_name": "DPM++ 2M", "scheduler": "Karras",
        "steps": 2, "cfg_scale": 6, "width": 64, "height": 64, "restore_faces": false, "enable_hr": false, "hr_upscaler": "Latent",
        "hr_scale": 2, "hr_additional_modules": [], "denoising_strength": 0.7, "hr_second_pass_steps": 0, "seed": 11,
        "override_settings": {"CLIP_stop_at_last_layers": 1}, "override_settings_restore_afterwards": true, "clip_skip": 1,
        "save_images": true, "send_images": true, "do_not_save_grid": false, "do_not_save_samples": false,
        "url": "http://127.0.0.1:7860", "auth": "user:pass"});
    let (status, response) = post(&server.url("/sdapi/v1/txt2img"), &body).await;
    assert_eq!(status, 200, "{response}");
    assert_eq!(response["images"].as_array().map(Vec::len), Some(1));
    let req = &server.requests()[0];
    assert_eq!(req.prompt, "girl,  \n", "comments and LoRA tags stripped before the model");
    assert_eq!(req.loras, vec![sd_worker_rbee::backend::request::LoraSpec::new("style", 0.8)], "LoRA tags become the job's LoRAs");
    assert_eq!((req.cfg_scale, req.sampler, req.schedule), (6.0, SamplerKind::DpmPp2m, ScheduleKind::Karras));
    assert_eq!(info(&response)["prompt"], "girl, <lora:style:0.8> \n");

    // `infotext` fills what the body leaves out.
    let body = json!({"infotext": "a lighthouse\nSteps: 2, Sampler: Euler a, CFG scale: 4.0, Seed: 123, Size: 64x64", "negative_prompt": "fog"});
    let (status, response) = post(&server.url("/sdapi/v1/txt2img"), &body).await;
    assert_eq!(status, 200, "{response}");
    let req = &server.requests()[1];
    assert_eq!((req.prompt.as_str(), req.negative_prompt.as_str(), req.steps, req.cfg_scale, req.seed), ("a lighthouse", "fog", 2, 4.0, Some(123)));
    assert_eq!(req.sampler, SamplerKind::EulerAncestral);

    // send_images: false answers no images but still the info.
    let (status, response) = post(&server.url("/sdapi/v1/txt2img"), &json!({"prompt": "x", "steps": 1, "width": 64, "height": 64, "send_images": false})).await;
    assert_eq!(status, 200);
    assert_eq!(response["images"], json!([]));
    assert_eq!(info(&response)["infotexts"].as_array().map(Vec::len), Some(1));
    assert_eq!(FAKE_TITLE, "fake-sd [0123456789]");
    server.stop().await;
}
