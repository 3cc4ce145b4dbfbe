//! Seeded noise. candle's CPU RNG cannot be seeded, so all randomness is owned here: torch's CPU
//! generator (what diffusers uses) and A1111's Philox "GPU" generator, both bit-exact.

mod batch;
mod cephes;
mod mt19937;
pub mod philox;
pub mod torch_cpu;
pub mod variation;

use candle_core::{Result, Tensor};

use crate::backend::request::RngKind;

pub use batch::BatchNoise;
pub use mt19937::Mt19937;
pub use philox::PhiloxGenerator;
pub use torch_cpu::{TorchCpuGenerator, TorchMath};
pub use variation::ImageVariation;

/// A generator of standard normals with torch's `randn` call semantics: one call of `n`
/// elements consumes the generator exactly as `torch.randn(n)` (or the Philox equivalent) would.
pub trait NoiseGenerator: Send {
    fn randn(&mut self, n: usize) -> Vec<f32>;
}

/// Something samplers draw fresh noise from, shaped like a given tensor.
pub trait NoiseSource {
    fn randn_like(&mut self, like: &Tensor) -> Result<Tensor>;
}

/// A freshly seeded generator of the requested kind.
pub fn make_generator(kind: RngKind, seed: u64) -> Box<dyn NoiseGenerator> {
    match kind {
        RngKind::TorchCpu => Box::new(TorchCpuGenerator::new(seed)),
        RngKind::Philox => Box::new(PhiloxGenerator::new(seed)),
    }
}
