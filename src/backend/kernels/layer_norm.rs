//! LayerNorm over the last dimension in one kernel on the CPU: per row a mean pass and a
//! variance pass in f64 (two-pass like PyTorch) and one affine write pass.

use candle_core::{bail, Result, Tensor};
use rayon::prelude::*;

use super::cpu_tensor::{is_cpu_f32, tensor_from_vec, zeroed, F32Data};
use super::group_norm::{squared_deviation_f64, sum_f64};
use super::profile;
use super::simd::simd_dispatch;

/// Rows per parallel task: enough work to amortise scheduling.
const ROWS_PER_TASK: usize = 64;

/// Whether [`layer_norm`] handles these tensors (CPU f32).
pub fn supports(x: &Tensor, weight: &Tensor, bias: &Tensor) -> bool {
    is_cpu_f32(x) && is_cpu_f32(weight) && is_cpu_f32(bias)
}

/// `(x - mean) / sqrt(var + eps) * weight + bias` over the last dimension of `x`.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    let _t = profile::timer("layer_norm");
    let dims = x.dims().to_vec();
    let width = dims.last().copied().unwrap_or(0);
    if width == 0 || weight.elem_count() != width || bias.elem_count() != width {
        bail!("layer_norm: input {dims:?} against weight {:?} / bias {:?}", weight.dims(), bias.dims());
    }
    let x = x.contiguous()?;
    let (weight, bias) = (weight.contiguous()?, bias.contiguous()?);
    let (xd, wd, bd) = (F32Data::new(&x)?, F32Data::new(&weight)?, F32Data::new(&bias)?);
    let (xs, gamma, beta) = (xd.slice(), wd.slice(), bd.slice());
    let mut out = zeroed(xs.len());
    out.par_chunks_mut(width * ROWS_PER_TASK).zip(xs.par_chunks(width * ROWS_PER_TASK)).for_each(|(dst, src)| {
        for (dst, src) in dst.chunks_exact_mut(width).zip(src.chunks_exact(width)) {
            let mean = sum_f64(src) / width as f64;
            let variance = squared_deviation_f64(src, mean as f32) / width as f64;
            let inv_std = (1.0 / (variance + eps).sqrt()) as f32;
            normalize_row(src, dst, mean as f32, inv_std, gamma, beta);
        }
    });
    tensor_from_vec(out, dims)
}

simd_dispatch! {
    fn normalize_row(src: &[f32], dst: &mut [f32], mean: f32, inv_std: f32, gamma: &[f32], beta: &[f32]) = normalize_row_body;
}

#[inline(always)]
fn normalize_row_body(src: &[f32], dst: &mut [f32], mean: f32, inv_std: f32, gamma: &[f32], beta: &[f32]) {
    for (((d, &x), &g), &b) in dst.iter_mut().zip(src).zip(gamma).zip(beta) {
        *d = ((x - mean) * inv_std).mul_add(g, b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::kernels::test_util::{relative_max_diff, seeded};
    use candle_core::D;

    #[test]
    fn matches_two_pass_candle_layer_norm() {
        let x = (seeded(&[2, 77, 40], 3, 2.0) + 3.0).unwrap();
        let weight = (seeded(&[40], 4, 0.5) + 1.0).unwrap();
        let bias = seeded(&[40], 5, 0.5);
        let mean = x.mean_keepdim(D::Minus1).unwrap();
        let centered = x.broadcast_sub(&mean).unwrap();
        let var = centered.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
        let want = centered
            .broadcast_div(&(var + 1e-5).unwrap().sqrt().unwrap())
            .unwrap()
            .broadcast_mul(&weight)
            .unwrap()
            .broadcast_add(&bias)
            .unwrap();
        let got = layer_norm(&x, &weight, &bias, 1e-5).unwrap();
        assert!(relative_max_diff(&got, &want) < 1e-6);
    }
}
