//! GroupNorm / LayerNorm that remember where they sit and which epsilon they use.
//!
//! Several UNet epsilons are hard-coded in diffusers rather than read from `config.json`, and a
//! wrong one moves outputs by only ~1e-5 relative, close to float noise. Each norm therefore
//! reports its epsilon ([`NormEps`]) so tests can check them one by one.

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::VarBuilder;

use crate::backend::kernels::{group_norm, layer_norm};

/// What a normalisation layer is for; each role has its own epsilon in diffusers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NormRole {
    /// `norm1`/`norm2` of a ResnetBlock2D (`norm_eps` from the config).
    Resnet,
    /// `conv_norm_out` before the output conv (`norm_eps`).
    Output,
    /// The GroupNorm at the input of a Transformer2DModel (hard-coded 1e-6).
    TransformerInput,
    /// `norm1`..`norm3` LayerNorms of a BasicTransformerBlock (hard-coded 1e-5).
    TransformerLayer,
}

/// One normalisation layer's weight prefix, role and epsilon.
#[derive(Debug, Clone, PartialEq)]
pub struct NormEps {
    pub path: String,
    pub role: NormRole,
    pub eps: f64,
}

/// GroupNorm over `[B, C, ...]`, affine.
#[derive(Debug, Clone)]
pub struct GroupNorm {
    inner: group_norm::GroupNorm,
    info: NormEps,
}

impl GroupNorm {
    pub fn load(
        groups: usize,
        channels: usize,
        eps: f64,
        role: NormRole,
        vb: VarBuilder,
    ) -> Result<Self> {
        let info = NormEps {
            path: vb.prefix(),
            role,
            eps,
        };
        let inner = group_norm::GroupNorm::load(groups, channels, eps, vb)?;
        Ok(Self { inner, info })
    }

    pub fn info(&self) -> &NormEps {
        &self.info
    }

    /// `silu(self.forward(xs))`, fused into one pass on CPU.
    pub fn forward_silu(&self, xs: &Tensor) -> Result<Tensor> {
        self.inner.forward_silu(xs)
    }
}

impl Module for GroupNorm {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.inner.forward(xs)
    }
}

/// LayerNorm over the last dimension, affine.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    info: NormEps,
}

impl LayerNorm {
    pub fn load(channels: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        let info = NormEps {
            path: vb.prefix(),
            role: NormRole::TransformerLayer,
            eps,
        };
        let weight = vb.get(channels, "weight")?;
        let bias = vb.get(channels, "bias")?;
        Ok(Self { weight, bias, info })
    }

    pub fn info(&self) -> &NormEps {
        &self.info
    }
}

impl Module for LayerNorm {
    /// Two-pass mean/variance like PyTorch. candle_nn's fused LayerNorm uses the one-pass
    /// `E[x^2] - E[x]^2` in f32, which loses digits when the mean is large against the spread.
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        if layer_norm::supports(xs, &self.weight, &self.bias) {
            return layer_norm::layer_norm(xs, &self.weight, &self.bias, self.info.eps);
        }
        // Half-precision inputs are normalised in f32, as torch does.
        let input_dtype = xs.dtype();
        let xs = match input_dtype {
            DType::F16 | DType::BF16 => xs.to_dtype(DType::F32)?,
            _ => xs.clone(),
        };
        let mean = xs.mean_keepdim(D::Minus1)?;
        let centered = xs.broadcast_sub(&mean)?;
        let variance = centered.sqr()?.mean_keepdim(D::Minus1)?;
        let inv_std = (variance + self.info.eps)?.sqrt()?.recip()?;
        centered
            .broadcast_mul(&inv_std)?
            .to_dtype(input_dtype)?
            .broadcast_mul(&self.weight)?
            .broadcast_add(&self.bias)
    }
}
