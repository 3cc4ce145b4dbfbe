//! Model code we own (no candle-transformers): each model is built from its diffusers
//! `config.json` and loaded from safetensors.

pub mod error;
pub mod unet;
