//! Writes a full-size diffusers folder with random weights, using the project's own model code
//! to enumerate every tensor: each component is built once over a VarBuilder that records the
//! (name, shape) of every weight it asks for, and those tensors are then streamed to an f16
//! safetensors file (f16 on disk, like the real repositories) filled from our seeded MT19937.
//!
//! Random rather than zero weights: libm's `expf`/`tanhf` take fast paths on zeros, which made
//! earlier zero-weight timings look ~30 % better than real ones.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result};
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};
use half::f16;
use sd_worker_rbee::backend::models::clip_text::{ClipTextConfig, ClipTextModel};
use sd_worker_rbee::backend::models::unet::{UNet2DConditionModel, UNetConfig};
use sd_worker_rbee::backend::models::vae::{AutoencoderKl, VaeConfig};
use sd_worker_rbee::backend::rng::Mt19937;

use super::configs::*;

/// Which pipeline to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Sd15,
    Sdxl,
}

impl Family {
    pub fn folder_name(self) -> &'static str {
        match self {
            Family::Sd15 => "sd15-random",
            Family::Sdxl => "sdxl-random",
        }
    }
}

/// Marks a finished folder, so an interrupted write is redone.
const COMPLETE_MARKER: &str = ".complete";

/// The folder for `family` under `cache`, written first if missing or incomplete.
pub fn ensure(cache: &Path, family: Family) -> Result<PathBuf> {
    let dir = cache.join(family.folder_name());
    if dir.join(COMPLETE_MARKER).is_file() {
        return Ok(dir);
    }
    eprintln!("writing random-weight {family:?} diffusers folder to {} (once) ...", dir.display());
    let started = std::time::Instant::now();
    if dir.exists() {
        fs::remove_dir_all(&dir)?;
    }
    let tokenizer_src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/clip-tokenizer");
    match family {
        Family::Sd15 => {
            write_text(&dir.join("model_index.json"), SD15_MODEL_INDEX)?;
            write_text(&dir.join("scheduler/scheduler_config.json"), SD15_SCHEDULER)?;
            copy_tokenizer(&tokenizer_src, &dir.join("tokenizer"), None)?;
            write_clip(&dir.join("text_encoder"), SD15_TEXT_ENCODER, 1)?;
            write_unet(&dir.join("unet"), SD15_UNET, 2)?;
            write_vae(&dir.join("vae"), SD15_VAE, 3)?;
        }
        Family::Sdxl => {
            write_text(&dir.join("model_index.json"), SDXL_MODEL_INDEX)?;
            write_text(&dir.join("scheduler/scheduler_config.json"), SDXL_SCHEDULER)?;
            copy_tokenizer(&tokenizer_src, &dir.join("tokenizer"), None)?;
            // SDXL's second tokenizer pads with "!" instead of <|endoftext|>.
            copy_tokenizer(&tokenizer_src, &dir.join("tokenizer_2"), Some("!"))?;
            write_clip(&dir.join("text_encoder"), SDXL_TEXT_ENCODER, 1)?;
            write_clip(&dir.join("text_encoder_2"), SDXL_TEXT_ENCODER_2, 4)?;
            write_unet(&dir.join("unet"), SDXL_UNET, 2)?;
            write_vae(&dir.join("vae"), SDXL_VAE, 3)?;
        }
    }
    write_text(&dir.join(COMPLETE_MARKER), "")?;
    eprintln!("... written in {:.0} s", started.elapsed().as_secs_f64());
    Ok(dir)
}

fn write_text(path: &Path, text: &str) -> Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::write(path, text).with_context(|| path.display().to_string())
}

fn copy_tokenizer(src: &Path, dst: &Path, pad_token: Option<&str>) -> Result<()> {
    fs::create_dir_all(dst)?;
    for name in ["vocab.json", "merges.txt", "special_tokens_map.json", "tokenizer_config.json"] {
        let text = fs::read_to_string(src.join(name)).with_context(|| format!("{}/{name}", src.display()))?;
        let text = match pad_token {
            Some(pad) if name != "vocab.json" && name != "merges.txt" => {
                let mut value: serde_json::Value = serde_json::from_str(&text)?;
                if let Some(map) = value.as_object_mut() {
                    map.insert("pad_token".into(), serde_json::Value::String(pad.into()));
                }
                serde_json::to_string_pretty(&value)?
            }
            _ => text,
        };
        write_text(&dst.join(name), &text)?;
    }
    Ok(())
}

fn write_clip(dir: &Path, config_json: &str, seed: u64) -> Result<()> {
    write_text(&dir.join("config.json"), config_json)?;
    let config = ClipTextConfig::from_file(&dir.join("config.json"))?;
    let shapes = record_shapes(|vb| ClipTextModel::new(config, vb).map(drop))?;
    write_random_safetensors(&dir.join("model.safetensors"), &shapes, seed)
}

fn write_unet(dir: &Path, config_json: &str, seed: u64) -> Result<()> {
    write_text(&dir.join("config.json"), config_json)?;
    let config = UNetConfig::from_json(config_json)?;
    let shapes = record_shapes(|vb| UNet2DConditionModel::new(config, vb).map(drop).map_err(|e| candle_core::Error::Msg(e.to_string())))?;
    write_random_safetensors(&dir.join("diffusion_pytorch_model.safetensors"), &shapes, seed)
}

fn write_vae(dir: &Path, config_json: &str, seed: u64) -> Result<()> {
    write_text(&dir.join("config.json"), config_json)?;
    let config = VaeConfig::from_file(&dir.join("config.json"))?;
    let shapes = record_shapes(|vb| AutoencoderKl::new(config, vb).map(drop))?;
    write_random_safetensors(&dir.join("diffusion_pytorch_model.safetensors"), &shapes, seed)
}

/// Every weight name and shape that `build` reads.
fn record_shapes(build: impl FnOnce(VarBuilder<'static>) -> candle_core::Result<()>) -> Result<BTreeMap<String, Vec<usize>>> {
    let recorder = ShapeRecorder::default();
    let shapes = recorder.shapes_handle();
    let vb = VarBuilder::from_backend(Box::new(recorder), DType::F32, Device::Cpu);
    build(vb)?;
    let recorded = std::mem::take(&mut *shapes.lock().map_err(|_| anyhow::anyhow!("recorder lock poisoned"))?);
    Ok(recorded)
}

type Shapes = std::sync::Arc<Mutex<BTreeMap<String, Vec<usize>>>>;

#[derive(Default)]
struct ShapeRecorder {
    shapes: Shapes,
}

impl ShapeRecorder {
    fn shapes_handle(&self) -> Shapes {
        self.shapes.clone()
    }
}

impl SimpleBackend for ShapeRecorder {
    fn get(&self, shape: Shape, name: &str, _hints: Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        if let Ok(mut shapes) = self.shapes.lock() {
            shapes.insert(name.to_string(), shape.dims().to_vec());
        }
        // A broadcast scalar has the right shape without allocating it.
        Tensor::zeros((), dtype, dev)?.broadcast_as(shape)
    }

    fn get_unchecked(&self, name: &str, _dtype: DType, _dev: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("the shape recorder needs a shape for {name}")
    }

    /// Claim every optional tensor, so loaders pick the current diffusers/transformers names
    /// (`text_model.` prefix, `to_q` in the VAE).
    fn contains_tensor(&self, _name: &str) -> bool {
        true
    }
}

/// Streams the tensors to a safetensors file as f16: PyTorch-default-like uniform weights
/// (bound 1/sqrt(fan_in)), norm scales near 1, small biases.
fn write_random_safetensors(path: &Path, shapes: &BTreeMap<String, Vec<usize>>, seed: u64) -> Result<()> {
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for (name, shape) in shapes {
        let bytes = shape.iter().product::<usize>() * 2;
        header.insert(name.clone(), serde_json::json!({"dtype": "F16", "shape": shape, "data_offsets": [offset, offset + bytes]}));
        offset += bytes;
    }
    header.insert("__metadata__".into(), serde_json::json!({"format": "pt", "written_by": "sd_bench (random weights)"}));
    let mut header_bytes = serde_json::to_vec(&serde_json::Value::Object(header))?;
    // The data section starts 8-byte aligned, padded with spaces as the reference writer does.
    while header_bytes.len() % 8 != 0 {
        header_bytes.push(b' ');
    }
    let file = File::create(path).with_context(|| path.display().to_string())?;
    let mut out = BufWriter::with_capacity(8 << 20, file);
    out.write_all(&(header_bytes.len() as u64).to_le_bytes())?;
    out.write_all(&header_bytes)?;
    let mut rng = Mt19937::new(seed);
    let mut halves: Vec<f16> = Vec::new();
    for (name, shape) in shapes {
        let count: usize = shape.iter().product();
        let (center, bound) = init_range(name, shape);
        halves.clear();
        halves.extend((0..count).map(|_| {
            let unit = rng.next_u32() as f32 / u32::MAX as f32 * 2.0 - 1.0;
            f16::from_f32(center + unit * bound)
        }));
        let bytes: Vec<u8> = halves.iter().flat_map(|h| h.to_bits().to_le_bytes()).collect();
        out.write_all(&bytes)?;
    }
    out.flush()?;
    Ok(())
}

fn init_range(name: &str, shape: &[usize]) -> (f32, f32) {
    match shape.len() {
        0 | 1 if name.ends_with("weight") => (1.0, 0.1),
        0 | 1 => (0.0, 0.05),
        _ => (0.0, 1.0 / (shape[1..].iter().product::<usize>() as f32).sqrt()),
    }
}
