//! Noise for a batch of images, each image with its own seeded generator, as diffusers does
//! with a list of generators and A1111 with one generator per image seed. Image `i` of a batch
//! therefore gets the same noise as a lone image with that seed.

use candle_core::{bail, DType, Device, Result, Tensor};

use super::variation::ImageVariation;
use super::{make_generator, NoiseGenerator, NoiseSource};
use crate::backend::request::RngKind;

/// One generator per image of a batch; every draw takes one image's worth from each, in order.
pub struct BatchNoise {
    generators: Vec<Box<dyn NoiseGenerator>>,
    /// Per image: the variation applied to its initial noise ([`Self::initial_randn`]).
    variations: Vec<Option<ImageVariation>>,
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
        Self { generators, variations: Vec::new() }
    }

    /// Vary image `i`'s initial noise with `variations[i]` (A1111 subseed / seed resize).
    pub fn with_variations(mut self, variations: Vec<Option<ImageVariation>>) -> Self {
        self.variations = variations;
        self
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

impl BatchNoise {
    /// The initial latent noise (`[B, C, H, W]`): one [`Self::randn`] draw, each image's values
    /// then varied as its [`ImageVariation`] says. Without variations this is `randn` exactly.
    pub fn initial_randn(&mut self, dims: &[usize], device: &Device, dtype: DType) -> Result<Tensor> {
        if self.variations.iter().all(Option::is_none) {
            return self.randn(dims, device, dtype);
        }
        let &[batch, channels, height, width] = dims else {
            bail!("varied initial noise needs a [B, C, H, W] shape, got {dims:?}");
        };
        if batch != self.generators.len() {
            bail!("batch noise has {} generators but the requested shape {dims:?} has batch {batch}", self.generators.len());
        }
        let per_image = channels * height * width;
        let mut values = Vec::with_capacity(batch * per_image);
        for (index, generator) in self.generators.iter_mut().enumerate() {
            let drawn = generator.randn(per_image);
            match self.variations.get(index).copied().flatten() {
                Some(variation) => values.extend(variation.apply(drawn, [channels, height, width])),
                None => values.extend(drawn),
            }
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
    fn initial_noise_is_varied_per_image_and_later_draws_are_not() {
        let kind = RngKind::Philox;
        let variation = ImageVariation { kind, seed: 5, subseed: 9, strength: 1.0, resize_from: None };
        let mut noise = BatchNoise::new(kind, &[5, 6]).with_variations(vec![Some(variation), None]);
        let first = noise.initial_randn(&[2, 4, 3, 3], &Device::Cpu, DType::F32).unwrap();
        let expected_varied: Vec<u32> = make_generator(kind, 9).randn(36).into_iter().map(f32::to_bits).collect();
        let expected_plain: Vec<u32> = make_generator(kind, 6).randn(36).into_iter().map(f32::to_bits).collect();
        assert_eq!(bits(&first.get(0).unwrap()), expected_varied);
        assert_eq!(bits(&first.get(1).unwrap()), expected_plain);
        let second = noise.randn(&[2, 4, 3, 3], &Device::Cpu, DType::F32).unwrap();
        let mut lone = make_generator(kind, 5);
        lone.randn(36);
        assert_eq!(bits(&second.get(0).unwrap()), lone.randn(36).into_iter().map(f32::to_bits).collect::<Vec<_>>());
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
