//! The native job API on a models folder with the real tiny model: `model` switches between the
//! folder's checkpoints (any A1111 name), an unknown name is a 400 naming `model`, and prompt
//! embeddings from `embeddings/` reach every face through the prompt.

mod a1111_common;

use a1111_common::{config, get, info, post, TestServer, TEST_TIMEOUT};
use candle_core::{Device, Tensor};
use serde_json::{json, Value};

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

/// Run a native job to the end and return the finished job.
async fn native_job(server: &TestServer, body: &Value) -> Value {
    let (status, created) = post(&server.url("/v1/jobs"), body).await;
    assert_eq!(status, 200, "{created}");
    let job_url = server.url(&format!("/v1/jobs/{}", created["job_id"].as_str().expect("job id")));
    let deadline = tokio::time::Instant::now() + TEST_TIMEOUT;
    loop {
        let (_, job) = get(&job_url).await;
        if job["status"] == "completed" {
            return job;
        }
        assert!(job["status"] == "queued" || job["status"] == "running", "{job}");
        assert!(tokio::time::Instant::now() < deadline, "job never finished: {job}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn native_model_switches_through_the_models_folder_and_embeddings_apply() {
    let models = tempfile::tempdir().expect("temp dir");
    for name in ["tiny-a", "tiny-b"] {
        copy_dir(std::path::Path::new(a1111_common::TINY_SD15), &models.path().join("Stable-diffusion").join(name));
    }
    let embeddings = models.path().join("embeddings");
    std::fs::create_dir_all(&embeddings).expect("mkdir");
    let vectors = (Tensor::arange(0f32, 64.0, &Device::Cpu).expect("arange").reshape((2, 32)).expect("reshape") * 0.02).expect("scale");
    candle_core::safetensors::save(&[("emb_params".to_string(), vectors)].into(), embeddings.join("tiword.safetensors")).expect("write");
    let library = sd_worker_rbee::backend::model_library::ModelLibrary::unscanned(models.path(), Default::default()).expect("library");
    let server = TestServer::tiny_with_library(config(&[], 8), "tiny-a".into(), Some(library.clone())).await;
    let title_b = library.checkpoints().iter().find(|c| c.title.starts_with("tiny-b")).expect("tiny-b listed").title.clone();

    let body = |model: &str| json!({"operation": "image_generation", "model": model, "prompt": "a photo of a cat", "steps": 2,
                                    "width": 64, "height": 64, "seed": 5, "preview_every": 0});
    let job = native_job(&server, &body("tiny-b")).await;
    let infotext = job["images"][0]["infotext"].as_str().expect("infotext");
    assert!(infotext.contains("Model: tiny-b"), "{infotext}");
    assert_eq!(server.state.engine.status().model_id.as_deref(), Some(title_b.as_str()));
    // The configured model by its own name switches back.
    let job = native_job(&server, &body("tiny-a")).await;
    assert!(job["images"][0]["infotext"].as_str().expect("infotext").contains("Model: tiny-a"));

    for unknown in ["no-such-model", "../tiny-b"] {
        let (status, error) = post(&server.url("/v1/jobs"), &body(unknown)).await;
        assert_eq!((status, error["error"]["field"].clone()), (400, json!("model")), "{error}");
    }

    // An embedding named in the prompt, through the A1111 face.
    let hash = library.lookup_embedding("tiword").expect("tiword").hash.clone();
    let a1111 = json!({"prompt": "a photo of a <tiword>", "steps": 2, "width": 64, "height": 64, "seed": 5});
    let (status, response) = post(&server.url("/sdapi/v1/txt2img"), &a1111).await;
    assert_eq!(status, 200, "{response}");
    let infotext = info(&response)["infotexts"][0].as_str().expect("infotext").to_string();
    assert!(infotext.contains(&format!("TI hashes: \"tiword: {hash}\"")), "{infotext}");
    server.stop().await;
}
