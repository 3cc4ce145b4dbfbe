//! Fused multi-head attention on the CPU: `softmax(q k^T * scale) v` without materialising the
//! score tensor.
//!
//! Work is split into (batch, head, block of up to 512 queries) tasks. Each walks the keys in
//! blocks of 256 with the online-softmax recurrence of flash attention: one gemm for the block's
//! scores into a per-thread buffer that stays in L2 (512 KiB), vectorised exp with the scale
//! folded in, the output rows so far rescaled when the running maximum grows, and a second gemm
//! adding `P V` straight into the output; at the end each row is divided by its sum. Large query
//! blocks let gemm pack each key block once for many queries. Heads are read in place from the
//! `[B, L, heads * d]` projections through strides, so no head split/merge copies are made
//! either. At 512x512 this replaces a 1 GiB `[16, 4096, 4096]` score tensor per self-attention
//! layer.

use std::cell::RefCell;

use candle_core::{bail, Result, Tensor};
use rayon::prelude::*;

use super::cpu_tensor::{is_cpu_f32, tensor_from_vec, zeroed, F32Data, SharedOut};
use super::gemm_call::{gemm_f32, MatMut, MatRef};
use super::profile;
use super::simd::simd_dispatch;
use super::vmath::exp;

/// Queries per task: one gemm packs each key block once for this many queries (512 x 256 was
/// the fastest of 128 x 4096, 256 x 512 and 512 x 256 on a 512² UNet step, by 5-10 %).
const MAX_QUERY_BLOCK: usize = 512;
const MIN_QUERY_BLOCK: usize = 8;
/// Keys per step of the online softmax: a 512 x 256 score block (512 KiB) stays in L2.
const KEY_BLOCK: usize = 256;

/// Whether [`fused_attention`] handles these inputs (CPU f32); otherwise use candle's ops.
pub fn supports(q: &Tensor, k: &Tensor, v: &Tensor) -> bool {
    is_cpu_f32(q) && is_cpu_f32(k) && is_cpu_f32(v)
}

/// `q: [B, Lq, heads * d]`, `k: [B, Lk, heads * d]`, `v: [B, Lk, heads * dv]`, each head's
/// channels side by side as the projections produce them. Returns `[B, Lq, heads * dv]`.
pub fn fused_attention(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize, scale: f32) -> Result<Tensor> {
    let _t = profile::timer("attention");
    let (batch, queries, q_channels) = q.dims3()?;
    let (k_batch, keys, k_channels) = k.dims3()?;
    let (v_batch, values, v_channels) = v.dims3()?;
    if k_batch != batch || v_batch != batch || values != keys || k_channels != q_channels {
        bail!("attention: incompatible q {:?}, k {:?}, v {:?}", q.dims(), k.dims(), v.dims());
    }
    if heads == 0 || q_channels % heads != 0 || v_channels % heads != 0 || keys == 0 {
        bail!("attention: {heads} heads do not divide q {:?} / v {:?}", q.dims(), v.dims());
    }
    let shape = Shape { batch, queries, keys, heads, head_dim: q_channels / heads, value_dim: v_channels / heads };
    let (q, k, v) = (q.contiguous()?, k.contiguous()?, v.contiguous()?);
    let (qd, kd, vd) = (F32Data::new(&q)?, F32Data::new(&k)?, F32Data::new(&v)?);
    let mut out = zeroed(batch * queries * v_channels);
    run(&shape, qd.slice(), kd.slice(), vd.slice(), scale, &mut out);
    tensor_from_vec(out, (batch, queries, v_channels))
}

#[derive(Debug, Clone, Copy)]
struct Shape {
    batch: usize,
    queries: usize,
    keys: usize,
    heads: usize,
    head_dim: usize,
    value_dim: usize,
}

thread_local! {
    /// Per-thread score block and per-row running maxima and sums, reused across calls.
    static SCRATCH: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// Frees this thread's score scratch.
pub(super) fn release_thread_scratch() {
    super::cpu_tensor::release_thread_scratch(&SCRATCH);
}

fn run(s: &Shape, q: &[f32], k: &[f32], v: &[f32], scale: f32, out: &mut [f32]) {
    // At least ~4 tasks per thread, so the last ones do not leave a thread idle.
    let threads = rayon::current_num_threads().max(1);
    let block = (s.batch * s.heads * s.queries).div_ceil(4 * threads).clamp(MIN_QUERY_BLOCK, MAX_QUERY_BLOCK);
    let tasks: Vec<(usize, usize, usize)> = (0..s.batch)
        .flat_map(|b| (0..s.heads).flat_map(move |h| (0..s.queries).step_by(block).map(move |q0| (b, h, q0))))
        .collect();
    let out = SharedOut(out.as_mut_ptr());
    tasks.par_iter().for_each(|&(b, h, q0)| {
        let rows = block.min(s.queries - q0);
        SCRATCH.with(|cell| {
            let mut scratch = cell.borrow_mut();
            let (scores, stats) = &mut *scratch;
            let width = KEY_BLOCK.min(s.keys);
            if scores.len() < rows * width {
                scores.resize(rows * width, 0.0);
            }
            if stats.len() < 2 * rows {
                stats.resize(2 * rows, 0.0);
            }
            let (maxima, sums) = stats[..2 * rows].split_at_mut(rows);
            // SAFETY: each task writes only its own query rows of its own head in `out`; the
            // reads stay inside q/k/v by the shape checks in `fused_attention`.
            unsafe { attend_block(s, b, h, q0, rows, q, k, v, scale, &mut scores[..rows * width], maxima, sums, out) };
        });
    });
}

/// Online softmax over key blocks (the flash-attention recurrence): per query row a running
/// maximum `m` and sum `l`; each key block's scores become `exp(scale * x - m_new)`, the output
/// rows accumulated so far are scaled by `exp(m_old - m_new)`, and the block's `P V` is added.
#[allow(clippy::too_many_arguments)]
unsafe fn attend_block(
    s: &Shape,
    b: usize,
    h: usize,
    q0: usize,
    rows: usize,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    scale: f32,
    scores: &mut [f32],
    maxima: &mut [f32],
    sums: &mut [f32],
    out: SharedOut,
) {
    let qc = s.heads * s.head_dim;
    let vc = s.heads * s.value_dim;
    let dst = out.0.add((b * s.queries + q0) * vc + h * s.value_dim);
    maxima.fill(f32::NEG_INFINITY);
    sums.fill(0.0);
    for k0 in (0..s.keys).step_by(KEY_BLOCK) {
        let width = KEY_BLOCK.min(s.keys - k0);
        let scores = &mut scores[..rows * width];
        // scores[rows, width] = Q_block[rows, d] x K_block^T[d, width]
        gemm_f32(
            rows,
            width,
            s.head_dim,
            MatMut { ptr: scores.as_mut_ptr(), row_stride: width as isize, col_stride: 1 },
            MatRef { ptr: q.as_ptr().add((b * s.queries + q0) * qc + h * s.head_dim), row_stride: qc as isize, col_stride: 1 },
            MatRef { ptr: k.as_ptr().add((b * s.keys + k0) * qc + h * s.head_dim), row_stride: 1, col_stride: qc as isize },
            false,
            1,
        );
        softmax_step(scores, width, scale, maxima, sums, dst, vc, s.value_dim, k0 > 0);
        // out rows += P[rows, width] x V_block[width, dv]
        gemm_f32(
            rows,
            s.value_dim,
            width,
            MatMut { ptr: dst, row_stride: vc as isize, col_stride: 1 },
            MatRef { ptr: scores.as_ptr(), row_stride: width as isize, col_stride: 1 },
            MatRef { ptr: v.as_ptr().add((b * s.keys + k0) * vc + h * s.value_dim), row_stride: vc as isize, col_stride: 1 },
            k0 > 0,
            1,
        );
    }
    for (r, &sum) in sums.iter().enumerate() {
        let row = std::slice::from_raw_parts_mut(dst.add(r * vc), s.value_dim);
        let inv = 1.0 / sum;
        row.iter_mut().for_each(|x| *x *= inv);
    }
}

/// One key block of the online softmax: each row of `scores` (width `width`) becomes
/// `exp(scale * x - m)` with `m` the row's running maximum of `scale * x`, `sums` accumulate the
/// rows' totals, and (after the first block) the output rows at `dst` (stride `vc`, `dv` wide)
/// are scaled by `exp(m_old - m)`.
///
/// # Safety
/// `dst` must address `maxima.len()` rows of `dv` values, `vc` apart, owned by the caller.
#[allow(clippy::too_many_arguments)]
unsafe fn softmax_step(scores: &mut [f32], width: usize, scale: f32, maxima: &mut [f32], sums: &mut [f32], dst: *mut f32, vc: usize, dv: usize, rescale: bool) {
    for (r, row) in scores.chunks_exact_mut(width).enumerate() {
        let old = maxima[r];
        let new = old.max(scaled_max(row, scale));
        maxima[r] = new;
        let correction = exp(old - new);
        sums[r] = sums[r] * correction + exponentiate(row, scale, new);
        if rescale && correction != 1.0 {
            let out_row = std::slice::from_raw_parts_mut(dst.add(r * vc), dv);
            out_row.iter_mut().for_each(|x| *x *= correction);
        }
    }
}

const LANES: usize = 16;

simd_dispatch! {
    /// max of `scale * x` over `row`.
    fn scaled_max(row: &[f32], scale: f32) -> f32 = scaled_max_body;
}

#[inline(always)]
fn scaled_max_body(row: &[f32], scale: f32) -> f32 {
    // Lane-wise so the reduction vectorises.
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (m, &x) in lanes.iter_mut().zip(chunk) {
            *m = m.max(x * scale);
        }
    }
    chunks.remainder().iter().fold(lanes.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)), |a, &x| a.max(x * scale))
}

simd_dispatch! {
    /// `x = exp(scale * x - shift)` in place; returns the sum.
    fn exponentiate(row: &mut [f32], scale: f32, shift: f32) -> f32 = exponentiate_body;
}

#[inline(always)]
fn exponentiate_body(row: &mut [f32], scale: f32, shift: f32) -> f32 {
    let mut sums = [0f32; LANES];
    let mut chunks = row.chunks_exact_mut(LANES);
    for chunk in &mut chunks {
        for (s, x) in sums.iter_mut().zip(chunk.iter_mut()) {
            let e = exp(x.mul_add(scale, -shift));
            *x = e;
            *s += e;
        }
    }
    let mut sum: f32 = sums.iter().sum();
    for x in chunks.into_remainder() {
        let e = exp(x.mul_add(scale, -shift));
        *x = e;
        sum += e;
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::kernels::test_util::{relative_max_diff, seeded};

    /// Split heads, textbook softmax attention, merge heads, with candle ops.
    fn reference(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize, scale: f64) -> Tensor {
        let split = |t: &Tensor| {
            let (b, l, c) = t.dims3().unwrap();
            t.reshape((b, l, heads, c / heads)).unwrap().transpose(1, 2).unwrap().contiguous().unwrap()
        };
        let (qh, kh, vh) = (split(q), split(k), split(v));
        let scores = (qh.matmul(&kh.t().unwrap()).unwrap() * scale).unwrap();
        let out = candle_nn::ops::softmax_last_dim(&scores).unwrap().matmul(&vh).unwrap();
        let (b, _, l, dv) = out.dims4().unwrap();
        out.transpose(1, 2).unwrap().reshape((b, l, heads * dv)).unwrap()
    }

    #[test]
    fn matches_candle_attention() {
        // (batch, queries, keys, heads, d, dv): self-attention with a ragged last block,
        // cross-attention on 77 tokens, one wide head as in the VAE, long keys (small blocks).
        let cases = [(2, 300, 300, 3, 8, 8), (2, 50, 77, 4, 10, 10), (1, 64, 64, 1, 48, 48), (1, 20, 9000, 2, 4, 6)];
        for (i, &(b, lq, lk, heads, d, dv)) in cases.iter().enumerate() {
            let q = seeded(&[b, lq, heads * d], 10 + i as u64, 2.0);
            let k = seeded(&[b, lk, heads * d], 20 + i as u64, 2.0);
            let v = seeded(&[b, lk, heads * dv], 30 + i as u64, 1.0);
            let scale = 1.0 / (d as f64).sqrt();
            let got = fused_attention(&q, &k, &v, heads, scale as f32).unwrap();
            let want = reference(&q, &k, &v, heads, scale);
            let diff = relative_max_diff(&got, &want);
            assert!(diff < 2e-6, "case {i}: {diff}");
        }
    }

    #[test]
    fn rejects_mismatched_shapes() {
        let q = seeded(&[1, 4, 6], 1, 1.0);
        let k = seeded(&[1, 5, 6], 2, 1.0);
        let v = seeded(&[1, 4, 6], 3, 1.0);
        assert!(fused_attention(&q, &k, &v, 2, 1.0).is_err());
        assert!(fused_attention(&q, &k, &k, 4, 1.0).is_err());
    }
}
