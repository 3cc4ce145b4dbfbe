//! Our own `UNet2DConditionModel` (SD 1.x, SD 2.x, SDXL, 9-channel inpainting), built from
//! diffusers' `unet/config.json` and loaded from its safetensors.

pub mod attention;
pub mod blocks;
pub mod config;
pub mod embeddings;
pub mod layout;
pub mod model;
pub mod norm;
pub mod resnet;
pub mod transformer;
pub mod weights;

pub use config::UNetConfig;
pub use embeddings::SdxlConditioning;
pub use model::UNet2DConditionModel;
pub use norm::{NormEps, NormRole};
pub use crate::backend::models::tensor_map::WeightUsage;
