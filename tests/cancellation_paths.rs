//! Cancellation through every path a client has: native `DELETE`, native SSE disconnect, OpenAI
//! stream disconnect, A1111 `/sdapi/v1/interrupt`. Each frees the engine within one step of the
//! cancel taking effect (two for disconnects, which the server only notices at its next write),
//! and a job cancelled while it waits in the queue never reaches the runner. (The step counts are
//! the proof; the wall-clock bounds on freeing the engine are loose so a loaded CI host cannot
//! make them flaky.) Also: a job that
//! panics, submitted through a face, ends with an error event and the next job runs normally.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use sd_worker_rbee::backend::generation_engine::{EngineState, GenerationEngine, JobContext, JobRunner, ModelInfo, RunError};
use sd_worker_rbee::backend::request::{GeneratedImage, JobEvent, OutputFormat};
use sd_worker_rbee::config::Config;
use sd_worker_rbee::http::AppState;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

const STEP: Duration = Duration::from_millis(40);
const TEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Every step any job ran: (prompt, step, when it ended).
type StepLog = Arc<Mutex<Vec<(String, u32, Instant)>>>;

/// Sleeps `STEP` per step and logs it; the prompt `panic` panics after its first step.
struct LoggingRunner {
    log: StepLog,
}

impl JobRunner for LoggingRunner {
    fn model_id(&self) -> String {
        "logging-runner".into()
    }

    fn model_info(&self) -> Option<ModelInfo> {
        Some(ModelInfo {
            id: "logging-runner".into(),
            name: "logging-runner".into(),
            hash: None,
            family: "sd",
            native_size: 64,
            size_multiple: 8,
            default_steps: 4,
            default_cfg_scale: 7.5,
            inpainting: false,
        })
    }

    fn run(&mut self, ctx: &JobContext<'_>) -> Result<(), RunError> {
        let req = ctx.request().clone();
        let total = req.steps * req.num_images;
        ctx.emit(JobEvent::Started { seed: req.seed.unwrap_or(1), total_steps: total });
        for step in 1..=total {
            // An interrupt ends sampling and keeps the image in hand, as the real engine does.
            if ctx.is_interrupted() {
                break;
            }
            ctx.check_cancelled()?;
            std::thread::sleep(STEP);
            self.log.lock().unwrap_or_else(|p| p.into_inner()).push((req.prompt.clone(), step, Instant::now()));
            ctx.emit(JobEvent::Step { step, total });
            if req.prompt == "panic" {
                panic!("injected fault in the runner");
            }
        }
        let mut bytes = Vec::new();
        image::RgbImage::new(req.width, req.height)
            .write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png)
            .expect("encode");
        for index in 0..req.num_images {
            ctx.emit(JobEvent::Image(GeneratedImage {
                index,
                bytes: bytes.clone(),
                format: OutputFormat::Png,
                width: req.width,
                height: req.height,
                seed: 1,
                infotext: req.prompt.clone(),
                warnings: Vec::new(),
            }));
        }
        Ok(())
    }
}

struct Server {
    url: String,
    state: AppState,
    log: StepLog,
    stop: Option<oneshot::Sender<()>>,
}

impl Server {
    async fn start() -> Server {
        let log = StepLog::default();
        let runner_log = log.clone();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let mut config = Config::defaults();
        config.model = "logging-runner".into();
        let engine = GenerationEngine::start(4, move || Ok(LoggingRunner { log: runner_log }));
        let state = AppState::new(config, engine);
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(sd_worker_rbee::server::serve_until(listener, state.clone(), async move {
            let _ = stopped.await;
        }));
        let server = Server { url, state, log, stop: Some(stop) };
        server.wait_until(|s| s.state.engine.status().state == EngineState::Idle, "the engine never loaded").await;
        server
    }

    fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    fn steps_of(&self, prompt: &str) -> Vec<Instant> {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).iter().filter(|(p, _, _)| p == prompt).map(|(_, _, at)| *at).collect()
    }

    async fn wait_until(&self, done: impl Fn(&Server) -> bool, what: &str) {
        let deadline = Instant::now() + TEST_TIMEOUT;
        while !done(self) {
            assert!(Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    async fn wait_for_steps(&self, prompt: &str, steps: usize) {
        self.wait_until(|s| s.steps_of(prompt).len() >= steps, &format!("{prompt} never ran {steps} steps")).await;
    }

    /// Wait until the engine is idle; returns when that was seen.
    async fn wait_idle(&self) -> Instant {
        self.wait_until(|s| s.state.engine.status().current.is_none(), "the engine stayed busy").await;
        Instant::now()
    }

    /// Steps of `prompt` that ended after `since`.
    fn steps_after(&self, prompt: &str, since: Instant) -> usize {
        self.steps_of(prompt).iter().filter(|at| **at > since).count()
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn native(prompt: &str, steps: u32) -> Value {
    json!({"operation": "image_generation", "hive_id": "localhost", "model": "logging-runner", "prompt": prompt,
           "steps": steps, "width": 64, "height": 64})
}

async fn submit(server: &Server, prompt: &str, steps: u32) -> (String, String) {
    let reply = reqwest::Client::new().post(server.at("/v1/jobs")).json(&native(prompt, steps)).send().await.expect("POST");
    assert_eq!(reply.status(), 200);
    let body: Value = reply.json().await.expect("json");
    (body["job_id"].as_str().expect("id").to_string(), server.at(body["sse_url"].as_str().expect("sse_url")))
}

async fn job_status(server: &Server, id: &str) -> String {
    let body: Value = reqwest::get(server.at(&format!("/v1/jobs/{id}"))).await.expect("GET").json().await.expect("json");
    body["status"].as_str().expect("status").to_string()
}

async fn wait_status(server: &Server, id: &str, wanted: &str) {
    let deadline = Instant::now() + TEST_TIMEOUT;
    while job_status(server, id).await != wanted {
        assert!(Instant::now() < deadline, "{id} never became {wanted}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The engine takes and finishes a short job: it is free again.
async fn engine_runs_the_next_job(server: &Server, prompt: &str) {
    let (id, _) = submit(server, prompt, 2).await;
    wait_status(server, &id, "completed").await;
}

async fn delete(server: &Server, id: &str) {
    let reply = reqwest::Client::new().delete(server.at(&format!("/v1/jobs/{id}"))).send().await.expect("DELETE");
    assert_eq!(reply.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn native_delete_stops_the_running_job_within_a_step_and_a_deleted_waiting_job_never_runs() {
    let server = Server::start().await;
    let (running, _) = submit(&server, "delete-running", 150).await;
    let (waiting, _) = submit(&server, "delete-waiting", 5).await;
    server.wait_for_steps("delete-running", 2).await;
    delete(&server, &waiting).await;
    delete(&server, &running).await;
    let cancelled_at = Instant::now();
    let idle_at = server.wait_idle().await;
    assert!(server.steps_after("delete-running", cancelled_at) <= 1, "ran more than one step after the cancel");
    assert!(idle_at - cancelled_at < 25 * STEP, "freed in {:?}", idle_at - cancelled_at);
    wait_status(&server, &running, "cancelled").await;
    assert_eq!(job_status(&server, &waiting).await, "cancelled");
    engine_runs_the_next_job(&server, "after-delete").await;
    assert!(server.steps_of("delete-waiting").is_empty(), "the job deleted while waiting never ran");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn native_sse_disconnect_stops_the_running_job_and_a_waiting_one_before_it_starts() {
    let server = Server::start().await;
    let (running, running_url) = submit(&server, "sse-running", 150).await;
    let (waiting, waiting_url) = submit(&server, "sse-waiting", 5).await;
    let running_stream = reqwest::get(&running_url).await.expect("stream");
    let waiting_stream = reqwest::get(&waiting_url).await.expect("stream");
    server.wait_for_steps("sse-running", 2).await;
    drop(waiting_stream);
    wait_status(&server, &waiting, "cancelled").await;
    drop(running_stream);
    let dropped_at = Instant::now();
    let idle_at = server.wait_idle().await;
    assert!(server.steps_after("sse-running", dropped_at) <= 2, "ran {} steps after the hang-up", server.steps_after("sse-running", dropped_at));
    assert!(idle_at - dropped_at < 25 * STEP, "freed in {:?}", idle_at - dropped_at);
    wait_status(&server, &running, "cancelled").await;
    engine_runs_the_next_job(&server, "after-sse").await;
    assert!(server.steps_of("sse-waiting").is_empty(), "the waiting job whose stream closed never ran");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn openai_stream_disconnect_stops_its_job_running_or_waiting() {
    let server = Server::start().await;
    let client = reqwest::Client::new();
    let openai = |prompt: &str| json!({"prompt": prompt, "stream": true, "steps": 150, "size": "64x64", "response_format": "b64_json"});
    // A native job holds the engine while an OpenAI stream waits behind it, then hangs up.
    let (blocker, _) = submit(&server, "openai-blocker", 150).await;
    server.wait_for_steps("openai-blocker", 1).await;
    let waiting = client.post(server.at("/v1/images/generations")).json(&openai("openai-waiting")).send().await.expect("POST");
    assert_eq!(waiting.status(), 200);
    server.wait_until(|s| s.state.engine.queue_len() == 1, "the OpenAI job never queued").await;
    drop(waiting);
    server.wait_until(|s| s.state.engine.queue_len() == 0, "the waiting OpenAI job stayed queued").await;
    delete(&server, &blocker).await;
    server.wait_idle().await;

    let mut running = client.post(server.at("/v1/images/generations")).json(&openai("openai-running")).send().await.expect("POST");
    assert_eq!(running.status(), 200);
    server.wait_for_steps("openai-running", 2).await;
    let _ = tokio::time::timeout(Duration::from_millis(50), running.chunk()).await;
    drop(running);
    let dropped_at = Instant::now();
    let idle_at = server.wait_idle().await;
    assert!(server.steps_after("openai-running", dropped_at) <= 2, "ran {} steps after the hang-up", server.steps_after("openai-running", dropped_at));
    assert!(idle_at - dropped_at < 25 * STEP, "freed in {:?}", idle_at - dropped_at);
    engine_runs_the_next_job(&server, "after-openai").await;
    assert!(server.steps_of("openai-waiting").is_empty(), "the OpenAI job whose client left while it waited never ran");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a1111_interrupt_stops_the_running_job_within_a_step() {
    let server = Server::start().await;
    let url = server.at("/sdapi/v1/txt2img");
    let call = tokio::spawn(async move {
        let reply = reqwest::Client::new()
            .post(url)
            .json(&json!({"prompt": "a1111-running", "steps": 150, "width": 64, "height": 64}))
            .send()
            .await
            .expect("POST");
        (reply.status().as_u16(), reply.json::<Value>().await.expect("json"))
    });
    server.wait_for_steps("a1111-running", 2).await;
    let interrupt = reqwest::Client::new().post(server.at("/sdapi/v1/interrupt")).json(&json!({})).send().await.expect("interrupt");
    assert_eq!(interrupt.status(), 200);
    let interrupted_at = Instant::now();
    let idle_at = server.wait_idle().await;
    assert!(server.steps_after("a1111-running", interrupted_at) <= 1, "ran more than one step after the interrupt");
    assert!(idle_at - interrupted_at < 25 * STEP, "freed in {:?}", idle_at - interrupted_at);
    let (status, body) = tokio::time::timeout(TEST_TIMEOUT, call).await.expect("the call ends").expect("join");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["images"].as_array().map(Vec::len), Some(1), "an interrupt returns the image in hand, as A1111 does");
    engine_runs_the_next_job(&server, "after-interrupt").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_panicking_job_through_a_face_is_an_error_event_and_the_next_job_runs() {
    let server = Server::start().await;
    let (id, stream_url) = submit(&server, "panic", 3).await;
    let body = tokio::time::timeout(TEST_TIMEOUT, reqwest::get(&stream_url).await.expect("stream").text()).await.expect("ends").expect("body");
    assert!(body.contains("event: error"), "{body}");
    let last = body.lines().rev().find(|l| l.starts_with("data:")).expect("a final line");
    assert!(last.starts_with("data: [ERROR]") && last.contains("injected fault"), "{last}");
    assert_eq!(job_status(&server, &id).await, "failed");
    // The OpenAI face reports the same fault as a 500 its SDK must not retry.
    let reply = reqwest::Client::new()
        .post(server.at("/v1/images/generations"))
        .json(&json!({"prompt": "panic", "steps": 3, "size": "64x64"}))
        .send()
        .await
        .expect("POST");
    assert_eq!(reply.status(), 500);
    engine_runs_the_next_job(&server, "after-panic").await;
    let mut events = server.state.jobs.get(&id).expect("kept").subscribe();
    let mut last_event = None;
    while let Some(event) = events.next().await {
        last_event = Some(event);
    }
    assert!(matches!(last_event.as_deref(), Some(JobEvent::Failed(_))));
    server.stop().await;
}
