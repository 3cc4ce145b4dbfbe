//! Finding the UNet's safetensors files in a diffusers `unet/` folder. Which tensors the model
//! reads is tracked by [`crate::backend::models::tensor_map`], so a wiring bug (a weight loaded
//! under the wrong name, or a module never built) shows up as unused keys instead of as slightly
//! wrong images.

use std::path::{Path, PathBuf};

use crate::backend::models::error::ModelError;

const WEIGHTS_STEM: &str = "diffusion_pytorch_model";

/// The weight files of a diffusers component folder, in preference order: the plain file, the
/// `fp16` variant, shards of either, and finally whatever `*.safetensors` the folder holds.
pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>, ModelError> {
    for single in [
        format!("{WEIGHTS_STEM}.safetensors"),
        format!("{WEIGHTS_STEM}.fp16.safetensors"),
    ] {
        let path = dir.join(single);
        if path.is_file() {
            return Ok(vec![path]);
        }
    }
    let mut all: Vec<PathBuf> = std::fs::read_dir(dir).map_err(|e| ModelError::io(dir, e))?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.is_file() && path.extension().is_some_and(|ext| ext == "safetensors"))
        .collect();
    all.sort();
    let file_name = |path: &PathBuf| path.file_name().map(|n| n.to_string_lossy().into_owned());
    // Shards are named `diffusion_pytorch_model[.fp16]-00001-of-00002.safetensors`.
    for shard_prefix in [format!("{WEIGHTS_STEM}-"), format!("{WEIGHTS_STEM}.fp16-")] {
        let shards: Vec<PathBuf> = all
            .iter()
            .filter(|path| file_name(path).is_some_and(|name| name.starts_with(&shard_prefix)))
            .cloned()
            .collect();
        if !shards.is_empty() {
            return Ok(shards);
        }
    }
    if all.is_empty() {
        return Err(ModelError::MissingFile {
            path: dir.join(format!("{WEIGHTS_STEM}.safetensors")),
        });
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(dir: &Path, name: &str) {
        std::fs::write(dir.join(name), b"").unwrap();
    }

    #[test]
    fn prefers_plain_file_then_fp16_variant_then_shards() {
        let dir = tempfile::tempdir().unwrap();
        touch(
            dir.path(),
            "diffusion_pytorch_model.fp16-00002-of-00002.safetensors",
        );
        touch(
            dir.path(),
            "diffusion_pytorch_model.fp16-00001-of-00002.safetensors",
        );
        let files = weight_files(dir.path()).unwrap();
        assert_eq!(files.len(), 2);
        assert!(files[0].ends_with("diffusion_pytorch_model.fp16-00001-of-00002.safetensors"));
        touch(dir.path(), "diffusion_pytorch_model.fp16.safetensors");
        assert!(weight_files(dir.path()).unwrap()[0]
            .ends_with("diffusion_pytorch_model.fp16.safetensors"));
        touch(dir.path(), "diffusion_pytorch_model.safetensors");
        assert!(
            weight_files(dir.path()).unwrap()[0].ends_with("diffusion_pytorch_model.safetensors")
        );
    }

    #[test]
    fn falls_back_to_any_safetensors_and_reports_missing() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            weight_files(dir.path()),
            Err(ModelError::MissingFile { .. })
        ));
        touch(dir.path(), "unet.safetensors");
        assert!(weight_files(dir.path()).unwrap()[0].ends_with("unet.safetensors"));
    }
}
