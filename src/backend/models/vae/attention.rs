//! The VAE mid-block self-attention: one head spanning all channels, with its own GroupNorm in
//! front and a residual around it.
//!
//! Checkpoints name its projections two ways: current diffusers `to_q/to_k/to_v/to_out.0`, and
//! the older `query/key/value/proj_attn`. Weights converted straight from the original LDM
//! checkpoints keep the 1x1-conv shape `[C, C, 1, 1]`; both are read as a `[C, C]` linear.

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::{Linear, VarBuilder};

use super::blocks::{vae_group_norm, GroupNorm};
use crate::backend::kernels::attention::{fused_attention, supports as fused_attention_supported};
use crate::backend::kernels::linear::linear;

/// Upper bound on attention-score elements held at once (64 MiB of f32). The score matrix is
/// tokens x tokens: 4096^2 fits for a 512^2 image, but 16384^2 (1024^2 image) would be 1 GiB,
/// so queries are processed in row chunks that stay under this.
const MAX_SCORE_ELEMENTS: usize = 1 << 24;

/// Current and legacy names of the four projections, in the order q, k, v, out.
const CURRENT_NAMES: [&str; 4] = ["to_q", "to_k", "to_v", "to_out.0"];
const LEGACY_NAMES: [&str; 4] = ["query", "key", "value", "proj_attn"];

#[derive(Debug)]
pub(super) struct MidAttention {
    group_norm: GroupNorm,
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    /// 1/sqrt(channels): the single head is as wide as the block.
    scale: f64,
}

impl MidAttention {
    pub fn new(channels: usize, groups: usize, vb: VarBuilder) -> Result<Self> {
        let names = if vb.contains_tensor("to_q.weight") {
            CURRENT_NAMES
        } else {
            LEGACY_NAMES
        };
        let [q, k, v, out] = names;
        Ok(Self {
            group_norm: vae_group_norm(groups, channels, vb.pp("group_norm"))?,
            to_q: projection(channels, vb.pp(q))?,
            to_k: projection(channels, vb.pp(k))?,
            to_v: projection(channels, vb.pp(v))?,
            to_out: projection(channels, vb.pp(out))?,
            scale: 1.0 / (channels as f64).sqrt(),
        })
    }

    /// softmax(q k^T * scale) v over all tokens, computed in f32 (the scores overflow half
    /// precision) and in query-row chunks of at most `max_score_elements` scores.
    fn attend(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        max_score_elements: usize,
    ) -> Result<Tensor> {
        let (batch, tokens, _) = q.dims3()?;
        let q = (q.to_dtype(DType::F32)? * self.scale)?;
        let k_t = k.to_dtype(DType::F32)?.transpose(1, 2)?.contiguous()?;
        let v = v.to_dtype(DType::F32)?;
        let rows_per_chunk = (max_score_elements / (batch * tokens).max(1)).max(1);
        let mut chunks = Vec::with_capacity(tokens.div_ceil(rows_per_chunk));
        let mut start = 0;
        while start < tokens {
            let rows = rows_per_chunk.min(tokens - start);
            let scores = q.narrow(1, start, rows)?.matmul(&k_t)?;
            let weights = candle_nn::ops::softmax_last_dim(&scores)?;
            chunks.push(weights.matmul(&v)?);
            start += rows;
        }
        Tensor::cat(&chunks, 1)
    }

    /// GroupNorm, q/k/v over the flattened pixels, attention, output projection, residual.
    fn forward_chunked(&self, x: &Tensor, max_score_elements: usize) -> Result<Tensor> {
        let (batch, channels, height, width) = x.dims4()?;
        let tokens = self
            .group_norm
            .forward(x)?
            .reshape((batch, channels, height * width))?
            .transpose(1, 2)?
            .contiguous()?;
        let q = linear(&self.to_q, &tokens)?;
        let k = linear(&self.to_k, &tokens)?;
        let v = linear(&self.to_v, &tokens)?;
        let attended = if fused_attention_supported(&q, &k, &v) {
            fused_attention(&q, &k, &v, 1, self.scale as f32)?
        } else {
            self.attend(&q, &k, &v, max_score_elements)?
                .to_dtype(x.dtype())?
        };
        let out = linear(&self.to_out, &attended)?
            .transpose(1, 2)?
            .reshape((batch, channels, height, width))?;
        out + x
    }
}

impl Module for MidAttention {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_chunked(x, MAX_SCORE_ELEMENTS)
    }
}

/// A `[C, C]` linear with bias, accepting the legacy `[C, C, 1, 1]` conv shape.
fn projection(channels: usize, vb: VarBuilder) -> Result<Linear> {
    let weight = match vb.get((channels, channels), "weight") {
        Ok(weight) => weight,
        Err(linear_shape_error) => match vb.get((channels, channels, 1, 1), "weight") {
            Ok(weight) => weight.reshape((channels, channels))?,
            // Neither shape: report against the current layout.
            Err(_) => return Err(linear_shape_error),
        },
    };
    let bias = vb.get(channels, "bias")?;
    Ok(Linear::new(weight, Some(bias)))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use candle_core::{Device, Tensor};

    use super::*;

    fn random_attention(
        channels: usize,
        conv_shaped: bool,
    ) -> (MidAttention, HashMap<String, Tensor>) {
        let dev = Device::Cpu;
        let mut tensors = HashMap::new();
        tensors.insert(
            "group_norm.weight".to_owned(),
            Tensor::randn(1f32, 0.1, channels, &dev).unwrap(),
        );
        tensors.insert(
            "group_norm.bias".to_owned(),
            Tensor::randn(0f32, 0.1, channels, &dev).unwrap(),
        );
        for name in LEGACY_NAMES {
            let weight = Tensor::randn(0f32, 0.2, (channels, channels), &dev).unwrap();
            let weight = if conv_shaped {
                weight.reshape((channels, channels, 1, 1)).unwrap()
            } else {
                weight
            };
            tensors.insert(format!("{name}.weight"), weight);
            tensors.insert(
                format!("{name}.bias"),
                Tensor::randn(0f32, 0.1, channels, &dev).unwrap(),
            );
        }
        let vb = VarBuilder::from_tensors(tensors.clone(), DType::F32, &dev);
        (MidAttention::new(channels, 4, vb).unwrap(), tensors)
    }

    #[test]
    fn query_chunks_do_not_change_the_result() {
        let (attention, _) = random_attention(8, false);
        let x = Tensor::randn(0f32, 1.0, (2, 8, 6, 7), &Device::Cpu).unwrap();
        let whole = attention.forward(&x).unwrap();
        // 2 x 42 tokens: a budget of 2 * 42 * 5 scores gives chunks of 5 rows (last one 2).
        for budget in [1, 2 * 42 * 5, 2 * 42 * 41] {
            let chunked = attention.forward_chunked(&x, budget).unwrap();
            let diff = (&whole - &chunked)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(diff < 1e-6, "budget {budget}: {diff}");
        }
    }

    #[test]
    fn rejects_projection_of_wrong_shape() {
        let (_, mut tensors) = random_attention(8, true);
        tensors.insert(
            "key.weight".to_owned(),
            Tensor::zeros((8, 8, 3, 3), DType::F32, &Device::Cpu).unwrap(),
        );
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
        let err = MidAttention::new(8, 4, vb).unwrap_err().to_string();
        assert!(err.contains("key.weight"), "{err}");
    }
}
