//! Errors raised while loading a model from disk. Tensor maths inside a loaded model reports
//! `candle_core::Error` directly.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("invalid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("tensor error: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("missing model file: {}", path.display())]
    MissingFile { path: PathBuf },
    #[error("unsupported model config {}: {reason}", path.display())]
    BadConfig { path: PathBuf, reason: String },
}
