//! Tensor-by-scalar arithmetic with torch's rounding: diffusers multiplies and divides float32
//! tensors by float32 scalars (0-d tensors), so a division must stay a division (not a multiply
//! by the reciprocal) to round the same way.

use candle_core::{DType, Result, Tensor};

use crate::backend::rng::NoiseSource;

/// `tensor * scalar`, one float32 rounding per element.
pub fn mul(tensor: &Tensor, scalar: f32) -> Result<Tensor> {
    tensor.affine(scalar as f64, 0.0)
}

/// `tensor / scalar` as a true division.
pub fn div(tensor: &Tensor, scalar: f32) -> Result<Tensor> {
    let divisor = Tensor::new(scalar, tensor.device())?.to_dtype(tensor.dtype())?;
    tensor.broadcast_div(&divisor)
}

/// The samplers compute in float32 whatever the caller's dtype, as diffusers' schedulers do.
pub fn to_f32(tensor: &Tensor) -> Result<Tensor> {
    tensor.to_dtype(DType::F32)
}

/// One fresh standard-normal draw shaped like `like`, in float32.
pub fn draw_noise(noise: &mut dyn NoiseSource, like: &Tensor) -> Result<Tensor> {
    to_f32(&noise.randn_like(like)?)
}

/// `tensor.clamp(-range, range)` (diffusers' `clip_sample`).
pub fn clip(tensor: &Tensor, range: f32) -> Result<Tensor> {
    tensor.clamp(-range, range)
}

/// diffusers' `_threshold_sample` (Imagen dynamic thresholding): per batch item, `s` = the
/// `ratio` quantile of |x| (torch.quantile, linear interpolation) clamped to
/// `[1, max_value]`, then `clamp(x, -s, s) / s`.
pub fn dynamic_threshold(sample: &Tensor, ratio: f64, max_value: f64) -> Result<Tensor> {
    let dims = sample.dims().to_vec();
    let batch = dims.first().copied().unwrap_or(1);
    let flat = sample.to_dtype(DType::F32)?.reshape((batch, ()))?;
    let rows: Vec<Vec<f32>> = flat.to_vec2()?;
    let mut out = Vec::with_capacity(rows.iter().map(Vec::len).sum());
    for row in rows {
        let mut magnitudes: Vec<f32> = row.iter().map(|v| v.abs()).collect();
        magnitudes.sort_by(f32::total_cmp);
        let s = quantile_sorted(&magnitudes, ratio).clamp(1.0, max_value as f32);
        out.extend(row.iter().map(|v| v.clamp(-s, s) / s));
    }
    Tensor::from_vec(out, dims, sample.device())?.to_dtype(sample.dtype())
}

/// `torch.quantile(values, q)` on already sorted values (linear interpolation).
fn quantile_sorted(sorted: &[f32], q: f64) -> f32 {
    let Some(&last) = sorted.last() else {
        return 0.0;
    };
    let rank = q * (sorted.len() - 1) as f64;
    let below = rank.floor() as usize;
    let above = (below + 1).min(sorted.len() - 1);
    if below >= sorted.len() - 1 {
        return last;
    }
    let weight = (rank - below as f64) as f32;
    sorted[below] + weight * (sorted[above] - sorted[below])
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn division_is_a_true_division() -> Result<()> {
        let t = Tensor::new(&[1f32, 3.0, 10.0], &Device::Cpu)?;
        let got: Vec<f32> = div(&t, 3.0)?.to_vec1()?;
        assert_eq!(got, vec![1.0 / 3.0, 1.0, 10.0 / 3.0]);
        Ok(())
    }

    #[test]
    fn dynamic_threshold_clamps_to_the_quantile() -> Result<()> {
        // |x| sorted = [0.5, 1, 2, 4]; the 0.5 quantile is 1.5, so x is clamped to ±1.5 and /1.5.
        let t = Tensor::new(&[[1f32, -4.0, 0.5, 2.0]], &Device::Cpu)?;
        let got: Vec<Vec<f32>> = dynamic_threshold(&t, 0.5, 10.0)?.to_vec2()?;
        assert_eq!(got, vec![vec![1.0 / 1.5, -1.0, 0.5 / 1.5, 1.0]]);
        Ok(())
    }
}
