use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use super::*;
use crate::backend::models::test_support::{
    assert_close_single_stage, fixture, golden_ids, load_golden, max_abs_error,
};

fn ids_tensor(ids: Vec<u32>) -> Tensor {
    let len = ids.len();
    Tensor::from_vec(ids, (1, len), &Device::Cpu).unwrap()
}

#[test]
fn configs_are_read_with_their_epsilons_and_activations() {
    let config = ClipTextConfig::from_file(&fixture("tiny-sdxl/text_encoder/config.json")).unwrap();
    assert_eq!(config.layer_norm_eps, 1e-5);
    assert_eq!(config.hidden_act, ClipActivation::QuickGelu);
    assert_eq!(
        (
            config.hidden_size,
            config.intermediate_size,
            config.num_hidden_layers
        ),
        (32, 37, 5)
    );
    assert_eq!((config.num_attention_heads, config.head_dim()), (4, 8));
    assert_eq!(config.declares_projection, Some(false));
    assert_eq!(config.stored_dtype.as_deref(), Some("float16"));

    let config_2 =
        ClipTextConfig::from_file(&fixture("tiny-sdxl/text_encoder_2/config.json")).unwrap();
    assert_eq!(config_2.layer_norm_eps, 1e-5);
    assert_eq!(config_2.hidden_act, ClipActivation::Gelu);
    assert_eq!(config_2.declares_projection, Some(true));
    assert_eq!(config_2.projection_dim, Some(32));
}

#[test]
fn loaded_layer_norms_use_the_config_epsilon() {
    for dir in ["tiny-sd15/text_encoder", "tiny-sdxl/text_encoder_2"] {
        let model = ClipTextModel::load(&fixture(dir), &Device::Cpu, DType::F32).unwrap();
        assert_eq!(model.final_layer_norm_eps(), 1e-5, "{dir}");
        for layer in &model.layers {
            assert_eq!(layer.layer_norm1.eps(), 1e-5, "{dir}");
            assert_eq!(layer.layer_norm2.eps(), 1e-5, "{dir}");
        }
    }
}

#[test]
fn forward_shapes_and_hidden_state_convention() {
    let model =
        ClipTextModel::load(&fixture("tiny-sd15/text_encoder"), &Device::Cpu, DType::F32).unwrap();
    assert!(!model.has_projection());
    let mut ids = vec![49406, 320, 1125, 539, 320, 2368, 49407];
    ids.resize(77, 49407);
    let out = model.forward(&ids_tensor(ids)).unwrap();
    assert_eq!(out.last_hidden_state.dims(), &[1, 77, 32]);
    assert_eq!(out.hidden_states.len(), 6);
    // last_hidden_state is final_layer_norm(hidden_states[-1]).
    let renormed = model.apply_final_layer_norm(&out.hidden_states[5]).unwrap();
    let (diff, _) = max_abs_error(&renormed, &out.last_hidden_state);
    assert_eq!(diff, 0.0);
    // Without a projection, pooled is last_hidden_state at the first <|endoftext|> (pos 6).
    assert_eq!(out.pooled.dims(), &[1, 32]);
    let at_eos = out
        .last_hidden_state
        .i((0, 6))
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    assert_eq!(max_abs_error(&out.pooled, &at_eos).0, 0.0);
}

#[test]
fn pooled_projection_matches_sdxl_golden() {
    let golden = load_golden("tiny-sdxl-euler");
    let model = ClipTextModel::load(
        &fixture("tiny-sdxl/text_encoder_2"),
        &Device::Cpu,
        DType::F32,
    )
    .unwrap();
    assert!(model.has_projection());
    for which in ["cond", "uncond"] {
        let ids = ids_tensor(golden_ids(&golden, &format!("input_ids_2.{which}")));
        let out = model.forward(&ids).unwrap();
        assert_close_single_stage(
            &format!("text_encoder_2 pooled.{which}"),
            &out.pooled,
            &golden[&format!("pooled_prompt_embeds.{which}")],
        );
    }
}

#[test]
fn unprefixed_keys_load_the_same_model() {
    let dir = fixture("tiny-sd15/text_encoder");
    let tensors =
        candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap();
    let stripped = tensors
        .into_iter()
        .map(|(name, tensor)| {
            let name = name
                .strip_prefix("text_model.")
                .map(str::to_owned)
                .unwrap_or(name);
            (name, tensor)
        })
        .collect();
    let config = ClipTextConfig::from_file(&dir.join("config.json")).unwrap();
    let unprefixed = ClipTextModel::new(
        config,
        VarBuilder::from_tensors(stripped, DType::F32, &Device::Cpu),
    )
    .unwrap();
    let prefixed = ClipTextModel::load(&dir, &Device::Cpu, DType::F32).unwrap();
    let ids = ids_tensor(vec![49406, 21977, 49407, 49407, 49407]);
    let a = unprefixed.forward(&ids).unwrap();
    let b = prefixed.forward(&ids).unwrap();
    assert_eq!(
        max_abs_error(&a.last_hidden_state, &b.last_hidden_state).0,
        0.0
    );
}

#[test]
fn too_long_input_is_an_error_not_a_panic() {
    let model =
        ClipTextModel::load(&fixture("tiny-sd15/text_encoder"), &Device::Cpu, DType::F32).unwrap();
    assert!(model.forward(&ids_tensor(vec![49407; 78])).is_err());
}

#[test]
fn folder_without_weights_is_a_missing_file_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture("tiny-sd15/text_encoder/config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    let err = ClipTextModel::load(dir.path(), &Device::Cpu, DType::F32).unwrap_err();
    assert!(matches!(err, ModelError::MissingFile { .. }), "{err}");
}
