//! The error type shared by model loaders.

use std::path::PathBuf;

/// Why a model could not be loaded. Tensor errors during inference stay `candle_core::Error`.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("invalid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error("missing model file: {}", path.display())]
    MissingFile { path: PathBuf },
    #[error("unsupported or inconsistent model config: {reason}")]
    BadConfig { reason: String },
}

impl ModelError {
    pub(crate) fn bad_config(reason: impl Into<String>) -> Self {
        Self::BadConfig {
            reason: reason.into(),
        }
    }
}
