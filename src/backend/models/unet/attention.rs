//! Multi-head attention of the UNet's transformer blocks (diffusers' `Attention` with
//! `to_q`/`to_k`/`to_v` without bias and `to_out.0` with bias).
//!
//! All of the attention arithmetic sits in [`scaled_dot_product_attention`], so a fused kernel
//! can replace it without touching the module code.

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::{Linear, VarBuilder};

use crate::backend::kernels::attention::{fused_attention, supports as fused_attention_supported};
use crate::backend::kernels::linear::linear;

/// Largest score matrix (`heads * queries * keys` elements) materialised at once. Beyond it the
/// queries are processed in chunks: at 512x512 SD 1.5's first self-attention would otherwise
/// allocate a 1 GiB `[16, 4096, 4096]` f32 matrix.
const MAX_SCORE_BYTES: usize = 256 << 20;

/// `softmax(q k^T / sqrt(d)) v` for `q: [N, Lq, d]`, `k: [N, Lk, d]`, `v: [N, Lk, dv]`, where `N`
/// is batch x heads. Returns `[N, Lq, dv]`.
pub fn scaled_dot_product_attention(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
    attention_in_query_chunks(q, k, v, MAX_SCORE_BYTES)
}

fn attention_in_query_chunks(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    max_score_bytes: usize,
) -> Result<Tensor> {
    let (groups, queries, head_dim) = q.dims3()?;
    let keys = k.dim(1)?;
    // Scaling q (N*Lq*d products) is cheaper than scaling the scores (N*Lq*Lk).
    let q = (q * (head_dim as f64).powf(-0.5))?;
    let k_t = k.t()?;
    let bytes_per_query = groups * keys * q.dtype().size_in_bytes();
    let chunk = (max_score_bytes / bytes_per_query.max(1)).max(1);
    if chunk >= queries {
        return attend(&q, &k_t, v);
    }
    let mut outputs = Vec::with_capacity(queries.div_ceil(chunk));
    for start in (0..queries).step_by(chunk) {
        let len = chunk.min(queries - start);
        outputs.push(attend(&q.narrow(1, start, len)?, &k_t, v)?);
    }
    Tensor::cat(&outputs, 1)
}

fn attend(q: &Tensor, k_t: &Tensor, v: &Tensor) -> Result<Tensor> {
    let scores = q.matmul(k_t)?;
    candle_nn::ops::softmax_last_dim(&scores)?.matmul(v)
}

#[derive(Debug, Clone)]
pub struct Attention {
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    heads: usize,
    /// Compute scores in f32 when the model runs in half precision (SD 2.1's `upcast_attention`).
    upcast: bool,
}

impl Attention {
    /// `context_dim` is the width of the keys/values source: the query width for
    /// self-attention, `cross_attention_dim` for cross-attention.
    pub fn load(
        query_dim: usize,
        context_dim: usize,
        heads: usize,
        upcast: bool,
        vb: VarBuilder,
    ) -> Result<Self> {
        Ok(Self {
            to_q: candle_nn::linear_no_bias(query_dim, query_dim, vb.pp("to_q"))?,
            to_k: candle_nn::linear_no_bias(context_dim, query_dim, vb.pp("to_k"))?,
            to_v: candle_nn::linear_no_bias(context_dim, query_dim, vb.pp("to_v"))?,
            to_out: candle_nn::linear(query_dim, query_dim, vb.pp("to_out").pp("0"))?,
            heads,
            upcast,
        })
    }

    /// `[B, L, C] -> [B*heads, L, C/heads]` (one copy: heads become the batch axis).
    fn split_heads(&self, xs: &Tensor) -> Result<Tensor> {
        let (batch, len, channels) = xs.dims3()?;
        let head_dim = channels / self.heads;
        xs.reshape((batch, len, self.heads, head_dim))?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((batch * self.heads, len, head_dim))
    }

    /// Self-attention when `context` is `None`, cross-attention over `context` otherwise.
    pub fn forward(&self, xs: &Tensor, context: Option<&Tensor>) -> Result<Tensor> {
        let (batch, len, channels) = xs.dims3()?;
        let context = context.unwrap_or(xs);
        let q = linear(&self.to_q, xs)?;
        let k = linear(&self.to_k, context)?;
        let v = linear(&self.to_v, context)?;
        if fused_attention_supported(&q, &k, &v) {
            // f32 on CPU: heads are read in place, scores never materialised (`upcast` is moot).
            let scale = ((channels / self.heads) as f64).powf(-0.5) as f32;
            return linear(&self.to_out, &fused_attention(&q, &k, &v, self.heads, scale)?);
        }
        let q = self.split_heads(&q)?;
        let k = self.split_heads(&k)?;
        let v = self.split_heads(&v)?;
        let dtype = q.dtype();
        let out = if self.upcast && dtype != DType::F32 {
            let (q, k, v) = (
                q.to_dtype(DType::F32)?,
                k.to_dtype(DType::F32)?,
                v.to_dtype(DType::F32)?,
            );
            scaled_dot_product_attention(&q, &k, &v)?.to_dtype(dtype)?
        } else {
            scaled_dot_product_attention(&q, &k, &v)?
        };
        // `[B*heads, L, d] -> [B, L, heads*d]`; the reshape after the transpose copies once.
        let out = out
            .reshape((batch, self.heads, len, channels / self.heads))?
            .transpose(1, 2)?
            .reshape((batch, len, channels))?;
        self.to_out.forward(&out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Unchunked textbook formula.
    fn reference(q: &Tensor, k: &Tensor, v: &Tensor) -> Tensor {
        let d = q.dim(2).unwrap() as f64;
        let scores = (q.matmul(&k.t().unwrap()).unwrap() / d.sqrt()).unwrap();
        candle_nn::ops::softmax_last_dim(&scores)
            .unwrap()
            .matmul(v)
            .unwrap()
    }

    #[test]
    fn chunked_attention_equals_unchunked() {
        let dev = Device::Cpu;
        // 8 groups x 77 keys x 4 bytes = 2464 bytes per query row; a 64 KiB budget allows 26 rows,
        // so 100 queries take 4 chunks, the last one short.
        let q = Tensor::randn(0f32, 1., (8, 100, 16), &dev).unwrap();
        let k = Tensor::randn(0f32, 1., (8, 77, 16), &dev).unwrap();
        let v = Tensor::randn(0f32, 1., (8, 77, 16), &dev).unwrap();
        let got = attention_in_query_chunks(&q, &k, &v, 64 << 10).unwrap();
        let want = reference(&q, &k, &v);
        let diff = (got - want)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(diff < 1e-5, "max diff {diff}");
    }
}
