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

    /// SIGTERM, then the exit status (within 20 s).
    fn terminate(&mut self) -> std::process::ExitStatus {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().expect("kill -TERM");
        assert!(status.success());
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
    let status = worker.terminate();
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
