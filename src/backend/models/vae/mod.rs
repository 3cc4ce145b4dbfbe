//! AutoencoderKL (the Stable Diffusion VAE), built from diffusers' `vae/config.json`.
//!
//! Pixels in `-1..1` go through [`AutoencoderKl::encode`] to a diagonal-Gaussian posterior over
//! latents; [`AutoencoderKl::decode`] maps *unscaled* latents back to pixels. Scaling by
//! `scaling_factor` (and `shift_factor`) is the pipeline's job, as in diffusers.

mod attention;
mod blocks;
mod config;
mod decoder;
mod encoder;
mod model;
mod tiled;

pub use config::VaeConfig;
pub use model::{AutoencoderKl, LatentDistribution};
