//! Textual inversion through the whole conditioning: the embedding's vectors must enter the
//! text encoder exactly where the name's tokens were, as if the token-embedding table had held
//! them. The expected values are built by hand here from the fixture's token-embedding table.

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};

use super::*;
use crate::backend::models::clip_text::ClipTextModel;
use crate::backend::models::test_support::{fixture, max_abs_error};
use crate::backend::models::text_conditioning::penultimate;
use crate::backend::models::tokenizer::ClipTokenizer;
use crate::backend::prompt::chunking::CHUNK_LENGTH;
use crate::backend::prompt::embeddings::PLACEHOLDER_ID;

fn load(name: &str) -> SdModel {
    SdModel::load(name, &fixture(name), &Device::Cpu).unwrap()
}

/// `[rows, 32]` of distinct small values.
fn vectors(rows: usize, offset: f64) -> Tensor {
    ((Tensor::arange(0f32, (rows * 32) as f32, &Device::Cpu).unwrap().reshape((rows, 32)).unwrap() * 0.013).unwrap() + offset)
        .unwrap()
        .sin()
        .unwrap()
}

fn inversion(name: &str, per_encoder: Vec<Tensor>) -> Arc<TextualInversion> {
    Arc::new(TextualInversion { name: name.into(), hash: "0123456789ab".into(), vectors: per_encoder })
}

fn pair<'a>(prompt: &'a str, negative_prompt: &'a str, embeddings: &'a [Arc<TextualInversion>]) -> PromptPair<'a> {
    PromptPair { prompt, negative_prompt, clip_skip: 1, guidance_scale: 7.5, width: 64, height: 64, steps: 10, embeddings, sdxl_clip_l_skip: false }
}

/// The ids of `before` + `count` placeholders + `after`, wrapped and padded as one chunk.
fn chunk_ids(tokenizer: &ClipTokenizer, before: &str, count: usize, after: &str) -> Vec<u32> {
    let mut ids = vec![tokenizer.bos_id()];
    ids.extend(tokenizer.encode_words(before));
    ids.extend(std::iter::repeat_n(PLACEHOLDER_ID, count));
    ids.extend(tokenizer.encode_words(after));
    ids.push(tokenizer.eos_id());
    ids.resize(CHUNK_LENGTH, tokenizer.pad_id());
    ids
}

/// The encoder run on token embeddings looked up by hand in `table_file`'s token table, with
/// rows `at..at + vectors.len()` replaced by `vectors`.
fn encode_by_hand(encoder: &ClipTextModel, table_file: &str, ids: &[u32], at: usize, vectors: &Tensor) -> crate::backend::models::clip_text::ClipTextOutput {
    let table = candle_core::safetensors::load(fixture(table_file), &Device::Cpu).unwrap()["text_model.embeddings.token_embedding.weight"]
        .to_dtype(DType::F32)
        .unwrap();
    let count = vectors.dim(0).unwrap();
    let rows: Vec<Tensor> = ids
        .iter()
        .enumerate()
        .map(|(position, id)| {
            if (at..at + count).contains(&position) {
                vectors.get(position - at).unwrap()
            } else {
                table.get(*id as usize).unwrap()
            }
        })
        .collect();
    let embeds = Tensor::stack(&rows, 0).unwrap().unsqueeze(0).unwrap();
    let ids = Tensor::from_vec(ids.to_vec(), (1, ids.len()), &Device::Cpu).unwrap();
    encoder.forward_token_embeddings(&embeds, &ids).unwrap()
}

fn assert_identical(label: &str, actual: &Tensor, expected: &Tensor) {
    let (diff, scale) = max_abs_error(actual, expected);
    println!("{label}: max|a-b| = {diff:e} (max|ref| {scale:e})");
    assert_eq!(diff, 0.0, "{label}");
}

#[test]
fn sd15_embedding_vectors_replace_the_names_tokens() {
    let model = load("tiny-sd15");
    let embeddings = vec![inversion("tiword", vec![vectors(3, 0.0)])];
    let cond = encode_prompts(&model, &pair("a <tiword>", "blurry tiword", &embeddings)).unwrap();
    assert_eq!(cond.used_embeddings, vec![0]);
    let ids = chunk_ids(&model.tokenizer, "a <", 3, ">");
    let expected = encode_by_hand(&model.text_encoder, "tiny-sd15/text_encoder/model.safetensors", &ids, 3, &vectors(3, 0.0));
    let stage = cond.at_step(0);
    assert_identical("cond", &stage.context.narrow(0, 1, 1).unwrap(), &expected.last_hidden_state);
    let negative_ids = chunk_ids(&model.tokenizer, "blurry", 3, "");
    let negative = encode_by_hand(&model.text_encoder, "tiny-sd15/text_encoder/model.safetensors", &negative_ids, 2, &vectors(3, 0.0));
    assert_identical("uncond", &stage.context.narrow(0, 0, 1).unwrap(), &negative.last_hidden_state);

    // Without the embedding the same prompt is ordinary text.
    let plain = encode_prompts(&model, &pair("a <tiword>", "blurry tiword", &[])).unwrap();
    assert!(plain.used_embeddings.is_empty());
    let (diff, _) = max_abs_error(&plain.at_step(0).context, &stage.context);
    assert!(diff > 1e-3, "the embedding changed nothing");
}

#[test]
fn emphasis_weights_apply_to_the_embedding_positions() {
    let model = load("tiny-sd15");
    let embeddings = vec![inversion("tiword", vec![vectors(2, 0.5)])];
    let cond = encode_prompts(&model, &pair("a (tiword:1.4) cat", "", &embeddings)).unwrap();
    let ids = chunk_ids(&model.tokenizer, "a", 2, "cat");
    let z = encode_by_hand(&model.text_encoder, "tiny-sd15/text_encoder/model.safetensors", &ids, 2, &vectors(2, 0.5)).last_hidden_state;
    // A1111's "Original" emphasis, by hand: z * w, then rescaled to the old mean.
    let mut weights = vec![1f32; CHUNK_LENGTH];
    weights[2] = 1.4;
    weights[3] = 1.4;
    let weights = Tensor::from_vec(weights, (1, CHUNK_LENGTH, 1), &Device::Cpu).unwrap();
    let mean_before = z.mean_all().unwrap().to_scalar::<f32>().unwrap();
    let weighted = z.broadcast_mul(&weights).unwrap();
    let mean_after = weighted.mean_all().unwrap().to_scalar::<f32>().unwrap();
    let expected = (weighted * f64::from(mean_before / mean_after)).unwrap();
    assert_identical("weighted cond", &cond.at_step(0).context.narrow(0, 1, 1).unwrap(), &expected);
}

#[test]
fn sdxl_takes_clip_l_vectors_into_the_first_encoder_and_clip_g_into_the_second() {
    let model = load("tiny-sdxl");
    let Some(second) = &model.second else { panic!("tiny-sdxl has two encoders") };
    let (clip_l, clip_g) = (vectors(2, 0.1), vectors(2, 0.9));
    let embeddings = vec![inversion("tiword", vec![clip_l.clone(), clip_g.clone()])];
    let cond = encode_prompts(&model, &pair("a tiword", "blurry", &embeddings)).unwrap();
    assert_eq!(cond.used_embeddings, vec![0]);
    let first = encode_by_hand(&model.text_encoder, "tiny-sdxl/text_encoder/model.safetensors", &chunk_ids(&model.tokenizer, "a", 2, ""), 2, &clip_l);
    let ids_2 = chunk_ids(&second.tokenizer, "a", 2, "");
    let other = encode_by_hand(&second.encoder, "tiny-sdxl/text_encoder_2/model.safetensors", &ids_2, 2, &clip_g);
    let expected = Tensor::cat(&[penultimate(&first.hidden_states).unwrap(), penultimate(&other.hidden_states).unwrap()], 2).unwrap();
    let stage = cond.at_step(0);
    assert_identical("cond", &stage.context.narrow(0, 1, 1).unwrap(), &expected);
    let Some(sdxl) = &stage.sdxl else { panic!("no SDXL conditioning") };
    assert_identical("pooled", &sdxl.text_embeds.narrow(0, 1, 1).unwrap(), &other.pooled);
}
