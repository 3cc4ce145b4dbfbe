//! Fused multi-head attention on the CPU: `softmax(q k^T * scale) v` without materialising the
//! score tensor.
//!
//! Work is split into (batch, head, block of queries) tasks. Each computes the scores of its
//! query block against all keys with one gemm into a per-thread buffer that stays in L2, turns
//! them into unnormalised softmax weights in place (vectorised exp, scale folded in), multiplies
//! by V with a second gemm straight into the output, and divides each row by its sum. Heads are
//! read in place from the `[B, L, heads * d]` projections through strides, so no head
//! split/merge copies are made either. At 512x512 this replaces a 1 GiB `[16, 4096, 4096]`
//! score tensor per self-attention layer by a 2 MiB buffer per thread.

use std::cell::RefCell;

use candle_core::{bail, Result, Tensor};
use rayon::prelude::*;

use super::cpu_tensor::{is_cpu_f32, tensor_from_vec, zeroed, F32Data, SharedOut};
use super::gemm_call::{gemm_f32, MatMut, MatRef};
use super::profile;
use super::simd::simd_dispatch;
use super::vmath::exp;

/// Score buffer per task: large enough for gemm efficiency, small enough for L2.
const SCORE_BYTES: usize = 2 << 20;
const MAX_QUERY_BLOCK: usize = 128;
const MIN_QUERY_BLOCK: usize = 8;

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
    /// Per-thread score block and row sums, reused across calls.
    static SCRATCH: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

fn run(s: &Shape, q: &[f32], k: &[f32], v: &[f32], scale: f32, out: &mut [f32]) {
    let block = (SCORE_BYTES / (4 * s.keys)).clamp(MIN_QUERY_BLOCK, MAX_QUERY_BLOCK);
    let tasks: Vec<(usize, usize, usize)> = (0..s.batch)
        .flat_map(|b| (0..s.heads).flat_map(move |h| (0..s.queries).step_by(block).map(move |q0| (b, h, q0))))
        .collect();
    let out = SharedOut(out.as_mut_ptr());
    tasks.par_iter().for_each(|&(b, h, q0)| {
        let rows = block.min(s.queries - q0);
        SCRATCH.with(|cell| {
            let mut scratch = cell.borrow_mut();
            let (scores, sums) = &mut *scratch;
            if scores.len() < rows * s.keys {
                scores.resize(rows * s.keys, 0.0);
            }
            if sums.len() < rows {
                sums.resize(rows, 0.0);
            }
            // SAFETY: each task writes only its own query rows of its own head in `out`; the
            // reads stay inside q/k/v by the shape checks in `fused_attention`.
            unsafe { attend_block(s, b, h, q0, rows, q, k, v, scale, &mut scores[..rows * s.keys], &mut sums[..rows], out) };
        });
    });
}

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
    inv_sums: &mut [f32],
    out: SharedOut,
) {
    let qc = s.heads * s.head_dim;
    let vc = s.heads * s.value_dim;
    // scores[rows, keys] = Q_block[rows, d] x K_head^T[d, keys]
    gemm_f32(
        rows,
        s.keys,
        s.head_dim,
        MatMut { ptr: scores.as_mut_ptr(), row_stride: s.keys as isize, col_stride: 1 },
        MatRef { ptr: q.as_ptr().add((b * s.queries + q0) * qc + h * s.head_dim), row_stride: qc as isize, col_stride: 1 },
        MatRef { ptr: k.as_ptr().add(b * s.keys * qc + h * s.head_dim), row_stride: 1, col_stride: qc as isize },
        false,
        1,
    );
    softmax_numerators(scores, s.keys, scale, inv_sums);
    // out rows = P[rows, keys] x V_head[keys, dv], then each row / its sum.
    let dst = out.0.add((b * s.queries + q0) * vc + h * s.value_dim);
    gemm_f32(
        rows,
        s.value_dim,
        s.keys,
        MatMut { ptr: dst, row_stride: vc as isize, col_stride: 1 },
        MatRef { ptr: scores.as_ptr(), row_stride: s.keys as isize, col_stride: 1 },
        MatRef { ptr: v.as_ptr().add(b * s.keys * vc + h * s.value_dim), row_stride: vc as isize, col_stride: 1 },
        false,
        1,
    );
    for (r, &inv) in inv_sums.iter().enumerate() {
        let row = std::slice::from_raw_parts_mut(dst.add(r * vc), s.value_dim);
        row.iter_mut().for_each(|x| *x *= inv);
    }
}

const LANES: usize = 16;

simd_dispatch! {
    /// Each row of `scores` (width `keys`) becomes `exp(scale * (x - max))`; `inv_sums` gets
    /// 1 / row sum.
    fn softmax_numerators(scores: &mut [f32], keys: usize, scale: f32, inv_sums: &mut [f32]) = softmax_numerators_body;
}

#[inline(always)]
fn softmax_numerators_body(scores: &mut [f32], keys: usize, scale: f32, inv_sums: &mut [f32]) {
    for (row, inv) in scores.chunks_exact_mut(keys).zip(inv_sums.iter_mut()) {
        // Lane-wise max and sum so the reductions vectorise.
        let mut lanes = [f32::NEG_INFINITY; LANES];
        let mut chunks = row.chunks_exact(LANES);
        for chunk in &mut chunks {
            for (m, &x) in lanes.iter_mut().zip(chunk) {
                *m = m.max(x);
            }
        }
        let max = chunks.remainder().iter().fold(lanes.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)), |a, &b| a.max(b));
        let shift = max * scale;
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
        *inv = 1.0 / sum;
    }
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
