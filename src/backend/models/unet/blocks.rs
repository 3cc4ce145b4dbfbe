//! The UNet's resolution levels: down blocks (`DownBlock2D` / `CrossAttnDownBlock2D`), the
//! `UNetMidBlock2DCrossAttn`, and up blocks (`UpBlock2D` / `CrossAttnUpBlock2D`).
//!
//! The plain and cross-attention variants share one type each: they differ only in whether a
//! Transformer2D follows every resnet, and their weight names are otherwise identical.

use candle_core::{bail, Module, Result, Tensor};
use candle_nn::{Conv2d, VarBuilder};

use super::layout::{AttentionPlan, BlockKind, DownBlockPlan, MidBlockPlan, UpBlockPlan};
use super::norm::NormEps;
use super::resnet::{conv3x3, ResnetBlock2D, ResnetConfig};
use super::transformer::Transformer2DModel;
use crate::backend::kernels::conv2d::{conv2d_layer, conv2d_layer_padded, conv2d_layer_upsampled, Padding};
use crate::backend::kernels::profile;

/// Settings every block shares.
#[derive(Debug, Clone, Copy)]
pub struct BlockSettings {
    pub temb_channels: usize,
    pub groups: usize,
    pub resnet_eps: f64,
    pub use_linear_projection: bool,
    pub upcast_attention: bool,
    pub downsample_padding: usize,
}

/// Stride-2 3x3 conv (`Downsample2D` with `use_conv`).
#[derive(Debug, Clone)]
struct Downsample2D {
    conv: Conv2d,
    /// diffusers pads right/bottom by one itself when `downsample_padding` is 0.
    pad_right_bottom: bool,
}

impl Downsample2D {
    fn load(channels: usize, padding: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            conv: conv3x3(channels, channels, 2, padding, vb.pp("conv"))?,
            pad_right_bottom: padding == 0,
        })
    }
}

impl Module for Downsample2D {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        if self.pad_right_bottom {
            let right_bottom = Padding { top: 0, left: 0, bottom: 1, right: 1 };
            conv2d_layer_padded(&self.conv, xs, right_bottom)
        } else {
            conv2d_layer(&self.conv, xs)
        }
    }
}

/// Nearest-neighbour upsampling to the next skip connection's size, then a 3x3 conv.
#[derive(Debug, Clone)]
struct Upsample2D {
    conv: Conv2d,
}

impl Upsample2D {
    fn forward(&self, xs: &Tensor, (height, width): (usize, usize)) -> Result<Tensor> {
        let (_, _, h, w) = xs.dims4()?;
        if (height, width) == (2 * h, 2 * w) {
            return conv2d_layer_upsampled(&self.conv, xs);
        }
        let upsampled = {
            let _t = profile::timer("upsample");
            xs.upsample_nearest2d(height, width)?
        };
        conv2d_layer(&self.conv, &upsampled)
    }
}

fn load_attentions(
    kind: BlockKind,
    count: usize,
    channels: usize,
    plan_attention: AttentionPlan,
    settings: &BlockSettings,
    vb: &VarBuilder,
) -> Result<Vec<Transformer2DModel>> {
    if kind == BlockKind::Plain {
        return Ok(Vec::new());
    }
    (0..count)
        .map(|i| {
            Transformer2DModel::load(
                channels,
                settings.groups,
                plan_attention,
                settings.use_linear_projection,
                settings.upcast_attention,
                vb.pp("attentions").pp(i),
            )
        })
        .collect()
}

fn resnet_config(
    in_channels: usize,
    out_channels: usize,
    settings: &BlockSettings,
) -> ResnetConfig {
    ResnetConfig {
        in_channels,
        out_channels,
        temb_channels: settings.temb_channels,
        groups: settings.groups,
        eps: settings.resnet_eps,
        output_scale_factor: 1.0,
    }
}

/// Every resnet followed by its transformer, when the block has transformers.
fn resnet_then_attention(
    resnet: &ResnetBlock2D,
    attention: Option<&Transformer2DModel>,
    xs: &Tensor,
    temb_silu: &Tensor,
    context: &Tensor,
) -> Result<Tensor> {
    let xs = resnet.forward(xs, temb_silu)?;
    match attention {
        Some(attention) => attention.forward(&xs, context),
        None => Ok(xs),
    }
}

fn collect_norms<'a>(
    resnets: &'a [ResnetBlock2D],
    attentions: &'a [Transformer2DModel],
) -> Vec<&'a NormEps> {
    let mut norms: Vec<&NormEps> = resnets.iter().flat_map(ResnetBlock2D::norms).collect();
    norms.extend(attentions.iter().flat_map(Transformer2DModel::norms));
    norms
}

#[derive(Debug, Clone)]
pub struct DownBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2DModel>,
    downsample: Option<Downsample2D>,
}

impl DownBlock {
    pub fn load(plan: &DownBlockPlan, settings: &BlockSettings, vb: VarBuilder) -> Result<Self> {
        let resnets = (0..plan.resnets)
            .map(|i| {
                let in_channels = if i == 0 {
                    plan.in_channels
                } else {
                    plan.out_channels
                };
                ResnetBlock2D::load(
                    resnet_config(in_channels, plan.out_channels, settings),
                    vb.pp("resnets").pp(i),
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let attentions = load_attentions(
            plan.kind,
            plan.resnets,
            plan.out_channels,
            plan.attention,
            settings,
            &vb,
        )?;
        let downsample = if plan.add_downsample {
            Some(Downsample2D::load(
                plan.out_channels,
                settings.downsample_padding,
                vb.pp("downsamplers").pp(0),
            )?)
        } else {
            None
        };
        Ok(Self {
            resnets,
            attentions,
            downsample,
        })
    }

    /// The block output, and every intermediate state pushed onto `skips` (one per resnet, plus
    /// the downsampled output) for the up blocks.
    pub fn forward(
        &self,
        xs: &Tensor,
        temb_silu: &Tensor,
        context: &Tensor,
        skips: &mut Vec<Tensor>,
    ) -> Result<Tensor> {
        let mut xs = xs.clone();
        for (i, resnet) in self.resnets.iter().enumerate() {
            xs = resnet_then_attention(resnet, self.attentions.get(i), &xs, temb_silu, context)?;
            skips.push(xs.clone());
        }
        if let Some(downsample) = &self.downsample {
            xs = downsample.forward(&xs)?;
            skips.push(xs.clone());
        }
        Ok(xs)
    }

    pub fn norms(&self) -> Vec<&NormEps> {
        collect_norms(&self.resnets, &self.attentions)
    }
}

/// resnet, then (transformer, resnet) pairs.
#[derive(Debug, Clone)]
pub struct MidBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2DModel>,
}

impl MidBlock {
    pub fn load(plan: &MidBlockPlan, settings: &BlockSettings, vb: VarBuilder) -> Result<Self> {
        let config = ResnetConfig {
            output_scale_factor: plan.output_scale_factor,
            ..resnet_config(plan.channels, plan.channels, settings)
        };
        let resnets = (0..2)
            .map(|i| ResnetBlock2D::load(config, vb.pp("resnets").pp(i)))
            .collect::<Result<Vec<_>>>()?;
        let attentions = load_attentions(
            BlockKind::CrossAttn,
            1,
            plan.channels,
            plan.attention,
            settings,
            &vb,
        )?;
        Ok(Self {
            resnets,
            attentions,
        })
    }

    pub fn forward(&self, xs: &Tensor, temb_silu: &Tensor, context: &Tensor) -> Result<Tensor> {
        let mut xs = self.resnets[0].forward(xs, temb_silu)?;
        for (attention, resnet) in self.attentions.iter().zip(&self.resnets[1..]) {
            xs = resnet.forward(&attention.forward(&xs, context)?, temb_silu)?;
        }
        Ok(xs)
    }

    pub fn norms(&self) -> Vec<&NormEps> {
        collect_norms(&self.resnets, &self.attentions)
    }
}

#[derive(Debug, Clone)]
pub struct UpBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2DModel>,
    upsample: Option<Upsample2D>,
}

impl UpBlock {
    pub fn load(plan: &UpBlockPlan, settings: &BlockSettings, vb: VarBuilder) -> Result<Self> {
        let resnets = (0..plan.resnets)
            .map(|i| {
                // Skips are consumed deepest-first; the last one comes from the level above.
                let skip_channels = if i + 1 == plan.resnets {
                    plan.in_channels
                } else {
                    plan.out_channels
                };
                let from_below = if i == 0 {
                    plan.prev_out_channels
                } else {
                    plan.out_channels
                };
                let config = resnet_config(from_below + skip_channels, plan.out_channels, settings);
                ResnetBlock2D::load(config, vb.pp("resnets").pp(i))
            })
            .collect::<Result<Vec<_>>>()?;
        let attentions = load_attentions(
            plan.kind,
            plan.resnets,
            plan.out_channels,
            plan.attention,
            settings,
            &vb,
        )?;
        let upsample = if plan.add_upsample {
            let conv = conv3x3(
                plan.out_channels,
                plan.out_channels,
                1,
                1,
                vb.pp("upsamplers").pp(0).pp("conv"),
            )?;
            Some(Upsample2D { conv })
        } else {
            None
        };
        Ok(Self {
            resnets,
            attentions,
            upsample,
        })
    }

    /// Pops one skip per resnet from the end of `skips` (concatenated on channels), then
    /// upsamples to the spatial size of the skip that the next block will pop first, which
    /// is also how diffusers handles sizes not divisible by 2^levels.
    pub fn forward(
        &self,
        xs: &Tensor,
        temb_silu: &Tensor,
        context: &Tensor,
        skips: &mut Vec<Tensor>,
    ) -> Result<Tensor> {
        let mut xs = xs.clone();
        for (i, resnet) in self.resnets.iter().enumerate() {
            let Some(skip) = skips.pop() else {
                bail!("UNet up block ran out of skip connections");
            };
            let joined = Tensor::cat(&[&xs, &skip], 1)?;
            xs =
                resnet_then_attention(resnet, self.attentions.get(i), &joined, temb_silu, context)?;
        }
        if let Some(upsample) = &self.upsample {
            let Some(next_skip) = skips.last() else {
                bail!("UNet up block has an upsampler but no skip connection above it");
            };
            let (_, _, height, width) = next_skip.dims4()?;
            xs = upsample.forward(&xs, (height, width))?;
        }
        Ok(xs)
    }

    pub fn norms(&self) -> Vec<&NormEps> {
        collect_norms(&self.resnets, &self.attentions)
    }
}
