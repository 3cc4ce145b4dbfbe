//! Image -> posterior parameters: conv_in, one `DownEncoderBlock2D` per entry of
//! `block_out_channels` (all but the last halve the resolution), mid block, then
//! GroupNorm/SiLU/conv_out to `2 * latent_channels` (mean and log-variance).

use candle_core::{Module, Result, Tensor};
use candle_nn::{Conv2d, VarBuilder};

use super::blocks::{conv3x3, vae_group_norm, GroupNorm, Downsample, MidBlock, ResnetBlock};
use super::config::VaeConfig;
use crate::backend::kernels::conv2d::conv2d_layer;

#[derive(Debug)]
struct DownBlock {
    resnets: Vec<ResnetBlock>,
    downsample: Option<Downsample>,
}

impl DownBlock {
    /// Takes `x` by value, as [`ResnetBlock::forward_owned`] does.
    fn forward_owned(&self, mut h: Tensor) -> Result<Tensor> {
        for resnet in &self.resnets {
            h = resnet.forward_owned(h)?;
        }
        match &self.downsample {
            Some(downsample) => downsample.forward(&h),
            None => Ok(h),
        }
    }
}

#[derive(Debug)]
pub(super) struct Encoder {
    conv_in: Conv2d,
    down_blocks: Vec<DownBlock>,
    mid_block: MidBlock,
    norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl Encoder {
    pub fn new(config: &VaeConfig, vb: VarBuilder) -> Result<Self> {
        let channels = &config.block_out_channels;
        let groups = config.norm_num_groups;
        let conv_in = conv3x3(config.in_channels, channels[0], vb.pp("conv_in"))?;

        let mut down_blocks = Vec::with_capacity(channels.len());
        let mut block_in = channels[0];
        for (index, &block_out) in channels.iter().enumerate() {
            let vb_block = vb.pp("down_blocks").pp(index);
            let resnets = (0..config.layers_per_block)
                .map(|layer| {
                    let layer_in = if layer == 0 { block_in } else { block_out };
                    ResnetBlock::new(
                        layer_in,
                        block_out,
                        groups,
                        vb_block.pp("resnets").pp(layer),
                    )
                })
                .collect::<Result<Vec<_>>>()?;
            let is_last = index + 1 == channels.len();
            let downsample = if is_last {
                None
            } else {
                Some(Downsample::new(
                    block_out,
                    vb_block.pp("downsamplers").pp("0"),
                )?)
            };
            down_blocks.push(DownBlock {
                resnets,
                downsample,
            });
            block_in = block_out;
        }

        let deepest = block_in;
        Ok(Self {
            conv_in,
            down_blocks,
            mid_block: MidBlock::new(
                deepest,
                groups,
                config.mid_block_add_attention,
                vb.pp("mid_block"),
            )?,
            norm_out: vae_group_norm(groups, deepest, vb.pp("conv_norm_out"))?,
            conv_out: conv3x3(deepest, 2 * config.latent_channels, vb.pp("conv_out"))?,
        })
    }
}

impl Module for Encoder {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // Every activation from here on is created and held by this function alone, so the
        // blocks may reuse their buffers (`forward_owned`).
        let mut h = conv2d_layer(&self.conv_in, x)?;
        for block in &self.down_blocks {
            h = block.forward_owned(h)?;
        }
        let h = self.mid_block.forward_owned(h)?;
        let h = self.norm_out.forward_silu_owned(h)?;
        conv2d_layer(&self.conv_out, &h)
    }
}
