//! diffusers' `Transformer2DModel` (continuous input) and its `BasicTransformerBlock`s:
//! self-attention, cross-attention on the text embeddings, GEGLU feed-forward.

use candle_core::{Module, Result, Tensor};
use candle_nn::{Linear, VarBuilder};

use super::attention::Attention;
use super::layout::AttentionPlan;
use super::norm::{GroupNorm, LayerNorm, NormEps, NormRole};
use crate::backend::kernels::geglu::geglu;
use crate::backend::kernels::linear::{linear, linear_from_channels_first, linear_to_channels_first_add};

/// Hard-coded in diffusers' `Transformer2DModel` (not `norm_eps`).
pub const TRANSFORMER_INPUT_NORM_EPS: f64 = 1e-6;
/// Hard-coded `norm_eps` default of `BasicTransformerBlock`.
pub const TRANSFORMER_LAYER_NORM_EPS: f64 = 1e-5;

/// `net.2(hidden * gelu(gate))` where `[hidden | gate] = net.0.proj(x)` (GEGLU, exact erf GELU).
#[derive(Debug, Clone)]
struct GegluFeedForward {
    proj: Linear,
    out: Linear,
}

impl GegluFeedForward {
    fn load(dim: usize, vb: VarBuilder) -> Result<Self> {
        let inner_dim = dim * 4;
        Ok(Self {
            proj: candle_nn::linear(dim, inner_dim * 2, vb.pp("net").pp("0").pp("proj"))?,
            out: candle_nn::linear(inner_dim, dim, vb.pp("net").pp("2"))?,
        })
    }
}

impl Module for GegluFeedForward {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let projected = linear(&self.proj, xs)?;
        linear(&self.out, &geglu(&projected)?)
    }
}

#[derive(Debug, Clone)]
struct BasicTransformerBlock {
    norm1: LayerNorm,
    attn1: Attention,
    norm2: LayerNorm,
    attn2: Attention,
    norm3: LayerNorm,
    ff: GegluFeedForward,
}

impl BasicTransformerBlock {
    fn load(dim: usize, attention: AttentionPlan, upcast: bool, vb: VarBuilder) -> Result<Self> {
        let eps = TRANSFORMER_LAYER_NORM_EPS;
        Ok(Self {
            norm1: LayerNorm::load(dim, eps, vb.pp("norm1"))?,
            attn1: Attention::load(dim, dim, attention.heads, upcast, vb.pp("attn1"))?,
            norm2: LayerNorm::load(dim, eps, vb.pp("norm2"))?,
            attn2: Attention::load(
                dim,
                attention.cross_attention_dim,
                attention.heads,
                upcast,
                vb.pp("attn2"),
            )?,
            norm3: LayerNorm::load(dim, eps, vb.pp("norm3"))?,
            ff: GegluFeedForward::load(dim, vb.pp("ff"))?,
        })
    }

    fn forward(&self, xs: &Tensor, context: &Tensor) -> Result<Tensor> {
        let xs = (self.attn1.forward(&self.norm1.forward(xs)?, None)? + xs)?;
        let xs = (self
            .attn2
            .forward(&self.norm2.forward(&xs)?, Some(context))?
            + xs)?;
        self.ff.forward(&self.norm3.forward(&xs)?)? + xs
    }

    fn norms(&self) -> [&NormEps; 3] {
        [self.norm1.info(), self.norm2.info(), self.norm3.info()]
    }
}

/// Loads `proj_in`/`proj_out` as a token-wise linear map. Checkpoints with
/// `use_linear_projection: false` store them as 1x1 convs `[out, in, 1, 1]`; a 1x1 conv on
/// `[B, C, H, W]` is the same map applied to the `[B, H*W, C]` tokens, so both become one
/// `Linear` and the channel-last permutation happens once on each side.
fn token_projection(channels: usize, as_conv: bool, vb: VarBuilder) -> Result<Linear> {
    let weight = if as_conv {
        vb.get((channels, channels, 1, 1), "weight")?
            .reshape((channels, channels))?
    } else {
        vb.get((channels, channels), "weight")?
    };
    let bias = vb.get(channels, "bias")?;
    Ok(Linear::new(weight, Some(bias)))
}

#[derive(Debug, Clone)]
pub struct Transformer2DModel {
    norm: GroupNorm,
    proj_in: Linear,
    blocks: Vec<BasicTransformerBlock>,
    proj_out: Linear,
}

impl Transformer2DModel {
    /// `channels` is both the input width and `heads * head_dim` in UNet blocks.
    pub fn load(
        channels: usize,
        groups: usize,
        attention: AttentionPlan,
        use_linear_projection: bool,
        upcast: bool,
        vb: VarBuilder,
    ) -> Result<Self> {
        let as_conv = !use_linear_projection;
        let blocks = (0..attention.transformer_layers)
            .map(|i| {
                BasicTransformerBlock::load(
                    channels,
                    attention,
                    upcast,
                    vb.pp("transformer_blocks").pp(i),
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            norm: GroupNorm::load(
                groups,
                channels,
                TRANSFORMER_INPUT_NORM_EPS,
                NormRole::TransformerInput,
                vb.pp("norm"),
            )?,
            proj_in: token_projection(channels, as_conv, vb.pp("proj_in"))?,
            blocks,
            proj_out: token_projection(channels, as_conv, vb.pp("proj_out"))?,
        })
    }

    pub fn forward(&self, xs: &Tensor, context: &Tensor) -> Result<Tensor> {
        // proj_in reads the normalised image channels-first and proj_out writes channels-first
        // onto the residual, so no NCHW <-> token-major copies are made on CPU.
        let mut tokens = linear_from_channels_first(&self.proj_in, &self.norm.forward(xs)?)?;
        for block in &self.blocks {
            tokens = block.forward(&tokens, context)?;
        }
        linear_to_channels_first_add(&self.proj_out, &tokens, xs)
    }

    pub fn norms(&self) -> Vec<&NormEps> {
        let mut norms = vec![self.norm.info()];
        norms.extend(self.blocks.iter().flat_map(BasicTransformerBlock::norms));
        norms
    }
}
