//! Text-encoder names in single-file checkpoints against transformers' CLIP names.
//!
//! OpenAI CLIP (SD 1.x `cond_stage_model.transformer.`, SDXL `conditioner.embedders.0.transformer.`)
//! is already stored in transformers' layout: only the prefix goes. OpenCLIP (SD 2.x
//! `cond_stage_model.model.`, SDXL `conditioner.embedders.1.model.`) uses its own names, as
//! diffusers' `convert_open_clip_checkpoint` maps them: `resblocks.N` → `encoder.layers.N`,
//! `ln_1/ln_2` → `layer_norm1/2`, `mlp.c_fc/c_proj` → `mlp.fc1/fc2`, the fused `attn.in_proj_*`
//! split into `q_proj`, `k_proj`, `v_proj`, and `text_projection` stored transposed.

use super::convert::Transform;

/// One tensor of the output, made from one input tensor.
pub type Renamed = (String, Transform);

/// transformers' name of an OpenAI-CLIP tensor (its checkpoint prefix already removed). Older
/// exports drop the `text_model.` level; `position_ids` is a buffer, not a weight.
pub fn clip_to_transformers(rest: &str) -> Option<String> {
    if rest.ends_with("position_ids") {
        return None;
    }
    if rest.starts_with("text_model.") || rest.starts_with("text_projection.") {
        return Some(rest.to_string());
    }
    if ["embeddings.", "encoder.", "final_layer_norm."].iter().any(|p| rest.starts_with(p)) {
        return Some(format!("text_model.{rest}"));
    }
    None
}

/// transformers' names of an OpenCLIP tensor (prefix removed): usually one, three for a fused
/// `in_proj`. `skip_layer` drops one resblock (SD 2.x uses the penultimate layer, so diffusers'
/// SD 2 text encoder has one layer fewer than the checkpoint). `keep_projection` keeps
/// `text_projection` (SDXL's second encoder pools through it; SD 2.x does not use it).
pub fn open_clip_to_transformers(rest: &str, skip_layer: Option<usize>, keep_projection: bool) -> Vec<Renamed> {
    let one = |name: &str, transform| vec![(name.to_string(), transform)];
    match rest {
        "token_embedding.weight" => return one("text_model.embeddings.token_embedding.weight", Transform::Copy),
        "positional_embedding" => return one("text_model.embeddings.position_embedding.weight", Transform::Copy),
        "ln_final.weight" => return one("text_model.final_layer_norm.weight", Transform::Copy),
        "ln_final.bias" => return one("text_model.final_layer_norm.bias", Transform::Copy),
        "text_projection" if keep_projection => return one("text_projection.weight", Transform::Transpose),
        _ => {}
    }
    let Some(block) = rest.strip_prefix("transformer.resblocks.") else { return Vec::new() };
    let Some((index, inner)) = block.split_once('.') else { return Vec::new() };
    let Ok(layer) = index.parse::<usize>() else { return Vec::new() };
    if skip_layer == Some(layer) {
        return Vec::new();
    }
    let base = format!("text_model.encoder.layers.{layer}");
    let fused = |param: &str| {
        ["q_proj", "k_proj", "v_proj"]
            .iter()
            .enumerate()
            .map(|(i, proj)| (format!("{base}.self_attn.{proj}.{param}"), Transform::Chunk { index: i, of: 3 }))
            .collect()
    };
    match inner {
        "attn.in_proj_weight" => fused("weight"),
        "attn.in_proj_bias" => fused("bias"),
        _ => {
            let renamed = [
                ("ln_1.", "layer_norm1."),
                ("ln_2.", "layer_norm2."),
                ("attn.out_proj.", "self_attn.out_proj."),
                ("mlp.c_fc.", "mlp.fc1."),
                ("mlp.c_proj.", "mlp.fc2."),
            ]
            .iter()
            .find_map(|(from, to)| inner.strip_prefix(from).map(|param| format!("{base}.{to}{param}")));
            renamed.map(|name| vec![(name, Transform::Copy)]).unwrap_or_default()
        }
    }
}

/// The OpenCLIP name(s) a transformers tensor came from: the inverse used by tests that write
/// checkpoints. Returns `(openclip_name, part)` where `part` is the q/k/v slot of a fused
/// `in_proj` tensor.
pub fn transformers_to_open_clip(name: &str) -> Option<(String, Option<usize>)> {
    let direct = [
        ("text_model.embeddings.token_embedding.weight", "token_embedding.weight"),
        ("text_model.embeddings.position_embedding.weight", "positional_embedding"),
        ("text_model.final_layer_norm.weight", "ln_final.weight"),
        ("text_model.final_layer_norm.bias", "ln_final.bias"),
        ("text_projection.weight", "text_projection"),
    ];
    if let Some((_, open)) = direct.iter().find(|(t, _)| *t == name) {
        return Some((open.to_string(), None));
    }
    let rest = name.strip_prefix("text_model.encoder.layers.")?;
    let (layer, inner) = rest.split_once('.')?;
    let base = format!("transformer.resblocks.{layer}");
    for (i, proj) in ["q_proj", "k_proj", "v_proj"].iter().enumerate() {
        if let Some(param) = inner.strip_prefix(&format!("self_attn.{proj}.")) {
            return Some((format!("{base}.attn.in_proj_{param}"), Some(i)));
        }
    }
    [("layer_norm1.", "ln_1."), ("layer_norm2.", "ln_2."), ("self_attn.out_proj.", "attn.out_proj."), ("mlp.fc1.", "mlp.c_fc."), ("mlp.fc2.", "mlp.c_proj.")]
        .iter()
        .find_map(|(from, to)| inner.strip_prefix(from).map(|param| (format!("{base}.{to}{param}"), None)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_clip_keeps_names_and_restores_text_model() {
        assert_eq!(clip_to_transformers("text_model.encoder.layers.3.mlp.fc1.weight").as_deref(), Some("text_model.encoder.layers.3.mlp.fc1.weight"));
        assert_eq!(clip_to_transformers("embeddings.token_embedding.weight").as_deref(), Some("text_model.embeddings.token_embedding.weight"));
        assert_eq!(clip_to_transformers("text_model.embeddings.position_ids"), None);
    }

    #[test]
    fn open_clip_splits_in_proj_and_transposes_projection() {
        let split = open_clip_to_transformers("transformer.resblocks.7.attn.in_proj_weight", None, true);
        assert_eq!(
            split,
            vec![
                ("text_model.encoder.layers.7.self_attn.q_proj.weight".to_string(), Transform::Chunk { index: 0, of: 3 }),
                ("text_model.encoder.layers.7.self_attn.k_proj.weight".to_string(), Transform::Chunk { index: 1, of: 3 }),
                ("text_model.encoder.layers.7.self_attn.v_proj.weight".to_string(), Transform::Chunk { index: 2, of: 3 }),
            ]
        );
        assert_eq!(
            open_clip_to_transformers("transformer.resblocks.0.mlp.c_proj.bias", None, true),
            vec![("text_model.encoder.layers.0.mlp.fc2.bias".to_string(), Transform::Copy)]
        );
        assert_eq!(open_clip_to_transformers("text_projection", None, true), vec![("text_projection.weight".to_string(), Transform::Transpose)]);
        assert!(open_clip_to_transformers("text_projection", Some(23), false).is_empty());
        assert!(open_clip_to_transformers("transformer.resblocks.23.ln_1.weight", Some(23), false).is_empty());
        assert!(open_clip_to_transformers("logit_scale", None, true).is_empty());
        assert_eq!(
            transformers_to_open_clip("text_model.encoder.layers.7.self_attn.v_proj.bias"),
            Some(("transformer.resblocks.7.attn.in_proj_bias".to_string(), Some(2)))
        );
    }
}
