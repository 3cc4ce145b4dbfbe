//! The worker binary rbee-hive spawns:
//! `sd-worker-rbee --worker-id W --model M --device N --port P --queen-url URL`.

use std::process::ExitCode;

use clap::Parser;
use sd_worker_rbee::config::{build_info, wants_build_info, Config, LogFormat};
use tracing_subscriber::EnvFilter;

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Pretty => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    // rbee's install check runs `<bin> --build-info` and wants exactly `release` or `debug`.
    if wants_build_info(std::env::args_os()) {
        println!("{}", build_info());
        return ExitCode::SUCCESS;
    }
    let config = Config::parse();
    init_tracing(config.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(sd_worker_rbee::server::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "worker failed");
            ExitCode::FAILURE
        }
    }
}
