//! Noise for a batch of images, each image with its own seeded generator, as diffusers does
//! with a list of generators and A1111 with one generator per image seed. Image `i` of a batch
//! therefore gets the same noise as a lone image with that seed.

use candle_core::{bail, DType, Device, Result, Tensor};

use super::{make_generator, NoiseGenerator, NoiseSource};
use crate::backend::request::RngKind;

/// One generator per image of a batch; every draw takes one image's worth from each, in order.
pub struct BatchNoise {
    generators: Vec<Box<dyn NoiseGenerator>>,
}

impl BatchNoise {
    /// Generators of `kind`, image `i` seeded with `seeds[i]`.
    pub fn new(kind: RngKind, seeds: &[u64]) -> Self {
        Self::from_generators(
            seeds
                .iter()
                .map(|&seed| make_generator(kind, seed))
                .collect(),
        )
    }

    pub fn from_generators(generators: Vec<Box<dyn NoiseGenerator>>) -> Self {
        Self { generators }
    }

    /// Number of images (generators) in the batch.
    pub fn batch_size(&self) -> usize {
        self.generators.len()
    }

    /// Standard normals of shape `dims = [B, ...]`: image `b` is one `randn` of
    /// `numel / B` elements from generator `b`. `B` must equal [`Self::batch_size`].
    pub fn randn(&mut self, dims: &[usize], device: &Device, dtype: DType) -> Result<Tensor> {
        let Some((&batch, per_image_dims)) = dims.split_first() else {
            bail!("batch noise needs a shape with a batch dimension, got a scalar");
        };
        if batch != self.generators.len() {
            bail!(
                "batch noise has {} generators but the requested shape {dims:?} has batch {batch}",
                self.generators.len()
            );
        }
        let per_image: usize = per_image_dims.iter().product();
        let mut values = Vec::with_capacity(batch * per_image);
        for generator in &mut self.generators {
            values.extend(generator.randn(per_image));
        }
        Tensor::from_vec(values, dims, device)?.to_dtype(dtype)
    }
}

impl NoiseSource for BatchNoise {
    fn randn_like(&mut self, like: &Tensor) -> Result<Tensor> {
        self.randn(like.dims(), like.device(), like.dtype())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bits(tensor: &Tensor) -> Vec<u32> {
        let values: Vec<f32> = tensor.flatten_all().unwrap().to_vec1().unwrap();
        values.into_iter().map(f32::to_bits).collect()
    }

    #[test]
    fn each_image_matches_a_lone_draw_with_its_seed() {
        for kind in [RngKind::TorchCpu, RngKind::Philox] {
            let seed = 42;
            let mut noise = BatchNoise::new(kind, &[seed, seed + 1]);
            let mut lone = [make_generator(kind, seed), make_generator(kind, seed + 1)];
            let like = Tensor::zeros((2, 4, 9, 9), DType::F32, &Device::Cpu).unwrap();
            // Two calls: each image must keep following its own generator's call sequence.
            for _ in 0..2 {
                let batch = noise.randn_like(&like).unwrap();
                assert_eq!(batch.dims(), like.dims());
                for (index, generator) in lone.iter_mut().enumerate() {
                    let expected: Vec<u32> = generator
                        .randn(4 * 9 * 9)
                        .into_iter()
                        .map(f32::to_bits)
                        .collect();
                    assert_eq!(
                        bits(&batch.get(index).unwrap()),
                        expected,
                        "{kind:?} image {index}"
                    );
                }
            }
        }
    }

    #[test]
    fn follows_the_requested_dtype() {
        let mut noise = BatchNoise::new(RngKind::TorchCpu, &[1]);
        let like = Tensor::zeros((1, 4, 8, 8), DType::F16, &Device::Cpu).unwrap();
        assert_eq!(noise.randn_like(&like).unwrap().dtype(), DType::F16);
    }

    #[test]
    fn rejects_a_batch_size_mismatch() {
        let mut noise = BatchNoise::new(RngKind::TorchCpu, &[1, 2]);
        assert!(noise.randn(&[3, 4], &Device::Cpu, DType::F32).is_err());
        assert!(noise.randn(&[], &Device::Cpu, DType::F32).is_err());
    }
}
