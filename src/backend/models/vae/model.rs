//! The assembled autoencoder: loading from a diffusers `vae/` folder, encode and decode.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Conv2d, VarBuilder};

use super::blocks::conv1x1;
use super::config::VaeConfig;
use super::decoder::Decoder;
use super::encoder::Encoder;
use super::tiled::{tiled_decode, TILE_ABOVE_LATENT_PIXELS};
use crate::backend::kernels::conv2d::conv2d_layer;
use crate::backend::models::error::ModelError;
use crate::backend::models::tensor_map::{load_tensors, tracked_var_builder, TensorMap, WeightUsage};

/// Weight files tried in order: the plain export first, then the fp16 variant that many hub
/// repositories ship instead (it holds the same tensors; the load casts them anyway).
const WEIGHT_FILES: [&str; 2] = [
    "diffusion_pytorch_model.safetensors",
    "diffusion_pytorch_model.fp16.safetensors",
];

/// The log-variance clamp diffusers' `DiagonalGaussianDistribution` applies.
const LOGVAR_MIN: f64 = -30.0;
const LOGVAR_MAX: f64 = 20.0;

/// The diagonal-Gaussian posterior the encoder predicts, over *unscaled* latents.
#[derive(Debug, Clone)]
pub struct LatentDistribution {
    pub mean: Tensor,
    pub std: Tensor,
}

impl LatentDistribution {
    /// `mean + std * noise`, with `noise` standard normal and shaped like `mean`.
    pub fn sample(&self, noise: &Tensor) -> candle_core::Result<Tensor> {
        let noise = noise
            .to_dtype(self.mean.dtype())?
            .to_device(self.mean.device())?;
        self.mean.add(&self.std.mul(&noise)?)
    }
}

#[derive(Debug)]
pub struct AutoencoderKl {
    config: VaeConfig,
    encoder: Encoder,
    decoder: Decoder,
    quant_conv: Option<Conv2d>,
    post_quant_conv: Option<Conv2d>,
    dtype: DType,
}

impl AutoencoderKl {
    /// Loads `dir/config.json` and `dir/diffusion_pytorch_model[.fp16].safetensors`, casting
    /// every weight to `dtype` on `device`.
    pub fn load(dir: &Path, device: &Device, dtype: DType) -> Result<Self, ModelError> {
        let config = VaeConfig::from_file(&dir.join("config.json"))?;
        let weights = find_weights(dir)?;
        let tensors = Arc::new(load_tensors(&[weights], dtype, device)?);
        let (model, usage) = Self::from_tensors(config, tensors, dtype, device)?;
        usage.warn_if_unused("VAE", dir);
        Ok(model)
    }

    /// Builds the network from tensors already in memory (diffusers names), sharing their
    /// storage when `dtype` and `device` match theirs. Reports which tensors were unused.
    pub fn from_tensors(
        config: VaeConfig,
        tensors: Arc<TensorMap>,
        dtype: DType,
        device: &Device,
    ) -> Result<(Self, WeightUsage), ModelError> {
        config.validate().map_err(|reason| ModelError::unsupported(format!("VAE config: {reason}")))?;
        let (vb, loaded) = tracked_var_builder(tensors.clone(), dtype, device);
        let model = Self::new(config, vb)?;
        Ok((model, loaded.usage(&tensors)))
    }

    /// Builds the network from an already validated config and a weight source.
    pub fn new(config: VaeConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        let latent = config.latent_channels;
        let quant_conv = if config.use_quant_conv {
            Some(conv1x1(2 * latent, 2 * latent, vb.pp("quant_conv"))?)
        } else {
            None
        };
        let post_quant_conv = if config.use_post_quant_conv {
            Some(conv1x1(latent, latent, vb.pp("post_quant_conv"))?)
        } else {
            None
        };
        Ok(Self {
            encoder: Encoder::new(&config, vb.pp("encoder"))?,
            decoder: Decoder::new(&config, vb.pp("decoder"))?,
            quant_conv,
            post_quant_conv,
            dtype: vb.dtype(),
            config,
        })
    }

    pub fn config(&self) -> &VaeConfig {
        &self.config
    }

    /// The dtype the weights were loaded in (inputs are cast to it).
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// `image`: `[B, in_channels, H, W]` in `-1..1`. Returns the posterior over unscaled latents
    /// `[B, latent_channels, H / f, W / f]`, as f32.
    pub fn encode(&self, image: &Tensor) -> candle_core::Result<LatentDistribution> {
        let h = self.encoder.forward(&image.to_dtype(self.dtype)?)?;
        let moments = match &self.quant_conv {
            Some(conv) => conv2d_layer(conv, &h)?,
            None => h,
        }
        .to_dtype(DType::F32)?;
        let latent = self.config.latent_channels;
        let mean = moments.narrow(1, 0, latent)?;
        let logvar = moments
            .narrow(1, latent, latent)?
            .clamp(LOGVAR_MIN, LOGVAR_MAX)?;
        let std = (logvar * 0.5)?.exp()?;
        Ok(LatentDistribution { mean, std })
    }

    /// `latents`: unscaled (already divided by the scaling factor), `[B, latent_channels, h, w]`.
    /// Returns the image `[B, out_channels, h * f, w * f]`, roughly in `-1..1` and not clamped,
    /// as f32.
    ///
    /// Latents larger than 128x128 (images beyond 1024x1024) are decoded in overlapping tiles
    /// (see `tiled.rs`), which bounds memory; smaller ones in one piece, exactly as diffusers.
    pub fn decode(&self, latents: &Tensor) -> candle_core::Result<Tensor> {
        let z = latents.to_dtype(self.dtype)?;
        let z = match &self.post_quant_conv {
            Some(conv) => conv2d_layer(conv, &z)?,
            None => z,
        };
        let (_, _, h, w) = z.dims4()?;
        let decoded = if h * w > TILE_ABOVE_LATENT_PIXELS {
            tiled_decode(&z, self.config.downscale_factor(), |tile| self.decoder.forward(tile))?
        } else {
            self.decoder.forward(&z)?
        };
        decoded.to_dtype(DType::F32)
    }
}

fn find_weights(dir: &Path) -> Result<PathBuf, ModelError> {
    WEIGHT_FILES
        .iter()
        .map(|name| dir.join(name))
        .find(|path| path.is_file())
        .ok_or_else(|| ModelError::MissingFile {
            path: dir.join(WEIGHT_FILES[0]),
        })
}
