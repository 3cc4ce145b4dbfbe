//! GEGLU's gate on the CPU: `hidden * gelu(gate)` for `[hidden | gate] = proj(x)`, in one pass
//! over contiguous rows with a vectorised erf (candle runs a scalar GELU over a strided view,
//! then a separate multiply).

use candle_core::{bail, Result, Tensor};
use rayon::prelude::*;

use super::cpu_tensor::{is_cpu_f32, tensor_from_vec, zeroed, F32Data};
use super::profile;
use super::simd::simd_dispatch;
use super::vmath::gelu_erf;

const ROWS_PER_TASK: usize = 32;

/// `projected: [..., 2 * inner]` -> `[..., inner]`: first half times erf-GELU of the second.
pub fn geglu(projected: &Tensor) -> Result<Tensor> {
    let dims = projected.dims().to_vec();
    let width = dims.last().copied().unwrap_or(0);
    if width % 2 != 0 || width == 0 {
        bail!("geglu: last dimension {width} is not even");
    }
    let inner = width / 2;
    let mut out_dims = dims.clone();
    if let Some(last) = out_dims.last_mut() {
        *last = inner;
    }
    if !is_cpu_f32(projected) {
        let last = dims.len() - 1;
        let hidden = projected.narrow(last, 0, inner)?;
        let gate = projected.narrow(last, inner, inner)?;
        return hidden * gate.gelu_erf()?;
    }
    let _t = profile::timer("geglu");
    let projected = projected.contiguous()?;
    let pd = F32Data::new(&projected)?;
    let src = pd.slice();
    let mut out = zeroed(src.len() / 2);
    out.par_chunks_mut(inner * ROWS_PER_TASK).zip(src.par_chunks(width * ROWS_PER_TASK)).for_each(|(dst, src)| {
        for (dst, row) in dst.chunks_exact_mut(inner).zip(src.chunks_exact(width)) {
            let (hidden, gate) = row.split_at(inner);
            gated_row(hidden, gate, dst);
        }
    });
    tensor_from_vec(out, out_dims)
}

simd_dispatch! {
    fn gated_row(hidden: &[f32], gate: &[f32], dst: &mut [f32]) = gated_row_body;
}

#[inline(always)]
fn gated_row_body(hidden: &[f32], gate: &[f32], dst: &mut [f32]) {
    for ((d, &h), &g) in dst.iter_mut().zip(hidden).zip(gate) {
        *d = h * gelu_erf(g);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::kernels::test_util::{relative_max_diff, seeded};

    #[test]
    fn matches_candle_gelu_erf_times_hidden() {
        let projected = seeded(&[2, 33, 2 * 24], 9, 4.0);
        let hidden = projected.narrow(2, 0, 24).unwrap();
        let gate = projected.narrow(2, 24, 24).unwrap();
        let want = (hidden * gate.gelu_erf().unwrap()).unwrap();
        let got = geglu(&projected).unwrap();
        assert!(relative_max_diff(&got, &want) < 1e-6);
    }
}
