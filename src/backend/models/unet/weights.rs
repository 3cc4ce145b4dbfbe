//! Finding the UNet's safetensors files and recording which tensors the model reads, so a
//! wiring bug (a weight loaded under the wrong name, or a module never built) shows up as
//! unused keys instead of as slightly wrong images.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};

use crate::backend::models::error::ModelError;
use crate::backend::models::safetensors_reader::SafetensorsReader;

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

/// Which checkpoint tensors the model did not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightUsage {
    pub present: usize,
    pub loaded: usize,
    pub unused: Vec<String>,
}

/// Names read through the [`VarBuilder`] built by [`tracked_var_builder`].
#[derive(Clone, Default)]
pub struct LoadedNames(Arc<Mutex<BTreeSet<String>>>);

impl LoadedNames {
    fn record(&self, name: &str) {
        // A poisoned lock only means another loader thread panicked; the set is still valid.
        let mut names = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        names.insert(name.to_string());
    }

    /// Compare what was read against every tensor name in the files.
    pub fn usage(&self, present: &BTreeSet<String>) -> WeightUsage {
        let names = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        WeightUsage {
            present: present.len(),
            loaded: names.intersection(present).count(),
            unused: present.difference(&names).cloned().collect(),
        }
    }
}

/// The safetensors reader, plus a record of each tensor name that is read.
struct TrackingBackend {
    tensors: SafetensorsReader,
    loaded: LoadedNames,
}

impl SimpleBackend for TrackingBackend {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        hints: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let tensor = SimpleBackend::get(&self.tensors, shape, name, hints, dtype, dev)?;
        self.loaded.record(name);
        Ok(tensor)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let tensor = SimpleBackend::get_unchecked(&self.tensors, name, dtype, dev)?;
        self.loaded.record(name);
        Ok(tensor)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        SimpleBackend::contains_tensor(&self.tensors, name)
    }
}

/// A `VarBuilder` over `files` (read tensor by tensor, not memory-mapped) that converts every tensor to `dtype` (F16 on disk is
/// loaded as F32 for parity), the set of all tensor names in the files, and the record of reads.
pub fn tracked_var_builder(
    files: &[PathBuf],
    dtype: DType,
    device: &Device,
) -> Result<(VarBuilder<'static>, BTreeSet<String>, LoadedNames), ModelError> {
    let tensors = SafetensorsReader::open(files)?;
    let present: BTreeSet<String> = tensors.names().cloned().collect();
    let loaded = LoadedNames::default();
    let backend = TrackingBackend {
        tensors,
        loaded: loaded.clone(),
    };
    Ok((
        VarBuilder::from_backend(Box::new(backend), dtype, device.clone()),
        present,
        loaded,
    ))
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
