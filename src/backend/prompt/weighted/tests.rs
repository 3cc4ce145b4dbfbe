use candle_core::{DType, Device};

use super::*;
use crate::backend::models::test_support::{
    assert_close_single_stage, fixture, load_golden, max_abs_error,
};
use crate::backend::models::text_conditioning::{encode_prompt, SdxlTextEncoders};

struct Sd15 {
    tokenizer: ClipTokenizer,
    encoder: ClipTextModel,
}

impl Sd15 {
    fn load() -> Self {
        Self {
            tokenizer: ClipTokenizer::from_dir(&fixture("tiny-sd15/tokenizer")).unwrap(),
            encoder: ClipTextModel::load(
                &fixture("tiny-sd15/text_encoder"),
                &Device::Cpu,
                DType::F32,
            )
            .unwrap(),
        }
    }

    fn weighted(&self, clip_skip: usize) -> WeightedEncoder<'_> {
        WeightedEncoder {
            tokenizer: &self.tokenizer,
            encoder: &self.encoder,
            layer: EncoderLayer::ClipSkip(clip_skip),
            embeddings: Default::default(),
        }
    }

    fn encode(&self, texts: &[&str]) -> Vec<EncodedText> {
        encode_texts(&[self.weighted(1)], texts).unwrap()
    }
}

fn assert_identical(label: &str, actual: &Tensor, expected: &Tensor) {
    let (diff, _) = max_abs_error(actual, expected);
    assert_eq!(diff, 0.0, "{label}: differs by {diff}");
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

#[test]
fn plain_prompts_encode_exactly_as_before_and_match_the_golden() {
    let sd = Sd15::load();
    let golden = load_golden("tiny-sd15-euler");
    for (which, text) in [("cond", "a photo of a cat"), ("uncond", "blurry")] {
        let encoded = &sd.encode(&[text])[0];
        let plain = encode_prompt(&sd.tokenizer, &sd.encoder, text, 1).unwrap();
        assert_identical(which, &encoded.hidden, &plain);
        assert_close_single_stage(
            &format!("weighted sd15 prompt_embeds.{which}"),
            &encoded.hidden,
            &golden[&format!("prompt_embeds.{which}")],
        );
    }
    for clip_skip in [2, 3] {
        let encoded = &encode_texts(&[sd.weighted(clip_skip)], &["a photo of a cat"]).unwrap()[0];
        let plain =
            encode_prompt(&sd.tokenizer, &sd.encoder, "a photo of a cat", clip_skip).unwrap();
        assert_identical(&format!("clip skip {clip_skip}"), &encoded.hidden, &plain);
    }
}

#[test]
fn sdxl_plain_prompts_encode_exactly_as_before() {
    let load = |dir: &str| ClipTextModel::load(&fixture(dir), &Device::Cpu, DType::F32).unwrap();
    let tokenizer = ClipTokenizer::from_dir(&fixture("tiny-sdxl/tokenizer")).unwrap();
    let tokenizer_2 = ClipTokenizer::from_dir(&fixture("tiny-sdxl/tokenizer_2")).unwrap();
    let (encoder, encoder_2) = (
        load("tiny-sdxl/text_encoder"),
        load("tiny-sdxl/text_encoder_2"),
    );
    let plain = SdxlTextEncoders {
        tokenizer: &tokenizer,
        encoder: &encoder,
        tokenizer_2: &tokenizer_2,
        encoder_2: &encoder_2,
    };
    let weighted = [
        WeightedEncoder {
            tokenizer: &tokenizer,
            encoder: &encoder,
            layer: EncoderLayer::Penultimate,
            embeddings: Default::default(),
        },
        WeightedEncoder {
            tokenizer: &tokenizer_2,
            encoder: &encoder_2,
            layer: EncoderLayer::Penultimate,
            embeddings: Default::default(),
        },
    ];
    let golden = load_golden("tiny-sdxl-euler");
    for text in ["a photo of a cat", "A Photo Of A CAT!!"] {
        let encoded = &encode_texts(&weighted, &[text]).unwrap()[0];
        let expected = plain.encode_prompt(text).unwrap();
        assert_identical(text, &encoded.hidden, &expected.prompt_embeds);
        assert_identical(text, &encoded.pooled, &expected.pooled_prompt_embeds);
    }
    let encoded = &encode_texts(&weighted, &["a photo of a cat"]).unwrap()[0];
    assert_close_single_stage(
        "weighted sdxl prompt_embeds.cond",
        &encoded.hidden,
        &golden["prompt_embeds.cond"],
    );
}

/// The tiny encoder's final LayerNorm has zero bias, so its outputs average to ~0 and the mean
/// rescale would divide float noise by float noise; shifting gives the real models' situation.
fn shifted(hidden: &Tensor) -> Tensor {
    (hidden + 0.5).unwrap()
}

#[test]
fn weight_one_everywhere_equals_the_plain_encode() {
    let sd = Sd15::load();
    let plain = &sd.encode(&["a photo of a cat"])[0];
    // explicit weights of 1.0 parse to an unweighted chunk
    let explicit = &sd.encode(&["(a photo of a cat:1.0)"])[0];
    assert_identical("(…:1.0)", &explicit.hidden, &plain.hidden);
    // a uniform weight, BOS/EOS included, is undone by the mean rescale (up to rounding)
    let mut chunk = sd.weighted(1).chunk("a photo of a cat").remove(0);
    chunk.weights = vec![1.7; CHUNK_LENGTH];
    let hidden = shifted(&plain.hidden);
    let rescaled = apply_emphasis(&hidden, &[&chunk]).unwrap();
    let (diff, scale) = max_abs_error(&rescaled, &hidden);
    println!("uniform weight 1.7 after rescale: max|a-b| = {diff:e} (max|ref| {scale:e})");
    assert!(diff <= 1e-6 * scale);
}

#[test]
fn emphasis_multiplies_tokens_and_restores_the_mean() {
    let sd = Sd15::load();
    let prompt = "a (photo:1.5) of a [cat]";
    let chunk = sd.weighted(1).chunk(prompt).remove(0);
    assert_eq!(chunk.weights[2], 1.5);
    assert_eq!(chunk.weights[5], (1.0 / 1.1f64) as f32);
    // same ids as the plain prompt, so the encoder output before emphasis is the plain one
    assert_eq!(chunk.ids, sd.weighted(1).chunk("a photo of a cat")[0].ids);
    let plain = &sd.encode(&["a photo of a cat"])[0];
    let weighted = &sd.encode(&[prompt])[0];
    assert_identical(
        "encode applies emphasis",
        &weighted.hidden,
        &apply_emphasis(&plain.hidden, &[&chunk]).unwrap(),
    );

    let hidden = shifted(&plain.hidden);
    let z = values(&hidden);
    let per_token = z.len() / CHUNK_LENGTH;
    let scaled: Vec<f64> = z
        .iter()
        .enumerate()
        .map(|(i, z)| f64::from(*z) * f64::from(chunk.weights[i / per_token]))
        .collect();
    let mean_before = z.iter().map(|z| f64::from(*z)).sum::<f64>() / z.len() as f64;
    let mean_after = scaled.iter().sum::<f64>() / scaled.len() as f64;
    let expected: Vec<f32> = scaled
        .iter()
        .map(|z| (z * mean_before / mean_after) as f32)
        .collect();
    let expected = Tensor::from_vec(expected, hidden.shape(), &Device::Cpu).unwrap();
    let (diff, scale) = max_abs_error(&apply_emphasis(&hidden, &[&chunk]).unwrap(), &expected);
    println!("emphasis vs f64 reference: max|a-b| = {diff:e} (max|ref| {scale:e})");
    assert!(diff <= 1e-6 * scale);
}

#[test]
fn long_prompts_are_chunks_encoded_separately_and_concatenated() {
    let sd = Sd15::load();
    let long = &sd.encode(&[&"word ".repeat(100)])[0];
    assert_eq!(long.hidden.dims(), &[1, 2 * CHUNK_LENGTH, 32]);
    let first = &sd.encode(&[&"word ".repeat(75)])[0];
    let second = &sd.encode(&[&"word ".repeat(25)])[0];
    assert_identical(
        "chunk 0",
        &long.hidden.narrow(1, 0, CHUNK_LENGTH).unwrap(),
        &first.hidden,
    );
    assert_identical(
        "chunk 1",
        &long.hidden.narrow(1, CHUNK_LENGTH, CHUNK_LENGTH).unwrap(),
        &second.hidden,
    );
    assert_identical("pooled from chunk 0", &long.pooled, &first.pooled);
}

#[test]
fn texts_encoded_together_are_padded_with_empty_chunks() {
    let sd = Sd15::load();
    let both = sd.encode(&["a cat", &"word ".repeat(80)]);
    assert_eq!(both[0].hidden.dims(), &[1, 2 * CHUNK_LENGTH, 32]);
    assert_eq!(both[1].hidden.dims(), &[1, 2 * CHUNK_LENGTH, 32]);
    let empty = &sd.encode(&[""])[0];
    // batched through the encoder, so float-close rather than identical
    let (diff, scale) = max_abs_error(
        &both[0]
            .hidden
            .narrow(1, CHUNK_LENGTH, CHUNK_LENGTH)
            .unwrap(),
        &empty.hidden,
    );
    assert!(diff <= 1e-6 * scale, "{diff}");

    let padded = pad_with_empty_chunks(
        &sd.encode(&["a cat"])[0].hidden,
        &empty.hidden,
        3 * CHUNK_LENGTH,
    )
    .unwrap();
    assert_eq!(padded.dims(), &[1, 3 * CHUNK_LENGTH, 32]);
    assert_identical(
        "padding",
        &padded.narrow(1, 2 * CHUNK_LENGTH, CHUNK_LENGTH).unwrap(),
        &empty.hidden,
    );
    assert!(pad_with_empty_chunks(&padded, &empty.hidden, CHUNK_LENGTH).is_err());
}

#[test]
fn many_texts_are_encoded_in_small_batches_and_keep_their_order() {
    let sd = Sd15::load();
    let texts: Vec<String> = (0..11).map(|i| format!("a photo of {i} cats")).collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let together = sd.encode(&refs);
    assert_eq!(together.len(), 11);
    for (text, encoded) in refs.iter().zip(&together) {
        let alone = &sd.encode(&[text])[0];
        for (label, actual, expected) in [
            ("hidden", &encoded.hidden, &alone.hidden),
            ("pooled", &encoded.pooled, &alone.pooled),
        ] {
            let (diff, scale) = max_abs_error(actual, expected);
            assert!(diff <= 1e-6 * scale, "{text} {label}: {diff}");
        }
    }
}
