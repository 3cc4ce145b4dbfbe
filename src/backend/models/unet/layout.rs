//! The per-block layout diffusers' `UNet2DConditionModel.__init__` derives from its config:
//! channels, heads, transformer depth and cross-attention width of every block. Features this
//! port does not implement are rejected here instead of being silently ignored.

use super::config::{UNetConfig, MID_CROSS_ATTN};
use crate::backend::models::error::ModelError;

/// Which kind of down/up block sits at one resolution level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockKind {
    /// Resnets only (`DownBlock2D` / `UpBlock2D`).
    Plain,
    /// Each resnet followed by a Transformer2D (`CrossAttnDownBlock2D` / `CrossAttnUpBlock2D`).
    CrossAttn,
}

/// Settings of the Transformer2D models inside one block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionPlan {
    pub heads: usize,
    pub transformer_layers: usize,
    pub cross_attention_dim: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DownBlockPlan {
    pub kind: BlockKind,
    pub in_channels: usize,
    pub out_channels: usize,
    pub resnets: usize,
    pub attention: AttentionPlan,
    pub add_downsample: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MidBlockPlan {
    pub channels: usize,
    pub attention: AttentionPlan,
    pub output_scale_factor: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct UpBlockPlan {
    pub kind: BlockKind,
    /// Channels of the deepest skip connection this block consumes (its last resnet's skip).
    pub in_channels: usize,
    /// Channels coming up from the block below.
    pub prev_out_channels: usize,
    pub out_channels: usize,
    pub resnets: usize,
    pub attention: AttentionPlan,
    pub add_upsample: bool,
}

/// SDXL's "text_time" added conditioning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextTimePlan {
    pub time_embed_dim: usize,
    pub projection_input_dim: usize,
}

/// Everything the model constructor needs, resolved and validated.
#[derive(Debug, Clone, PartialEq)]
pub struct UNetLayout {
    pub norm_groups: usize,
    pub timestep_channels: usize,
    pub time_embed_dim: usize,
    pub text_time: Option<TextTimePlan>,
    pub down: Vec<DownBlockPlan>,
    pub mid: MidBlockPlan,
    pub up: Vec<UpBlockPlan>,
}

impl UNetConfig {
    /// Resolve per-block settings as diffusers' `UNet2DConditionModel.__init__` does, and reject
    /// what this port does not implement.
    pub fn layout(&self) -> Result<UNetLayout, ModelError> {
        self.reject_unsupported()?;
        let blocks = self.block_out_channels.len();
        if blocks == 0 {
            return Err(ModelError::unsupported("block_out_channels is empty"));
        }
        if self.down_block_types.len() != blocks || self.up_block_types.len() != blocks {
            return Err(ModelError::unsupported(format!(
                "{} down and {} up block types for {blocks} block_out_channels",
                self.down_block_types.len(),
                self.up_block_types.len()
            )));
        }
        let norm_groups = self
            .norm_num_groups
            .ok_or_else(|| ModelError::unsupported("norm_num_groups null is not supported"))?;
        let heads = self.heads_per_block()?;
        let layers = self
            .layers_per_block
            .per_block(blocks, "layers_per_block")?;
        let cross_dims = self
            .cross_attention_dim
            .per_block(blocks, "cross_attention_dim")?;
        let transformer_layers = self
            .transformer_layers_per_block
            .per_block(blocks, "transformer_layers_per_block")?;
        let only_cross = self
            .only_cross_attention
            .per_block(blocks, "only_cross_attention")?;
        if only_cross.iter().any(|&only| only) {
            return Err(ModelError::unsupported(
                "only_cross_attention is not supported",
            ));
        }
        let attention_at = |i: usize| AttentionPlan {
            heads: heads[i],
            transformer_layers: transformer_layers[i],
            cross_attention_dim: cross_dims[i],
        };

        let channels = &self.block_out_channels;
        let down = (0..blocks)
            .map(|i| {
                Ok(DownBlockPlan {
                    kind: down_kind(&self.down_block_types[i])?,
                    in_channels: if i == 0 { channels[0] } else { channels[i - 1] },
                    out_channels: channels[i],
                    resnets: layers[i],
                    attention: attention_at(i),
                    add_downsample: i + 1 < blocks,
                })
            })
            .collect::<Result<Vec<_>, ModelError>>()?;

        let last = blocks - 1;
        let mid = MidBlockPlan {
            channels: channels[last],
            attention: attention_at(last),
            output_scale_factor: self.mid_block_scale_factor,
        };

        // Up block i mirrors down block `last - i`; diffusers reverses every per-block list.
        let up = (0..blocks)
            .map(|i| {
                let mirrored = last - i;
                Ok(UpBlockPlan {
                    kind: up_kind(&self.up_block_types[i])?,
                    in_channels: channels[mirrored.saturating_sub(1)],
                    prev_out_channels: if i == 0 {
                        channels[last]
                    } else {
                        channels[mirrored + 1]
                    },
                    out_channels: channels[mirrored],
                    resnets: layers[mirrored] + 1,
                    attention: attention_at(mirrored),
                    add_upsample: i < last,
                })
            })
            .collect::<Result<Vec<_>, ModelError>>()?;

        let layout = UNetLayout {
            norm_groups,
            timestep_channels: channels[0],
            time_embed_dim: self.time_embedding_dim.unwrap_or(channels[0] * 4),
            text_time: self.text_time_plan()?,
            down,
            mid,
            up,
        };
        validate_divisibility(&layout)?;
        Ok(layout)
    }

    fn text_time_plan(&self) -> Result<Option<TextTimePlan>, ModelError> {
        match self.addition_embed_type.as_deref() {
            None => Ok(None),
            Some("text_time") => {
                let time_embed_dim = self.addition_time_embed_dim.ok_or_else(|| {
                    ModelError::unsupported("text_time needs addition_time_embed_dim")
                })?;
                let projection_input_dim =
                    self.projection_class_embeddings_input_dim.ok_or_else(|| {
                        ModelError::unsupported(
                            "text_time needs projection_class_embeddings_input_dim",
                        )
                    })?;
                Ok(Some(TextTimePlan {
                    time_embed_dim,
                    projection_input_dim,
                }))
            }
            Some(other) => Err(ModelError::unsupported(format!(
                "addition_embed_type {other:?} is not supported"
            ))),
        }
    }

    fn reject_unsupported(&self) -> Result<(), ModelError> {
        let unsupported =
            |what: &str| Err(ModelError::unsupported(format!("{what} is not supported")));
        if self.act_fn != "silu" {
            return unsupported(&format!("act_fn {:?}", self.act_fn));
        }
        if self.mid_block_type.as_deref() != Some(MID_CROSS_ATTN) {
            return unsupported(&format!("mid_block_type {:?}", self.mid_block_type));
        }
        if self.dual_cross_attention {
            return unsupported("dual_cross_attention");
        }
        if self.attention_type != "default" {
            return unsupported(&format!("attention_type {:?}", self.attention_type));
        }
        if self.cross_attention_norm.is_some() {
            return unsupported("cross_attention_norm");
        }
        if self.class_embed_type.is_some() || self.num_class_embeds.is_some() {
            return unsupported("class embeddings");
        }
        if self.encoder_hid_dim.is_some() || self.encoder_hid_dim_type.is_some() {
            return unsupported("encoder_hid_dim");
        }
        if self.resnet_time_scale_shift != "default" {
            return unsupported(&format!(
                "resnet_time_scale_shift {:?}",
                self.resnet_time_scale_shift
            ));
        }
        if self.resnet_skip_time_act {
            return unsupported("resnet_skip_time_act");
        }
        if self.time_embedding_type != "positional" {
            return unsupported(&format!(
                "time_embedding_type {:?}",
                self.time_embedding_type
            ));
        }
        if self.time_embedding_act_fn.is_some() || self.timestep_post_act.is_some() {
            return unsupported("time embedding activations");
        }
        // LCM-distilled UNets embed the guidance scale through `time_embedding.cond_proj`.
        if self.time_cond_proj_dim.is_some() {
            return unsupported("time_cond_proj_dim (guidance-embedding UNets)");
        }
        if self
            .reverse_transformer_layers_per_block
            .as_ref()
            .is_some_and(|v| !v.is_null())
        {
            return unsupported("reverse_transformer_layers_per_block");
        }
        if self.conv_in_kernel.is_multiple_of(2) || self.conv_out_kernel.is_multiple_of(2) {
            return unsupported("even conv_in/conv_out kernels");
        }
        Ok(())
    }
}

fn down_kind(name: &str) -> Result<BlockKind, ModelError> {
    match name {
        "DownBlock2D" => Ok(BlockKind::Plain),
        "CrossAttnDownBlock2D" => Ok(BlockKind::CrossAttn),
        other => Err(ModelError::unsupported(format!(
            "down block type {other:?} is not supported"
        ))),
    }
}

fn up_kind(name: &str) -> Result<BlockKind, ModelError> {
    match name {
        "UpBlock2D" => Ok(BlockKind::Plain),
        "CrossAttnUpBlock2D" => Ok(BlockKind::CrossAttn),
        other => Err(ModelError::unsupported(format!(
            "up block type {other:?} is not supported"
        ))),
    }
}

/// GroupNorm needs channels divisible by groups, and attention needs channels divisible by heads;
/// checked here so a bad config fails at load with a clear message, not deep in a forward pass.
fn validate_divisibility(layout: &UNetLayout) -> Result<(), ModelError> {
    let groups = layout.norm_groups;
    let mut checks: Vec<(usize, AttentionPlan, bool)> = Vec::new();
    for block in &layout.down {
        checks.push((block.in_channels, block.attention, false));
        checks.push((
            block.out_channels,
            block.attention,
            block.kind == BlockKind::CrossAttn,
        ));
    }
    checks.push((layout.mid.channels, layout.mid.attention, true));
    for block in &layout.up {
        checks.push((block.in_channels, block.attention, false));
        checks.push((
            block.out_channels,
            block.attention,
            block.kind == BlockKind::CrossAttn,
        ));
    }
    for (channels, attention, has_attention) in checks {
        if groups == 0 || !channels.is_multiple_of(groups) {
            return Err(ModelError::unsupported(format!(
                "{channels} channels are not divisible into {groups} norm groups"
            )));
        }
        if has_attention && (attention.heads == 0 || !channels.is_multiple_of(attention.heads)) {
            return Err(ModelError::unsupported(format!(
                "{channels} channels are not divisible into {} attention heads",
                attention.heads
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture_config(pipe: &str) -> UNetConfig {
        let path = format!(
            "{}/tests/fixtures/{pipe}/unet/config.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(path).unwrap();
        UNetConfig::from_json(&text).unwrap()
    }

    #[test]
    fn sd15_attention_head_dim_means_heads() {
        let layout = fixture_config("tiny-sd15").layout().unwrap();
        assert_eq!(layout.down[0].attention.heads, 8);
        assert_eq!(layout.mid.attention.heads, 8);
        assert_eq!(layout.up[1].attention.heads, 8);
        assert_eq!(layout.time_embed_dim, 128);
        assert_eq!(layout.text_time, None);
    }

    #[test]
    fn sdxl_per_block_lists_are_reversed_for_up_blocks() {
        let config = fixture_config("tiny-sdxl");
        let layout = config.layout().unwrap();
        assert_eq!(layout.down[1].kind, BlockKind::CrossAttn);
        assert_eq!(layout.down[1].attention.heads, 4);
        assert_eq!(layout.down[1].attention.transformer_layers, 2);
        assert_eq!(layout.mid.attention, layout.down[1].attention);
        assert_eq!(layout.up[0].kind, BlockKind::CrossAttn);
        assert_eq!(layout.up[0].attention, layout.down[1].attention);
        assert_eq!(layout.up[0].resnets, 3);
        assert_eq!(
            (
                layout.up[0].prev_out_channels,
                layout.up[0].in_channels,
                layout.up[0].out_channels
            ),
            (64, 32, 64)
        );
        assert_eq!(
            (
                layout.up[1].prev_out_channels,
                layout.up[1].in_channels,
                layout.up[1].out_channels
            ),
            (64, 32, 32)
        );
        assert_eq!(
            layout.text_time,
            Some(TextTimePlan {
                time_embed_dim: 8,
                projection_input_dim: 80
            })
        );
    }

    #[test]
    fn unsupported_features_are_rejected() {
        let config = UNetConfig::from_json(r#"{"time_cond_proj_dim":256}"#).unwrap();
        assert!(matches!(config.layout(), Err(ModelError::Unsupported { .. })));
        let config = UNetConfig::from_json(r#"{"layers_per_block":[1,2]}"#).unwrap();
        assert!(matches!(config.layout(), Err(ModelError::Unsupported { .. })));
    }
}
