//! Start-up and shutdown: bind the listener first (rbee-hive polls `GET /` within 120 s, long
//! before a big model is loaded), load the model on the engine thread, send heartbeats, and on
//! SIGTERM/SIGINT stop intake, cancel the running job and exit cleanly.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::backend::generation_engine::{EngineOptions, GenerationEngine};
use crate::backend::model_library::{LibraryOptions, ModelLibrary};
use crate::backend::models::hub::HubOptions;
use crate::backend::pipeline::{load_runner, LoadOptions};
use crate::config::Config;
use crate::device::{device_label, open_device};
use crate::heartbeat;
use crate::http::{self, AppState};

/// How long shutdown waits for the engine to stop (a job is cancelled within one step, but a
/// model that is still loading cannot be interrupted: we exit without it).
const ENGINE_STOP_GRACE: Duration = Duration::from_secs(10);

/// How long open connections may take to finish once the engine has stopped.
const CONNECTIONS_GRACE: Duration = Duration::from_secs(5);

/// The Hugging Face cache to use: `--hf-cache`, else `HF_HOME`'s.
pub fn hub_options(config: &Config) -> HubOptions {
    match &config.hf_cache {
        Some(dir) => HubOptions { cache_dir: dir.clone(), endpoint: None },
        None => HubOptions::from_env(),
    }
}

/// The `--models-dir` library, opened but not scanned yet (the engine thread scans it: hashing
/// new checkpoints the first time takes a while). Share it with the faces for their listings.
pub fn open_library(config: &Config) -> anyhow::Result<Option<Arc<ModelLibrary>>> {
    let Some(dir) = &config.models_dir else { return Ok(None) };
    let options = LibraryOptions { allow_external_paths: config.allow_external_model_paths, hash_cache_file: None };
    let library = ModelLibrary::unscanned(dir, options).with_context(|| format!("--models-dir {}", dir.display()))?;
    Ok(Some(library))
}

/// Queue capacity and per-job timeout, as configured.
pub fn engine_options(config: &Config) -> EngineOptions {
    EngineOptions { queue_capacity: config.queue_capacity as usize, job_timeout: config.job_timeout() }
}

/// Start the engine; the library is scanned and the default model loaded on its thread while
/// the caller serves HTTP.
pub fn start_engine(config: &Config, library: Option<Arc<ModelLibrary>>) -> Arc<GenerationEngine> {
    let (model, hub, ordinal) = (config.model.clone(), hub_options(config), config.device);
    let (max_resident, v_prediction) = (config.max_loaded_models as usize, config.prediction_type.v_prediction());
    GenerationEngine::start_with(engine_options(config), move || {
        let device = open_device(ordinal)?;
        if let Some(library) = &library {
            library.refresh().map_err(|e| e.to_string())?;
        }
        tracing::info!(model = %model, "loading model");
        let options = LoadOptions { model, hub, device, max_resident_models: max_resident, v_prediction, tokenizer_dir: None };
        load_runner(&options, library)
    })
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM (what rbee-hive and systemd send).
pub async fn termination_signal() {
    let interrupt = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => tracing::info!("SIGINT received; shutting down"),
        _ = terminate => tracing::info!("SIGTERM received; shutting down"),
    }
}

/// Stop intake, cancel waiting and running jobs (their streams end with `[CANCELLED]`), and stop
/// the engine thread, waiting at most [`ENGINE_STOP_GRACE`].
pub async fn drain(state: &AppState) {
    state.start_draining();
    let engine = state.engine.clone();
    let stopping = tokio::task::spawn_blocking(move || engine.shutdown());
    match tokio::time::timeout(ENGINE_STOP_GRACE, stopping).await {
        Ok(_) => tracing::info!("engine stopped"),
        Err(_) => tracing::warn!("the engine did not stop in time (still loading the model?); exiting without it"),
    }
}

/// Serve `state` on `listener` until `stop` resolves, then drain and return.
pub async fn serve_until<F>(listener: TcpListener, state: AppState, stop: F) -> anyhow::Result<()>
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let (drained_tx, mut drained_rx) = watch::channel(false);
    let drain_state = state.clone();
    let shutdown = async move {
        stop.await;
        drain(&drain_state).await;
        let _ = drained_tx.send(true);
    };
    let server = http::serve(listener, state, shutdown);
    let connections_deadline = async move {
        let _ = drained_rx.wait_for(|drained| *drained).await;
        tokio::time::sleep(CONNECTIONS_GRACE).await;
    };
    tokio::select! {
        result = server => result.context("HTTP server failed"),
        _ = connections_deadline => {
            tracing::warn!("some connections did not close in time; exiting anyway");
            Ok(())
        }
    }
}

/// The whole worker: listener, engine, heartbeat, until a termination signal.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let listener = TcpListener::bind((config.host.as_str(), config.port))
        .await
        .with_context(|| format!("cannot listen on {}:{}; is the port in use? pass --port", config.host, config.port))?;
    tracing::info!(address = %listener.local_addr()?, worker_id = %config.worker_id(), ?config, "listening");
    let library = open_library(&config)?;
    let engine = start_engine(&config, library.clone());
    let state = AppState::new(config.clone(), engine).with_library(library);
    let heartbeats = config
        .queen_url
        .clone()
        .map(|url| heartbeat::spawn(state.clone(), url, device_label(config.device), heartbeat::HEARTBEAT_INTERVAL));
    let result = serve_until(listener, state, termination_signal()).await;
    if let Some(task) = heartbeats {
        task.abort();
    }
    tracing::info!("stopped");
    result
}
