//! Shared pieces of the server integration tests: a real server on an ephemeral port, a small
//! SSE reader, and a stand-in runner that behaves like the pipeline (events and real PNGs).
#![allow(dead_code)] // each test binary uses a different subset

use std::io::Cursor;
use std::time::Duration;

use base64::Engine as _;
use sd_worker_rbee::backend::generation_engine::{GenerationEngine, JobContext, JobRunner, RunError};
use sd_worker_rbee::backend::image_io::{resize_mask, resize_rgb, ResizeMode};
use sd_worker_rbee::backend::models::hub::HubOptions;
use sd_worker_rbee::backend::pipeline::{load_runner, LoadOptions, SdRunner};
use sd_worker_rbee::backend::request::{GeneratedImage, JobEvent, OutputFormat, PreviewImage, PreviewPolicy};
use sd_worker_rbee::config::Config;
use sd_worker_rbee::http::AppState;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long any single wait in a test may take before it fails instead of hanging.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The tiny SD 1.5 pipeline in the fixtures (64x64, random weights): a real model that runs a
/// job in well under a second.
pub const TINY_SD15: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tiny-sd15");

/// Load the tiny model as the binary loads any model.
pub fn load_tiny() -> Result<SdRunner, String> {
    let hub = HubOptions { cache_dir: std::env::temp_dir().join("sd-worker-rbee-tests-hf"), endpoint: None };
    load_runner(&LoadOptions::new(TINY_SD15, hub, candle_core::Device::Cpu), None)
}

/// Stands in for the SD pipeline where a test needs control over timing or wants to see exactly
/// what reached the runner: reports steps and previews, then "paints" each image: the init image
/// when there is one (resized like the pipeline does, masked area painted red), else a gradient.
pub struct PaintingRunner {
    pub step_delay: Duration,
}

impl PaintingRunner {
    fn paint(ctx: &JobContext<'_>) -> image::RgbImage {
        let req = ctx.request();
        let mut canvas = match &req.init_image {
            Some(init) => {
                let resized = resize_rgb(&init.image, req.width, req.height).expect("resize init image");
                image::RgbImage::from_raw(resized.width, resized.height, resized.pixels).expect("size matches pixels")
            }
            None => image::RgbImage::from_fn(req.width, req.height, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 128])),
        };
        if let Some(spec) = &req.mask {
            let mask = resize_mask(&spec.mask, req.width, req.height, ResizeMode::JustResize).expect("resize mask");
            for (x, y, pixel) in canvas.enumerate_pixels_mut() {
                if mask.pixels[(y * mask.width + x) as usize] > 127 {
                    *pixel = image::Rgb([255, 0, 0]);
                }
            }
        }
        canvas
    }

    fn encode(image: &image::RgbImage, format: OutputFormat) -> Vec<u8> {
        let mut bytes = Vec::new();
        let format = match format {
            OutputFormat::Png => image::ImageFormat::Png,
            OutputFormat::Jpeg { .. } => image::ImageFormat::Jpeg,
            OutputFormat::Webp { .. } => image::ImageFormat::WebP,
        };
        image.write_to(&mut Cursor::new(&mut bytes), format).expect("encode");
        bytes
    }
}

impl JobRunner for PaintingRunner {
    fn model_id(&self) -> String {
        "painting-runner".into()
    }

    fn run(&mut self, ctx: &JobContext<'_>) -> Result<(), RunError> {
        let req = ctx.request().clone();
        let seed = req.seed.unwrap_or(1234);
        let total = req.steps * req.num_images;
        ctx.emit(JobEvent::Started { seed, total_steps: total });
        let canvas = Self::paint(ctx);
        for step in 1..=total {
            ctx.check_cancelled()?;
            std::thread::sleep(self.step_delay);
            ctx.emit(JobEvent::Step { step, total });
            if let PreviewPolicy::EveryNSteps(n) = req.preview {
                if step % n == 0 {
                    let png = Self::encode(&canvas, OutputFormat::Png);
                    ctx.emit(JobEvent::Preview(PreviewImage { step, total, png, width: req.width, height: req.height }));
                }
            }
        }
        for index in 0..req.num_images {
            ctx.emit(JobEvent::Image(GeneratedImage {
                index,
                bytes: Self::encode(&canvas, req.output_format),
                format: req.output_format,
                width: canvas.width(),
                height: canvas.height(),
                seed: seed + u64::from(index),
                infotext: format!("{}\nSteps: {}, Seed: {}", req.prompt, req.steps, seed + u64::from(index)),
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
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestServer {
    /// Serve with the given engine loader (runs on the engine thread, like the real model load).
    pub async fn start_with<R, L>(config: Config, load: L) -> TestServer
    where
        R: JobRunner,
        L: FnOnce() -> Result<R, String> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind an ephemeral port");
        let url = format!("http://{}", listener.local_addr().expect("bound address"));
        let engine = GenerationEngine::start_with(sd_worker_rbee::server::engine_options(&config), load);
        let state = AppState::new(config, engine);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(sd_worker_rbee::server::serve_until(listener, state.clone(), async move {
            let _ = stopped.await;
        }));
        TestServer { url, state, stop: Some(stop), task: Some(task) }
    }

    /// Serve with the stand-in runner taking `step_delay` per step.
    pub async fn start(config: Config, step_delay: Duration) -> TestServer {
        Self::start_with(config, move || Ok(PaintingRunner { step_delay })).await
    }

    /// Serve the tiny SD 1.5 fixture model (`config.model` should be [`TINY_SD15`]).
    pub async fn start_tiny(config: Config) -> TestServer {
        Self::start_with(config, load_tiny).await
    }

    /// Wait until the model is loaded (`/v1/ready` says ready).
    pub async fn wait_ready(&self) {
        let client = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + TEST_TIMEOUT;
        loop {
            let ready = client.get(format!("{}/v1/ready", self.url)).send().await.expect("ready answers");
            if ready.status().is_success() {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "server never became ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Trigger the graceful shutdown and wait for it.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(TEST_TIMEOUT, task).await.expect("server stops in time").expect("join").expect("clean stop");
        }
    }
}

/// A config serving the tiny model, with the given API keys.
pub fn tiny_config(api_keys: &[&str]) -> Config {
    let mut config = config(api_keys);
    config.model = TINY_SD15.into();
    config
}

/// A test config for the stand-in runner: defaults, with the given API keys.
pub fn config(api_keys: &[&str]) -> Config {
    let mut config = Config::defaults();
    config.model = "tiny-test-model".into();
    config.api_keys = api_keys.iter().map(|k| k.to_string()).collect();
    config
}

/// One SSE event: its name (if any) and data.
#[derive(Debug, Clone, PartialEq)]
pub struct SseFrame {
    pub event: Option<String>,
    pub data: String,
}

impl SseFrame {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("frame data is not JSON ({e}): {}", self.data))
    }

    pub fn is_final_marker(&self) -> bool {
        self.event.is_none() && (self.data == "[DONE]" || self.data == "[CANCELLED]" || self.data.starts_with("[ERROR]"))
    }
}

/// Reads an SSE response frame by frame, counting keep-alive comments.
pub struct SseReader {
    response: reqwest::Response,
    buffer: String,
    pub comments: usize,
}

impl SseReader {
    pub async fn open(url: &str, token: Option<&str>) -> SseReader {
        let mut request = reqwest::Client::new().get(url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("stream request");
        assert_eq!(response.status(), 200, "stream status");
        let content_type = response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        assert!(content_type.starts_with("text/event-stream"), "content-type {content_type}");
        SseReader { response, buffer: String::new(), comments: 0 }
    }

    /// The next event, or `None` when the stream ended.
    pub async fn next(&mut self) -> Option<SseFrame> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut frame = SseFrame { event: None, data: String::new() };
                let mut has_data = false;
                for line in block.lines() {
                    if line.starts_with(':') {
                        self.comments += 1;
                    } else if let Some(name) = line.strip_prefix("event:") {
                        frame.event = Some(name.trim_start().to_string());
                    } else if let Some(data) = line.strip_prefix("data:") {
                        if has_data {
                            frame.data.push('\n');
                        }
                        frame.data.push_str(data.strip_prefix(' ').unwrap_or(data));
                        has_data = true;
                    }
                }
                if has_data {
                    return Some(frame);
                }
                continue;
            }
            let chunk = tokio::time::timeout(TEST_TIMEOUT, self.response.chunk()).await.expect("stream stalled").expect("stream read");
            match chunk {
                Some(bytes) => self.buffer.push_str(&String::from_utf8_lossy(&bytes)),
                None => return None,
            }
        }
    }

    /// Every event up to and including the final marker; the stream must then end.
    pub async fn until_final(&mut self) -> Vec<SseFrame> {
        let mut frames = Vec::new();
        while let Some(frame) = self.next().await {
            let last = frame.is_final_marker();
            frames.push(frame);
            if last {
                assert!(self.next().await.is_none(), "nothing may follow the final marker");
                return frames;
            }
        }
        panic!("stream ended without a final marker: {frames:?}");
    }
}

/// Event names in order (final markers shown as their data).
pub fn names(frames: &[SseFrame]) -> Vec<String> {
    frames.iter().map(|f| f.event.clone().unwrap_or_else(|| f.data.clone())).collect()
}

pub fn base64_png(image: &image::RgbImage) -> String {
    let mut bytes = Vec::new();
    image.write_to(&mut Cursor::new(&mut bytes), image::ImageFormat::Png).expect("encode");
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub fn decode_base64_image(text: &str) -> image::RgbImage {
    let bytes = base64::engine::general_purpose::STANDARD.decode(text).expect("base64");
    image::load_from_memory(&bytes).expect("decodable image").to_rgb8()
}

/// POST a JSON job and return the response.
pub async fn post_job(server_url: &str, body: &serde_json::Value, token: Option<&str>) -> reqwest::Response {
    let mut request = reqwest::Client::new().post(format!("{server_url}/v1/jobs")).json(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("POST /v1/jobs")
}

/// POST a job that must be accepted; returns (job_id, absolute stream url).
pub async fn submit(server_url: &str, body: &serde_json::Value) -> (String, String) {
    let response = post_job(server_url, body, None).await;
    let status = response.status();
    let json: serde_json::Value = response.json().await.expect("JSON reply");
    assert_eq!(status, 200, "job refused: {json}");
    let job_id = json["job_id"].as_str().expect("job_id").to_string();
    let sse_url = json["sse_url"].as_str().expect("sse_url").to_string();
    assert_eq!(sse_url, format!("/v1/jobs/{job_id}/stream"));
    (job_id, format!("{server_url}{sse_url}"))
}
