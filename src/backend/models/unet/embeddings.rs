//! Timestep conditioning: diffusers' sinusoidal `Timesteps`, the `TimestepEmbedding` MLP, and
//! SDXL's "text_time" added embedding (`add_time_proj` + `add_embedding`).

use candle_core::{bail, DType, Device, Module, Result, Tensor};
use candle_nn::{Linear, VarBuilder};

use super::layout::{TextTimePlan, UNetLayout};

/// diffusers' `max_period` of `get_timestep_embedding`.
const MAX_PERIOD: f64 = 10_000.0;

/// SDXL's extra conditioning, batched like the sample (`[uncond, cond]` under CFG).
#[derive(Debug, Clone)]
pub struct SdxlConditioning {
    /// Pooled, projected output of the second text encoder: `[B, pooled]`.
    pub text_embeds: Tensor,
    /// `original_size + crops_coords_top_left + target_size`: `[B, 6]`.
    pub time_ids: Tensor,
}

/// diffusers' `Timesteps` module (no weights): `[N]` values -> `[N, dim]`.
#[derive(Debug, Clone, Copy)]
pub struct SinusoidalEmbedding {
    dim: usize,
    flip_sin_to_cos: bool,
    freq_shift: f64,
}

impl SinusoidalEmbedding {
    pub fn new(dim: usize, flip_sin_to_cos: bool, freq_shift: f64) -> Self {
        Self {
            dim,
            flip_sin_to_cos,
            freq_shift,
        }
    }

    /// Rows of `[sin | cos]` (or `[cos | sin]` when flipped), zero-padded to an odd `dim`.
    ///
    /// Frequencies and products are rounded to f32 where diffusers computes them in float32, so
    /// the arguments of sin/cos (up to ~1000 rad) match torch's; sin/cos themselves are taken
    /// in f64 and rounded, i.e. correctly rounded rather than torch's <= 1 ulp.
    pub fn forward(&self, values: &[f32], device: &Device) -> Result<Tensor> {
        let half = self.dim / 2;
        let denominator = half as f32 - self.freq_shift as f32;
        let log_period = -(MAX_PERIOD.ln() as f32);
        let freqs: Vec<f32> = (0..half)
            .map(|i| (log_period * i as f32 / denominator).exp())
            .collect();
        let mut rows = Vec::with_capacity(values.len() * self.dim);
        for &value in values {
            let args = freqs.iter().map(|&freq| f64::from(value * freq));
            let sin = args.clone().map(|arg| arg.sin() as f32);
            let cos = args.map(|arg| arg.cos() as f32);
            if self.flip_sin_to_cos {
                rows.extend(cos.chain(sin));
            } else {
                rows.extend(sin.chain(cos));
            }
            if self.dim % 2 == 1 {
                rows.push(0.0);
            }
        }
        Tensor::from_vec(rows, (values.len(), self.dim), device)
    }
}

/// diffusers' `TimestepEmbedding`: `linear_2(silu(linear_1(x)))`.
#[derive(Debug, Clone)]
pub struct TimestepEmbedding {
    linear_1: Linear,
    linear_2: Linear,
}

impl TimestepEmbedding {
    pub fn load(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            linear_1: candle_nn::linear(in_dim, out_dim, vb.pp("linear_1"))?,
            linear_2: candle_nn::linear(out_dim, out_dim, vb.pp("linear_2"))?,
        })
    }
}

impl Module for TimestepEmbedding {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.linear_2.forward(&self.linear_1.forward(xs)?.silu()?)
    }
}

/// SDXL: each time id gets its own sinusoidal embedding; those are concatenated after the pooled
/// text embedding and fed through `add_embedding`.
#[derive(Debug, Clone)]
struct TextTimeEmbedding {
    add_time_proj: SinusoidalEmbedding,
    add_embedding: TimestepEmbedding,
    projection_input_dim: usize,
}

impl TextTimeEmbedding {
    fn forward(&self, added: &SdxlConditioning, batch: usize, dtype: DType) -> Result<Tensor> {
        let (text_batch, pooled) = added.text_embeds.dims2()?;
        let (ids_batch, ids) = added.time_ids.dims2()?;
        if text_batch != batch || ids_batch != batch {
            bail!("SDXL conditioning batch ({text_batch}, {ids_batch}) does not match the sample batch {batch}");
        }
        let width = pooled + ids * self.add_time_proj.dim;
        if width != self.projection_input_dim {
            bail!(
                "SDXL conditioning gives {pooled} pooled + {ids} time ids = {width} features, the UNet expects {}",
                self.projection_input_dim
            );
        }
        let time_ids = added
            .time_ids
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let time_embeds = self
            .add_time_proj
            .forward(&time_ids, added.time_ids.device())?
            .reshape((batch, ids * self.add_time_proj.dim))?;
        let text_embeds = added.text_embeds.to_dtype(DType::F32)?;
        let features = Tensor::cat(&[&text_embeds, &time_embeds], 1)?.to_dtype(dtype)?;
        self.add_embedding.forward(&features)
    }
}

/// The full embedding `emb` that every resnet receives (before its SiLU).
#[derive(Debug, Clone)]
pub struct TimeConditioning {
    time_proj: SinusoidalEmbedding,
    time_embedding: TimestepEmbedding,
    text_time: Option<TextTimeEmbedding>,
}

impl TimeConditioning {
    pub fn load(
        layout: &UNetLayout,
        flip_sin_to_cos: bool,
        freq_shift: f64,
        vb: &VarBuilder,
    ) -> Result<Self> {
        let time_proj =
            SinusoidalEmbedding::new(layout.timestep_channels, flip_sin_to_cos, freq_shift);
        let time_embedding = TimestepEmbedding::load(
            layout.timestep_channels,
            layout.time_embed_dim,
            vb.pp("time_embedding"),
        )?;
        let text_time = layout
            .text_time
            .map(
                |TextTimePlan {
                     time_embed_dim,
                     projection_input_dim,
                 }| {
                    Ok::<_, candle_core::Error>(TextTimeEmbedding {
                        add_time_proj: SinusoidalEmbedding::new(
                            time_embed_dim,
                            flip_sin_to_cos,
                            freq_shift,
                        ),
                        add_embedding: TimestepEmbedding::load(
                            projection_input_dim,
                            layout.time_embed_dim,
                            vb.pp("add_embedding"),
                        )?,
                        projection_input_dim,
                    })
                },
            )
            .transpose()?;
        Ok(Self {
            time_proj,
            time_embedding,
            text_time,
        })
    }

    /// `[batch, time_embed_dim]` for one timestep shared by the whole batch.
    pub fn forward(
        &self,
        timestep: f64,
        batch: usize,
        added: Option<&SdxlConditioning>,
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        // Pipelines hand diffusers the timestep as a float32 tensor (int64 for DDIM-type
        // schedules, cast with `.float()`), so the embedding sees the f32 value.
        let t_emb = self
            .time_proj
            .forward(&[timestep as f32], device)?
            .to_dtype(dtype)?;
        let emb = self.time_embedding.forward(&t_emb)?.repeat((batch, 1))?;
        match (&self.text_time, added) {
            (None, None) => Ok(emb),
            (Some(text_time), Some(added)) => emb + text_time.forward(added, batch, dtype)?,
            (Some(_), None) => bail!(
                "this UNet (addition_embed_type \"text_time\") needs SDXL text_embeds and time_ids"
            ),
            (None, Some(_)) => bail!("this UNet takes no SDXL text_embeds/time_ids"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sinusoidal_embedding_matches_diffusers_formula() {
        let embedding = SinusoidalEmbedding::new(8, true, 1.0);
        let rows = embedding
            .forward(&[0.0, 799.2], &Device::Cpu)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        // t = 0: cos = 1 first (flipped), sin = 0 second.
        assert_eq!(rows[0], vec![1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]);
        // freq_i = exp(-ln(10000) * i / (4 - 1)).
        for i in 0..4 {
            let freq = (-(10_000f64.ln()) * i as f64 / 3.0).exp();
            let arg = 799.2f32 as f64 * freq;
            assert!((rows[1][i] as f64 - arg.cos()).abs() < 1e-4, "cos {i}");
            assert!((rows[1][4 + i] as f64 - arg.sin()).abs() < 1e-4, "sin {i}");
        }
    }

    #[test]
    fn odd_dimension_is_zero_padded() {
        let embedding = SinusoidalEmbedding::new(5, false, 0.0);
        let rows = embedding
            .forward(&[3.0], &Device::Cpu)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(rows[0].len(), 5);
        assert_eq!(rows[0][4], 0.0);
        assert_eq!(rows[0][0], 3f64.sin() as f32);
    }
}
