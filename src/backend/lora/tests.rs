//! LoRA files built here for the tiny fixtures, in both formats, with small-integer factors so
//! every expected delta is exact in f32.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};

use super::*;
use crate::backend::models::tensor_map::TensorMap;
use crate::backend::models::test_support::fixture;
use crate::backend::pipeline::model::SdModel;

/// `shape` filled with integers in -2..=2 (a different pattern per `seed`).
fn pattern(shape: &[usize], seed: usize) -> Tensor {
    let n: usize = shape.iter().product();
    let values: Vec<f32> = (0..n).map(|i| ((i * 7 + seed * 3) % 5) as f32 - 2.0).collect();
    Tensor::from_vec(values, shape, &Device::Cpu).unwrap()
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_dtype(DType::F32).unwrap().to_vec1::<f32>().unwrap()
}

/// Naive `up @ down` over the flattened input dims, times `factor`, in f64 (exact here).
fn naive_delta(up: &Tensor, down: &Tensor, factor: f64) -> Vec<f32> {
    let (out, rank) = (up.dim(0).unwrap(), down.dim(0).unwrap());
    let inputs = down.elem_count() / rank;
    let (u, d) = (values(up), values(down));
    let mut delta = vec![0f32; out * inputs];
    for o in 0..out {
        for i in 0..inputs {
            let sum: f64 = (0..rank).map(|r| f64::from(u[o * rank + r]) * f64::from(d[r * inputs + i])).sum();
            delta[o * inputs + i] = (sum * factor) as f32;
        }
    }
    delta
}

/// `merged == base + delta` element by element, bit for bit.
fn assert_merged(label: &str, merged: &Tensor, base: &Tensor, delta: &[f32]) {
    assert_eq!(merged.dims(), base.dims(), "{label}");
    let expected: Vec<u32> = values(base).iter().zip(delta).map(|(b, d)| (b + d).to_bits()).collect();
    let got: Vec<u32> = values(merged).iter().map(|v| v.to_bits()).collect();
    assert_eq!(got, expected, "{label}: merged weight is not base + up@down * scale * strength");
    assert!(delta.iter().any(|d| *d != 0.0), "{label}: a zero delta proves nothing");
}

fn save(path: &Path, tensors: &[(&str, Tensor)], metadata: Option<HashMap<String, String>>) {
    let data: Vec<(&str, &Tensor)> = tensors.iter().map(|(k, t)| (*k, t)).collect();
    safetensors::serialize_to_file(data, metadata, path).unwrap();
}

fn snapshot(map: &TensorMap) -> Vec<(String, Vec<u32>)> {
    let mut out: Vec<(String, Vec<u32>)> = map.iter().map(|(k, t)| (k.clone(), values(t).iter().map(|v| v.to_bits()).collect())).collect();
    out.sort();
    out
}

fn sd15() -> SdModel {
    SdModel::load("tiny-sd15", &fixture("tiny-sd15"), &Device::Cpu).unwrap()
}

const Q: &str = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight";
const CONV: &str = "down_blocks.0.resnets.0.conv1.weight";
const PROJ_IN: &str = "down_blocks.0.attentions.0.proj_in.weight";
const PROJ_OUT: &str = "down_blocks.0.attentions.0.proj_out.weight";
const TE_Q: &str = "text_model.encoder.layers.0.self_attn.q_proj.weight";

/// A kohya/A1111 LoRA for tiny-sd15: a linear (diffusers name), a 3x3 LoCon conv, a 1x1 conv,
/// an LDM-named module, a text-encoder linear, and one module no SD 1 model has.
fn kohya_lora(dir: &Path) -> (PathBuf, Vec<(&'static str, Tensor, Tensor, f64)>) {
    let path = dir.join("kohya_style.safetensors");
    let parts = vec![
        ("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q", pattern(&[32, 2], 1), pattern(&[2, 32], 2), 1.0),
        ("lora_unet_down_blocks_0_resnets_0_conv1", pattern(&[32, 2, 1, 1], 3), pattern(&[2, 32, 3, 3], 4), 2.0),
        ("lora_unet_down_blocks_0_attentions_0_proj_in", pattern(&[32, 4, 1, 1], 5), pattern(&[4, 32, 1, 1], 6), 1.0),
        ("lora_unet_input_blocks_1_1_proj_out", pattern(&[32, 2], 7), pattern(&[2, 32], 8), 1.0),
        ("lora_te_text_model_encoder_layers_0_self_attn_q_proj", pattern(&[32, 2], 9), pattern(&[2, 32], 10), 2.0),
        ("lora_te2_text_model_encoder_layers_0_self_attn_q_proj", pattern(&[32, 2], 11), pattern(&[2, 32], 12), 2.0),
    ];
    let mut tensors: Vec<(String, Tensor)> = Vec::new();
    for (module, up, down, alpha) in &parts {
        tensors.push((format!("{module}.lora_up.weight"), up.to_dtype(DType::F16).unwrap()));
        tensors.push((format!("{module}.lora_down.weight"), down.to_dtype(DType::F16).unwrap()));
        tensors.push((format!("{module}.alpha"), Tensor::new(*alpha as f32, &Device::Cpu).unwrap().to_dtype(DType::F16).unwrap()));
    }
    let refs: Vec<(&str, Tensor)> = tensors.iter().map(|(k, t)| (k.as_str(), t.clone())).collect();
    save(&path, &refs, Some(HashMap::from([("ss_output_name".to_string(), "kohya alias".to_string())])));
    (path, parts)
}

#[test]
fn kohya_lora_merges_exact_deltas_and_leaves_the_base_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let (path, parts) = kohya_lora(tmp.path());
    let base = sd15();
    let before_unet = snapshot(&base.weights.unet);
    let before_te = snapshot(&base.weights.text_encoder);
    let targets = LoraTargets::new(&base);
    let file = Arc::new(LoraFile::load(&path).unwrap());
    assert_eq!(file.alias.as_deref(), Some("kohya alias"));
    let applied = [AppliedLora { file: file.clone(), unet_strength: 0.5, te_strength: 1.5 }];
    let (merged, matches) = apply_loras(&base, &targets, &applied).unwrap();
    assert_eq!(matches[0].matched, 5);
    assert_eq!(matches[0].unmatched, vec!["lora_te2_text_model_encoder_layers_0_self_attn_q_proj".to_string()]);

    let unet = |m: &SdModel, k: &str| m.weights.unet[k].clone();
    // alpha 1 / rank 2 = 0.5 scale, unet strength 0.5.
    assert_merged("to_q", &unet(&merged, Q), &unet(&base, Q), &naive_delta(&parts[0].1, &parts[0].2, 0.5 * 0.5));
    // LoCon: 3x3 down, 1x1 up; alpha 2 / rank 2.
    assert_merged("conv1 (LoCon 3x3)", &unet(&merged, CONV), &unet(&base, CONV), &naive_delta(&parts[1].1, &parts[1].2, 1.0 * 0.5));
    // 1x1 conv proj_in; alpha 1 / rank 4.
    assert_merged("proj_in (1x1 conv)", &unet(&merged, PROJ_IN), &unet(&base, PROJ_IN), &naive_delta(&parts[2].1, &parts[2].2, 0.25 * 0.5));
    // LDM name input_blocks.1.1.proj_out is diffusers' down_blocks.0.attentions.0.proj_out
    // (a 1x1 conv in SD 1: the linear delta is reshaped onto it).
    assert_merged("proj_out (LDM name)", &unet(&merged, PROJ_OUT), &unet(&base, PROJ_OUT), &naive_delta(&parts[3].1, &parts[3].2, 0.5 * 0.5));
    // Text encoder at te strength 1.5; alpha 2 / rank 2.
    assert_merged("te q_proj", &merged.weights.text_encoder[TE_Q], &base.weights.text_encoder[TE_Q], &naive_delta(&parts[4].1, &parts[4].2, 1.0 * 1.5));
    // Untouched tensors are the base's own storage, not copies.
    let untouched = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_k.weight";
    assert_eq!(merged.weights.unet[untouched].id(), base.weights.unet[untouched].id());
    assert!(Arc::ptr_eq(&merged.vae, &base.vae));

    // The patched network really runs with the new weights, the base with the old ones.
    let ids = Tensor::new(&[[49406u32, 320, 1125, 49407]], &Device::Cpu).unwrap();
    let base_out = base.text_encoder.forward(&ids).unwrap().last_hidden_state;
    let lora_out = merged.text_encoder.forward(&ids).unwrap().last_hidden_state;
    assert_ne!(values(&base_out), values(&lora_out));
    drop(merged);
    assert_eq!(snapshot(&base.weights.unet), before_unet, "base UNet weights changed");
    assert_eq!(snapshot(&base.weights.text_encoder), before_te, "base text encoder weights changed");
    assert_eq!(values(&base.text_encoder.forward(&ids).unwrap().last_hidden_state), values(&base_out));
}

#[test]
fn diffusers_and_peft_loras_merge_exact_deltas() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("peft.safetensors");
    let k_up = pattern(&[32, 4], 1);
    let k_down = pattern(&[4, 32], 2);
    let fc1_up = pattern(&[37, 2], 3);
    let fc1_down = pattern(&[2, 32], 4);
    let out_up = pattern(&[64, 2, 1, 1], 5);
    let out_down = pattern(&[2, 64, 1, 1], 6);
    let v_up = pattern(&[32, 2], 7);
    let v_down = pattern(&[2, 32], 8);
    let attn = "up_blocks.1.attentions.0.transformer_blocks.0.attn2";
    save(
        &path,
        &[
            // PEFT, with an alpha (scale 2 / 4).
            (&format!("unet.{attn}.to_k.lora_A.weight"), k_down.clone()),
            (&format!("unet.{attn}.to_k.lora_B.weight"), k_up.clone()),
            (&format!("unet.{attn}.to_k.alpha"), Tensor::new(2f32, &Device::Cpu).unwrap()),
            // PEFT text encoder, no alpha (scale 1).
            ("text_encoder.text_model.encoder.layers.1.mlp.fc1.lora_A.weight", fc1_down.clone()),
            ("text_encoder.text_model.encoder.layers.1.mlp.fc1.lora_B.weight", fc1_up.clone()),
            // Older diffusers `lora.down/up` and attention-processor names.
            ("unet.mid_block.attentions.0.proj_out.lora.down.weight", out_down.clone()),
            ("unet.mid_block.attentions.0.proj_out.lora.up.weight", out_up.clone()),
            (&format!("unet.{attn}.processor.to_v_lora.down.weight"), v_down.clone()),
            (&format!("unet.{attn}.processor.to_v_lora.up.weight"), v_up.clone()),
        ],
        None,
    );
    let base = sd15();
    let targets = LoraTargets::new(&base);
    let file = Arc::new(LoraFile::load(&path).unwrap());
    let (merged, matches) = apply_loras(&base, &targets, &[AppliedLora { file, unet_strength: 1.0, te_strength: 0.5 }]).unwrap();
    assert_eq!(matches[0], LoraMatch { matched: 4, unmatched: vec![] });
    let key = |m: &str| format!("{attn}.{m}.weight");
    assert_merged("PEFT to_k", &merged.weights.unet[&key("to_k")], &base.weights.unet[&key("to_k")], &naive_delta(&k_up, &k_down, 0.5));
    assert_merged("processor to_v", &merged.weights.unet[&key("to_v")], &base.weights.unet[&key("to_v")], &naive_delta(&v_up, &v_down, 1.0));
    let proj_out = "mid_block.attentions.0.proj_out.weight";
    assert_merged("lora.up/down proj_out", &merged.weights.unet[proj_out], &base.weights.unet[proj_out], &naive_delta(&out_up, &out_down, 1.0));
    let fc1 = "text_model.encoder.layers.1.mlp.fc1.weight";
    assert_merged("PEFT fc1", &merged.weights.text_encoder[fc1], &base.weights.text_encoder[fc1], &naive_delta(&fc1_up, &fc1_down, 0.5));
}

#[test]
fn sdxl_kohya_names_reach_both_text_encoders_and_ldm_unet_modules() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("xl.safetensors");
    let (up, down) = (pattern(&[64, 2], 1), pattern(&[2, 64], 2));
    let (te2_up, te2_down) = (pattern(&[32, 2], 3), pattern(&[2, 32], 4));
    save(
        &path,
        &[
            // SGM name: input_blocks.4 is the first resnet of level 1; .1 its transformer.
            ("lora_unet_input_blocks_4_1_transformer_blocks_1_attn1_to_q.lora_up.weight", up.clone()),
            ("lora_unet_input_blocks_4_1_transformer_blocks_1_attn1_to_q.lora_down.weight", down.clone()),
            ("lora_te2_text_model_encoder_layers_2_self_attn_v_proj.lora_up.weight", te2_up.clone()),
            ("lora_te2_text_model_encoder_layers_2_self_attn_v_proj.lora_down.weight", te2_down.clone()),
            ("lora_te1_text_model_encoder_layers_2_self_attn_v_proj.lora_up.weight", te2_up.clone()),
            ("lora_te1_text_model_encoder_layers_2_self_attn_v_proj.lora_down.weight", te2_down.clone()),
        ],
        None,
    );
    let base = SdModel::load("tiny-sdxl", &fixture("tiny-sdxl"), &Device::Cpu).unwrap();
    let targets = LoraTargets::new(&base);
    let file = Arc::new(LoraFile::load(&path).unwrap());
    let (merged, matches) = apply_loras(&base, &targets, &[AppliedLora { file, unet_strength: 1.0, te_strength: 1.0 }]).unwrap();
    assert_eq!(matches[0].matched, 3);
    let q = "down_blocks.1.attentions.0.transformer_blocks.1.attn1.to_q.weight";
    assert_merged("SGM-named to_q", &merged.weights.unet[q], &base.weights.unet[q], &naive_delta(&up, &down, 1.0));
    let v = "text_model.encoder.layers.2.self_attn.v_proj.weight";
    let te2 = merged.weights.text_encoder_2.as_ref().unwrap();
    assert_merged("te2 v_proj", &te2[v], &base.weights.text_encoder_2.as_ref().unwrap()[v], &naive_delta(&te2_up, &te2_down, 1.0));
    assert_merged("te1 v_proj", &merged.weights.text_encoder[v], &base.weights.text_encoder[v], &naive_delta(&te2_up, &te2_down, 1.0));
}

#[test]
fn a_lora_for_another_family_is_refused_and_pickles_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("xl_only.safetensors");
    save(
        &path,
        &[
            ("lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_up.weight", pattern(&[37, 2], 1)),
            ("lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_down.weight", pattern(&[2, 32], 2)),
        ],
        None,
    );
    let base = sd15();
    let targets = LoraTargets::new(&base);
    let file = Arc::new(LoraFile::load(&path).unwrap());
    let err = apply_loras(&base, &targets, &[AppliedLora { file, unet_strength: 1.0, te_strength: 1.0 }]).unwrap_err();
    assert!(matches!(err, LoraError::NothingMatched { modules: 1, .. }), "{err}");
    let pt = tmp.path().join("old.pt");
    std::fs::write(&pt, b"x").unwrap();
    assert!(matches!(LoraFile::load(&pt), Err(LoraError::Pickle { .. })));
}

#[test]
fn the_merged_model_is_cached_for_a_repeated_set() {
    let tmp = tempfile::tempdir().unwrap();
    let (path, _) = kohya_lora(tmp.path());
    let base = sd15();
    let targets = LoraTargets::new(&base);
    let file = Arc::new(LoraFile::load(&path).unwrap());
    let mut cache = MergedCache::default();
    let set = |strength| [AppliedLora { file: file.clone(), unet_strength: strength, te_strength: strength }];
    let (first, _) = cache.get_or_merge(&base, &targets, &set(1.0)).unwrap();
    let (again, _) = cache.get_or_merge(&base, &targets, &set(1.0)).unwrap();
    assert!(Arc::ptr_eq(&first, &again));
    assert_eq!(cache.merges(), 1);
    let (other, _) = cache.get_or_merge(&base, &targets, &set(0.5)).unwrap();
    assert!(!Arc::ptr_eq(&first, &other));
    assert_eq!(cache.merges(), 2);
}

#[test]
fn cp_decomposed_locon_rebuilds_the_full_kernel() {
    let (rank, out, inputs) = (2, 3, 4);
    let module = LoraModule {
        up: pattern(&[out, rank, 1, 1], 1),
        down: pattern(&[rank, inputs, 1, 1], 2),
        mid: Some(pattern(&[rank, rank, 3, 3], 3)),
        alpha: None,
    };
    let base = Tensor::zeros((out, inputs, 3, 3), DType::F32, &Device::Cpu).unwrap();
    let delta = values(&merge::module_delta(&module, &base).unwrap());
    let (u, d, m) = (values(&module.up), values(&module.down), values(module.mid.as_ref().unwrap()));
    for o in 0..out {
        for i in 0..inputs {
            for k in 0..9 {
                let mut sum = 0f32;
                for a in 0..rank {
                    for b in 0..rank {
                        sum += u[o * rank + a] * m[(a * rank + b) * 9 + k] * d[b * inputs + i];
                    }
                }
                assert_eq!(delta[(o * inputs + i) * 9 + k], sum, "o={o} i={i} k={k}");
            }
        }
    }
}

#[test]
fn half_precision_weights_merge_in_f32_and_stay_f16() {
    let weight = Tensor::new(&[1.0f32, 2.0, -3.0, 0.5], &Device::Cpu).unwrap().to_dtype(DType::F16).unwrap();
    let delta = Tensor::new(&[0.25f32, -0.125, 1.0, 1.0 / 1024.0], &Device::Cpu).unwrap();
    let merged = merge::merged_weight(&weight, &delta).unwrap();
    assert_eq!(merged.dtype(), DType::F16);
    assert_eq!(values(&merged), vec![1.25, 1.875, -2.0, 0.5 + 1.0 / 1024.0]);
}
