//! The UNet's module names in the original LDM/SGM layout (`input_blocks.4.1.proj_in`) against
//! diffusers' (`down_blocks.1.attentions.0.proj_in`), both ways.
//!
//! The correspondence is the one diffusers' `convert_ldm_unet_checkpoint` applies, but built by
//! walking our own block layout instead of by index arithmetic: `input_blocks` count up through
//! the down blocks (each resnet is `.0` of one input block, its transformer `.1`, and a
//! downsampler gets an input block of its own as `.0.op`); `output_blocks` do the same for the
//! up blocks (the upsampler sits after the last resnet's transformer, `.1.conv` or `.2.conv`);
//! `middle_block.0/1/2` are the mid resnet, transformer, resnet. Inside a resnet LDM's
//! `in_layers.0/2`, `out_layers.0/3`, `emb_layers.1`, `skip_connection` are diffusers'
//! `norm1`, `conv1`, `norm2`, `conv2`, `time_emb_proj`, `conv_shortcut`; transformers keep
//! their inner names. LoRA files use the same map (kohya's SDXL LoRAs name LDM modules).

use crate::backend::models::unet::layout::{BlockKind, UNetLayout};

/// LDM resnet sub-module names and their diffusers names.
const RESNET_RENAMES: &[(&str, &str)] = &[
    ("in_layers.0", "norm1"),
    ("in_layers.2", "conv1"),
    ("out_layers.0", "norm2"),
    ("out_layers.3", "conv2"),
    ("emb_layers.1", "time_emb_proj"),
    ("skip_connection", "conv_shortcut"),
];

/// Modules outside the blocks, same both ways.
const TOP_LEVEL: &[(&str, &str)] = &[
    ("time_embed.0", "time_embedding.linear_1"),
    ("time_embed.2", "time_embedding.linear_2"),
    ("label_emb.0.0", "add_embedding.linear_1"),
    ("label_emb.0.2", "add_embedding.linear_2"),
    ("input_blocks.0.0", "conv_in"),
    ("out.0", "conv_norm_out"),
    ("out.2", "conv_out"),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Inner names are the same in both layouts.
    Same,
    /// A resnet: inner names follow [`RESNET_RENAMES`].
    Resnet,
}

#[derive(Debug, Clone)]
struct Prefix {
    ldm: String,
    diffusers: String,
    kind: Kind,
}

/// Both directions of the UNet name map for one block layout.
#[derive(Debug, Clone)]
pub struct UnetKeyMap {
    /// Longest LDM prefix first.
    prefixes: Vec<Prefix>,
    /// The same prefixes, longest diffusers prefix first.
    by_diffusers: Vec<Prefix>,
}

impl UnetKeyMap {
    pub fn new(layout: &UNetLayout) -> Self {
        let mut prefixes: Vec<Prefix> = TOP_LEVEL
            .iter()
            .map(|(ldm, diffusers)| Prefix { ldm: ldm.to_string(), diffusers: diffusers.to_string(), kind: Kind::Same })
            .collect();
        let mut push = |ldm: String, diffusers: String, kind: Kind| prefixes.push(Prefix { ldm, diffusers, kind });

        let mut input = 1;
        for (b, block) in layout.down.iter().enumerate() {
            for j in 0..block.resnets {
                push(format!("input_blocks.{input}.0"), format!("down_blocks.{b}.resnets.{j}"), Kind::Resnet);
                if block.kind == BlockKind::CrossAttn {
                    push(format!("input_blocks.{input}.1"), format!("down_blocks.{b}.attentions.{j}"), Kind::Same);
                }
                input += 1;
            }
            if block.add_downsample {
                push(format!("input_blocks.{input}.0.op"), format!("down_blocks.{b}.downsamplers.0.conv"), Kind::Same);
                input += 1;
            }
        }

        push("middle_block.0".into(), "mid_block.resnets.0".into(), Kind::Resnet);
        push("middle_block.1".into(), "mid_block.attentions.0".into(), Kind::Same);
        push("middle_block.2".into(), "mid_block.resnets.1".into(), Kind::Resnet);

        let mut output = 0;
        for (b, block) in layout.up.iter().enumerate() {
            let attention = block.kind == BlockKind::CrossAttn;
            for j in 0..block.resnets {
                push(format!("output_blocks.{output}.0"), format!("up_blocks.{b}.resnets.{j}"), Kind::Resnet);
                if attention {
                    push(format!("output_blocks.{output}.1"), format!("up_blocks.{b}.attentions.{j}"), Kind::Same);
                }
                if j + 1 == block.resnets && block.add_upsample {
                    let slot = if attention { 2 } else { 1 };
                    push(format!("output_blocks.{output}.{slot}.conv"), format!("up_blocks.{b}.upsamplers.0.conv"), Kind::Same);
                }
                output += 1;
            }
        }
        // Longest prefixes first, so `input_blocks.3.0.op` wins over a shorter match.
        prefixes.sort_by_key(|p| std::cmp::Reverse(p.ldm.len()));
        let mut by_diffusers = prefixes.clone();
        by_diffusers.sort_by_key(|p| std::cmp::Reverse(p.diffusers.len()));
        UnetKeyMap { prefixes, by_diffusers }
    }

    /// The diffusers name of an LDM tensor or module name (without `model.diffusion_model.`).
    pub fn ldm_to_diffusers(&self, ldm: &str) -> Option<String> {
        self.prefixes.iter().find_map(|p| {
            let rest = strip_module_prefix(ldm, &p.ldm)?;
            let rest = match p.kind {
                Kind::Same => rest.to_string(),
                Kind::Resnet => rename_inner(rest, RESNET_RENAMES.iter().map(|(l, d)| (*l, *d)))?,
            };
            Some(join(&p.diffusers, &rest))
        })
    }

    /// The LDM name of a diffusers tensor or module name.
    pub fn diffusers_to_ldm(&self, diffusers: &str) -> Option<String> {
        self.by_diffusers.iter().find_map(|p| {
            let rest = strip_module_prefix(diffusers, &p.diffusers)?;
            let rest = match p.kind {
                Kind::Same => rest.to_string(),
                Kind::Resnet => rename_inner(rest, RESNET_RENAMES.iter().map(|(l, d)| (*d, *l)))?,
            };
            Some(join(&p.ldm, &rest))
        })
    }
}

/// `name` without `prefix` when `prefix` is a whole number of its dotted components.
fn strip_module_prefix<'a>(name: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = name.strip_prefix(prefix)?;
    if rest.is_empty() {
        Some(rest)
    } else {
        rest.strip_prefix('.')
    }
}

/// Rename the leading sub-module of `rest` through `pairs` (`from`, `to`); a resnet's own
/// tensors always sit under one of them, so anything else is not a resnet name.
fn rename_inner<'a>(rest: &str, mut pairs: impl Iterator<Item = (&'a str, &'a str)>) -> Option<String> {
    pairs.find_map(|(from, to)| strip_module_prefix(rest, from).map(|tail| join(to, tail)))
}

fn join(prefix: &str, rest: &str) -> String {
    if rest.is_empty() {
        prefix.to_string()
    } else {
        format!("{prefix}.{rest}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::models::unet::UNetConfig;

    fn sd15_map() -> UnetKeyMap {
        // diffusers' defaults are SD 1.5's UNet.
        UnetKeyMap::new(&UNetConfig::from_json("{}").unwrap().layout().unwrap())
    }

    /// Names as they appear in every SD 1.5 checkpoint and in diffusers' SD 1.5 folder.
    const SD15_PAIRS: &[(&str, &str)] = &[
        ("input_blocks.0.0.weight", "conv_in.weight"),
        ("time_embed.2.bias", "time_embedding.linear_2.bias"),
        ("input_blocks.1.0.in_layers.2.weight", "down_blocks.0.resnets.0.conv1.weight"),
        ("input_blocks.1.1.proj_in.weight", "down_blocks.0.attentions.0.proj_in.weight"),
        ("input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight", "down_blocks.0.attentions.1.transformer_blocks.0.attn2.to_k.weight"),
        ("input_blocks.3.0.op.weight", "down_blocks.0.downsamplers.0.conv.weight"),
        ("input_blocks.4.0.skip_connection.bias", "down_blocks.1.resnets.0.conv_shortcut.bias"),
        ("input_blocks.9.0.op.bias", "down_blocks.2.downsamplers.0.conv.bias"),
        ("input_blocks.11.0.emb_layers.1.weight", "down_blocks.3.resnets.1.time_emb_proj.weight"),
        ("middle_block.1.transformer_blocks.0.ff.net.0.proj.weight", "mid_block.attentions.0.transformer_blocks.0.ff.net.0.proj.weight"),
        ("middle_block.2.out_layers.3.weight", "mid_block.resnets.1.conv2.weight"),
        ("output_blocks.2.1.conv.weight", "up_blocks.0.upsamplers.0.conv.weight"),
        ("output_blocks.3.1.norm.weight", "up_blocks.1.attentions.0.norm.weight"),
        ("output_blocks.5.2.conv.bias", "up_blocks.1.upsamplers.0.conv.bias"),
        ("output_blocks.8.2.conv.weight", "up_blocks.2.upsamplers.0.conv.weight"),
        ("output_blocks.11.0.skip_connection.weight", "up_blocks.3.resnets.2.conv_shortcut.weight"),
        ("output_blocks.11.1.proj_out.bias", "up_blocks.3.attentions.2.proj_out.bias"),
        ("out.2.weight", "conv_out.weight"),
    ];

    #[test]
    fn sd15_names_map_both_ways() {
        let map = sd15_map();
        for (ldm, diffusers) in SD15_PAIRS {
            assert_eq!(map.ldm_to_diffusers(ldm).as_deref(), Some(*diffusers), "{ldm}");
            assert_eq!(map.diffusers_to_ldm(diffusers).as_deref(), Some(*ldm), "{diffusers}");
        }
        // Module names (LoRA targets) map too.
        assert_eq!(map.ldm_to_diffusers("input_blocks.1.0.in_layers.2").as_deref(), Some("down_blocks.0.resnets.0.conv1"));
        assert_eq!(map.ldm_to_diffusers("input_blocks.12.0.in_layers.2"), None);
        assert_eq!(map.ldm_to_diffusers("input_blocks.1.0.bogus.weight"), None);
    }

    #[test]
    fn sdxl_layout_matches_sgm_names() {
        let config = UNetConfig::from_json(
            r#"{"block_out_channels":[320,640,1280],"down_block_types":["DownBlock2D","CrossAttnDownBlock2D","CrossAttnDownBlock2D"],
                "up_block_types":["CrossAttnUpBlock2D","CrossAttnUpBlock2D","UpBlock2D"],"attention_head_dim":[5,10,20],
                "transformer_layers_per_block":[1,2,10],"cross_attention_dim":2048,"use_linear_projection":true,
                "addition_embed_type":"text_time","addition_time_embed_dim":256,"projection_class_embeddings_input_dim":2816}"#,
        )
        .unwrap();
        let map = UnetKeyMap::new(&config.layout().unwrap());
        for (ldm, diffusers) in [
            ("label_emb.0.0.weight", "add_embedding.linear_1.weight"),
            ("input_blocks.3.0.op.weight", "down_blocks.0.downsamplers.0.conv.weight"),
            ("input_blocks.4.1.transformer_blocks.1.attn1.to_q.weight", "down_blocks.1.attentions.0.transformer_blocks.1.attn1.to_q.weight"),
            ("input_blocks.8.1.proj_out.weight", "down_blocks.2.attentions.1.proj_out.weight"),
            ("output_blocks.2.2.conv.weight", "up_blocks.0.upsamplers.0.conv.weight"),
            ("output_blocks.5.2.conv.weight", "up_blocks.1.upsamplers.0.conv.weight"),
            ("output_blocks.8.0.in_layers.0.weight", "up_blocks.2.resnets.2.norm1.weight"),
        ] {
            assert_eq!(map.ldm_to_diffusers(ldm).as_deref(), Some(diffusers), "{ldm}");
            assert_eq!(map.diffusers_to_ldm(diffusers).as_deref(), Some(ldm), "{diffusers}");
        }
    }
}
