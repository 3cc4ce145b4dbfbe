//! Network weights as an in-memory map of named tensors.
//!
//! Every network (UNet, VAE, text encoders) is built from a [`TensorMap`] rather than straight
//! from files. That keeps the weights a network was built from at hand, so a LoRA'd copy can be
//! built from the same map with only the touched tensors replaced: candle tensors are
//! reference-counted, so the untouched ones are shared storage, not copies, and the base network
//! is never mutated. It also lets single-file checkpoints be renamed into our module names
//! before anything is built.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};

use crate::backend::models::error::ModelError;
use crate::backend::models::safetensors_reader::read_tensors;

/// Tensors by their module path (`down_blocks.0.resnets.0.conv1.weight`, ...).
pub type TensorMap = HashMap<String, Tensor>;

/// Memory-map `files` (read-only), for reading a few tensors or the header of a file in place
/// (textual-inversion embeddings, checkpoint sniffing); whole networks load through
/// [`load_tensors`], which reads tensor by tensor instead.
pub fn open_safetensors(files: &[PathBuf]) -> Result<MmapedSafetensors, ModelError> {
    for file in files {
        if !file.is_file() {
            return Err(ModelError::MissingFile { path: file.clone() });
        }
    }
    // SAFETY: the files are mapped read-only; like every mmap-based loader we rely on them not
    // being truncated or rewritten while they are read. Tensors are copied out of the mapping
    // (into `dtype` on `device`), so nothing refers to it once loading is done.
    Ok(unsafe { MmapedSafetensors::multi(files)? })
}

/// Every tensor of `files`, converted to `dtype` on `device`.
pub fn load_tensors(files: &[PathBuf], dtype: DType, device: &Device) -> Result<TensorMap, ModelError> {
    load_tensors_renamed(files, dtype, device, |name| Some(name.to_string()))
}

/// The tensors of `files` that `rename` maps to a new name (`None` skips the tensor), converted
/// to `dtype` on `device`. Skipped tensors are never read from disk; the others are read one at a
/// time (`safetensors_reader`), so loading never holds the file's bytes next to the converted
/// weights.
pub fn load_tensors_renamed(
    files: &[PathBuf],
    dtype: DType,
    device: &Device,
    rename: impl FnMut(&str) -> Option<String>,
) -> Result<TensorMap, ModelError> {
    Ok(read_tensors(files, dtype, device, rename)?.into_iter().collect())
}

/// Which tensors of a map a network did not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightUsage {
    pub present: usize,
    pub loaded: usize,
    pub unused: Vec<String>,
}

impl WeightUsage {
    /// Log unused tensors: they mean a wiring bug or a checkpoint for another architecture.
    pub fn warn_if_unused(&self, what: &str, source: &Path) {
        if let Some(first) = self.unused.first() {
            tracing::warn!(
                source = %source.display(),
                unused = self.unused.len(),
                first = %first,
                "{what} weights have tensors the model does not use"
            );
        }
    }
}

/// Names read through a [`VarBuilder`] made by [`tracked_var_builder`].
#[derive(Clone, Default)]
pub struct LoadedNames(Arc<Mutex<BTreeSet<String>>>);

impl LoadedNames {
    fn record(&self, name: &str) {
        // A poisoned lock only means another loader thread panicked; the set is still valid.
        let mut names = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        names.insert(name.to_string());
    }

    /// Compare what was read against every tensor name of `map`.
    pub fn usage(&self, map: &TensorMap) -> WeightUsage {
        let names = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut unused: Vec<String> = map.keys().filter(|k| !names.contains(*k)).cloned().collect();
        unused.sort();
        WeightUsage { present: map.len(), loaded: map.len() - unused.len(), unused }
    }
}

/// candle's `HashMap` backend over a shared map, recording each name that is read.
struct TrackedMap {
    tensors: Arc<TensorMap>,
    loaded: LoadedNames,
}

impl TrackedMap {
    fn find(&self, name: &str) -> candle_core::Result<Tensor> {
        let tensor = self
            .tensors
            .get(name)
            .cloned()
            .ok_or_else(|| candle_core::Error::CannotFindTensor { path: name.to_string() }.bt())?;
        self.loaded.record(name);
        Ok(tensor)
    }
}

impl SimpleBackend for TrackedMap {
    fn get(&self, shape: Shape, name: &str, _: Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let tensor = self.find(name)?;
        if tensor.shape() != &shape {
            return Err(candle_core::Error::UnexpectedShape {
                msg: format!("shape mismatch for {name}"),
                expected: shape,
                got: tensor.shape().clone(),
            }
            .bt());
        }
        // Same device and dtype (the usual case): these return the tensor itself, shared.
        tensor.to_device(dev)?.to_dtype(dtype)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.find(name)?.to_device(dev)?.to_dtype(dtype)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }
}

/// A `VarBuilder` over `map` that hands out the map's own tensors (no copies when `dtype` and
/// `device` match theirs) and records which names were read.
pub fn tracked_var_builder(map: Arc<TensorMap>, dtype: DType, device: &Device) -> (VarBuilder<'static>, LoadedNames) {
    let loaded = LoadedNames::default();
    let backend = TrackedMap { tensors: map, loaded: loaded.clone() };
    (VarBuilder::from_backend(Box::new(backend), dtype, device.clone()), loaded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builder_shares_storage_and_tracks_reads() {
        let dev = Device::Cpu;
        let weight = Tensor::arange(0f32, 6.0, &dev).unwrap().reshape((2, 3)).unwrap();
        let map: TensorMap = [("a.weight".to_string(), weight.clone()), ("b.weight".to_string(), weight.clone())].into();
        let map = Arc::new(map);
        let (vb, loaded) = tracked_var_builder(map.clone(), DType::F32, &dev);
        let got = vb.pp("a").get((2, 3), "weight").unwrap();
        assert_eq!(got.id(), weight.id(), "a same-dtype read must hand out the map's tensor");
        assert!(vb.pp("a").get((3, 2), "weight").is_err());
        assert!(vb.get((1,), "missing").is_err());
        let usage = loaded.usage(&map);
        assert_eq!((usage.present, usage.loaded, usage.unused), (2, 1, vec!["b.weight".to_string()]));
    }
}
