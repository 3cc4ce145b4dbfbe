//! Seeded noise. candle's CPU RNG cannot be seeded, so all randomness is owned here: torch's CPU
//! generator (what diffusers uses) and A1111's Philox "GPU" generator, both bit-exact.

use candle_core::{Device, Result, Tensor};

use crate::backend::request::RngKind;

/// A generator of standard normals with torch's `randn` call semantics: one call of `n`
/// elements consumes the generator exactly as `torch.randn(n)` (or the Philox equivalent) would.
pub trait NoiseGenerator: Send {
    fn randn(&mut self, n: usize) -> Vec<f32>;
}

/// Something samplers draw fresh noise from, shaped like a given tensor.
pub trait NoiseSource {
    fn randn_like(&mut self, like: &Tensor) -> Result<Tensor>;
}
