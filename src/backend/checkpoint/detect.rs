//! Which model a single-file checkpoint holds, from its tensor names and shapes (never from
//! the file name): the text encoders tell the family, the UNet's `conv_in` tells inpainting.

use super::convert::UNET_PREFIX;
use super::header::CheckpointHeader;
use super::CheckpointError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointFamily {
    /// SD 1.x: OpenAI CLIP ViT-L under `cond_stage_model.transformer.`.
    Sd1,
    /// SD 2.x: OpenCLIP ViT-H under `cond_stage_model.model.`.
    Sd2,
    /// SDXL base: CLIP ViT-L under `conditioner.embedders.0.transformer.` and OpenCLIP
    /// ViT-bigG under `conditioner.embedders.1.model.`.
    Sdxl,
}

impl CheckpointFamily {
    pub fn label(self) -> &'static str {
        match self {
            CheckpointFamily::Sd1 => "SD 1.x",
            CheckpointFamily::Sd2 => "SD 2.x",
            CheckpointFamily::Sdxl => "SDXL",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DetectedModel {
    pub family: CheckpointFamily,
    /// The UNet takes 9 input channels (latents + mask + masked-image latents).
    pub inpainting: bool,
}

const CONV_IN: &str = "input_blocks.0.0.weight";

pub fn detect(header: &CheckpointHeader) -> Result<DetectedModel, CheckpointError> {
    let has = |name: &str| header.contains(name);
    let Some(in_channels) = header.dim(&format!("{UNET_PREFIX}{CONV_IN}"), 1) else {
        return Err(CheckpointError::NotACheckpoint { reason: not_a_checkpoint_reason(header) });
    };
    let family = if has("conditioner.embedders.1.model.ln_final.weight") {
        if !has("conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight") {
            return Err(CheckpointError::Unsupported("an SDXL checkpoint without its CLIP ViT-L text encoder".into()));
        }
        CheckpointFamily::Sdxl
    } else if has("conditioner.embedders.0.model.ln_final.weight") {
        return Err(CheckpointError::Unsupported("SDXL refiner checkpoints (one OpenCLIP text encoder)".into()));
    } else if has("cond_stage_model.model.token_embedding.weight") {
        CheckpointFamily::Sd2
    } else if has("cond_stage_model.transformer.text_model.embeddings.token_embedding.weight")
        || has("cond_stage_model.transformer.embeddings.token_embedding.weight")
    {
        CheckpointFamily::Sd1
    } else {
        return Err(CheckpointError::Unsupported(
            "a checkpoint without a known text encoder (SD 1.x CLIP, SD 2.x OpenCLIP or SDXL's pair); UNet-only files are not loadable as models".into(),
        ));
    };
    if in_channels != 4 && in_channels != 9 {
        return Err(CheckpointError::Unsupported(format!("a UNet with {in_channels} input channels (4 = normal, 9 = inpainting)")));
    }
    Ok(DetectedModel { family, inpainting: in_channels == 9 })
}

/// What the file looks like instead, so the error can say where it belongs.
fn not_a_checkpoint_reason(header: &CheckpointHeader) -> String {
    let any = |prefix: &str| header.names().any(|n| n.starts_with(prefix));
    if any("lora_") || header.names().any(|n| n.contains("lora_down") || n.contains("lora_A") || n.contains(".lora.")) {
        "it is a LoRA; put it in the Lora folder and name it in the prompt (<lora:name:1>) or the request's loras".into()
    } else if any("encoder.") && any("decoder.") {
        "it is a standalone VAE; put it in the VAE folder and select it with sd_vae / vae".into()
    } else if any("emb_params") || any("clip_l") || any("string_to_param") {
        "it is a textual-inversion embedding; put it in the embeddings folder".into()
    } else if any("down_blocks.") || any("unet.") {
        "it looks like diffusers-format weights; pass the diffusers folder instead of one of its files".into()
    } else {
        "it has no LDM UNet (model.diffusion_model.*)".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(names: &[(&str, Vec<usize>)]) -> CheckpointHeader {
        CheckpointHeader::from_shapes(names.iter().map(|(n, s)| (n.to_string(), s.clone())).collect())
    }

    #[test]
    fn families_come_from_the_text_encoders() {
        let conv_in = |c| (format!("{UNET_PREFIX}{CONV_IN}"), vec![320, c, 3, 3]);
        let with = |extra: &str, c| {
            let (n, s) = conv_in(c);
            header(&[(n.as_str(), s), (extra, vec![1])])
        };
        let sd1 = detect(&with("cond_stage_model.transformer.text_model.embeddings.token_embedding.weight", 4)).unwrap();
        assert_eq!(sd1, DetectedModel { family: CheckpointFamily::Sd1, inpainting: false });
        let sd2 = detect(&with("cond_stage_model.model.token_embedding.weight", 9)).unwrap();
        assert_eq!(sd2, DetectedModel { family: CheckpointFamily::Sd2, inpainting: true });
        let refiner = detect(&with("conditioner.embedders.0.model.ln_final.weight", 4));
        assert!(matches!(refiner, Err(CheckpointError::Unsupported(_))));
        let lora = detect(&header(&[("lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight", vec![4, 32])]));
        assert!(matches!(&lora, Err(CheckpointError::NotACheckpoint { reason }) if reason.contains("LoRA")), "{lora:?}");
    }
}
