use super::*;
use crate::backend::models::test_support::fixture;
use crate::backend::prompt::parser::parse_prompt_attention;

fn sd15_tokenizer() -> ClipTokenizer {
    ClipTokenizer::from_dir(&fixture("tiny-sd15/tokenizer")).unwrap()
}

fn sdxl_tokenizer_2() -> ClipTokenizer {
    ClipTokenizer::from_dir(&fixture("tiny-sdxl/tokenizer_2")).unwrap()
}

fn chunks_of(tokenizer: &ClipTokenizer, prompt: &str) -> Vec<TokenChunk> {
    chunk_prompt(tokenizer, &parse_prompt_attention(prompt))
}

fn single_id(tokenizer: &ClipTokenizer, word: &str) -> u32 {
    match tokenizer.encode_words(word).as_slice() {
        [id] => *id,
        other => panic!("{word:?} is {} tokens", other.len()),
    }
}

/// The prompt tokens of a chunk (between BOS and the closing EOS), padding included.
fn body(chunk: &TokenChunk) -> &[u32] {
    &chunk.ids[1..CHUNK_LENGTH - 1]
}

#[test]
fn a_short_plain_prompt_is_exactly_what_diffusers_feeds_the_encoder() {
    for tokenizer in [sd15_tokenizer(), sdxl_tokenizer_2()] {
        for prompt in [
            "a photo of a cat",
            "",
            "A Photo Of A CAT!!",
            &"word ".repeat(75),
        ] {
            let chunks = chunks_of(&tokenizer, prompt);
            assert_eq!(chunks.len(), 1, "{prompt:?}");
            assert_eq!(
                chunks[0].ids,
                tokenizer.encode_padded(prompt, CHUNK_LENGTH),
                "{prompt:?}"
            );
            assert!(chunks[0].is_unweighted());
        }
    }
}

#[test]
fn the_empty_chunk_pads_with_eos_or_with_the_pad_id_after_the_first_eos() {
    let sd15 = sd15_tokenizer();
    let chunk = empty_chunk(&sd15);
    assert_eq!(chunk.ids[0], sd15.bos_id());
    assert!(chunk.ids[1..].iter().all(|id| *id == sd15.eos_id()));
    let second = sdxl_tokenizer_2();
    let chunk = empty_chunk(&second);
    assert_eq!(&chunk.ids[..2], &[second.bos_id(), second.eos_id()]);
    assert!(chunk.ids[2..].iter().all(|id| *id == 0));
    assert_eq!(chunk.weights, vec![1.0; CHUNK_LENGTH]);
}

#[test]
fn long_prompts_continue_in_a_second_chunk_of_their_own() {
    let tokenizer = sd15_tokenizer();
    let word = single_id(&tokenizer, "word");
    let chunks = chunks_of(&tokenizer, &"word ".repeat(80));
    assert_eq!(chunks.len(), 2);
    assert!(body(&chunks[0]).iter().all(|id| *id == word));
    assert_eq!(chunks[1].ids[0], tokenizer.bos_id());
    assert_eq!(&body(&chunks[1])[..5], &[word; 5]);
    assert!(chunks[1].ids[6..]
        .iter()
        .all(|id| *id == tokenizer.eos_id()));
    // exactly 75 tokens still fit in one chunk
    assert_eq!(chunks_of(&tokenizer, &"word ".repeat(75)).len(), 1);
}

#[test]
fn a_comma_within_the_last_20_tokens_moves_the_rest_to_the_next_chunk() {
    let tokenizer = sd15_tokenizer();
    let (cat, dog, comma, eos) = (
        single_id(&tokenizer, "cat"),
        single_id(&tokenizer, "dog"),
        single_id(&tokenizer, ","),
        tokenizer.eos_id(),
    );
    // comma at position 60 of the chunk: 75 - 60 = 15 <= 20
    let prompt = format!("{}, {}", "cat ".repeat(60), "dog ".repeat(20));
    let chunks = chunks_of(&tokenizer, &prompt);
    assert_eq!(chunks.len(), 2);
    let mut first = vec![cat; 60];
    first.push(comma);
    first.resize(CHUNK_TOKENS, eos);
    assert_eq!(body(&chunks[0]), first.as_slice());
    assert_eq!(&body(&chunks[1])[..20], &[dog; 20]);
    assert_eq!(body(&chunks[1])[20], eos);

    // comma at position 54: 75 - 54 = 21 > 20, so the chunk is simply cut at 75
    let prompt = format!("{}, {}", "cat ".repeat(54), "dog ".repeat(30));
    let chunks = chunks_of(&tokenizer, &prompt);
    let mut first = vec![cat; 54];
    first.push(comma);
    first.extend([dog; 20]);
    assert_eq!(body(&chunks[0]), first.as_slice());
    assert_eq!(&body(&chunks[1])[..10], &[dog; 10]);
    assert_eq!(body(&chunks[1])[10], eos);
}

#[test]
fn a_comma_arriving_on_a_full_chunk_opens_the_next_one() {
    let tokenizer = sd15_tokenizer();
    let (cat, dog, comma) = (
        single_id(&tokenizer, "cat"),
        single_id(&tokenizer, "dog"),
        single_id(&tokenizer, ","),
    );
    let prompt = format!("{}, {}", "cat ".repeat(75), "dog ".repeat(3));
    let chunks = chunks_of(&tokenizer, &prompt);
    assert_eq!(chunks.len(), 2);
    assert_eq!(body(&chunks[0]), &[cat; 75]);
    assert_eq!(&body(&chunks[1])[..4], &[comma, dog, dog, dog]);
}

#[test]
fn break_closes_the_chunk_even_when_empty() {
    let tokenizer = sd15_tokenizer();
    let (cat, dog, eos) = (
        single_id(&tokenizer, "cat"),
        single_id(&tokenizer, "dog"),
        tokenizer.eos_id(),
    );
    let chunks = chunks_of(&tokenizer, "cat BREAK dog");
    assert_eq!(chunks.len(), 2);
    assert_eq!(&body(&chunks[0])[..2], &[cat, eos]);
    assert_eq!(&body(&chunks[1])[..2], &[dog, eos]);
    let chunks = chunks_of(&tokenizer, "BREAK dog");
    assert_eq!(chunks.len(), 2);
    assert_eq!(chunks[0], empty_chunk(&tokenizer));
    // a trailing BREAK leaves nothing open, so no extra chunk
    assert_eq!(chunks_of(&tokenizer, "cat BREAK").len(), 1);
}

#[test]
fn weights_follow_their_tokens_across_chunks() {
    let tokenizer = sd15_tokenizer();
    let prompt = format!("{}(dog dog:1.5) [cat]", "cat ".repeat(74));
    let chunks = chunks_of(&tokenizer, &prompt);
    assert_eq!(chunks.len(), 2);
    let mut first = vec![1.0f32; CHUNK_LENGTH];
    first[75] = 1.5;
    assert_eq!(chunks[0].weights, first);
    let mut second = vec![1.0f32; CHUNK_LENGTH];
    second[1] = 1.5;
    second[2] = (1.0 / 1.1f64) as f32;
    assert_eq!(chunks[1].weights, second);
    assert!(!chunks[1].is_unweighted());
}

mod embeddings {
    use std::sync::Arc;

    use candle_core::{Device, Tensor};

    use super::*;
    use crate::backend::prompt::embeddings::{EmbeddingTriggers, TextualInversion, PLACEHOLDER_ID};

    fn triggers(tokenizer: &ClipTokenizer, names: &[(&str, usize)]) -> EmbeddingTriggers {
        let embeddings: Vec<Arc<TextualInversion>> = names
            .iter()
            .map(|(name, vectors)| {
                Arc::new(TextualInversion {
                    name: name.to_string(),
                    hash: String::new(),
                    vectors: vec![Tensor::zeros((*vectors, 4), candle_core::DType::F32, &Device::Cpu).unwrap()],
                })
            })
            .collect();
        EmbeddingTriggers::new(tokenizer, &embeddings)
    }

    fn chunks_with(tokenizer: &ClipTokenizer, prompt: &str, triggers: &EmbeddingTriggers) -> Vec<TokenChunk> {
        chunk_prompt_with_embeddings(tokenizer, &parse_prompt_attention(prompt), triggers)
    }

    #[test]
    fn an_embedding_takes_one_position_per_vector_with_its_pieces_weight() {
        let tokenizer = sd15_tokenizer();
        let triggers = triggers(&tokenizer, &[("tiword", 3)]);
        let chunks = chunks_with(&tokenizer, "a (<tiword>:1.3) cat", &triggers);
        assert_eq!(chunks.len(), 1);
        let mut expected = vec![tokenizer.bos_id()];
        expected.extend(tokenizer.encode_words("a <"));
        expected.extend([PLACEHOLDER_ID; 3]);
        expected.extend(tokenizer.encode_words("> cat"));
        expected.resize(CHUNK_LENGTH, tokenizer.eos_id());
        assert_eq!(chunks[0].ids, expected);
        assert_eq!(chunks[0].embeddings, vec![EmbeddingSlot { position: 3, embedding: 0 }]);
        // `<`, the three vectors and `>` are the weighted piece
        assert_eq!(&chunks[0].weights[..8], &[1.0, 1.0, 1.3, 1.3, 1.3, 1.3, 1.3, 1.0]);
        // without triggers the name is ordinary text
        assert_eq!(chunks_of(&tokenizer, "a (<tiword>:1.3) cat")[0].embeddings, vec![]);
    }

    #[test]
    fn an_embedding_that_does_not_fit_the_chunk_starts_the_next_one_whole() {
        let tokenizer = sd15_tokenizer();
        let cat = single_id(&tokenizer, "cat");
        let triggers = triggers(&tokenizer, &[("tiword", 4)]);
        let chunks = chunks_with(&tokenizer, &format!("{}tiword cat", "cat ".repeat(73)), &triggers);
        assert_eq!(chunks.len(), 2);
        let mut first = vec![cat; 73];
        first.resize(CHUNK_TOKENS, tokenizer.eos_id());
        assert_eq!(body(&chunks[0]), first.as_slice());
        assert!(chunks[0].embeddings.is_empty());
        assert_eq!(&body(&chunks[1])[..5], &[PLACEHOLDER_ID, PLACEHOLDER_ID, PLACEHOLDER_ID, PLACEHOLDER_ID, cat]);
        assert_eq!(chunks[1].embeddings, vec![EmbeddingSlot { position: 1, embedding: 0 }]);
    }

    #[test]
    fn a_comma_break_moves_the_embeddings_after_the_comma_with_their_positions() {
        let tokenizer = sd15_tokenizer();
        let (cat, dog) = (single_id(&tokenizer, "cat"), single_id(&tokenizer, "dog"));
        let triggers = triggers(&tokenizer, &[("tiword", 2)]);
        // comma at position 60, embedding at 61..63, then dogs overflow the chunk
        let prompt = format!("{}, tiword {}", "cat ".repeat(60), "dog ".repeat(20));
        let chunks = chunks_with(&tokenizer, &prompt, &triggers);
        assert_eq!(chunks.len(), 2);
        assert_eq!(&body(&chunks[0])[..60], &[cat; 60]);
        assert!(chunks[0].embeddings.is_empty());
        assert_eq!(&body(&chunks[1])[..3], &[PLACEHOLDER_ID, PLACEHOLDER_ID, dog]);
        assert_eq!(chunks[1].embeddings, vec![EmbeddingSlot { position: 1, embedding: 0 }]);
    }
}
