//! Why a sampler could not be built.

/// Building a sampler failed: a bad config value, an option diffusers has that we do not, or a
/// step count the schedule cannot serve. Tensor errors during sampling are `candle_core::Error`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SamplerError {
    /// A `scheduler_config.json` key holds something unusable.
    #[error("scheduler config key `{key}`: {message}")]
    Config { key: String, message: String },
    /// The config asks for a diffusers option this sampler does not implement.
    #[error("{sampler}: unsupported scheduler option: {message}")]
    Unsupported { sampler: &'static str, message: String },
    /// The step count cannot be served (zero, or more than the schedule allows).
    #[error("invalid step count {steps}: {message}")]
    Steps { steps: usize, message: String },
}

impl SamplerError {
    pub(crate) fn config(key: &str, message: impl Into<String>) -> Self {
        SamplerError::Config { key: key.to_owned(), message: message.into() }
    }

    pub(crate) fn unsupported(sampler: &'static str, message: impl Into<String>) -> Self {
        SamplerError::Unsupported { sampler, message: message.into() }
    }

    pub(crate) fn steps(steps: usize, message: impl Into<String>) -> Self {
        SamplerError::Steps { steps, message: message.into() }
    }
}
