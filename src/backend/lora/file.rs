//! One LoRA file, parsed: its modules (each a down/up pair, optional CP core and alpha),
//! grouped by the module name the file uses. Matching those names to a model's weights is
//! [`super::targets`]' job, so one parsed file serves every model.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use super::keys::{split_key, Part};
use super::LoraError;
use crate::backend::models::safetensors_header::read_header;

/// One low-rank update `up @ down` (times `alpha / rank`) for one weight.
#[derive(Debug, Clone)]
pub struct LoraModule {
    pub down: Tensor,
    pub up: Tensor,
    /// LyCORIS CP core, `[rank, rank, kh, kw]`.
    pub mid: Option<Tensor>,
    pub alpha: Option<f64>,
}

impl LoraModule {
    pub fn rank(&self) -> usize {
        self.down.dims().first().copied().unwrap_or(0)
    }

    /// `alpha / rank`, or 1 when the file stores no alpha (alpha = rank).
    pub fn scale(&self) -> f64 {
        match (self.alpha, self.rank()) {
            (Some(alpha), rank) if rank > 0 => alpha / rank as f64,
            _ => 1.0,
        }
    }
}

/// A parsed LoRA file (tensors as f32 on the CPU; they are small).
#[derive(Debug)]
pub struct LoraFile {
    pub path: PathBuf,
    /// Complete modules by the name the file uses.
    pub modules: BTreeMap<String, LoraModule>,
    /// Modules the file has but we cannot apply, with why (LoHa/LoKr/DoRA parts, a down
    /// without its up, ...).
    pub skipped: BTreeMap<String, String>,
    /// `ss_output_name` from the metadata (A1111's alias), if any.
    pub alias: Option<String>,
    /// `__metadata__` of the file.
    pub metadata: BTreeMap<String, String>,
}

#[derive(Default)]
struct Parts {
    down: Option<Tensor>,
    up: Option<Tensor>,
    mid: Option<Tensor>,
    alpha: Option<f64>,
    unsupported: Option<String>,
}

impl LoraFile {
    pub fn load(path: &Path) -> Result<Self, LoraError> {
        let bad = |reason: String| LoraError::Unreadable { path: path.to_path_buf(), reason };
        let extension = path.extension().map(|e| e.to_string_lossy().to_lowercase()).unwrap_or_default();
        if extension != "safetensors" {
            return Err(LoraError::Pickle { path: path.to_path_buf() });
        }
        let header = read_header(path).map_err(|e| bad(e.to_string()))?;
        let tensors = candle_core::safetensors::load(path, &Device::Cpu).map_err(|e| bad(e.to_string()))?;
        let mut by_module: BTreeMap<String, Parts> = BTreeMap::new();
        let mut stray = 0usize;
        for (key, tensor) in tensors {
            let Some((module, part)) = split_key(&key) else {
                stray += 1;
                continue;
            };
            let entry = by_module.entry(module).or_default();
            let as_f32 = || tensor.to_dtype(DType::F32).map_err(|e| bad(format!("{key}: {e}")));
            match part {
                Part::Down => entry.down = Some(as_f32()?),
                Part::Up => entry.up = Some(as_f32()?),
                Part::Mid => entry.mid = Some(as_f32()?),
                Part::Alpha => {
                    let value = as_f32()?.flatten_all().and_then(|t| t.to_vec1::<f32>()).map_err(|e| bad(format!("{key}: {e}")))?;
                    entry.alpha = value.first().map(|v| f64::from(*v));
                }
                Part::Unsupported(kind) => entry.unsupported = Some(kind),
            }
        }
        if stray > 0 {
            tracing::debug!(lora = %path.display(), stray, "tensors that are no LoRA part were ignored");
        }
        let mut modules = BTreeMap::new();
        let mut skipped = BTreeMap::new();
        for (name, parts) in by_module {
            match parts {
                Parts { unsupported: Some(kind), .. } => {
                    skipped.insert(name, format!("{kind} (a LoRA variant that is not applied)"));
                }
                Parts { down: Some(down), up: Some(up), mid, alpha, .. } => {
                    modules.insert(name, LoraModule { down, up, mid, alpha });
                }
                _ => {
                    skipped.insert(name, "incomplete (needs both down and up)".to_string());
                }
            }
        }
        let alias = header.metadata.get("ss_output_name").cloned();
        Ok(LoraFile { path: path.to_path_buf(), modules, skipped, alias, metadata: header.metadata })
    }
}
