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
