//! The real binary, started the way rbee-hive starts it.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_sd-worker-rbee");
const TINY_MODEL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tiny-sd15");

#[test]
fn build_info_prints_the_profile_before_parsing_anything_else() {
    for args in [vec!["--build-info"], vec!["--port", "not-a-port", "--build-info"]] {
        let out = Command::new(BIN).args(&args).output().expect("run the binary");
        assert!(out.status.success(), "{args:?}: {out:?}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout == "debug\n" || stdout == "release\n", "stdout was {stdout:?}");
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// The worker process; killed on drop if a test failed before stopping it.
struct Worker {
    child: Child,
    port: u16,
    _log_dir: tempfile::TempDir,
    log_path: std::path::PathBuf,
}

impl Worker {
    /// `--worker-id worker-cpu-P --model M --device 0 --port P --queen-url URL`, exactly.
    fn spawn_like_the_hive(model: &str) -> Worker {
        let port = free_port();
        let log_dir = tempfile::tempdir().expect("tempdir");
        let log_path = log_dir.path().join("worker.log");
        let log = std::fs::File::create(&log_path).expect("log file");
        let child = Command::new(BIN)
            .args(["--worker-id", &format!("worker-cpu-{port}"), "--model", model, "--device", "0", "--port", &port.to_string()])
            // Nothing listens on port 9: heartbeats fail quietly, as with today's queen.
            .args(["--queen-url", "http://127.0.0.1:9"])
            .env_remove("LLORCH_API_TOKEN")
            .env("HF_HOME", log_dir.path().join("hf"))
            .env("HF_HUB_OFFLINE", "1")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn the worker");
        Worker { child, port, _log_dir: log_dir, log_path }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Poll like the hive: `GET /` until 2xx.
    async fn wait_for_root(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(response) = reqwest::get(self.url("/")).await {
                assert!(response.status().is_success(), "GET / answered {}", response.status());
                return;
            }
            assert!(Instant::now() < deadline, "GET / never answered; log:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Poll `/v1/ready` until the state is no longer `loading`.
    async fn settled_ready(&self) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready: Value = reqwest::get(self.url("/v1/ready")).await.expect("ready").json().await.expect("json");
            if ready["state"] != "loading" {
                return ready;
            }
            assert!(Instant::now() < deadline, "still loading; log:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn send_sigterm(&self) {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().expect("kill -TERM");
        assert!(status.success());
    }

    /// SIGTERM, then the exit status (within 20 s).
    fn terminate(&mut self) -> std::process::ExitStatus {
        self.send_sigterm();
        self.wait_exit()
    }

    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "worker did not exit after SIGTERM; log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_hive_spawn_line_is_accepted_and_sigterm_exits_cleanly() {
    let mut worker = Worker::spawn_like_the_hive(TINY_MODEL);
    worker.wait_for_root().await;
    let health: Value = reqwest::get(worker.url("/health")).await.expect("health").json().await.expect("json");
    assert_eq!(health["status"], "healthy");
    let root: Value = reqwest::get(worker.url("/")).await.expect("root").json().await.expect("json");
    assert_eq!(root["worker_id"], format!("worker-cpu-{}", worker.port));
    assert_eq!(root["model"], TINY_MODEL);

    let ready = worker.settled_ready().await;
    assert_eq!(ready["state"], "idle", "the tiny model loads: {ready}; log:\n{}", worker.log());

    // One job through the binary, the way the queen would drive it.
    let client = reqwest::Client::new();
    let job = serde_json::json!({"operation": "image_generation", "hive_id": "localhost", "model": TINY_MODEL,
                                 "prompt": "a fox", "steps": 2, "width": 64, "height": 64, "preview_every": 0});
    let created: Value = client.post(worker.url("/v1/jobs")).json(&job).send().await.expect("POST").json().await.expect("json");
    let stream = client.get(worker.url(created["sse_url"].as_str().expect("sse_url"))).send().await.expect("stream");
    let text = tokio::time::timeout(Duration::from_secs(60), stream.text()).await.expect("job finishes").expect("body");
    assert!(text.contains("event: complete") && text.trim_end().ends_with("data: [DONE]"), "stream:\n{text}");

    // SIGTERM during a long job: its stream ends with [CANCELLED] and the worker exits with 0.
    let long = serde_json::json!({"operation": "image_generation", "prompt": "a fox", "steps": 150, "num_images": 8,
                                  "width": 64, "height": 64, "preview_every": 0});
    let created: Value = client.post(worker.url("/v1/jobs")).json(&long).send().await.expect("POST").json().await.expect("json");
    let mut stream = client.get(worker.url(created["sse_url"].as_str().expect("sse_url"))).send().await.expect("stream");
    let mut text = String::new();
    while !text.contains("event: progress") {
        let chunk = tokio::time::timeout(Duration::from_secs(60), stream.chunk()).await.expect("events").expect("read").expect("open");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    worker.send_sigterm();
    let rest = tokio::time::timeout(Duration::from_secs(20), stream.text()).await.expect("stream ends").expect("body");
    assert!(rest.trim_end().ends_with("data: [CANCELLED]"), "stream after SIGTERM:\n{rest}");
    let status = worker.wait_exit();
    assert!(status.success(), "exit status {status:?}; log:\n{}", worker.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_model_is_reported_in_one_sentence_and_the_worker_stays_up() {
    let mut worker = Worker::spawn_like_the_hive("/no/such/model");
    worker.wait_for_root().await;
    let ready = worker.settled_ready().await;
    assert_eq!(ready["state"], "error", "{ready}");
    let message = ready["error"].as_str().expect("error message");
    assert!(message.contains("/no/such/model") && message.contains("--model PATH"), "{message}");
    assert!(worker.log().contains("--model PATH"), "the log says it too");
    assert_eq!(reqwest::get(worker.url("/")).await.expect("root").status(), 200);
    let status = worker.terminate();
    assert!(status.success(), "exit status {status:?}; log:\n{}", worker.log());
}
