//! The convolutional pieces shared by the VAE encoder and decoder.

use candle_core::{Module, Result, Tensor};
use candle_nn::{conv2d, Conv2d, Conv2dConfig, VarBuilder};

use super::attention::MidAttention;
use crate::backend::kernels::conv2d::{conv2d_layer, conv2d_layer_add_owned, conv2d_layer_padded, conv2d_layer_upsampled, Padding};
pub(super) use crate::backend::kernels::group_norm::GroupNorm;

/// diffusers hard-codes this epsilon for every GroupNorm in the VAE (not read from the config).
pub(super) const VAE_NORM_EPS: f64 = 1e-6;

const PAD_SAME_3X3: Conv2dConfig = Conv2dConfig {
    padding: 1,
    stride: 1,
    dilation: 1,
    groups: 1,
    cudnn_fwd_algo: None,
};

pub(super) fn vae_group_norm(groups: usize, channels: usize, vb: VarBuilder) -> Result<GroupNorm> {
    GroupNorm::load(groups, channels, VAE_NORM_EPS, vb)
}

/// A 3x3 convolution that keeps the spatial size.
pub(super) fn conv3x3(in_channels: usize, out_channels: usize, vb: VarBuilder) -> Result<Conv2d> {
    conv2d(in_channels, out_channels, 3, PAD_SAME_3X3, vb)
}

/// A 1x1 convolution (channel mixing only).
pub(super) fn conv1x1(in_channels: usize, out_channels: usize, vb: VarBuilder) -> Result<Conv2d> {
    conv2d(in_channels, out_channels, 1, Conv2dConfig::default(), vb)
}

/// `ResnetBlock2D` without a time embedding: two (GroupNorm, SiLU, conv3x3) stages plus a
/// skip connection, projected by a 1x1 conv when the channel count changes.
#[derive(Debug)]
pub(super) struct ResnetBlock {
    norm1: GroupNorm,
    conv1: Conv2d,
    norm2: GroupNorm,
    conv2: Conv2d,
    conv_shortcut: Option<Conv2d>,
}

impl ResnetBlock {
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        groups: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let conv_shortcut = if in_channels == out_channels {
            None
        } else {
            Some(conv1x1(in_channels, out_channels, vb.pp("conv_shortcut"))?)
        };
        Ok(Self {
            norm1: vae_group_norm(groups, in_channels, vb.pp("norm1"))?,
            conv1: conv3x3(in_channels, out_channels, vb.pp("conv1"))?,
            norm2: vae_group_norm(groups, out_channels, vb.pp("norm2"))?,
            conv2: conv3x3(out_channels, out_channels, vb.pp("conv2"))?,
            conv_shortcut,
        })
    }

    /// The block's output for `x`, taken by value: on CPU its buffer is reused, so it must be
    /// an activation the caller owns outright (see `kernels::cpu_tensor::write_owned`). The VAE
    /// passes only activations it created itself and holds no other handle to.
    ///
    /// At 512x512 each intermediate is 128-256 MiB, so the order is chosen for memory: with a
    /// 1x1 projection the skip path is computed first and norm1 then overwrites `x`; conv2
    /// accumulates onto the skip path's buffer (or onto `x` itself when there is no projection),
    /// and norm2 overwrites conv1's output. The worst block (256 -> 128 channels at 512x512)
    /// holds three buffers (x, skip, conv1's output) instead of five.
    pub fn forward_owned(&self, x: Tensor) -> Result<Tensor> {
        match &self.conv_shortcut {
            Some(shortcut) => {
                let skip = conv2d_layer(shortcut, &x)?;
                let h = conv2d_layer(&self.conv1, &self.norm1.forward_silu_owned(x)?)?;
                let h = self.norm2.forward_silu_owned(h)?;
                conv2d_layer_add_owned(&self.conv2, &h, skip)
            }
            None => {
                let h = conv2d_layer(&self.conv1, &self.norm1.forward_silu(&x)?)?;
                let h = self.norm2.forward_silu_owned(h)?;
                conv2d_layer_add_owned(&self.conv2, &h, x)
            }
        }
    }
}

/// Halves height and width with a stride-2 3x3 conv. The padding is asymmetric, one zero
/// row/column at the bottom/right only, as in the original LDM code that the weights were
/// trained with (diffusers `Downsample2D(padding=0)` pads `(0, 1, 0, 1)` itself).
#[derive(Debug)]
pub(super) struct Downsample {
    conv: Conv2d,
}

impl Downsample {
    pub fn new(channels: usize, vb: VarBuilder) -> Result<Self> {
        let config = Conv2dConfig {
            padding: 0,
            stride: 2,
            dilation: 1,
            groups: 1,
            cudnn_fwd_algo: None,
        };
        Ok(Self {
            conv: conv2d(channels, channels, 3, config, vb.pp("conv"))?,
        })
    }
}

impl Module for Downsample {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let right_bottom = Padding { top: 0, left: 0, bottom: 1, right: 1 };
        conv2d_layer_padded(&self.conv, x, right_bottom)
    }
}

/// Doubles height and width by nearest-neighbour repetition, then smooths with a 3x3 conv.
#[derive(Debug)]
pub(super) struct Upsample {
    conv: Conv2d,
}

impl Upsample {
    pub fn new(channels: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            conv: conv3x3(channels, channels, vb.pp("conv"))?,
        })
    }
}

impl Module for Upsample {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        conv2d_layer_upsampled(&self.conv, x)
    }
}

/// `UNetMidBlock2D` as the VAE uses it: resnet, optional self-attention, resnet, all at the
/// same channel count.
#[derive(Debug)]
pub(super) struct MidBlock {
    first: ResnetBlock,
    attention: Option<MidAttention>,
    second: ResnetBlock,
}

impl MidBlock {
    pub fn new(
        channels: usize,
        groups: usize,
        with_attention: bool,
        vb: VarBuilder,
    ) -> Result<Self> {
        let attention = if with_attention {
            Some(MidAttention::new(
                channels,
                groups,
                vb.pp("attentions").pp("0"),
            )?)
        } else {
            None
        };
        Ok(Self {
            first: ResnetBlock::new(channels, channels, groups, vb.pp("resnets").pp("0"))?,
            attention,
            second: ResnetBlock::new(channels, channels, groups, vb.pp("resnets").pp("1"))?,
        })
    }

    /// Takes `x` by value, as [`ResnetBlock::forward_owned`] does.
    pub fn forward_owned(&self, x: Tensor) -> Result<Tensor> {
        let mut h = self.first.forward_owned(x)?;
        if let Some(attention) = &self.attention {
            h = attention.forward(&h)?;
        }
        self.second.forward_owned(h)
    }
}
