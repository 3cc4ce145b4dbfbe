//! Best-effort heartbeats to the rbee queen: every 30 s, `POST {queen_url}/v1/worker-heartbeat`
//! with rbee's `WorkerHeartbeat` JSON. Today's queen has no such route (it learns about workers
//! from the hive's cgroup telemetry), so failures and 404s are logged at debug and ignored.

use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use serde::Serialize;
use tokio::task::JoinHandle;

use crate::backend::generation_engine::EngineState;
use crate::http::AppState;

/// rbee's `HEARTBEAT_INTERVAL_SECS`.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(30);

/// Each POST gives up after this long, so a stalled queen never piles up requests.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// rbee's `OperationalStatus`, lowercase on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerStatus {
    Starting,
    Ready,
    Busy,
    Stopping,
    Stopped,
}

/// rbee's `WorkerInfo`.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerInfo {
    pub id: String,
    pub model_id: String,
    /// `cpu:0`, `cuda:N`, `metal:N`.
    pub device: String,
    pub port: u16,
    pub status: WorkerStatus,
    pub implementation: String,
    pub version: String,
}

/// rbee's `WorkerHeartbeat`; `timestamp` is RFC 3339.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerHeartbeat {
    pub worker: WorkerInfo,
    pub timestamp: String,
}

/// The worker status rbee should see now.
pub fn worker_status(state: &AppState) -> WorkerStatus {
    if state.is_draining() {
        return WorkerStatus::Stopping;
    }
    match state.engine.status().state {
        EngineState::Loading => WorkerStatus::Starting,
        EngineState::Idle => WorkerStatus::Ready,
        EngineState::Busy => WorkerStatus::Busy,
        // A worker whose model failed to load serves nothing: closest is `stopped`.
        EngineState::Error(_) | EngineState::Stopped => WorkerStatus::Stopped,
    }
}

/// The heartbeat body for this worker right now.
pub fn heartbeat(state: &AppState, device: &str) -> WorkerHeartbeat {
    let config = &state.config;
    WorkerHeartbeat {
        worker: WorkerInfo {
            id: config.worker_id(),
            model_id: config.model.clone(),
            device: device.to_string(),
            port: config.port,
            status: worker_status(state),
            implementation: env!("CARGO_PKG_NAME").to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        },
        timestamp: Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
    }
}

/// Send heartbeats every `interval` (the first one at once) until the task is aborted.
pub fn spawn(state: AppState, queen_url: String, device: String, interval: Duration) -> JoinHandle<()> {
    tokio::spawn(async move {
        let client = match reqwest::Client::builder().timeout(REQUEST_TIMEOUT).build() {
            Ok(client) => client,
            Err(e) => {
                tracing::warn!(error = %e, "heartbeats disabled: could not build an HTTP client");
                return;
            }
        };
        let url = format!("{}/v1/worker-heartbeat", queen_url.trim_end_matches('/'));
        tracing::info!(%url, every_s = interval.as_secs(), "sending heartbeats to the queen");
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let body = heartbeat(&state, &device);
            match client.post(&url).json(&body).send().await {
                Ok(response) if response.status().is_success() => tracing::trace!("heartbeat sent"),
                Ok(response) => tracing::debug!(status = response.status().as_u16(), "queen did not accept the heartbeat"),
                Err(e) => tracing::debug!(error = %e, "heartbeat not delivered"),
            }
        }
    })
}
