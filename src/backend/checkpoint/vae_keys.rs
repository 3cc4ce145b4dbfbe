//! The VAE's LDM names (`encoder.down.0.block.1.nin_shortcut`) against diffusers'
//! (`encoder.down_blocks.0.resnets.1.conv_shortcut`), as diffusers' `convert_ldm_vae_checkpoint`
//! maps them. LDM numbers the decoder's `up` levels from the lowest resolution side, diffusers'
//! `up_blocks` from the deepest, so decoder levels are reversed. The mid attention's 1x1 convs
//! (`q`, `k`, `v`, `proj_out`) become linear layers (`to_q`, ..., `to_out.0`).

use super::convert::Transform;

const TOP_LEVEL: &[(&str, &str)] = &[
    ("encoder.norm_out", "encoder.conv_norm_out"),
    ("decoder.norm_out", "decoder.conv_norm_out"),
];

const ATTENTION_RENAMES: &[(&str, &str)] =
    &[("norm", "group_norm"), ("q", "to_q"), ("k", "to_k"), ("v", "to_v"), ("proj_out", "to_out.0")];

/// The diffusers name of an LDM VAE tensor (prefix like `first_stage_model.` already removed),
/// and how to reshape it. `up_levels` is the number of decoder levels (to reverse them).
pub fn ldm_vae_to_diffusers(ldm: &str, up_levels: usize) -> Option<(String, Transform)> {
    let same = |name: String| Some((name, Transform::Copy));
    for (from, to) in TOP_LEVEL {
        if let Some(rest) = ldm.strip_prefix(from) {
            return same(format!("{to}{rest}"));
        }
    }
    for half in ["encoder", "decoder"] {
        let Some(rest) = ldm.strip_prefix(half).and_then(|r| r.strip_prefix('.')) else { continue };
        if let Some(level_rest) = rest.strip_prefix("down.").or_else(|| rest.strip_prefix("up.")) {
            let is_up = rest.starts_with("up.");
            let (level, inner) = split_index(level_rest)?;
            let level = if is_up { up_levels.checked_sub(level + 1)? } else { level };
            let block = if is_up { "up_blocks" } else { "down_blocks" };
            if let Some(resnet) = inner.strip_prefix("block.") {
                let (j, tail) = split_index(resnet)?;
                return same(format!("{half}.{block}.{level}.resnets.{j}.{}", resnet_inner(tail)));
            }
            if let Some(tail) = inner.strip_prefix("downsample.").or_else(|| inner.strip_prefix("upsample.")) {
                let sampler = if is_up { "upsamplers" } else { "downsamplers" };
                return same(format!("{half}.{block}.{level}.{sampler}.0.{tail}"));
            }
            return None;
        }
        if let Some(mid) = rest.strip_prefix("mid.") {
            if let Some(tail) = mid.strip_prefix("block_1.") {
                return same(format!("{half}.mid_block.resnets.0.{}", resnet_inner(tail)));
            }
            if let Some(tail) = mid.strip_prefix("block_2.") {
                return same(format!("{half}.mid_block.resnets.1.{}", resnet_inner(tail)));
            }
            if let Some(tail) = mid.strip_prefix("attn_1.") {
                let (module, param) = tail.rsplit_once('.')?;
                let (_, renamed) = ATTENTION_RENAMES.iter().find(|(from, _)| *from == module)?;
                // The norm stays a norm; the projections were 1x1 convolutions.
                let transform = if module == "norm" { Transform::Copy } else { Transform::SqueezeTo2d };
                return Some((format!("{half}.mid_block.attentions.0.{renamed}.{param}"), transform));
            }
            return None;
        }
        // conv_in, conv_out: same names.
        return same(ldm.to_string());
    }
    // quant_conv, post_quant_conv.
    same(ldm.to_string())
}

/// `nin_shortcut` is diffusers' `conv_shortcut`; `norm1`, `conv1`, ... keep their names.
fn resnet_inner(tail: &str) -> String {
    match tail.strip_prefix("nin_shortcut") {
        Some(rest) => format!("conv_shortcut{rest}"),
        None => tail.to_string(),
    }
}

/// `"3.rest"` → `(3, "rest")`.
fn split_index(s: &str) -> Option<(usize, &str)> {
    let (index, rest) = s.split_once('.')?;
    Some((index.parse().ok()?, rest))
}

/// The LDM name of a diffusers VAE tensor: the inverse of [`ldm_vae_to_diffusers`] (tests write
/// LDM files with it; the 2-D attention projections need [`Transform::UnsqueezeTo4d`]).
pub fn diffusers_vae_to_ldm(name: &str, up_levels: usize) -> Option<(String, Transform)> {
    for (ldm, diffusers) in TOP_LEVEL {
        if let Some(rest) = name.strip_prefix(diffusers) {
            return Some((format!("{ldm}{rest}"), Transform::Copy));
        }
    }
    let (half, rest) = name.split_once('.')?;
    if half != "encoder" && half != "decoder" {
        return Some((name.to_string(), Transform::Copy));
    }
    for (block, ldm_block) in [("down_blocks.", "down"), ("up_blocks.", "up")] {
        let Some(level_rest) = rest.strip_prefix(block) else { continue };
        let (level, inner) = split_index(level_rest)?;
        let level = if ldm_block == "up" { up_levels.checked_sub(level + 1)? } else { level };
        if let Some(resnet) = inner.strip_prefix("resnets.") {
            let (j, tail) = split_index(resnet)?;
            let tail = tail.strip_prefix("conv_shortcut").map(|r| format!("nin_shortcut{r}")).unwrap_or_else(|| tail.to_string());
            return Some((format!("{half}.{ldm_block}.{level}.block.{j}.{tail}"), Transform::Copy));
        }
        let sampler = if ldm_block == "up" { "upsample" } else { "downsample" };
        let tail = inner.strip_prefix("upsamplers.0.").or_else(|| inner.strip_prefix("downsamplers.0."))?;
        return Some((format!("{half}.{ldm_block}.{level}.{sampler}.{tail}"), Transform::Copy));
    }
    if let Some(mid) = rest.strip_prefix("mid_block.") {
        if let Some(resnet) = mid.strip_prefix("resnets.") {
            let (j, tail) = split_index(resnet)?;
            return Some((format!("{half}.mid.block_{}.{tail}", j + 1), Transform::Copy));
        }
        let tail = mid.strip_prefix("attentions.0.")?;
        let (module, param) = tail.rsplit_once('.')?;
        let (ldm, _) = ATTENTION_RENAMES.iter().find(|(_, to)| *to == module)?;
        let transform = if *ldm == "norm" { Transform::Copy } else { Transform::UnsqueezeTo4d };
        return Some((format!("{half}.mid.attn_1.{ldm}.{param}"), transform));
    }
    Some((name.to_string(), Transform::Copy))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sd_vae_names_map_both_ways() {
        // Names from an SD 1.5 checkpoint's VAE (4 levels) and diffusers' vae folder.
        for (ldm, diffusers, transform) in [
            ("encoder.conv_in.weight", "encoder.conv_in.weight", Transform::Copy),
            ("encoder.down.1.block.0.nin_shortcut.weight", "encoder.down_blocks.1.resnets.0.conv_shortcut.weight", Transform::Copy),
            ("encoder.down.2.downsample.conv.bias", "encoder.down_blocks.2.downsamplers.0.conv.bias", Transform::Copy),
            ("encoder.mid.block_2.norm2.weight", "encoder.mid_block.resnets.1.norm2.weight", Transform::Copy),
            ("encoder.mid.attn_1.q.weight", "encoder.mid_block.attentions.0.to_q.weight", Transform::SqueezeTo2d),
            ("decoder.mid.attn_1.norm.bias", "decoder.mid_block.attentions.0.group_norm.bias", Transform::Copy),
            ("decoder.mid.attn_1.proj_out.bias", "decoder.mid_block.attentions.0.to_out.0.bias", Transform::SqueezeTo2d),
            ("decoder.up.3.block.2.conv1.weight", "decoder.up_blocks.0.resnets.2.conv1.weight", Transform::Copy),
            ("decoder.up.1.upsample.conv.weight", "decoder.up_blocks.2.upsamplers.0.conv.weight", Transform::Copy),
            ("decoder.up.0.block.0.nin_shortcut.bias", "decoder.up_blocks.3.resnets.0.conv_shortcut.bias", Transform::Copy),
            ("decoder.norm_out.weight", "decoder.conv_norm_out.weight", Transform::Copy),
            ("post_quant_conv.weight", "post_quant_conv.weight", Transform::Copy),
        ] {
            assert_eq!(ldm_vae_to_diffusers(ldm, 4), Some((diffusers.to_string(), transform)), "{ldm}");
            let back = diffusers_vae_to_ldm(diffusers, 4).unwrap();
            assert_eq!(back.0, ldm, "{diffusers}");
        }
        assert_eq!(ldm_vae_to_diffusers("encoder.down.0.bogus.weight", 4), None);
    }
}
