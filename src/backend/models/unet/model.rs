//! `UNet2DConditionModel`: conv_in, time conditioning, down blocks, mid block, up blocks with
//! skip connections, GroupNorm + SiLU + conv_out.

use std::path::Path;
use std::sync::Arc;

use candle_core::{bail, DType, Device, Result, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, VarBuilder};

use super::blocks::{BlockSettings, DownBlock, MidBlock, UpBlock};
use super::config::UNetConfig;
use super::embeddings::{SdxlConditioning, TimeConditioning};
use super::layout::UNetLayout;
use super::norm::{GroupNorm, NormEps, NormRole};
use super::weights;
use crate::backend::kernels::conv2d::conv2d_layer;
use crate::backend::models::error::ModelError;
use crate::backend::models::tensor_map::{load_tensors, tracked_var_builder, TensorMap, WeightUsage};

#[derive(Debug, Clone)]
pub struct UNet2DConditionModel {
    config: UNetConfig,
    dtype: DType,
    device: Device,
    time: TimeConditioning,
    conv_in: Conv2d,
    down_blocks: Vec<DownBlock>,
    mid_block: MidBlock,
    up_blocks: Vec<UpBlock>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl UNet2DConditionModel {
    /// Load `dir/config.json` and the weights in `dir` (see [`weights::weight_files`]), converting
    /// them to `dtype`. Unused checkpoint tensors are logged: they mean a wiring bug.
    pub fn load(
        dir: &Path,
        device: &Device,
        dtype: DType,
    ) -> std::result::Result<Self, ModelError> {
        let (model, usage) = Self::load_with_usage(dir, device, dtype)?;
        usage.warn_if_unused("UNet", dir);
        Ok(model)
    }

    /// [`Self::load`], also reporting which checkpoint tensors were read.
    pub fn load_with_usage(
        dir: &Path,
        device: &Device,
        dtype: DType,
    ) -> std::result::Result<(Self, WeightUsage), ModelError> {
        let config_path = dir.join("config.json");
        if !config_path.is_file() {
            return Err(ModelError::MissingFile { path: config_path });
        }
        let config = UNetConfig::from_json(&std::fs::read_to_string(&config_path).map_err(|e| ModelError::io(&config_path, e))?)?;
        let files = weights::weight_files(dir)?;
        let tensors = Arc::new(load_tensors(&files, dtype, device)?);
        Self::from_tensors(config, tensors, dtype, device)
    }

    /// Build the model from tensors already in memory (named as diffusers names them), sharing
    /// their storage when `dtype` and `device` match theirs. Reports which tensors were unused.
    pub fn from_tensors(
        config: UNetConfig,
        tensors: Arc<TensorMap>,
        dtype: DType,
        device: &Device,
    ) -> std::result::Result<(Self, WeightUsage), ModelError> {
        let (vb, loaded) = tracked_var_builder(tensors.clone(), dtype, device);
        let model = Self::new(config, vb)?;
        Ok((model, loaded.usage(&tensors)))
    }

    /// Build the model from a parsed config and a `VarBuilder` rooted at the UNet's weights.
    pub fn new(config: UNetConfig, vb: VarBuilder) -> std::result::Result<Self, ModelError> {
        let layout = config.layout()?;
        Ok(Self::build(config, &layout, vb)?)
    }

    fn build(config: UNetConfig, layout: &UNetLayout, vb: VarBuilder) -> Result<Self> {
        let channels = &config.block_out_channels;
        let settings = BlockSettings {
            temb_channels: layout.time_embed_dim,
            groups: layout.norm_groups,
            resnet_eps: config.norm_eps,
            use_linear_projection: config.use_linear_projection,
            upcast_attention: config.upcast_attention,
            downsample_padding: config.downsample_padding,
        };
        let conv_in = same_conv(
            config.in_channels,
            channels[0],
            config.conv_in_kernel,
            vb.pp("conv_in"),
        )?;
        let time = TimeConditioning::load(layout, config.flip_sin_to_cos, config.freq_shift, &vb)?;
        let down_blocks = layout
            .down
            .iter()
            .enumerate()
            .map(|(i, plan)| DownBlock::load(plan, &settings, vb.pp("down_blocks").pp(i)))
            .collect::<Result<Vec<_>>>()?;
        let mid_block = MidBlock::load(&layout.mid, &settings, vb.pp("mid_block"))?;
        let up_blocks = layout
            .up
            .iter()
            .enumerate()
            .map(|(i, plan)| UpBlock::load(plan, &settings, vb.pp("up_blocks").pp(i)))
            .collect::<Result<Vec<_>>>()?;
        let conv_norm_out = GroupNorm::load(
            layout.norm_groups,
            channels[0],
            config.norm_eps,
            NormRole::Output,
            vb.pp("conv_norm_out"),
        )?;
        let conv_out = same_conv(
            channels[0],
            config.out_channels,
            config.conv_out_kernel,
            vb.pp("conv_out"),
        )?;
        Ok(Self {
            dtype: vb.dtype(),
            device: vb.device().clone(),
            config,
            time,
            conv_in,
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out,
            conv_out,
        })
    }

    pub fn config(&self) -> &UNetConfig {
        &self.config
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Predict the noise for `sample` `[B, in_channels, h, w]` at `timestep` (fractional for
    /// Euler-type samplers), conditioned on `encoder_hidden_states` `[B, tokens, cross_dim]`
    /// and, for SDXL, on `added`. Runs in the model's dtype; returns the sample's dtype.
    pub fn forward(
        &self,
        sample: &Tensor,
        timestep: f64,
        encoder_hidden_states: &Tensor,
        added: Option<&SdxlConditioning>,
    ) -> Result<Tensor> {
        let (batch, in_channels, _, _) = sample.dims4()?;
        if in_channels != self.config.in_channels {
            bail!(
                "UNet expects {} input channels, got {in_channels}",
                self.config.in_channels
            );
        }
        let context_batch = encoder_hidden_states.dim(0)?;
        if context_batch != batch {
            bail!("encoder_hidden_states batch {context_batch} does not match the sample batch {batch}");
        }
        let input_dtype = sample.dtype();
        let context = encoder_hidden_states.to_dtype(self.dtype)?;
        let emb = self
            .time
            .forward(timestep, batch, added, self.dtype, &self.device)?;
        // Every resnet applies SiLU to `emb` first; do it once.
        let temb_silu = emb.silu()?;

        let mut xs = sample.to_dtype(self.dtype)?;
        if self.config.center_input_sample {
            xs = xs.affine(2.0, -1.0)?;
        }
        xs = conv2d_layer(&self.conv_in, &xs)?;

        let mut skips = vec![xs.clone()];
        for block in &self.down_blocks {
            xs = block.forward(&xs, &temb_silu, &context, &mut skips)?;
        }
        xs = self.mid_block.forward(&xs, &temb_silu, &context)?;
        for block in &self.up_blocks {
            xs = block.forward(&xs, &temb_silu, &context, &mut skips)?;
        }
        if !skips.is_empty() {
            bail!("UNet left {} skip connections unused", skips.len());
        }

        let xs = self.conv_norm_out.forward_silu(&xs)?;
        conv2d_layer(&self.conv_out, &xs)?.to_dtype(input_dtype)
    }

    /// Every normalisation layer with its epsilon, in module order.
    pub fn norm_epsilons(&self) -> Vec<NormEps> {
        let mut norms: Vec<&NormEps> = Vec::new();
        for block in &self.down_blocks {
            norms.extend(block.norms());
        }
        norms.extend(self.mid_block.norms());
        for block in &self.up_blocks {
            norms.extend(block.norms());
        }
        norms.push(self.conv_norm_out.info());
        norms.into_iter().cloned().collect()
    }
}

/// Convolution with odd `kernel` and "same" padding (`conv_in`, `conv_out`).
fn same_conv(
    in_channels: usize,
    out_channels: usize,
    kernel: usize,
    vb: VarBuilder,
) -> Result<Conv2d> {
    let config = Conv2dConfig {
        padding: (kernel - 1) / 2,
        ..Default::default()
    };
    candle_nn::conv2d(in_channels, out_channels, kernel, config, vb)
}
