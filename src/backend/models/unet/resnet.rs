//! diffusers' `ResnetBlock2D` as the UNet uses it ("default" time-scale shift, SiLU).

use candle_core::{Result, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, Linear, VarBuilder};

use super::norm::{GroupNorm, NormEps, NormRole};
use crate::backend::kernels::conv2d::{conv2d_layer, conv2d_layer_add};
use crate::backend::kernels::linear::linear;

/// 3x3 convolution with "same" padding.
pub fn conv3x3(
    in_channels: usize,
    out_channels: usize,
    stride: usize,
    padding: usize,
    vb: VarBuilder,
) -> Result<Conv2d> {
    let config = Conv2dConfig {
        padding,
        stride,
        ..Default::default()
    };
    candle_nn::conv2d(in_channels, out_channels, 3, config, vb)
}

#[derive(Debug, Clone)]
pub struct ResnetBlock2D {
    norm1: GroupNorm,
    conv1: Conv2d,
    time_emb_proj: Linear,
    norm2: GroupNorm,
    conv2: Conv2d,
    /// 1x1 conv on the skip path when the channel count changes.
    conv_shortcut: Option<Conv2d>,
    output_scale_factor: f64,
}

/// Shape and normalisation settings of one resnet.
#[derive(Debug, Clone, Copy)]
pub struct ResnetConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub temb_channels: usize,
    pub groups: usize,
    pub eps: f64,
    pub output_scale_factor: f64,
}

impl ResnetBlock2D {
    pub fn load(config: ResnetConfig, vb: VarBuilder) -> Result<Self> {
        let ResnetConfig {
            in_channels,
            out_channels,
            temb_channels,
            groups,
            eps,
            output_scale_factor,
        } = config;
        let conv_shortcut = if in_channels != out_channels {
            Some(candle_nn::conv2d(
                in_channels,
                out_channels,
                1,
                Conv2dConfig::default(),
                vb.pp("conv_shortcut"),
            )?)
        } else {
            None
        };
        Ok(Self {
            norm1: GroupNorm::load(groups, in_channels, eps, NormRole::Resnet, vb.pp("norm1"))?,
            conv1: conv3x3(in_channels, out_channels, 1, 1, vb.pp("conv1"))?,
            time_emb_proj: candle_nn::linear(temb_channels, out_channels, vb.pp("time_emb_proj"))?,
            norm2: GroupNorm::load(groups, out_channels, eps, NormRole::Resnet, vb.pp("norm2"))?,
            conv2: conv3x3(out_channels, out_channels, 1, 1, vb.pp("conv2"))?,
            conv_shortcut,
            output_scale_factor,
        })
    }

    /// `temb_silu` is `silu(emb)`: diffusers applies that SiLU inside every resnet; the caller
    /// computes it once for all of them.
    pub fn forward(&self, xs: &Tensor, temb_silu: &Tensor) -> Result<Tensor> {
        let hidden = conv2d_layer(&self.conv1, &self.norm1.forward_silu(xs)?)?;
        let temb = linear(&self.time_emb_proj, temb_silu)?
            .unsqueeze(2)?
            .unsqueeze(3)?;
        let hidden = self.norm2.forward_silu(&hidden.broadcast_add(&temb)?)?;
        let shortcut = match &self.conv_shortcut {
            Some(conv) => conv2d_layer(conv, xs)?,
            None => xs.clone(),
        };
        // conv2 accumulates onto the skip path (no separate sum tensor on CPU).
        let out = conv2d_layer_add(&self.conv2, &hidden, &shortcut)?;
        if self.output_scale_factor == 1.0 {
            Ok(out)
        } else {
            out / self.output_scale_factor
        }
    }

    pub fn norms(&self) -> [&NormEps; 2] {
        [self.norm1.info(), self.norm2.info()]
    }
}
