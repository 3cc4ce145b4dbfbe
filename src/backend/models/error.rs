//! The error type shared by every model loader (tokenizer, text encoders, UNet, VAE).

use std::path::PathBuf;

/// Why a model component could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("i/o error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("invalid JSON in {path}: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    #[error("missing file: {path}")]
    MissingFile { path: PathBuf },

    #[error("bad config in {path}: {reason}")]
    BadConfig { path: PathBuf, reason: String },

    /// A weights file that is not a readable `.safetensors` file (bad header, truncated data).
    #[error("invalid weights file {path}: {why}")]
    InvalidWeights { path: PathBuf, why: String },

    /// A well-formed config describing something this server does not (yet) run.
    #[error("unsupported or inconsistent model config: {reason}")]
    Unsupported { reason: String },
}

impl ModelError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    pub fn json(path: impl Into<PathBuf>, source: serde_json::Error) -> Self {
        Self::Json {
            path: path.into(),
            source,
        }
    }

    pub fn unsupported(reason: impl Into<String>) -> Self {
        Self::Unsupported { reason: reason.into() }
    }

    pub fn bad_config(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Self::BadConfig {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

/// Reads and parses a JSON file, naming the file in any error.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> Result<T, ModelError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            ModelError::MissingFile {
                path: path.to_path_buf(),
            }
        } else {
            ModelError::io(path, e)
        }
    })?;
    serde_json::from_str(&text).map_err(|e| ModelError::json(path, e))
}
