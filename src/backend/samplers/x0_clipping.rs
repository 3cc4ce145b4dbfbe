//! What the variance-preserving samplers do to their x0 estimate: Imagen's dynamic thresholding
//! (`thresholding`), else a plain clamp (`clip_sample`), else nothing.

use candle_core::{Result, Tensor};

use super::scheduler_config::SchedulerConfig;
use super::tensor_ops::{clip, dynamic_threshold};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum X0Clipping {
    None,
    Clamp { range: f32 },
    Dynamic { ratio: f64, max_value: f64 },
}

impl X0Clipping {
    /// `clip_sample_default` is the class's default for `clip_sample` (DDIM and DDPM: true).
    pub fn from_config(config: &SchedulerConfig, clip_sample_default: bool) -> Self {
        if config.thresholding.unwrap_or(false) {
            X0Clipping::Dynamic {
                ratio: config.dynamic_thresholding_ratio.unwrap_or(0.995),
                max_value: config.sample_max_value.unwrap_or(1.0),
            }
        } else if config.clip_sample.unwrap_or(clip_sample_default) {
            X0Clipping::Clamp { range: config.clip_sample_range.unwrap_or(1.0) as f32 }
        } else {
            X0Clipping::None
        }
    }

    /// For the multistep solvers, which have `thresholding` but no `clip_sample`.
    pub fn thresholding_only(config: &SchedulerConfig) -> Self {
        match Self::from_config(config, false) {
            X0Clipping::Clamp { .. } => X0Clipping::None,
            other => other,
        }
    }

    pub fn apply(&self, x0: &Tensor) -> Result<Tensor> {
        match *self {
            X0Clipping::None => Ok(x0.clone()),
            X0Clipping::Clamp { range } => clip(x0, range),
            X0Clipping::Dynamic { ratio, max_value } => dynamic_threshold(x0, ratio, max_value),
        }
    }
}
