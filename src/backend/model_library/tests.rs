//! A models folder in A1111's layout, built in a temp dir.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use sha2::{Digest, Sha256};

use super::*;
use crate::backend::models::test_support::fixture;

fn write_tensors(path: &Path, tensors: &[(&str, Tensor)], metadata: Option<HashMap<String, String>>) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let data: Vec<(&str, &Tensor)> = tensors.iter().map(|(k, t)| (*k, t)).collect();
    safetensors::serialize_to_file(data, metadata, path).unwrap();
}

fn small(seed: f32) -> Tensor {
    (Tensor::ones((2, 4), DType::F32, &Device::Cpu).unwrap() * f64::from(seed)).unwrap()
}

fn sha256_hex(path: &Path) -> String {
    Sha256::digest(std::fs::read(path).unwrap()).iter().map(|b| format!("{b:02x}")).collect()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// DIR/{Stable-diffusion/{sd15.safetensors, sub/dreamy.safetensors(+.yaml)}, top.safetensors,
/// tiny-sd15/ (diffusers), Lora/{style.safetensors, old.pt}, VAE/vae-ft.safetensors,
/// embeddings/{goodword,xlword}.safetensors, model.ckpt}; and a symlink leading outside.
fn models_dir(root: &Path, outside: &Path) {
    let sd = root.join("Stable-diffusion");
    write_tensors(&sd.join("sd15.safetensors"), &[("a", small(1.0))], None);
    write_tensors(&sd.join("sub/dreamy.safetensors"), &[("a", small(2.0))], None);
    std::fs::write(sd.join("sub/dreamy.yaml"), "model:\n  params:\n    parameterization: \"v\"\n").unwrap();
    write_tensors(&root.join("top.safetensors"), &[("a", small(3.0))], None);
    copy_dir(&fixture("tiny-sd15"), &root.join("tiny-sd15"));
    write_tensors(&root.join("Lora/style.safetensors"), &[("lora_unet_x.lora_down.weight", small(4.0))], Some(HashMap::from([("ss_output_name".into(), "Fancy".into())])));
    std::fs::write(root.join("Lora/old.pt"), b"pickle").unwrap();
    write_tensors(&root.join("VAE/vae-ft.safetensors"), &[("encoder.conv_in.weight", small(5.0))], None);
    write_tensors(&root.join("embeddings/goodword.safetensors"), &[("emb_params", small(6.0))], None);
    write_tensors(&root.join("embeddings/xlword.safetensors"), &[("clip_l", small(7.0)), ("clip_g", Tensor::zeros((2, 6), DType::F32, &Device::Cpu).unwrap())], None);
    std::fs::write(root.join("model.ckpt"), b"pickle").unwrap();
    write_tensors(outside, &[("a", small(8.0))], None);
    #[cfg(unix)]
    std::os::unix::fs::symlink(outside, sd.join("escape.safetensors")).unwrap();
}

#[test]
fn scans_a1111_layout_with_titles_and_hashes() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("models");
    models_dir(&root, &tmp.path().join("outside.safetensors"));
    let library = ModelLibrary::open(&root, LibraryOptions::default()).unwrap();

    let checkpoints = library.checkpoints();
    let relpaths: Vec<&str> = checkpoints.iter().map(|c| c.relpath.as_str()).collect();
    assert_eq!(relpaths, vec!["sd15.safetensors", "sub/dreamy.safetensors", "tiny-sd15", "top.safetensors"], "no symlink escape, no pickle");
    let dreamy = &checkpoints[1];
    let sha = sha256_hex(&root.join("Stable-diffusion/sub/dreamy.safetensors"));
    assert_eq!(dreamy.sha256, sha);
    assert_eq!(dreamy.title, format!("sub/dreamy.safetensors [{}]", &sha[..10]));
    assert_eq!(dreamy.model_name, "sub_dreamy");
    assert_eq!(dreamy.config.as_deref(), Some(root.canonicalize().unwrap().join("Stable-diffusion/sub/dreamy.yaml").as_path()));
    let folder = &checkpoints[2];
    assert_eq!(folder.format, ModelFormat::DiffusersFolder);
    assert_eq!(folder.sha256, sha256_hex(&fixture("tiny-sd15/unet/diffusion_pytorch_model.safetensors")), "a folder is named by its UNet");

    let loras = library.loras();
    assert_eq!(loras.len(), 1);
    assert_eq!((loras[0].name.as_str(), loras[0].alias.as_str()), ("style", "Fancy"));
    assert_eq!(library.vaes()[0].model_name, "vae-ft.safetensors");
    let embeddings = library.embeddings();
    assert_eq!(embeddings.iter().map(|e| (e.name.as_str(), e.vectors, e.shape)).collect::<Vec<_>>(), vec![("goodword", 2, 4), ("xlword", 2, 10)]);
}

#[test]
fn resolution_stays_inside_and_titles_are_stable_across_refresh() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("models");
    let outside = tmp.path().join("outside.safetensors");
    models_dir(&root, &outside);
    let library = ModelLibrary::open(&root, LibraryOptions::default()).unwrap();
    let title = library.resolve_checkpoint("dreamy").unwrap().title;
    assert_eq!(library.resolve_checkpoint(&title).unwrap().relpath, "sub/dreamy.safetensors");
    assert!(matches!(library.resolve_checkpoint("nothing-like-this"), Err(LibraryError::UnknownCheckpoint(_))));
    let outside_name = outside.display().to_string();
    assert!(matches!(library.resolve_checkpoint(&outside_name), Err(LibraryError::PathNotAllowed(_))));
    assert!(matches!(library.resolve_checkpoint("../outside.safetensors"), Err(LibraryError::PathNotAllowed(_))));
    assert!(library.resolve_lora("../outside").is_none());
    assert_eq!(library.resolve_lora("Fancy").unwrap().name, "style");
    assert_eq!(library.resolve_vae("Automatic").unwrap(), None);
    assert_eq!(library.resolve_vae("vae-ft.safetensors").unwrap().unwrap().model_name, "vae-ft.safetensors");
    assert!(library.resolve_vae("missing.safetensors").is_err());

    // A new file appears on refresh; existing titles do not change.
    write_tensors(&root.join("Stable-diffusion/new.safetensors"), &[("a", small(9.0))], None);
    assert!(library.resolve_checkpoint("new").is_err());
    library.refresh().unwrap();
    assert!(library.resolve_checkpoint("new").is_ok());
    assert_eq!(library.resolve_checkpoint("dreamy").unwrap().title, title);

    // The operator may allow absolute paths.
    let open = ModelLibrary::open(&root, LibraryOptions { allow_external_paths: true, ..Default::default() }).unwrap();
    assert_eq!(open.resolve_checkpoint(&outside_name).unwrap().sha256, sha256_hex(&outside));
}

#[test]
fn embeddings_and_lora_hashes_follow_a1111() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("models");
    models_dir(&root, &tmp.path().join("outside.safetensors"));
    let library = ModelLibrary::open(&root, LibraryOptions::default()).unwrap();
    let word = library.lookup_embedding("goodword").unwrap();
    assert_eq!(word.vectors["emb_params"].dims(), &[2, 4]);
    assert_eq!(word.hash, sha256_hex(&root.join("embeddings/goodword.safetensors"))[..12]);
    let xl = library.lookup_embedding("xlword").unwrap();
    assert_eq!(xl.for_width(6).unwrap().dims(), &[2, 6]);
    assert_eq!(xl.for_width(4).unwrap().dims(), &[2, 4]);
    assert!(library.lookup_embedding("nope").is_none());

    // The LoRA hash covers the tensor data only (kohya's addnet hash), 12 digits.
    let lora = library.resolve_lora("style").unwrap();
    let bytes = std::fs::read(&lora.path).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let data_sha: String = Sha256::digest(&bytes[8 + header_len..]).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(library.lora_hash(&lora).unwrap(), data_sha[..12]);
}
