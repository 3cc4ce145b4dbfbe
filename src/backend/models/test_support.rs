//! Helpers shared by the model tests: fixture paths and golden comparisons.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

pub fn fixture(path: &str) -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures")).join(path)
}

pub fn load_golden(name: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture(&format!("golden/{name}.safetensors")), &Device::Cpu)
        .unwrap()
}

/// Golden token ids (stored as I64) as u32.
pub fn golden_ids(golden: &HashMap<String, Tensor>, key: &str) -> Vec<u32> {
    golden[key]
        .flatten_all()
        .unwrap()
        .to_vec1::<i64>()
        .unwrap()
        .into_iter()
        .map(|id| u32::try_from(id).unwrap())
        .collect()
}

/// `(max|actual - expected|, max|expected|)` after checking the shapes agree.
pub fn max_abs_error(actual: &Tensor, expected: &Tensor) -> (f32, f32) {
    assert_eq!(actual.dims(), expected.dims(), "shape mismatch");
    let actual = actual.to_dtype(candle_core::DType::F32).unwrap();
    let diff = (actual - expected)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    let scale = expected
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    (diff, scale)
}

/// Asserts the single-stage tolerance of tests/fixtures/README.md: max|a-b| <= 1e-5 max|b|.
pub fn assert_close_single_stage(label: &str, actual: &Tensor, expected: &Tensor) {
    let (diff, scale) = max_abs_error(actual, expected);
    println!(
        "{label}: max|a-b| = {diff:.3e}, max|ref| = {scale:.3e}, ratio = {:.3e}",
        diff / scale
    );
    assert!(
        diff <= 1e-5 * scale,
        "{label}: max|a-b| = {diff:e} > 1e-5 * {scale:e}"
    );
}
