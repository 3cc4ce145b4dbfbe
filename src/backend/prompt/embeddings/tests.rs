use std::collections::BTreeMap;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};

use super::*;
use crate::backend::models::test_support::fixture;

fn filled(rows: usize, width: usize, value: f32) -> Tensor {
    Tensor::full(value, (rows, width), &Device::Cpu).unwrap()
}

fn file(tensors: &[(&str, Tensor)]) -> BTreeMap<String, Tensor> {
    tensors.iter().map(|(k, t)| (k.to_string(), t.clone())).collect()
}

fn tokenizer() -> ClipTokenizer {
    ClipTokenizer::from_dir(&fixture("tiny-sd15/tokenizer")).unwrap()
}

fn inversion(name: &str, vectors: usize) -> Arc<TextualInversion> {
    Arc::new(TextualInversion { name: name.into(), hash: "0123456789ab".into(), vectors: vec![filled(vectors, 4, 1.0)] })
}

#[test]
fn one_encoder_takes_the_files_single_tensor_of_its_width() {
    let fitted = TextualInversion::fit("word", "h", &file(&[("emb_params", filled(3, 32, 0.5))]), &[32]).unwrap();
    assert_eq!((fitted.vector_count(), fitted.vectors.len(), fitted.hash.as_str()), (3, 1, "h"));
    // diffusers' single `<token>` key, stored 1-D: one vector
    let one = TextualInversion::fit("tok", "h", &file(&[("<tok>", Tensor::zeros(32, DType::F32, &Device::Cpu).unwrap())]), &[32]).unwrap();
    assert_eq!(one.vectors[0].dims(), &[1, 32]);
}

#[test]
fn sdxl_takes_clip_l_for_the_first_encoder_and_clip_g_for_the_second() {
    let tensors = file(&[("clip_g", filled(2, 32, 2.0)), ("clip_l", filled(2, 32, 1.0))]);
    let fitted = TextualInversion::fit("xl", "h", &tensors, &[32, 32]).unwrap();
    let firsts: Vec<f32> = fitted.vectors.iter().map(|t| t.flatten_all().unwrap().to_vec1::<f32>().unwrap()[0]).collect();
    assert_eq!(firsts, vec![1.0, 2.0]);
}

#[test]
fn embeddings_that_do_not_fit_the_model_are_refused_with_the_reason() {
    let sd1 = file(&[("emb_params", filled(2, 768, 0.0))]);
    let xl = file(&[("clip_l", filled(2, 768, 0.0)), ("clip_g", filled(2, 1280, 0.0))]);
    let err = TextualInversion::fit("sd1word", "h", &sd1, &[32]).unwrap_err();
    assert_eq!(err, EmbeddingFitError::Width { name: "sd1word".into(), found: 768, expected: 32 });
    assert!(err.to_string().contains("768") && err.to_string().contains("32"), "{err}");
    assert!(matches!(TextualInversion::fit("x", "h", &xl, &[768]), Err(EmbeddingFitError::SdxlOnSingleEncoder { .. })));
    assert!(matches!(TextualInversion::fit("x", "h", &sd1, &[768, 1280]), Err(EmbeddingFitError::NotSdxl { .. })));
    assert!(matches!(TextualInversion::fit("x", "h", &xl, &[768, 32]), Err(EmbeddingFitError::Width { found: 1280, expected: 32, .. })));
    let uneven = file(&[("clip_l", filled(2, 4, 0.0)), ("clip_g", filled(3, 4, 0.0))]);
    assert!(matches!(TextualInversion::fit("x", "h", &uneven, &[4, 4]), Err(EmbeddingFitError::UnequalCounts { clip_l: 2, clip_g: 3, .. })));
    assert!(matches!(TextualInversion::fit("x", "h", &file(&[("emb_params", filled(76, 4, 0.0))]), &[4]), Err(EmbeddingFitError::Count { count: 76, .. })));
    let two = file(&[("a", filled(1, 4, 0.0)), ("b", filled(1, 4, 0.0))]);
    assert!(matches!(TextualInversion::fit("x", "h", &two, &[4]), Err(EmbeddingFitError::Ambiguous { found: 2, .. })));
}

#[test]
fn triggers_match_whole_name_tokens_longest_name_first() {
    let tokenizer = tokenizer();
    let embeddings = vec![inversion("bad", 1), inversion("bad hands", 2), inversion("EasyNeg", 3)];
    let triggers = EmbeddingTriggers::new(&tokenizer, &embeddings);
    let tokens = tokenizer.encode_words("bad hands, bad feet");
    let first = triggers.find_at(&tokens, 0).unwrap();
    assert_eq!((first.embedding, first.vectors, first.ids.len()), (1, 2, 2));
    let comma_at = tokenizer.encode_words("bad hands").len();
    assert!(triggers.find_at(&tokens, comma_at).is_none());
    assert_eq!(triggers.find_at(&tokens, comma_at + 1).unwrap().embedding, 0);
    // case does not matter (CLIP lowercases); `<name>` keeps its brackets as tokens around it
    let bracketed = tokenizer.encode_words("<easyneg>");
    assert!(triggers.find_at(&bracketed, 0).is_none());
    assert_eq!(triggers.find_at(&bracketed, 1).unwrap().embedding, 2);
}

#[test]
fn prompts_mention_a_name_only_as_whole_tokens_within_one_piece() {
    let tokenizer = tokenizer();
    let tokens = PromptTokens::new(&tokenizer, ["a photo of a (<myword>:1.2), concatenate", "Other Word"]);
    assert!(tokens.mentions(&tokenizer, "myword"));
    assert!(tokens.mentions(&tokenizer, "MyWord"));
    assert!(tokens.mentions(&tokenizer, "other word"));
    assert!(!tokens.mentions(&tokenizer, "cat"), "a word inside another word is a different token");
    assert!(!tokens.mentions(&tokenizer, "word concatenate"));
    assert!(!tokens.mentions(&tokenizer, ""));
}
