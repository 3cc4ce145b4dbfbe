//! Model code we own (no candle-transformers): tokenizer, text encoders, UNet, VAE.

pub mod clip_text;
pub mod error;
pub mod text_conditioning;
pub mod tokenizer;

#[cfg(test)]
mod test_support;
