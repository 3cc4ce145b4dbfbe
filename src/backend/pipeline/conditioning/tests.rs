use candle_core::Device;

use super::*;
use crate::backend::models::test_support::{fixture, load_golden, max_abs_error};
use crate::backend::models::text_conditioning::encode_prompt;
use crate::backend::prompt::chunking::CHUNK_LENGTH;

fn load(name: &str) -> SdModel {
    SdModel::load(name, &fixture(name), &Device::Cpu).unwrap()
}

fn pair<'a>(prompt: &'a str, negative_prompt: &'a str, steps: usize) -> PromptPair<'a> {
    PromptPair { prompt, negative_prompt, clip_skip: 1, guidance_scale: 7.5, width: 64, height: 64, steps, embeddings: &[], sdxl_clip_l_skip: false }
}

fn assert_identical(label: &str, actual: &Tensor, expected: &Tensor) {
    let (diff, _) = max_abs_error(actual, expected);
    assert_eq!(diff, 0.0, "{label}: differs by {diff}");
}

fn cond_row(stage: &StepConditioning) -> Tensor {
    stage.context.narrow(0, 1, 1).unwrap()
}

fn uncond_row(stage: &StepConditioning) -> Tensor {
    stage.context.narrow(0, 0, 1).unwrap()
}

#[test]
fn a_plain_prompt_is_one_stage_equal_to_the_diffusers_embeddings() {
    let model = load("tiny-sd15");
    let cond = encode_prompts(&model, &pair("a photo of a cat", "blurry", 20)).unwrap();
    assert!(cond.guided);
    assert_eq!(cond.stage_count(), 1);
    let stage = cond.at_step(0);
    let golden = load_golden("tiny-sd15-euler");
    let expected_cond = encode_prompt(&model.tokenizer, &model.text_encoder, "a photo of a cat", 1).unwrap();
    let expected_uncond = encode_prompt(&model.tokenizer, &model.text_encoder, "blurry", 1).unwrap();
    assert_identical("cond", &cond_row(stage), &expected_cond);
    assert_identical("uncond", &uncond_row(stage), &expected_uncond);
    let (diff, scale) = max_abs_error(&cond_row(stage), &golden["prompt_embeds.cond"]);
    assert!(diff <= 1e-5 * scale);
    assert!(std::ptr::eq(cond.at_step(19), stage));
}

#[test]
fn prompt_editing_switches_the_cond_row_after_its_step() {
    let model = load("tiny-sd15");
    let cond = encode_prompts(&model, &pair("a photo of a [cat:dog:2]", "blurry", 6)).unwrap();
    assert_eq!(cond.stage_count(), 2);
    let cat = encode_prompt(&model.tokenizer, &model.text_encoder, "a photo of a cat", 1).unwrap();
    let dog = encode_prompt(&model.tokenizer, &model.text_encoder, "a photo of a dog", 1).unwrap();
    // A1111: the first text holds for 0-based steps 0..=2
    for step in 0..=2 {
        assert_identical(&format!("step {step}"), &cond_row(cond.at_step(step)), &cat);
    }
    for step in 3..6 {
        assert_identical(&format!("step {step}"), &cond_row(cond.at_step(step)), &dog);
    }
    assert_identical("uncond unchanged", &uncond_row(cond.at_step(0)), &uncond_row(cond.at_step(5)));
}

#[test]
fn alternation_reuses_its_two_encodings() {
    let model = load("tiny-sd15");
    let cond = encode_prompts(&model, &pair("a photo of a [cat|dog]", "", 30)).unwrap();
    assert_eq!(cond.stage_count(), 2);
    let cat = cond_row(cond.at_step(0));
    // steps 0 and 1 both use the first option (A1111's schedule starts at step 1)
    assert_identical("step 1", &cond_row(cond.at_step(1)), &cat);
    assert_identical("step 3", &cond_row(cond.at_step(3)), &cat);
    let dog = encode_prompt(&model.tokenizer, &model.text_encoder, "a photo of a dog", 1).unwrap();
    assert_identical("step 2", &cond_row(cond.at_step(2)), &dog);
}

#[test]
fn a_long_prompt_pads_the_short_negative_with_empty_chunks() {
    let model = load("tiny-sd15");
    let long = "a photo of a cat, ".repeat(20);
    let cond = encode_prompts(&model, &pair(&long, "blurry", 20)).unwrap();
    let stage = cond.at_step(0);
    assert_eq!(stage.context.dims(), &[2, 2 * CHUNK_LENGTH, 32]);
    let blurry = encode_prompt(&model.tokenizer, &model.text_encoder, "blurry", 1).unwrap();
    let empty = encode_prompt(&model.tokenizer, &model.text_encoder, "", 1).unwrap();
    let uncond = uncond_row(stage);
    assert_identical("negative", &uncond.narrow(1, 0, CHUNK_LENGTH).unwrap(), &blurry);
    assert_identical("padding", &uncond.narrow(1, CHUNK_LENGTH, CHUNK_LENGTH).unwrap(), &empty);

    // the other way round: a long negative prompt pads the prompt
    let cond = encode_prompts(&model, &pair("a cat", &long, 20)).unwrap();
    let cond_part = cond_row(cond.at_step(0));
    assert_eq!(cond_part.dims(), &[1, 2 * CHUNK_LENGTH, 32]);
    assert_identical("cond padding", &cond_part.narrow(1, CHUNK_LENGTH, CHUNK_LENGTH).unwrap(), &empty);
}

#[test]
fn sdxl_long_prompts_keep_zero_uncond_and_first_chunk_pooling() {
    let model = load("tiny-sdxl");
    let long = "a photo of a cat, ".repeat(20);
    let cond = encode_prompts(&model, &pair(&long, "", 20)).unwrap();
    let stage = cond.at_step(0);
    assert_eq!(stage.context.dims(), &[2, 2 * CHUNK_LENGTH, 64]);
    let zeros = uncond_row(stage).abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
    assert_eq!(zeros, 0.0);
    let Some(sdxl) = &stage.sdxl else { panic!("no SDXL conditioning") };
    assert_eq!(sdxl.text_embeds.dims(), &[2, 32]);
    assert_eq!(sdxl.time_ids.dims(), &[2, 6]);
    let first_chunk = crate::backend::prompt::weighted::encode_texts(
        &weighted_encoders(&model, &pair("", "", 1), &[]),
        &["a photo of a cat, ".repeat(20).as_str()],
    )
    .unwrap();
    assert_identical("pooled", &sdxl.text_embeds.narrow(0, 1, 1).unwrap(), &first_chunk[0].pooled);
}

#[test]
fn without_guidance_there_is_only_the_cond_row() {
    let model = load("tiny-sd15");
    let mut p = pair("a photo of a [cat:dog:0.5]", "ignored", 10);
    p.guidance_scale = 1.0;
    let cond = encode_prompts(&model, &p).unwrap();
    assert!(!cond.guided);
    assert_eq!(cond.at_step(0).context.dims(), &[1, CHUNK_LENGTH, 32]);
    assert_eq!(cond.stage_count(), 2);
}

/// A1111's SDXL clip skip (`FrozenCLIPEmbedderForSDXLWithCustomWords`): without
/// `sdxl_clip_l_skip` clip skip changes nothing; with it CLIP-L reads `hidden_states[-clip_skip]`
/// un-normalised, and OpenCLIP-G keeps its penultimate layer.
#[test]
fn sdxl_clip_skip_moves_only_clip_l_and_only_with_the_option() {
    use crate::backend::models::text_conditioning::prompt_input_ids;
    let model = load("tiny-sdxl");
    let Some(second) = &model.second else { panic!("tiny-sdxl has two encoders") };
    let text = "a photo of a cat";
    let with = |clip_skip: u32, sdxl_clip_l_skip: bool| {
        let p = PromptPair { clip_skip, sdxl_clip_l_skip, ..pair(text, "blurry", 10) };
        cond_row(encode_prompts(&model, &p).unwrap().at_step(0))
    };
    let default = with(1, false);
    assert_identical("clip skip ignored without the option", &with(3, false), &default);
    assert_identical("option with clip skip 2 is the penultimate layer", &with(2, true), &default);

    let ids = prompt_input_ids(&model.tokenizer, &model.text_encoder, text, &Device::Cpu).unwrap();
    let ids_2 = prompt_input_ids(&second.tokenizer, &second.encoder, text, &Device::Cpu).unwrap();
    let states = model.text_encoder.forward(&ids).unwrap().hidden_states;
    let states_2 = second.encoder.forward(&ids_2).unwrap().hidden_states;
    let clip_g = &states_2[states_2.len() - 2];
    for clip_skip in [1usize, 3, 5] {
        let clip_l = &states[states.len() - clip_skip];
        let expected = Tensor::cat(&[clip_l, clip_g], 2).unwrap();
        assert_identical(&format!("clip skip {clip_skip}"), &with(clip_skip as u32, true), &expected);
    }
    // clip skip 1 is the last layer before the final LayerNorm, not the normalised output
    let (diff, _) = max_abs_error(&with(1, true).narrow(2, 0, 32).unwrap(), &model.text_encoder.forward(&ids).unwrap().last_hidden_state);
    assert!(diff > 1e-3);
}
