//! Model code we own (no candle-transformers): each network is built from its diffusers
//! `config.json` and loaded from its safetensors weights.

pub mod error;
pub mod vae;
