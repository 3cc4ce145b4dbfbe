//! Latents -> image: conv_in, mid block, one `UpDecoderBlock2D` per entry of the *reversed*
//! `block_out_channels` (each with `layers_per_block + 1` resnets; all but the last double the
//! resolution), then GroupNorm/SiLU/conv_out to RGB.

use candle_core::{Module, Result, Tensor};
use candle_nn::{Conv2d, VarBuilder};

use super::blocks::{conv3x3, vae_group_norm, GroupNorm, MidBlock, ResnetBlock, Upsample};
use super::config::VaeConfig;
use crate::backend::kernels::conv2d::{conv2d_layer, quantised_output_scope};
use crate::backend::kernels::release_free_memory;

#[derive(Debug)]
struct UpBlock {
    resnets: Vec<ResnetBlock>,
    upsample: Option<Upsample>,
}

impl UpBlock {
    /// Takes `x` by value, as [`ResnetBlock::forward_owned`] does.
    fn forward_owned(&self, mut h: Tensor) -> Result<Tensor> {
        for resnet in &self.resnets {
            h = resnet.forward_owned(h)?;
        }
        match &self.upsample {
            Some(upsample) => upsample.forward(&h),
            None => Ok(h),
        }
    }
}

#[derive(Debug)]
pub(super) struct Decoder {
    conv_in: Conv2d,
    mid_block: MidBlock,
    up_blocks: Vec<UpBlock>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl Decoder {
    pub fn new(config: &VaeConfig, vb: VarBuilder) -> Result<Self> {
        let groups = config.norm_num_groups;
        let reversed: Vec<usize> = config.block_out_channels.iter().rev().copied().collect();
        let deepest = reversed[0];
        let conv_in = conv3x3(config.latent_channels, deepest, vb.pp("conv_in"))?;
        let mid_block = MidBlock::new(
            deepest,
            groups,
            config.mid_block_add_attention,
            vb.pp("mid_block"),
        )?;

        let mut up_blocks = Vec::with_capacity(reversed.len());
        let mut block_in = deepest;
        for (index, &block_out) in reversed.iter().enumerate() {
            let vb_block = vb.pp("up_blocks").pp(index);
            // One resnet more than the encoder's blocks, as in the original LDM decoder.
            let resnets = (0..=config.layers_per_block)
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
            let is_last = index + 1 == reversed.len();
            let upsample = if is_last {
                None
            } else {
                Some(Upsample::new(block_out, vb_block.pp("upsamplers").pp("0"))?)
            };
            up_blocks.push(UpBlock { resnets, upsample });
            block_in = block_out;
        }

        Ok(Self {
            conv_in,
            mid_block,
            up_blocks,
            norm_out: vae_group_norm(groups, block_in, vb.pp("conv_norm_out"))?,
            conv_out: conv3x3(block_in, config.out_channels, vb.pp("conv_out"))?,
        })
    }
}

impl Module for Decoder {
    fn forward(&self, z: &Tensor) -> Result<Tensor> {
        // The decoder's output becomes 8-bit pixels: its 3x3 convolutions may round a little
        // more for 1.8x less work (kernels/conv2d.rs).
        let _quantised = quantised_output_scope();
        // Every activation from here on is created and held by this function alone, so the
        // blocks may reuse their buffers (`forward_owned`).
        let h = conv2d_layer(&self.conv_in, z)?;
        let mut h = self.mid_block.forward_owned(h)?;
        for block in &self.up_blocks {
            // Each block's activations are 4x the previous block's: hand back what the last one
            // (before the first block: the sampler) freed, which these larger (freshly mapped)
            // buffers cannot reuse.
            if h.device().is_cpu() {
                release_free_memory();
            }
            h = block.forward_owned(h)?;
        }
        let h = self.norm_out.forward_silu_owned(h)?;
        conv2d_layer(&self.conv_out, &h)
    }
}
