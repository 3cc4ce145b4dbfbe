//! The A1111 face on the real pipeline with the tiny SD 1.5 fixture: real images through
//! txt2img, img2img and inpainting, infotexts that png-info reads back, and the same image
//! through `/sdapi/v1/txt2img` as through the native job API for the same seed, settings and RNG.

mod a1111_common;

use a1111_common::{config, decode_png, get, info, png_b64, post, TestServer, TEST_TIMEOUT};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread")]
async fn txt2img_img2img_and_inpainting_make_real_images() {
    let server = TestServer::tiny(config(&[], 8)).await;
    let (_, models) = get(&server.url("/sdapi/v1/sd-models")).await;
    let title = models[0]["title"].as_str().expect("title").to_string();
    let hash = models[0]["hash"].as_str().expect("the pipeline hashes the UNet weights").to_string();
    assert_eq!(title, format!("tiny-sd15 [{hash}]"));
    assert_eq!(get(&server.url("/sdapi/v1/options")).await.1["sd_model_checkpoint"], json!(title));

    let body = json!({"prompt": "a photo of a cat", "negative_prompt": "blurry", "steps": 3, "width": 64, "height": 64, "seed": 42,
                      "sampler_name": "Euler a", "batch_size": 2});
    let (status, response) = post(&server.url("/sdapi/v1/txt2img"), &body).await;
    assert_eq!(status, 200, "{response}");
    let images: Vec<_> = response["images"].as_array().expect("images").iter().map(|i| decode_png(i.as_str().expect("b64"))).collect();
    assert_eq!((images.len(), images[0].dimensions()), (2, (64, 64)));
    assert_ne!(images[0], images[1]);
    let parsed = info(&response);
    assert_eq!(parsed["all_seeds"], json!([42, 43]));
    assert_eq!((parsed["sd_model_name"].clone(), parsed["sd_model_hash"].clone()), (json!("tiny-sd15"), json!(hash)));
    let infotext = parsed["infotexts"][0].as_str().expect("infotext");
    assert!(infotext.starts_with("a photo of a cat\nNegative prompt: blurry\nSteps: 3, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7.0, Seed: 42, Size: 64x64"), "{infotext}");
    let (_, png_info) = post(&server.url("/sdapi/v1/png-info"), &json!({"image": response["images"][1]})).await;
    assert_eq!((png_info["parameters"]["Seed"].clone(), png_info["parameters"]["Sampler"].clone()), (json!("43"), json!("Euler a")));
    assert_eq!(png_info["info"], parsed["infotexts"][1]);

    // img2img from the first image; inpainting with a mask keeps the unmasked half's layout.
    let init = response["images"][0].clone();
    let (status, i2i) = post(&server.url("/sdapi/v1/img2img"), &json!({"prompt": "a cat", "init_images": [init], "steps": 4, "denoising_strength": 0.5,
                                                                      "width": 64, "height": 64, "seed": 1})).await;
    assert_eq!(status, 200, "{i2i}");
    assert_eq!(decode_png(i2i["images"][0].as_str().expect("b64")).dimensions(), (64, 64));
    assert!(info(&i2i)["infotexts"][0].as_str().expect("infotext").contains("Denoising strength: 0.5"));
    let mask = {
        let image = image::GrayImage::from_fn(64, 64, |x, _| image::Luma([if x >= 32 { 255 } else { 0 }]));
        let mut bytes = Vec::new();
        image.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png).expect("encode");
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, bytes)
    };
    let (status, inpaint) = post(&server.url("/sdapi/v1/img2img"), &json!({"prompt": "a dog", "init_images": [png_b64(64, 64, [40, 90, 200, 255])], "mask": mask,
                                                                          "mask_blur": 2, "steps": 4, "denoising_strength": 1.0, "width": 64, "height": 64, "seed": 2})).await;
    assert_eq!(status, 200, "{inpaint}");
    assert_eq!(info(&inpaint)["extra_generation_params"]["Mask blur"], 2);
    // The API defaults: "Only masked" with padding 0, masked content "fill"; the PNG says so.
    let inpaint_text = info(&inpaint)["infotexts"][0].as_str().expect("infotext").to_string();
    assert!(inpaint_text.contains("Mask blur: 2, Inpaint area: Only masked, Masked area padding: 0, Masked content: fill"), "{inpaint_text}");
    assert_eq!(decode_png(inpaint["images"][0].as_str().expect("b64")).dimensions(), (64, 64));
    // A size the tiny model cannot make directly (multiples of 4) comes back as asked.
    let (status, odd) = post(&server.url("/sdapi/v1/txt2img"), &json!({"prompt": "x", "steps": 1, "width": 72, "height": 66, "seed": 3})).await;
    assert_eq!(status, 200, "{odd}");
    assert_eq!(decode_png(odd["images"][0].as_str().expect("b64")).dimensions(), (72, 64));
    server.stop().await;
}

/// Run a native job to the end and return its first image (base64).
async fn native_image(server: &TestServer, body: &Value) -> String {
    let (status, created) = post(&server.url("/v1/jobs"), body).await;
    assert_eq!(status, 200, "{created}");
    let job_url = server.url(&format!("/v1/jobs/{}", created["job_id"].as_str().expect("job id")));
    let deadline = tokio::time::Instant::now() + TEST_TIMEOUT;
    loop {
        let (_, job) = get(&job_url).await;
        if job["status"] == "completed" {
            return job["images"][0]["image"].as_str().expect("image").to_string();
        }
        assert!(job["status"] == "queued" || job["status"] == "running", "{job}");
        assert!(tokio::time::Instant::now() < deadline, "job never finished: {job}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_seed_and_rng_give_the_same_image_as_the_native_api() {
    let server = TestServer::tiny(config(&[], 8)).await;
    for (randn_source, rng) in [("GPU", "philox"), ("CPU", "cpu")] {
        let a1111 = json!({"prompt": "a watercolor fox", "negative_prompt": "ugly", "steps": 4, "cfg_scale": 6.5, "width": 64, "height": 64,
                           "seed": 1234, "sampler_name": "DPM++ 2M", "scheduler": "Karras", "override_settings": {"randn_source": randn_source}});
        let (status, response) = post(&server.url("/sdapi/v1/txt2img"), &a1111).await;
        assert_eq!(status, 200, "{response}");
        let native = json!({"operation": "image_generation", "prompt": "a watercolor fox", "negative_prompt": "ugly", "steps": 4, "guidance_scale": 6.5,
                            "width": 64, "height": 64, "seed": 1234, "sampler": "DPM++ 2M", "scheduler": "Karras", "rng": rng, "preview_every": 0});
        let native = native_image(&server, &native).await;
        assert_eq!(decode_png(response["images"][0].as_str().expect("b64")), decode_png(&native), "randn_source {randn_source}");
    }
    server.stop().await;
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir").flatten() {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sd_model_checkpoint_switches_between_models_folder_checkpoints() {
    let models = tempfile::tempdir().expect("temp dir");
    for name in ["tiny-a", "tiny-b"] {
        copy_dir(std::path::Path::new(a1111_common::TINY_SD15), &models.path().join("Stable-diffusion").join(name));
    }
    let library = sd_worker_rbee::backend::model_library::ModelLibrary::unscanned(models.path(), Default::default()).expect("library");
    let server = TestServer::tiny_with_library(config(&[], 8), "tiny-a".into(), Some(library)).await;
    let (_, listed) = get(&server.url("/sdapi/v1/sd-models")).await;
    let titles: Vec<String> = listed.as_array().expect("list").iter().map(|m| m["title"].as_str().expect("title").to_string()).collect();
    assert_eq!(titles.len(), 2, "{listed}");
    let (title_a, title_b) = (titles[0].clone(), titles[1].clone());
    assert!(title_a.starts_with("tiny-a [") && title_b.starts_with("tiny-b ["), "{titles:?}");
    assert_eq!(listed[0]["sha256"].as_str().map(str::len), Some(64));
    assert_eq!(get(&server.url("/sdapi/v1/options")).await.1["sd_model_checkpoint"], json!(title_a));

    // Open WebUI's switch: the whole dict back with another title.
    let (_, mut options) = get(&server.url("/sdapi/v1/options")).await;
    options["sd_model_checkpoint"] = json!(title_b);
    assert_eq!(post(&server.url("/sdapi/v1/options"), &options).await, (200, Value::Null));
    assert_eq!(get(&server.url("/sdapi/v1/options")).await.1["sd_model_checkpoint"], json!(title_b));
    let body = json!({"prompt": "x", "steps": 1, "width": 64, "height": 64, "seed": 1});
    let (status, response) = post(&server.url("/sdapi/v1/txt2img"), &body).await;
    assert_eq!(status, 200, "{response}");
    assert_eq!(info(&response)["sd_model_name"], "tiny-b");
    assert!(info(&response)["infotexts"][0].as_str().expect("infotext").contains("Model: tiny-b"));
    assert_eq!(server.state.engine.status().model_id.as_deref(), Some(title_b.as_str()));

    // override_settings picks a checkpoint for one call (any alias); an unknown one is dropped.
    let mut once = body.clone();
    once["override_settings"] = json!({"sd_model_checkpoint": "tiny-a"});
    let (_, response) = post(&server.url("/sdapi/v1/txt2img"), &once).await;
    assert_eq!(info(&response)["sd_model_name"], "tiny-a");
    once["override_settings"] = json!({"sd_model_checkpoint": "not-there.safetensors"});
    let (status, response) = post(&server.url("/sdapi/v1/txt2img"), &once).await;
    assert_eq!((status, info(&response)["sd_model_name"].clone()), (200, json!("tiny-b")));
    let (status, refused) = post(&server.url("/sdapi/v1/options"), &json!({"sd_model_checkpoint": "not-there.safetensors"})).await;
    assert_eq!((status, refused["error"].clone()), (400, json!("RuntimeError")));
    assert_eq!(post(&server.url("/sdapi/v1/refresh-checkpoints"), &json!({})).await, (200, Value::Null));
    server.stop().await;
}

fn first_image(response: &Value) -> image::RgbImage {
    decode_png(response["images"][0].as_str().expect("b64"))
}

#[tokio::test(flavor = "multi_thread")]
async fn variation_seeds_mix_the_subseeds_noise() {
    let server = TestServer::tiny(config(&[], 8)).await;
    let url = server.url("/sdapi/v1/txt2img");
    // Euler is deterministic after the initial noise, so the noise alone decides the image.
    let body = |extra: Value| {
        let mut b = json!({"prompt": "a red house", "steps": 3, "width": 64, "height": 64, "seed": 42, "sampler_name": "Euler"});
        b.as_object_mut().expect("object").extend(extra.as_object().expect("object").clone());
        b
    };
    let (_, plain) = post(&url, &body(json!({}))).await;
    let (_, zero) = post(&url, &body(json!({"subseed": 7, "subseed_strength": 0.0}))).await;
    assert_eq!(first_image(&plain), first_image(&zero), "strength 0 is the seed's image");
    let (_, seven) = post(&url, &body(json!({"seed": 7}))).await;
    let (status, full) = post(&url, &body(json!({"subseed": 7, "subseed_strength": 1.0, "batch_size": 2}))).await;
    assert_eq!(status, 200, "{full}");
    assert_eq!(first_image(&full), first_image(&seven), "strength 1 is the subseed's image");
    let parsed = info(&full);
    assert_eq!((parsed["all_seeds"].clone(), parsed["all_subseeds"].clone()), (json!([42, 42]), json!([7, 8])));
    let infotext = parsed["infotexts"][1].as_str().expect("infotext");
    assert!(infotext.contains("Seed: 42, Size: 64x64") && infotext.contains("Variation seed: 8, Variation seed strength: 1.0"), "{infotext}");
    let (_, half) = post(&url, &body(json!({"subseed": 7, "subseed_strength": 0.5}))).await;
    assert_ne!(first_image(&half), first_image(&plain));
    assert_ne!(first_image(&half), first_image(&seven));
    let (status, resized) = post(&url, &body(json!({"seed_resize_from_w": 32, "seed_resize_from_h": 48}))).await;
    assert_eq!(status, 200, "{resized}");
    assert!(info(&resized)["infotexts"][0].as_str().expect("infotext").contains("Seed resize from: 32x48"));
    assert_ne!(first_image(&resized), first_image(&plain));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hires_fix_makes_a_larger_image_deterministically() {
    let server = TestServer::tiny(config(&[], 8)).await;
    let url = server.url("/sdapi/v1/txt2img");
    let body = json!({"prompt": "a lighthouse", "steps": 3, "width": 64, "height": 64, "seed": 5, "enable_hr": true, "hr_scale": 2.0,
                      "denoising_strength": 0.6, "hr_second_pass_steps": 2});
    let (status, first) = post(&url, &body).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first_image(&first).dimensions(), (128, 128));
    let (_, again) = post(&url, &body).await;
    assert_eq!(first_image(&first), first_image(&again));
    let parsed = info(&first);
    assert_eq!((parsed["width"].clone(), parsed["height"].clone()), (json!(64), json!(64)));
    assert_eq!(parsed["extra_generation_params"]["Hires upscale"], json!(2.0));
    let infotext = parsed["infotexts"][0].as_str().expect("infotext");
    assert!(
        infotext.contains("Seed: 5, Size: 64x64") && infotext.contains("Denoising strength: 0.6, Hires upscale: 2.0, Hires steps: 2, Hires upscaler: Latent, Version: "),
        "{infotext}"
    );
    let (_, png_info) = post(&server.url("/sdapi/v1/png-info"), &json!({"image": first["images"][0]})).await;
    assert_eq!(png_info["parameters"]["Hires upscaler"], json!("Latent"));

    // A pixel upscaler (decode, Lanczos, encode) and hr_resize_x with the aspect kept.
    let pixel = json!({"prompt": "a lighthouse", "steps": 2, "width": 64, "height": 64, "seed": 5, "enable_hr": true, "hr_upscaler": "R-ESRGAN 4x+",
                       "hr_resize_x": 96, "denoising_strength": 0.5});
    let (status, resized) = post(&url, &pixel).await;
    assert_eq!(status, 200, "{resized}");
    assert_eq!(first_image(&resized).dimensions(), (96, 96));
    let infotext = info(&resized)["infotexts"][0].as_str().expect("infotext").to_string();
    assert!(infotext.contains("Hires resize: 96x0, Hires upscaler: R-ESRGAN 4x+"), "{infotext}");
    // Every latent mode runs.
    for mode in ["Latent (antialiased)", "Latent (bicubic)", "Latent (bicubic antialiased)", "Latent (nearest)", "Latent (nearest-exact)", "Nearest"] {
        let (status, r) = post(&url, &json!({"prompt": "x", "steps": 1, "width": 64, "height": 64, "seed": 1, "enable_hr": true, "hr_scale": 1.5, "hr_upscaler": mode})).await;
        assert_eq!(status, 200, "{mode}: {r}");
        assert_eq!(first_image(&r).dimensions(), (96, 96), "{mode}");
    }
    let (status, bogus) = post(&url, &json!({"prompt": "x", "steps": 1, "enable_hr": true, "hr_upscaler": "Bogus"})).await;
    assert_eq!((status, bogus["errors"].clone()), (400, json!("could not find upscaler named Bogus")), "A1111's body, a client-error status");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn interrupt_returns_the_image_in_progress() {
    let server = TestServer::tiny(config(&[], 8)).await;
    let url = server.url("/sdapi/v1/txt2img");
    let call = tokio::spawn(async move { post(&url, &json!({"prompt": "a boat", "steps": 150, "width": 64, "height": 64, "seed": 9, "batch_size": 2})).await });
    let deadline = tokio::time::Instant::now() + TEST_TIMEOUT;
    loop {
        let (_, p) = get(&server.url("/sdapi/v1/progress?skip_current_image=true")).await;
        let step = p["state"]["sampling_step"].as_i64().unwrap_or(0);
        if step > 0 {
            assert!(step < 150, "the first image finished before the interrupt: {p}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no step: {p}");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(post(&server.url("/sdapi/v1/interrupt"), &json!({})).await, (200, json!({})));
    let (status, body) = tokio::time::timeout(TEST_TIMEOUT, call).await.expect("ends").expect("join");
    assert_eq!(status, 200, "{body}");
    let images = body["images"].as_array().expect("images");
    assert_eq!(images.len(), 1, "the interrupted image, and no second one");
    assert_eq!(first_image(&body).dimensions(), (64, 64));
    assert!(info(&body)["infotexts"][0].as_str().expect("infotext").contains("Seed: 9"));
    server.stop().await;
}
