//! Shared pieces of the A1111 face tests: a real server on an ephemeral port, and a stand-in
//! runner that records every engine request and answers like the pipeline (steps, previews,
//! real PNGs with an A1111 infotext), so wire shapes and translation can be checked without
//! model weights. Tests with the real tiny model live in `a1111_tiny_model.rs`.
#![allow(dead_code)] // each test binary uses a different subset

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use candle_core::Device;
use sd_worker_rbee::backend::generation_engine::{GenerationEngine, JobContext, JobRunner, ModelInfo, RunError};
use sd_worker_rbee::backend::image_io::encode_image;
use sd_worker_rbee::backend::model_library::ModelLibrary;
use sd_worker_rbee::backend::models::hub::HubOptions;
use sd_worker_rbee::backend::pipeline::{load_runner, LoadOptions};
use sd_worker_rbee::backend::infotext::{format_infotext, rng_label, InfotextFields};
use sd_worker_rbee::backend::request::{GeneratedImage, GenerationRequest, JobEvent, PreviewImage, PreviewPolicy, RgbImage};
use sd_worker_rbee::config::Config;
use sd_worker_rbee::http::AppState;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const TEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The tiny SD 1.5 pipeline in the fixtures (64x64, random weights).
pub const TINY_SD15: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tiny-sd15");

/// The fake model's short hash (its A1111 title is `fake-sd [0123456789]`).
pub const FAKE_HASH: &str = "0123456789";
pub const FAKE_TITLE: &str = "fake-sd [0123456789]";

/// Every request the stand-in engine ran, in order.
pub type Recorded = Arc<Mutex<Vec<GenerationRequest>>>;

/// Stands in for the SD pipeline: per image, `steps` steps of `step_delay`, a preview every N
/// steps when asked, then a PNG whose colour depends on the seed (and the init image when there
/// is one), carrying an infotext written by the real formatter.
pub struct FakeSd {
    pub step_delay: Duration,
    pub size_multiple: u32,
    pub recorded: Recorded,
}

impl FakeSd {
    fn paint(req: &GenerationRequest, seed: u64) -> RgbImage {
        let (w, h) = (req.width, req.height);
        let mut pixels = Vec::with_capacity((w * h * 3) as usize);
        for y in 0..h {
            for x in 0..w {
                let base = match &req.init_image {
                    Some(init) if init.image.width == w && init.image.height == h => {
                        let i = ((y * w + x) * 3) as usize;
                        [init.image.pixels[i], init.image.pixels[i + 1], init.image.pixels[i + 2]]
                    }
                    _ => [(seed % 251) as u8, (x % 256) as u8, (y % 256) as u8],
                };
                // An "Only masked" mask has the init image's size: the fake ignores it.
                let masked = req.mask.as_ref().is_some_and(|m| (m.mask.width, m.mask.height) == (w, h) && m.mask.pixels[(y * w + x) as usize] > 127);
                pixels.extend_from_slice(&if masked { [255, 0, (seed % 256) as u8] } else { base });
            }
        }
        RgbImage { width: w, height: h, pixels }
    }

    fn infotext(req: &GenerationRequest, seed: u64) -> String {
        format_infotext(&InfotextFields {
            prompt: req.prompt.clone(),
            negative_prompt: req.negative_prompt.clone(),
            steps: req.steps,
            sampler_name: req.sampler.a1111_name().to_string(),
            schedule_label: req.schedule.label().to_string(),
            cfg_scale: req.cfg_scale,
            seed,
            width: req.width,
            height: req.height,
            model_hash: Some(FAKE_HASH.to_string()),
            model_name: Some("fake-sd".into()),
            clip_skip: req.clip_skip,
            denoising_strength: req.init_image.as_ref().map(|i| i.strength),
            rng_label: rng_label(req.rng),
            variation: None,
            extra: Vec::new(),
            version: Some("sd-worker-rbee test".into()),
        })
    }
}

impl JobRunner for FakeSd {
    fn model_id(&self) -> String {
        "fake-sd".into()
    }

    fn model_info(&self) -> Option<ModelInfo> {
        Some(ModelInfo {
            id: self.model_id(),
            name: "fake-sd".into(),
            hash: Some(FAKE_HASH.into()),
            family: "sd",
            native_size: 64,
            size_multiple: self.size_multiple,
            default_steps: 20,
            default_cfg_scale: 7.0,
            inpainting: false,
        })
    }

    fn run(&mut self, ctx: &JobContext<'_>) -> Result<(), RunError> {
        let req = ctx.request().clone();
        self.recorded.lock().expect("record").push(req.clone());
        let seed = req.seed.unwrap_or(1234);
        let total = req.steps * req.num_images;
        ctx.emit(JobEvent::Started { seed, total_steps: total });
        for index in 0..req.num_images {
            let image_seed = seed.wrapping_add(u64::from(index));
            let image = Self::paint(&req, image_seed);
            for step in 1..=req.steps {
                // An interrupt finishes the image in hand (as the real engine does).
                if ctx.is_interrupted() {
                    break;
                }
                ctx.check_cancelled()?;
                std::thread::sleep(self.step_delay);
                let done = index * req.steps + step;
                ctx.emit(JobEvent::Step { step: done, total });
                if let PreviewPolicy::EveryNSteps(n) = req.preview {
                    if step % n == 0 {
                        let png = encode_image(&image, sd_worker_rbee::backend::request::OutputFormat::Png, None).expect("png");
                        ctx.emit(JobEvent::Preview(PreviewImage { step: done, total, png, width: req.width, height: req.height }));
                    }
                }
            }
            ctx.check_cancelled()?;
            let infotext = Self::infotext(&req, image_seed);
            let bytes = encode_image(&image, req.output_format, Some(&infotext)).expect("encode");
            ctx.emit(JobEvent::Image(GeneratedImage {
                index,
                bytes,
                format: req.output_format,
                width: req.width,
                height: req.height,
                seed: image_seed,
                infotext,
                warnings: Vec::new(),
            }));
            if ctx.is_interrupted() {
                break;
            }
        }
        Ok(())
    }
}

/// A running server on 127.0.0.1:<ephemeral>.
pub struct TestServer {
    pub url: String,
    pub state: AppState,
    pub recorded: Recorded,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestServer {
    pub async fn start_with<R, L>(config: Config, recorded: Recorded, load: L) -> TestServer
    where
        R: JobRunner,
        L: FnOnce() -> Result<R, String> + Send + 'static,
    {
        Self::start_with_library(config, recorded, None, load).await
    }

    pub async fn start_with_library<R, L>(config: Config, recorded: Recorded, library: Option<Arc<ModelLibrary>>, load: L) -> TestServer
    where
        R: JobRunner,
        L: FnOnce() -> Result<R, String> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind an ephemeral port");
        let url = format!("http://{}", listener.local_addr().expect("bound address"));
        let engine = GenerationEngine::start(config.queue_capacity as usize, load);
        let state = AppState::new(config, engine).with_library(library);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(sd_worker_rbee::server::serve_until(listener, state.clone(), async move {
            let _ = stopped.await;
        }));
        TestServer { url, state, recorded, stop: Some(stop), task: Some(task) }
    }

    /// Serve the stand-in engine; wait until it is loaded.
    pub async fn fake(config: Config, step_delay: Duration, size_multiple: u32) -> TestServer {
        let recorded = Recorded::default();
        let record = recorded.clone();
        let server = Self::start_with(config, recorded, move || Ok(FakeSd { step_delay, size_multiple, recorded: record })).await;
        server.wait_loaded().await;
        server
    }

    /// Serve the real pipeline on the tiny SD 1.5 fixture (64×64 native, sizes in multiples of 4).
    pub async fn tiny(config: Config) -> TestServer {
        Self::tiny_with_library(config, TINY_SD15.to_string(), None).await
    }

    /// The real pipeline with a models folder (`model` may name one of its checkpoints).
    pub async fn tiny_with_library(config: Config, model: String, library: Option<Arc<ModelLibrary>>) -> TestServer {
        let hub = HubOptions { cache_dir: std::env::temp_dir().join("sd-worker-rbee-no-hub"), endpoint: Some("http://127.0.0.1:9".into()) };
        let mut options = LoadOptions::new(model, hub, Device::Cpu);
        options.max_resident_models = 2;
        let engine_library = library.clone();
        let server = Self::start_with_library(config, Recorded::default(), library, move || {
            if let Some(library) = &engine_library {
                library.refresh().map_err(|e| e.to_string())?;
            }
            load_runner(&options, engine_library)
        })
        .await;
        server.wait_loaded().await;
        server
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    pub fn requests(&self) -> Vec<GenerationRequest> {
        self.recorded.lock().expect("record").clone()
    }

    /// Wait until the engine has its model (no HTTP: works with auth on).
    pub async fn wait_loaded(&self) {
        let deadline = tokio::time::Instant::now() + TEST_TIMEOUT;
        while self.state.engine.status().model_info.is_none() {
            assert!(tokio::time::Instant::now() < deadline, "the model never loaded: {:?}", self.state.engine.status().state);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Poll `/sdapi/v1/progress` until A1111's idle condition holds (webuiapi's `util_wait_for_ready`).
    pub async fn wait_idle(&self) {
        let client = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + TEST_TIMEOUT;
        loop {
            let p: Value = client.get(self.url("/sdapi/v1/progress")).send().await.expect("progress").json().await.expect("json");
            if p["progress"] == 0.0 && p["state"]["job_count"] == 0 {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "never idle: {p}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(TEST_TIMEOUT, task).await.expect("server stops in time").expect("join").expect("clean stop");
        }
    }
}

/// A test config: defaults, with the given API keys and queue capacity.
pub fn config(api_keys: &[&str], queue_capacity: u32) -> Config {
    let mut config = Config::defaults();
    config.model = "fake-sd".into();
    config.api_keys = api_keys.iter().map(|k| k.to_string()).collect();
    config.queue_capacity = queue_capacity;
    config
}

/// POST JSON, returning status and body JSON.
pub async fn post(url: &str, body: &Value) -> (u16, Value) {
    let response = reqwest::Client::new().post(url).json(body).send().await.expect("request");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}")))
}

pub async fn get(url: &str) -> (u16, Value) {
    let response = reqwest::Client::new().get(url).send().await.expect("request");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}")))
}

/// The response's `info`, parsed as clients `json.loads` it.
pub fn info(response: &Value) -> Value {
    serde_json::from_str(response["info"].as_str().expect("info is a string")).expect("info is JSON")
}

pub fn b64_decode(text: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(text).expect("base64")
}

/// A base64 PNG of a solid colour, optionally with alpha.
pub fn png_b64(width: u32, height: u32, rgba: [u8; 4]) -> String {
    let image = image::RgbaImage::from_pixel(width, height, image::Rgba(rgba));
    let mut bytes = Vec::new();
    image.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png).expect("encode");
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Decode a returned image.
pub fn decode_png(b64: &str) -> image::RgbImage {
    image::load_from_memory(&b64_decode(b64)).expect("an image").to_rgb8()
}
