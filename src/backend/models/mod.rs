//! Model code we own (no candle-transformers): where a model comes from, tokenizer, text
//! encoders, UNet, VAE.

pub mod clip_text;
pub mod error;
pub mod hub;
pub mod text_conditioning;
pub mod tokenizer;

#[cfg(test)]
mod test_support;
