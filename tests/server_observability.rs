//! `GET /metrics` and job logs against a real server: a job on the tiny model moves the counters
//! and histograms, a full queue counts a rejection, the exposition parses as valid text format,
//! and every log line of a job names its job id and the request id that submitted it.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use common::{config, post_job, submit, tiny_config, SseReader, TestServer, TEST_TIMEOUT, TINY_SD15};
use serde_json::{json, Value};

fn tiny_job(steps: u32) -> Value {
    json!({"operation": "image_generation", "hive_id": "localhost", "model": TINY_SD15, "prompt": "a red fox",
           "steps": steps, "width": 64, "height": 64, "seed": 42})
}

/// One parsed sample: metric name, labels, value.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':') && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"").unwrap_or_else(|| panic!("label without value: {text}"));
        assert!(is_metric_name(key), "bad label name {key:?}");
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => panic!("dangling escape in {text}"),
                },
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => panic!("unterminated label value in {text}"),
            }
        };
        labels.insert(key.to_string(), value);
        rest = after[end + 1..].strip_prefix(',').unwrap_or(&after[end + 1..]);
    }
    labels
}

/// Parse the exposition strictly: HELP/TYPE/UNIT before a family's samples, every sample named
/// after a declared family (plus its type's suffixes), numbers that parse, histogram buckets that
/// never decrease and end in +Inf equal to the count, and `# EOF` last.
fn parse_exposition(text: &str) -> Vec<Sample> {
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.last(), Some(&"# EOF"), "ends with # EOF");
    let mut families: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = Vec::new();
    for line in &lines[..lines.len() - 1] {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (keyword, name) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
            assert!(is_metric_name(name), "bad family name in {line:?}");
            match keyword {
                "TYPE" => {
                    let kind = parts.next().unwrap_or_default();
                    assert!(["counter", "gauge", "histogram"].contains(&kind), "unexpected type in {line:?}");
                    assert!(families.insert(name.to_string(), kind.to_string()).is_none(), "family declared twice: {name}");
                }
                "HELP" | "UNIT" => {}
                _ => panic!("unknown comment line {line:?}"),
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("sample without value: {line:?}"));
        let (name, labels) = match series.split_once('{') {
            Some((name, labels)) => (name, parse_labels(labels.strip_suffix('}').unwrap_or_else(|| panic!("unclosed labels: {line:?}")))),
            None => (series, BTreeMap::new()),
        };
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            other => other.parse().unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let declared = families.iter().any(|(family, kind)| {
            let suffixes: &[&str] = match kind.as_str() {
                "counter" => &["_total", "_created"],
                "histogram" => &["_bucket", "_sum", "_count", "_created"],
                _ => &[""],
            };
            suffixes.iter().any(|suffix| name == format!("{family}{suffix}"))
        });
        assert!(declared, "sample of an undeclared family: {line:?}");
        samples.push(Sample { name: name.to_string(), labels, value });
    }
    check_histograms(&samples);
    samples
}

/// A histogram series: family name and labels other than `le`.
type SeriesKey = (String, BTreeMap<String, String>);

fn check_histograms(samples: &[Sample]) {
    let mut buckets: BTreeMap<SeriesKey, Vec<(f64, f64)>> = BTreeMap::new();
    for s in samples.iter().filter(|s| s.name.ends_with("_bucket")) {
        let mut labels = s.labels.clone();
        let le = labels.remove("le").expect("bucket has le");
        let bound = if le == "+Inf" { f64::INFINITY } else { le.parse().expect("numeric le") };
        buckets.entry((s.name.trim_end_matches("_bucket").to_string(), labels)).or_default().push((bound, s.value));
    }
    for ((family, labels), series) in buckets {
        assert!(series.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1), "{family} buckets must grow: {series:?}");
        let count = samples.iter().find(|s| s.name == format!("{family}_count") && s.labels == labels).expect("histogram count").value;
        assert_eq!(series.last().map(|b| (b.0, b.1)), Some((f64::INFINITY, count)), "{family}: +Inf bucket equals the count");
    }
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let wanted: BTreeMap<String, String> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    samples.iter().find(|s| s.name == name && s.labels == wanted).map(|s| s.value)
}

async fn scrape(server: &TestServer, accept: Option<&str>) -> (String, Vec<Sample>) {
    let mut request = reqwest::Client::new().get(format!("{}/metrics", server.url));
    if let Some(accept) = accept {
        request = request.header("accept", accept);
    }
    let response = request.send().await.expect("GET /metrics");
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().expect("ascii").to_string();
    let text = response.text().await.expect("body");
    let samples = parse_exposition(&text);
    (content_type, samples)
}

/// Scrape until `ready` holds (counters move on the job's pump task, just after its last event).
async fn scrape_until(server: &TestServer, ready: impl Fn(&[Sample]) -> bool) -> Vec<Sample> {
    let deadline = tokio::time::Instant::now() + TEST_TIMEOUT;
    loop {
        let (_, samples) = scrape(server, None).await;
        if ready(&samples) {
            return samples;
        }
        assert!(tokio::time::Instant::now() < deadline, "metrics never got there: {samples:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tiny_model_job_moves_the_metrics_and_the_exposition_is_valid() {
    capture_logs();
    let server = TestServer::start_tiny(tiny_config(&[])).await;
    server.wait_ready().await;
    let (content_type, before) = scrape(&server, None).await;
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    assert_eq!(value(&before, "sd_worker_model_info", &[("model", TINY_SD15)]), Some(1.0));
    assert!(value(&before, "sd_worker_model_load_seconds", &[("model", TINY_SD15)]).is_some_and(|s| s > 0.0));
    assert_eq!(value(&before, "sd_worker_queue_capacity", &[]), Some(8.0));
    assert_eq!(value(&before, "sd_worker_engine_state", &[("state", "idle")]), Some(1.0));

    let (_, stream_url) = submit(&server.url, &tiny_job(3)).await;
    let frames = SseReader::open(&stream_url, None).await.until_final().await;
    assert_eq!(frames.last().map(|f| f.data.as_str()), Some("[DONE]"));
    let after = scrape_until(&server, |s| value(s, "sd_worker_jobs_total", &[("face", "native"), ("outcome", "completed")]) == Some(1.0)).await;
    assert_eq!(value(&after, "sd_worker_images_generated_total", &[("face", "native")]), Some(1.0));
    assert_eq!(value(&after, "sd_worker_step_duration_seconds_count", &[]), Some(3.0));
    assert!(value(&after, "sd_worker_step_duration_seconds_sum", &[]).is_some_and(|s| s > 0.0));
    assert_eq!(value(&after, "sd_worker_job_duration_seconds_count", &[("outcome", "completed")]), Some(1.0));
    assert_eq!(value(&after, "sd_worker_queue_depth", &[]), Some(0.0));
    assert_eq!(value(&after, "sd_worker_jobs_running", &[]), Some(0.0));

    let (content_type, _) = scrape(&server, Some("application/openmetrics-text;version=1.0.0,text/plain;q=0.5")).await;
    assert!(content_type.starts_with("application/openmetrics-text"), "{content_type}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn refusals_and_cancellations_are_counted_per_face() {
    let mut cfg = config(&[]);
    cfg.queue_capacity = 1;
    let server = TestServer::start(cfg, Duration::from_millis(20)).await;
    let painted = |steps: u32| json!({"operation": "image_generation", "hive_id": "localhost", "model": "tiny-test-model",
                                      "prompt": "x", "steps": steps, "width": 64, "height": 64});
    let (running_id, running_url) = submit(&server.url, &painted(150)).await;
    let mut running = SseReader::open(&running_url, None).await;
    while running.next().await.expect("events").event.as_deref() != Some("progress") {}
    let (waiting_id, _) = submit(&server.url, &painted(1)).await;
    assert_eq!(post_job(&server.url, &painted(1), None).await.status(), 503);
    let (_, samples) = scrape(&server, None).await;
    assert_eq!(value(&samples, "sd_worker_queue_depth", &[]), Some(1.0));
    assert_eq!(value(&samples, "sd_worker_jobs_running", &[]), Some(1.0));
    assert_eq!(value(&samples, "sd_worker_jobs_total", &[("face", "native"), ("outcome", "rejected")]), Some(1.0));

    let client = reqwest::Client::new();
    for id in [&waiting_id, &running_id] {
        assert_eq!(client.delete(format!("{}/v1/jobs/{id}", server.url)).send().await.expect("DELETE").status(), 200);
    }
    let samples = scrape_until(&server, |s| value(s, "sd_worker_jobs_total", &[("face", "native"), ("outcome", "cancelled")]) == Some(2.0)).await;
    // Only the job that ran has a run time; the one cancelled while waiting never reached the engine.
    assert_eq!(value(&samples, "sd_worker_job_duration_seconds_count", &[("outcome", "cancelled")]), Some(1.0));
    server.stop().await;
}

/// Log lines written by every thread of this test binary.
fn capture_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let sink = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter("info")
            .with_ansi(false)
            .with_thread_names(true)
            .with_writer(move || SharedWriter(sink.clone()))
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("the only subscriber of this test binary");
        buffer
    })
    .clone()
}

struct SharedWriter(Arc<Mutex<Vec<u8>>>);

impl Write for SharedWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_log_line_of_a_job_names_its_job_and_request() {
    let logs = capture_logs();
    let server = TestServer::start_tiny(tiny_config(&[])).await;
    server.wait_ready().await;
    let response = reqwest::Client::new()
        .post(format!("{}/v1/jobs", server.url))
        .header("x-request-id", "req-observe-42")
        .json(&tiny_job(2))
        .send()
        .await
        .expect("POST /v1/jobs");
    assert_eq!(response.status(), 200);
    let created: Value = response.json().await.expect("json");
    let job_id = created["job_id"].as_str().expect("job_id").to_string();
    let stream_url = format!("{}{}", server.url, created["sse_url"].as_str().expect("sse_url"));
    let frames = SseReader::open(&stream_url, None).await.until_final().await;
    assert_eq!(frames.last().map(|f| f.data.as_str()), Some("[DONE]"));
    server.stop().await;

    let text = String::from_utf8_lossy(&logs.lock().unwrap_or_else(|p| p.into_inner())).to_string();
    let job_span = format!("job{{job_id={job_id}}}");
    let job_lines: Vec<&str> = text.lines().filter(|l| l.contains(&job_span)).collect();
    let messages: BTreeSet<&str> = ["job started", "job finished"].into_iter().filter(|m| job_lines.iter().any(|l| l.contains(m))).collect();
    assert_eq!(messages.len(), 2, "the engine's lines for the job are in its span:\n{}", job_lines.join("\n"));
    for line in &job_lines {
        assert!(line.contains("request_id=req-observe-42"), "job line without its request id: {line}");
    }
    let finished = job_lines.iter().find(|l| l.contains("job finished")).expect("a summary line");
    for field in ["outcome=\"completed\"", "steps=2", "total_steps=2", "images=1", "seconds=", "it_per_s="] {
        assert!(finished.contains(field), "summary lacks {field}: {finished}");
    }
    // Every line the engine thread wrote while a job ran is inside some job's span (two tests of
    // this binary may run jobs at once, each on its own engine thread).
    let engine_lines = text.lines().filter(|l| l.contains("generation-engine") && (l.contains("job finished") || l.contains("job started")));
    for line in engine_lines {
        assert!(line.contains("job{job_id=job-"), "engine line outside a job span: {line}");
    }
}
