//! Model code we own (no candle-transformers): where a model comes from, tokenizer, text
//! encoders, UNet, VAE. Each network is built from its diffusers `config.json` and loaded from
//! safetensors.

pub mod clip_text;
pub mod error;
pub mod hub;
pub mod safetensors_header;
pub mod safetensors_reader;
pub mod tensor_map;
pub mod text_conditioning;
pub mod tokenizer;
pub mod unet;
pub mod vae;

#[cfg(test)]
pub(crate) mod test_support;
