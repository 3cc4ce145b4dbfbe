//! Shared pieces of the OpenAI-face integration tests: a real server on an ephemeral port, a
//! stand-in runner with injectable failures, multipart bodies, and SSE frame parsing.
#![allow(dead_code)] // each test binary uses a different subset

use std::io::Cursor;
use std::time::Duration;

use base64::Engine as _;
use sd_worker_rbee::backend::generation_engine::{GenerationEngine, JobContext, JobRunner, ModelInfo, RunError};
use sd_worker_rbee::backend::models::hub::HubOptions;
use sd_worker_rbee::backend::pipeline::{load_runner, LoadOptions};
use sd_worker_rbee::backend::request::{GeneratedImage, GenerationRequest, JobError, JobEvent, OutputFormat, PreviewImage, PreviewPolicy};
use sd_worker_rbee::config::Config;
use sd_worker_rbee::http::AppState;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// Longest any single wait in a test may take before it fails instead of hanging.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(60);

/// What the stand-in model reports: 64 px native, 8 px grid, 4 steps.
pub fn stand_in_model_info() -> ModelInfo {
    ModelInfo {
        id: "stand-in".into(),
        name: "stand-in".into(),
        hash: None,
        family: "sd",
        native_size: 64,
        size_multiple: 8,
        default_steps: 4,
        default_cfg_scale: 7.5,
        inpainting: false,
    }
}

/// Stands in for the SD pipeline with the engine's event contract: steps, previews at the
/// requested cadence (never at the last step, like the pipeline), then one real image per seed
/// whose colour depends on the seed, the prompt and the init image. Prompts starting with
/// `fail` fail after the first step; `slow` makes each step take 100 ms.
pub struct StandInRunner {
    /// The requests it ran, for tests that check the translation.
    pub seen: std::sync::Arc<std::sync::Mutex<Vec<GenerationRequest>>>,
}

impl StandInRunner {
    fn paint(req: &GenerationRequest, seed: u64) -> image::RgbImage {
        let tint = req.prompt.bytes().fold(seed, |acc, b| acc.wrapping_mul(31).wrapping_add(u64::from(b)));
        let [r, g, b] = [(tint % 251) as u8, (tint / 251 % 251) as u8, (tint / 63001 % 251) as u8];
        let mut canvas = image::RgbImage::from_fn(req.width, req.height, |x, y| image::Rgb([r ^ x as u8, g ^ y as u8, b]));
        if let Some(init) = &req.init_image {
            for (x, y, pixel) in canvas.enumerate_pixels_mut() {
                let at = ((y * init.image.width + x) * 3) as usize;
                let keep = req.mask.as_ref().is_none_or(|m| m.mask.pixels[(y * m.mask.width + x) as usize] < 128);
                if keep && at + 2 < init.image.pixels.len() {
                    *pixel = image::Rgb([init.image.pixels[at], init.image.pixels[at + 1], init.image.pixels[at + 2]]);
                }
            }
        }
        canvas
    }
}

pub fn encode(image: &image::RgbImage, format: OutputFormat) -> Vec<u8> {
    let mut bytes = Vec::new();
    let format = match format {
        OutputFormat::Png => image::ImageFormat::Png,
        OutputFormat::Jpeg { .. } => image::ImageFormat::Jpeg,
        OutputFormat::Webp { .. } => image::ImageFormat::WebP,
    };
    image.write_to(&mut Cursor::new(&mut bytes), format).expect("encode");
    bytes
}

impl JobRunner for StandInRunner {
    fn model_id(&self) -> String {
        "stand-in".into()
    }

    fn model_info(&self) -> Option<ModelInfo> {
        Some(stand_in_model_info())
    }

    fn run(&mut self, ctx: &JobContext<'_>) -> Result<(), RunError> {
        let req = ctx.request().clone();
        self.seen.lock().expect("not poisoned").push(req.clone());
        let seed = req.seed.unwrap_or(1234);
        let total = req.steps * req.num_images;
        ctx.emit(JobEvent::Started { seed, total_steps: total });
        let step_delay = if req.prompt.starts_with("slow") { Duration::from_millis(100) } else { Duration::from_millis(2) };
        for index in 0..req.num_images {
            let image_seed = seed + u64::from(index);
            let canvas = Self::paint(&req, image_seed);
            for done in 1..=req.steps {
                ctx.check_cancelled()?;
                std::thread::sleep(step_delay);
                let step = index * req.steps + done;
                ctx.emit(JobEvent::Step { step, total });
                if req.prompt.starts_with("fail") {
                    return Err(RunError::Failed(JobError::Internal("injected failure after the first step".into())));
                }
                if let PreviewPolicy::EveryNSteps(n) = req.preview {
                    if done % n == 0 && done < req.steps {
                        let png = encode(&canvas, OutputFormat::Png);
                        ctx.emit(JobEvent::Preview(PreviewImage { step, total, png, width: req.width, height: req.height }));
                    }
                }
            }
            ctx.emit(JobEvent::Image(GeneratedImage {
                index,
                bytes: encode(&canvas, req.output_format),
                format: req.output_format,
                width: req.width,
                height: req.height,
                seed: image_seed,
                infotext: format!("{}\nSteps: {}, Seed: {image_seed}", req.prompt, req.steps),
                warnings: Vec::new(),
            }));
        }
        Ok(())
    }
}

/// A running server on 127.0.0.1:<ephemeral>.
pub struct TestServer {
    pub url: String,
    pub state: AppState,
    pub seen: std::sync::Arc<std::sync::Mutex<Vec<GenerationRequest>>>,
    stop: Option<oneshot::Sender<()>>,
}

/// The tiny SD 1.5 pipeline in the fixtures (64x64 native, random weights): a real model that
/// runs a job in well under a second.
pub const TINY_SD15: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tiny-sd15");

impl TestServer {
    /// Serve the stand-in runner with `config` (its port is replaced by the ephemeral one).
    pub async fn start(config: Config) -> TestServer {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let runner_seen = seen.clone();
        Self::start_with(config, seen, move || Ok(StandInRunner { seen: runner_seen })).await
    }

    /// Serve the tiny SD 1.5 fixture, loaded as the binary loads any model.
    pub async fn start_tiny() -> TestServer {
        let mut config = Config::defaults();
        config.model = TINY_SD15.to_string();
        let hub = HubOptions { cache_dir: std::env::temp_dir().join("sd-worker-rbee-openai-tests-hf"), endpoint: None };
        let options = LoadOptions::new(TINY_SD15, hub, candle_core::Device::Cpu);
        Self::start_with(config, Default::default(), move || load_runner(&options, None)).await
    }

    async fn start_with<R, L>(mut config: Config, seen: std::sync::Arc<std::sync::Mutex<Vec<GenerationRequest>>>, load: L) -> TestServer
    where
        R: JobRunner,
        L: FnOnce() -> Result<R, String> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind an ephemeral port");
        let address = listener.local_addr().expect("bound address");
        config.port = address.port();
        let engine = GenerationEngine::start(config.queue_capacity as usize, load);
        let state = AppState::new(config, engine);
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(sd_worker_rbee::http::serve(listener, state.clone(), async move {
            let _ = stopped.await;
        }));
        let server = TestServer { url: format!("http://{address}"), state, seen, stop: Some(stop) };
        server.wait_loaded().await;
        server
    }

    pub async fn start_default() -> TestServer {
        TestServer::start(Config::defaults()).await
    }

    async fn wait_loaded(&self) {
        let deadline = tokio::time::Instant::now() + TEST_TIMEOUT;
        while self.state.engine.status().model_info.is_none() {
            if let sd_worker_rbee::backend::generation_engine::EngineState::Error(message) = self.state.engine.status().state {
                panic!("the model failed to load: {message}");
            }
            assert!(tokio::time::Instant::now() < deadline, "the model never loaded");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// The last request the runner saw.
    pub fn last_request(&self) -> GenerationRequest {
        self.seen.lock().expect("not poisoned").last().cloned().expect("a request ran")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.state.engine.cancel_running();
    }
}

/// App state whose model takes `load_time` to load (the engine stays `loading` meanwhile).
pub fn unloaded_state(load_time: Duration) -> AppState {
    let engine = GenerationEngine::start(4, move || {
        std::thread::sleep(load_time);
        Ok(StandInRunner { seen: Default::default() })
    });
    AppState::new(Config::defaults(), engine)
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(TEST_TIMEOUT).build().expect("client")
}

pub fn b64decode(text: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(text).expect("valid base64")
}

/// Decode an image file and return its size.
pub fn image_size(bytes: &[u8]) -> (u32, u32) {
    let image = image::load_from_memory(bytes).expect("a decodable image");
    (image.width(), image.height())
}

pub fn png_bytes(image: &image::DynamicImage) -> Vec<u8> {
    let mut bytes = Vec::new();
    image.write_to(&mut Cursor::new(&mut bytes), image::ImageFormat::Png).expect("encode png");
    bytes
}

/// A `multipart/form-data` body: `(name, filename, bytes)` parts; text parts have no filename.
pub struct Multipart {
    boundary: String,
    body: Vec<u8>,
}

impl Multipart {
    pub fn new() -> Self {
        Multipart { boundary: "----sd-worker-test-boundary-7d1f".into(), body: Vec::new() }
    }

    pub fn text(mut self, name: &str, value: &str) -> Self {
        self.body.extend_from_slice(
            format!("--{}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n", self.boundary).as_bytes(),
        );
        self
    }

    /// A file part labelled `application/octet-stream`, as the SDK labels in-memory uploads.
    pub fn file(mut self, name: &str, filename: &str, bytes: &[u8]) -> Self {
        self.body.extend_from_slice(
            format!(
                "--{}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n",
                self.boundary
            )
            .as_bytes(),
        );
        self.body.extend_from_slice(bytes);
        self.body.extend_from_slice(b"\r\n");
        self
    }

    pub fn content_type(&self) -> String {
        format!("multipart/form-data; boundary={}", self.boundary)
    }

    pub fn finish(mut self) -> (String, Vec<u8>) {
        self.body.extend_from_slice(format!("--{}--\r\n", self.boundary).as_bytes());
        (self.content_type(), self.body)
    }
}

/// One SSE frame: its `event:` name (if any) and joined `data:` lines.
#[derive(Debug, Clone, PartialEq)]
pub struct SseFrame {
    pub event: Option<String>,
    pub data: String,
}

/// Split an SSE body into frames the way the OpenAI SDK does (comments skipped), and report
/// any `id:` line, which the SDK must never see.
pub fn sse_frames(body: &str) -> Vec<SseFrame> {
    let mut frames = Vec::new();
    let (mut event, mut data): (Option<String>, Vec<String>) = (None, Vec::new());
    for line in body.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        assert!(!line.starts_with("id:"), "SSE id lines break the OpenAI SDK: {line}");
        if line.is_empty() {
            if event.is_some() || !data.is_empty() {
                frames.push(SseFrame { event: event.take(), data: data.join("\n") });
                data.clear();
            }
        } else if let Some(name) = line.strip_prefix("event:") {
            event = Some(name.trim().to_string());
        } else if let Some(value) = line.strip_prefix("data:") {
            data.push(value.strip_prefix(' ').unwrap_or(value).to_string());
        }
    }
    frames
}
