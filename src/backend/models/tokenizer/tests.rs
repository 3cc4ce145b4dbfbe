use std::path::Path;

use super::*;
use crate::backend::models::test_support::fixture;

struct GoldenLine {
    text: String,
    ids: Vec<u32>,
    ids_padded77: Vec<u32>,
    ids_tokenizer_2_padded77: Vec<u32>,
}

fn golden_lines() -> Vec<GoldenLine> {
    let text = std::fs::read_to_string(fixture("clip-tokenizer/tokenizer_golden.jsonl")).unwrap();
    let ids = |v: &serde_json::Value, key: &str| -> Vec<u32> {
        v[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|id| id.as_u64().unwrap() as u32)
            .collect()
    };
    let lines: Vec<GoldenLine> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            GoldenLine {
                text: v["text"].as_str().unwrap().to_owned(),
                ids: ids(&v, "ids"),
                ids_padded77: ids(&v, "ids_padded77"),
                ids_tokenizer_2_padded77: ids(&v, "ids_tokenizer_2_padded77"),
            }
        })
        .collect();
    assert_eq!(lines.len(), 13, "golden file changed");
    lines
}

#[test]
fn golden_ids_unpadded_and_padded() {
    let tokenizer = ClipTokenizer::from_dir(&fixture("clip-tokenizer")).unwrap();
    assert_eq!(
        (tokenizer.bos_id(), tokenizer.eos_id(), tokenizer.pad_id()),
        (49406, 49407, 49407)
    );
    assert_eq!(tokenizer.model_max_length(), 77);
    for line in golden_lines() {
        assert_eq!(
            tokenizer.encode(&line.text),
            line.ids,
            "text {:?}",
            line.text
        );
        assert_eq!(
            tokenizer.encode_padded(&line.text, 77),
            line.ids_padded77,
            "text {:?}",
            line.text
        );
        assert_eq!(
            tokenizer.encode_words(&line.text),
            line.ids[1..line.ids.len() - 1],
            "text {:?}",
            line.text
        );
    }
}

#[test]
fn cached_words_give_the_same_ids_twice() {
    let tokenizer = ClipTokenizer::from_dir(&fixture("clip-tokenizer")).unwrap();
    for line in golden_lines() {
        assert_eq!(tokenizer.encode(&line.text), line.ids);
        assert_eq!(tokenizer.encode(&line.text), line.ids);
    }
}

#[test]
fn golden_ids_sdxl_tokenizer_2_splits_the_exclamation_pad_token() {
    let tokenizer = ClipTokenizer::from_dir(&fixture("tiny-sdxl/tokenizer_2")).unwrap();
    assert_eq!(tokenizer.pad_id(), 0);
    for line in golden_lines() {
        assert_eq!(
            tokenizer.encode_padded(&line.text, 77),
            line.ids_tokenizer_2_padded77,
            "text {:?}",
            line.text
        );
    }
}

#[test]
fn pipeline_tokenizer_folders_match_the_reference_tokenizer() {
    for dir in ["tiny-sd15/tokenizer", "tiny-sdxl/tokenizer"] {
        let tokenizer = ClipTokenizer::from_dir(&fixture(dir)).unwrap();
        assert_eq!(tokenizer.pad_id(), 49407, "{dir}");
        for line in golden_lines() {
            assert_eq!(tokenizer.encode_padded(&line.text, 77), line.ids_padded77);
        }
    }
}

#[test]
fn tokenizer_json_gives_the_same_ids() {
    let path = fixture("clip-tokenizer/tokenizer.json");
    let tokenizer = ClipTokenizer::from_tokenizer_json(&path).unwrap();
    assert_eq!(
        (tokenizer.bos_id(), tokenizer.eos_id(), tokenizer.pad_id()),
        (49406, 49407, 49407)
    );
    for line in golden_lines() {
        assert_eq!(
            tokenizer.encode(&line.text),
            line.ids,
            "text {:?}",
            line.text
        );
        assert_eq!(tokenizer.encode_padded(&line.text, 77), line.ids_padded77);
    }
}

#[test]
fn folder_with_only_tokenizer_json_loads_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture("clip-tokenizer/tokenizer.json"),
        dir.path().join("tokenizer.json"),
    )
    .unwrap();
    // tokenizer_2's config next to a bare tokenizer.json must still switch the pad to "!".
    std::fs::copy(
        fixture("tiny-sdxl/tokenizer_2/special_tokens_map.json"),
        dir.path().join("special_tokens_map.json"),
    )
    .unwrap();
    let tokenizer = ClipTokenizer::from_dir(dir.path()).unwrap();
    for line in golden_lines() {
        assert_eq!(
            tokenizer.encode_padded(&line.text, 77),
            line.ids_tokenizer_2_padded77
        );
    }
}

#[test]
fn text_spelling_a_special_token_maps_to_its_id() {
    let tokenizer = ClipTokenizer::from_dir(&fixture("clip-tokenizer")).unwrap();
    assert_eq!(
        tokenizer.encode_words("cat<|endoftext|>cat"),
        vec![2368, 49407, 2368]
    );
}

#[test]
fn padding_to_tiny_lengths_does_not_panic() {
    let tokenizer = ClipTokenizer::from_dir(&fixture("clip-tokenizer")).unwrap();
    assert_eq!(tokenizer.encode_padded("a photo", 0), Vec::<u32>::new());
    assert_eq!(tokenizer.encode_padded("a photo", 1), vec![49406]);
    assert_eq!(tokenizer.encode_padded("a photo", 2), vec![49406, 49407]);
    assert_eq!(
        tokenizer.encode_padded("a photo", 3),
        vec![49406, 320, 49407]
    );
}

#[test]
fn missing_folder_is_a_missing_file_error() {
    let err = ClipTokenizer::from_dir(Path::new("/nonexistent/tokenizer")).unwrap_err();
    assert!(matches!(err, ModelError::MissingFile { .. }), "{err}");
}
