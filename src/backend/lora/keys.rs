//! LoRA tensor names as real files spell them, split into the module they patch and the part
//! of the low-rank pair they hold.
//!
//! - kohya / A1111: `lora_unet_<module_with_underscores>.lora_down.weight`, `.lora_up.weight`,
//!   `.alpha`, LyCORIS' `.lora_mid.weight`; `lora_te_` / `lora_te1_` / `lora_te2_` for the text
//!   encoders.
//! - PEFT (diffusers >= 0.24): `unet.<module>.lora_A.weight` / `.lora_B.weight`, also with
//!   `text_encoder.` / `text_encoder_2.` or `base_model.model.` in front.
//! - older diffusers: `<module>.lora.down.weight` / `.lora.up.weight`,
//!   `<module>.lora_linear_layer.down.weight`, and attention processors
//!   `attn1.processor.to_q_lora.down.weight` (the module is `attn1.to_q`; `to_out_lora` is
//!   `to_out.0`).

/// Which tensor of a LoRA module a key holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// `[rank, in]` or `[rank, in, kh, kw]`.
    Down,
    /// `[out, rank]` or `[out, rank, 1, 1]`.
    Up,
    /// LyCORIS CP decomposition core `[rank, rank, kh, kw]`.
    Mid,
    /// Scalar alpha: the delta is scaled by alpha / rank.
    Alpha,
    /// A part of a format we do not apply (LoHa, LoKr, DoRA, ...), named.
    Unsupported(String),
}

/// (suffix, part), longest first where one suffix ends another.
const SUFFIXES: &[(&str, Part)] = &[
    (".lora_down.weight", Part::Down),
    (".lora_up.weight", Part::Up),
    (".lora_mid.weight", Part::Mid),
    (".lora_A.default.weight", Part::Down),
    (".lora_B.default.weight", Part::Up),
    (".lora_A.weight", Part::Down),
    (".lora_B.weight", Part::Up),
    (".lora.down.weight", Part::Down),
    (".lora.up.weight", Part::Up),
    (".lora_linear_layer.down.weight", Part::Down),
    (".lora_linear_layer.up.weight", Part::Up),
    (".alpha", Part::Alpha),
];

/// Parts of LoRA-family formats we recognise but do not apply.
const UNSUPPORTED_PARTS: &[&str] = &[
    "dora_scale", "hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2", "lokr_w1", "lokr_w2",
    "lokr_w1_a", "lokr_w1_b", "lokr_w2_a", "lokr_w2_b", "lokr_t2", "oft_blocks", "oft_diag", "diff", "diff_b",
    "on_input", "w_norm", "b_norm", "a1.weight", "a2.weight", "b1.weight", "b2.weight",
];

/// Split a LoRA tensor name into (module name, part). `None` for names that are no LoRA part
/// at all (metadata-like tensors some trainers add).
pub fn split_key(key: &str) -> Option<(String, Part)> {
    for (suffix, part) in SUFFIXES {
        if let Some(module) = key.strip_suffix(suffix) {
            return Some((module.to_string(), part.clone()));
        }
    }
    // Attention processors: `<attn>.processor.to_q_lora.down.weight`.
    for (suffix, part) in [(".down.weight", Part::Down), (".up.weight", Part::Up)] {
        if let Some(module) = key.strip_suffix(suffix) {
            if let Some((attention, projection)) = module.rsplit_once(".processor.") {
                let projection = projection.strip_suffix("_lora")?;
                let projection = if projection == "to_out" { "to_out.0" } else { projection };
                return Some((format!("{attention}.{projection}"), part));
            }
        }
    }
    for unsupported in UNSUPPORTED_PARTS {
        if let Some(module) = key.strip_suffix(&format!(".{unsupported}")) {
            return Some((module.to_string(), Part::Unsupported(unsupported.to_string())));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_format_splits_to_its_module() {
        let cases = [
            ("lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight", "lora_unet_down_blocks_0_attentions_0_proj_in", Part::Down),
            ("lora_te1_text_model_encoder_layers_0_mlp_fc1.alpha", "lora_te1_text_model_encoder_layers_0_mlp_fc1", Part::Alpha),
            ("lora_unet_input_blocks_1_0_in_layers_2.lora_mid.weight", "lora_unet_input_blocks_1_0_in_layers_2", Part::Mid),
            ("unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight", "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q", Part::Down),
            ("text_encoder.text_model.encoder.layers.0.self_attn.k_proj.lora_B.weight", "text_encoder.text_model.encoder.layers.0.self_attn.k_proj", Part::Up),
            ("unet.mid_block.attentions.0.proj_out.lora.up.weight", "unet.mid_block.attentions.0.proj_out", Part::Up),
            ("text_encoder.text_model.encoder.layers.1.self_attn.q_proj.lora_linear_layer.down.weight", "text_encoder.text_model.encoder.layers.1.self_attn.q_proj", Part::Down),
            ("unet.up_blocks.1.attentions.0.transformer_blocks.0.attn2.processor.to_out_lora.up.weight", "unet.up_blocks.1.attentions.0.transformer_blocks.0.attn2.to_out.0", Part::Up),
            ("lora_unet_mid_block_resnets_0_conv1.dora_scale", "lora_unet_mid_block_resnets_0_conv1", Part::Unsupported("dora_scale".into())),
        ];
        for (key, module, part) in cases {
            assert_eq!(split_key(key), Some((module.to_string(), part)), "{key}");
        }
        assert_eq!(split_key("ss_metadata_tensor"), None);
    }
}
