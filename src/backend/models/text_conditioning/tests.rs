use candle_core::{DType, Device, Tensor};

use super::*;
use crate::backend::models::test_support::{
    assert_close_single_stage, fixture, golden_ids, load_golden, max_abs_error,
};

fn load_sd15() -> (ClipTokenizer, ClipTextModel) {
    let tokenizer = ClipTokenizer::from_dir(&fixture("tiny-sd15/tokenizer")).unwrap();
    let encoder =
        ClipTextModel::load(&fixture("tiny-sd15/text_encoder"), &Device::Cpu, DType::F32).unwrap();
    (tokenizer, encoder)
}

struct Sdxl {
    tokenizer: ClipTokenizer,
    encoder: ClipTextModel,
    tokenizer_2: ClipTokenizer,
    encoder_2: ClipTextModel,
}

impl Sdxl {
    fn load() -> Self {
        let load =
            |dir: &str| ClipTextModel::load(&fixture(dir), &Device::Cpu, DType::F32).unwrap();
        Self {
            tokenizer: ClipTokenizer::from_dir(&fixture("tiny-sdxl/tokenizer")).unwrap(),
            encoder: load("tiny-sdxl/text_encoder"),
            tokenizer_2: ClipTokenizer::from_dir(&fixture("tiny-sdxl/tokenizer_2")).unwrap(),
            encoder_2: load("tiny-sdxl/text_encoder_2"),
        }
    }

    fn encoders(&self) -> SdxlTextEncoders<'_> {
        SdxlTextEncoders {
            tokenizer: &self.tokenizer,
            encoder: &self.encoder,
            tokenizer_2: &self.tokenizer_2,
            encoder_2: &self.encoder_2,
        }
    }
}

fn ids_of(tensor: &Tensor) -> Vec<u32> {
    tensor.flatten_all().unwrap().to_vec1::<u32>().unwrap()
}

#[test]
fn sd15_input_ids_and_prompt_embeds_match_golden() {
    let golden = load_golden("tiny-sd15-euler");
    let (tokenizer, encoder) = load_sd15();
    for (which, text) in [("cond", "a photo of a cat"), ("uncond", "blurry")] {
        let ids = prompt_input_ids(&tokenizer, &encoder, text, &Device::Cpu).unwrap();
        assert_eq!(
            ids_of(&ids),
            golden_ids(&golden, &format!("input_ids.{which}"))
        );
        let embeds = encode_prompt(&tokenizer, &encoder, text, 1).unwrap();
        assert_close_single_stage(
            &format!("sd15 prompt_embeds.{which}"),
            &embeds,
            &golden[&format!("prompt_embeds.{which}")],
        );
    }
}

#[test]
fn sd15_clip_skip_normalises_the_earlier_layer() {
    let (tokenizer, encoder) = load_sd15();
    let text = "a photo of a cat";
    let ids = prompt_input_ids(&tokenizer, &encoder, text, &Device::Cpu).unwrap();
    let out = encoder.forward(&ids).unwrap();
    let skip_0 = encode_prompt(&tokenizer, &encoder, text, 0).unwrap();
    assert_eq!(max_abs_error(&skip_0, &out.last_hidden_state).0, 0.0);
    for clip_skip in 2..=5 {
        let skipped = encode_prompt(&tokenizer, &encoder, text, clip_skip).unwrap();
        let expected = encoder
            .apply_final_layer_norm(&out.hidden_states[6 - clip_skip])
            .unwrap();
        assert_eq!(
            max_abs_error(&skipped, &expected).0,
            0.0,
            "clip_skip {clip_skip}"
        );
        assert!(max_abs_error(&skipped, &out.last_hidden_state).0 > 1e-3);
    }
    assert!(encode_prompt(&tokenizer, &encoder, text, 6).is_err());
}

#[test]
fn sdxl_input_ids_prompt_embeds_and_pooled_match_golden() {
    let golden = load_golden("tiny-sdxl-euler");
    let sdxl = Sdxl::load();
    let encoders = sdxl.encoders();
    for (which, text) in [("cond", "a photo of a cat"), ("uncond", "blurry")] {
        let ids = prompt_input_ids(&sdxl.tokenizer, &sdxl.encoder, text, &Device::Cpu).unwrap();
        assert_eq!(
            ids_of(&ids),
            golden_ids(&golden, &format!("input_ids.{which}"))
        );
        let ids_2 =
            prompt_input_ids(&sdxl.tokenizer_2, &sdxl.encoder_2, text, &Device::Cpu).unwrap();
        assert_eq!(
            ids_of(&ids_2),
            golden_ids(&golden, &format!("input_ids_2.{which}"))
        );

        let embeds = encoders.encode_prompt(text).unwrap();
        assert_eq!(embeds.prompt_embeds.dims(), &[1, 77, 64]);
        assert_eq!(embeds.pooled_prompt_embeds.dims(), &[1, 32]);
        assert_close_single_stage(
            &format!("sdxl prompt_embeds.{which}"),
            &embeds.prompt_embeds,
            &golden[&format!("prompt_embeds.{which}")],
        );
        assert_close_single_stage(
            &format!("sdxl pooled_prompt_embeds.{which}"),
            &embeds.pooled_prompt_embeds,
            &golden[&format!("pooled_prompt_embeds.{which}")],
        );
    }
}

#[test]
fn sdxl_absent_negative_prompt_is_zeros_when_forced() {
    let golden = load_golden("tiny-sdxl-euler-noneg");
    assert!(force_zeros_for_empty_prompt(&fixture("tiny-sdxl")).unwrap());
    let sdxl = Sdxl::load();
    let cond = sdxl.encoders().encode_prompt("a photo of a cat").unwrap();
    assert_close_single_stage(
        "sdxl-noneg prompt_embeds.cond",
        &cond.prompt_embeds,
        &golden["prompt_embeds.cond"],
    );
    let uncond = cond.zeros_like().unwrap();
    assert_eq!(
        max_abs_error(&uncond.prompt_embeds, &golden["prompt_embeds.uncond"]).0,
        0.0
    );
    assert_eq!(
        max_abs_error(
            &uncond.pooled_prompt_embeds,
            &golden["pooled_prompt_embeds.uncond"]
        )
        .0,
        0.0
    );
}
