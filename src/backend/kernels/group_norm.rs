//! GroupNorm (optionally followed by SiLU) in one kernel on the CPU.
//!
//! candle's GroupNorm is eight tensor ops (sum, sub, sqr, sum, div, sqrt, mul, add), each a full
//! pass with a fresh allocation, and the SiLU after it is two more. Here each (batch item, group)
//! slice, contiguous in NCHW, gets a mean pass and a variance pass (accumulated in f64) and one
//! write pass `y = x * a[c] + b[c]` with the affine folded per channel and SiLU applied in
//! registers.

use candle_core::{bail, Module, Result, Tensor};
use rayon::prelude::*;

use super::cpu_tensor::{is_cpu_f32, tensor_from_vec, write_owned, zeroed, F32Data};
use super::profile;
use super::simd::simd_dispatch;
use super::vmath::silu;

/// An affine GroupNorm layer over `[B, C, ...]`.
#[derive(Debug, Clone)]
pub struct GroupNorm {
    weight: Tensor,
    bias: Tensor,
    groups: usize,
    eps: f64,
}

impl GroupNorm {
    pub fn new(weight: Tensor, bias: Tensor, groups: usize, eps: f64) -> Result<Self> {
        let channels = weight.elem_count();
        if groups == 0 || !channels.is_multiple_of(groups) || bias.elem_count() != channels {
            bail!("GroupNorm: {groups} groups do not divide {channels} channels (bias {})", bias.elem_count());
        }
        Ok(Self { weight, bias, groups, eps })
    }

    /// Weights `weight`/`bias` under `vb`, as torch names them.
    pub fn load(groups: usize, channels: usize, eps: f64, vb: candle_nn::VarBuilder) -> Result<Self> {
        let weight = vb.get_with_hints(channels, "weight", candle_nn::Init::Const(1.0))?;
        let bias = vb.get_with_hints(channels, "bias", candle_nn::Init::Const(0.0))?;
        Self::new(weight, bias, groups, eps)
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.apply(x, false)
    }

    /// `silu(group_norm(x))`, fused on CPU.
    pub fn forward_silu(&self, x: &Tensor) -> Result<Tensor> {
        self.apply(x, true)
    }

    /// [`forward_silu`](Self::forward_silu) written over `x` itself on CPU, for an `x` the
    /// caller owns outright ([`write_owned`]): a 512x512 VAE activation then needs no second
    /// 128-256 MiB buffer.
    pub fn forward_silu_owned(&self, x: Tensor) -> Result<Tensor> {
        if is_cpu_f32(&x) && x.is_contiguous() && is_cpu_f32(&self.weight) && is_cpu_f32(&self.bias) {
            group_norm_in_place(&x, &self.weight, &self.bias, self.groups, self.eps, true)?;
            return Ok(x);
        }
        self.apply(&x, true)
    }

    fn apply(&self, x: &Tensor, with_silu: bool) -> Result<Tensor> {
        if is_cpu_f32(x) && is_cpu_f32(&self.weight) && is_cpu_f32(&self.bias) {
            return group_norm(x, &self.weight, &self.bias, self.groups, self.eps, with_silu);
        }
        let _t = profile::timer("group_norm (candle)");
        let channels = self.weight.elem_count();
        let norm = candle_nn::GroupNorm::new(self.weight.clone(), self.bias.clone(), channels, self.groups, self.eps)?;
        let y = norm.forward(x)?;
        if with_silu {
            y.silu()
        } else {
            Ok(y)
        }
    }
}

/// The CPU kernel: `x: [B, C, ...]` f32, `weight`/`bias: [C]`.
pub fn group_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, groups: usize, eps: f64, with_silu: bool) -> Result<Tensor> {
    let _t = profile::timer(if with_silu { "group_norm+silu" } else { "group_norm" });
    let layout = GroupLayout::new(x.dims(), weight, groups)?;
    let x = x.contiguous()?;
    let (weight, bias) = (weight.contiguous()?, bias.contiguous()?);
    let (xd, wd, bd) = (F32Data::new(&x)?, F32Data::new(&weight)?, F32Data::new(&bias)?);
    let (xs, gamma, beta) = (xd.slice(), wd.slice(), bd.slice());
    let mut out = zeroed(xs.len());
    if layout.group_len > 0 {
        out.par_chunks_mut(layout.group_len).zip(xs.par_chunks(layout.group_len)).enumerate().for_each(|(index, (dst, src))| {
            for (c, a, b) in layout.channel_affines(index, src, gamma, beta, eps) {
                let range = c * layout.spatial..(c + 1) * layout.spatial;
                scale_shift(&src[range.clone()], &mut dst[range], a, b, with_silu);
            }
        });
    }
    tensor_from_vec(out, x.dims())
}

/// [`group_norm`] written over `x` (a contiguous f32 CPU tensor the caller owns outright, see
/// [`write_owned`]). Each group's statistics are read before any of its elements is written.
pub fn group_norm_in_place(x: &Tensor, weight: &Tensor, bias: &Tensor, groups: usize, eps: f64, with_silu: bool) -> Result<()> {
    let _t = profile::timer(if with_silu { "group_norm+silu" } else { "group_norm" });
    let layout = GroupLayout::new(x.dims(), weight, groups)?;
    let (weight, bias) = (weight.contiguous()?, bias.contiguous()?);
    let (wd, bd) = (F32Data::new(&weight)?, F32Data::new(&bias)?);
    let (gamma, beta) = (wd.slice(), bd.slice());
    write_owned(x, |xs| {
        if layout.group_len > 0 {
            xs.par_chunks_mut(layout.group_len).enumerate().for_each(|(index, group)| {
                for (c, a, b) in layout.channel_affines(index, group, gamma, beta, eps) {
                    scale_shift_in_place(&mut group[c * layout.spatial..(c + 1) * layout.spatial], a, b, with_silu);
                }
            });
        }
        Ok(())
    })
}

/// How `[B, C, ...]` splits into groups: each (batch item, group) is one contiguous slice of
/// `group_len` elements holding `per_group` channels of `spatial` elements.
struct GroupLayout {
    groups: usize,
    per_group: usize,
    spatial: usize,
    group_len: usize,
}

impl GroupLayout {
    fn new(dims: &[usize], weight: &Tensor, groups: usize) -> Result<Self> {
        if dims.len() < 2 || groups == 0 || dims[1] != weight.elem_count() || !dims[1].is_multiple_of(groups) {
            bail!("group_norm: input {dims:?} does not fit {} channels in {groups} groups", weight.elem_count());
        }
        let spatial: usize = dims[2..].iter().product();
        let per_group = dims[1] / groups;
        Ok(Self { groups, per_group, spatial, group_len: per_group * spatial })
    }

    /// For the `index`-th group slice `src`: each of its channels (index within the group) with
    /// the affine `y = x * a + b` that normalises it and applies that channel's gamma and beta.
    /// Mean and variance are two passes accumulated in f64.
    fn channel_affines<'a>(&self, index: usize, src: &[f32], gamma: &'a [f32], beta: &'a [f32], eps: f64) -> impl Iterator<Item = (usize, f32, f32)> + 'a {
        let first_channel = (index % self.groups) * self.per_group;
        let count = self.group_len as f64;
        let mean = sum_f64(src) / count;
        let variance = squared_deviation_f64(src, mean as f32) / count;
        let inv_std = 1.0 / (variance + eps).sqrt();
        let (gamma, beta) = (&gamma[first_channel..][..self.per_group], &beta[first_channel..][..self.per_group]);
        gamma.iter().zip(beta).enumerate().map(move |(c, (&g, &b))| {
            let a = (g as f64 * inv_std) as f32;
            (c, a, (b as f64 - mean * a as f64) as f32)
        })
    }
}

const LANES: usize = 8;

simd_dispatch! {
    /// Sum of `xs` in f64.
    pub(crate) fn sum_f64(xs: &[f32]) -> f64 = sum_f64_body;
}

#[inline(always)]
fn sum_f64_body(xs: &[f32]) -> f64 {
    let mut lanes = [0f64; LANES];
    let mut chunks = xs.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (acc, &x) in lanes.iter_mut().zip(chunk) {
            *acc += x as f64;
        }
    }
    lanes.iter().sum::<f64>() + chunks.remainder().iter().map(|&x| x as f64).sum::<f64>()
}

simd_dispatch! {
    /// Sum of `(x - mean)^2` in f64 (the two-pass variance, exact for large means too).
    pub(crate) fn squared_deviation_f64(xs: &[f32], mean: f32) -> f64 = squared_deviation_body;
}

#[inline(always)]
fn squared_deviation_body(xs: &[f32], mean: f32) -> f64 {
    let mut lanes = [0f64; LANES];
    let mut chunks = xs.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (acc, &x) in lanes.iter_mut().zip(chunk) {
            let d = (x - mean) as f64;
            *acc += d * d;
        }
    }
    let tail: f64 = chunks.remainder().iter().map(|&x| ((x - mean) as f64).powi(2)).sum();
    lanes.iter().sum::<f64>() + tail
}

simd_dispatch! {
    /// `dst = src * a + b`, then SiLU when asked.
    pub(crate) fn scale_shift(src: &[f32], dst: &mut [f32], a: f32, b: f32, with_silu: bool) = scale_shift_body;
}

#[inline(always)]
fn scale_shift_body(src: &[f32], dst: &mut [f32], a: f32, b: f32, with_silu: bool) {
    if with_silu {
        for (d, &x) in dst.iter_mut().zip(src) {
            *d = silu(x.mul_add(a, b));
        }
    } else {
        for (d, &x) in dst.iter_mut().zip(src) {
            *d = x.mul_add(a, b);
        }
    }
}

simd_dispatch! {
    /// `xs = xs * a + b`, then SiLU when asked.
    pub(crate) fn scale_shift_in_place(xs: &mut [f32], a: f32, b: f32, with_silu: bool) = scale_shift_in_place_body;
}

#[inline(always)]
fn scale_shift_in_place_body(xs: &mut [f32], a: f32, b: f32, with_silu: bool) {
    if with_silu {
        for x in xs.iter_mut() {
            *x = silu(x.mul_add(a, b));
        }
    } else {
        for x in xs.iter_mut() {
            *x = x.mul_add(a, b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::kernels::test_util::{relative_max_diff, seeded};

    #[test]
    fn matches_candle_group_norm_and_silu() {
        for (i, dims) in [vec![2, 32, 9, 7], vec![1, 8, 40, 40], vec![2, 12, 5]].into_iter().enumerate() {
            let channels = dims[1];
            // An offset mean checks the two-pass variance.
            let x = (seeded(&dims, 5 + i as u64, 3.0) + 4.0).unwrap();
            let weight = (seeded(&[channels], 6, 0.5) + 1.0).unwrap();
            let bias = seeded(&[channels], 7, 0.5);
            let layer = GroupNorm::new(weight.clone(), bias.clone(), 4, 1e-5).unwrap();
            let reference = candle_nn::GroupNorm::new(weight, bias, channels, 4, 1e-5).unwrap().forward(&x).unwrap();
            let got = layer.forward(&x).unwrap();
            assert!(relative_max_diff(&got, &reference) < 1e-6, "case {i} plain");
            let got = layer.forward_silu(&x).unwrap();
            assert!(relative_max_diff(&got, &reference.silu().unwrap()) < 1e-6, "case {i} silu");
        }
    }

    #[test]
    fn in_place_matches_the_out_of_place_kernel_bit_for_bit() {
        for (i, dims) in [vec![2, 32, 9, 7], vec![1, 8, 40, 40], vec![2, 12, 5]].into_iter().enumerate() {
            let channels = dims[1];
            let x = (seeded(&dims, 15 + i as u64, 3.0) + 4.0).unwrap();
            let weight = (seeded(&[channels], 16, 0.5) + 1.0).unwrap();
            let layer = GroupNorm::new(weight, seeded(&[channels], 17, 0.5), 4, 1e-5).unwrap();
            let want = layer.forward_silu(&x).unwrap();
            // A fresh copy: `x` itself must stay untouched for the comparison.
            let owned = x.copy().unwrap();
            let got = layer.forward_silu_owned(owned).unwrap();
            assert_eq!(relative_max_diff(&got, &want), 0.0, "case {i}");
        }
    }

    #[test]
    fn rejects_groups_that_do_not_divide_channels() {
        let w = seeded(&[6], 1, 1.0);
        assert!(GroupNorm::new(w.clone(), w, 4, 1e-5).is_err());
    }
}
