//! AUTOMATIC1111's "GPU" noise: its `rng_philox.py` re-implementation of what `torch.randn`
//! draws on an NVIDIA GPU (Philox 4x32-10), so A1111 seeds give A1111 images on any device.
//!
//! Element `i` of a call is independent of the others: Philox of counter
//! `[offset, 0, i, 0]` under key `[seed lo, seed hi]`, turned into one normal by Box-Muller.
//! Each call uses the generator's offset and then advances it by one.

use super::NoiseGenerator;

const MULTIPLIERS: [u32; 2] = [0xD251_1F53, 0xCD9E_8D57];
const KEY_INCREMENTS: [u32; 2] = [0x9E37_79B9, 0xBB67_AE85];
const ROUNDS: usize = 10;

/// A1111's Philox generator: a seed and the number of `randn` calls made so far.
#[derive(Debug, Clone)]
pub struct PhiloxGenerator {
    key: [u32; 2],
    offset: u32,
}

impl PhiloxGenerator {
    pub fn new(seed: u64) -> Self {
        Self {
            key: [seed as u32, (seed >> 32) as u32],
            offset: 0,
        }
    }

    /// The first two output words of Philox for element `index` of the current call.
    pub fn words(&self, index: u32) -> [u32; 2] {
        let block = philox4x32_10([self.offset, 0, index, 0], self.key);
        [block[0], block[1]]
    }
}

impl NoiseGenerator for PhiloxGenerator {
    fn randn(&mut self, n: usize) -> Vec<f32> {
        // A1111 numbers elements with a uint32 counter word, so indices wrap the same way.
        let out = (0..n)
            .map(|i| {
                let [x, y] = self.words(i as u32);
                box_muller_first(x, y)
            })
            .collect();
        self.offset = self.offset.wrapping_add(1);
        out
    }
}

/// Philox 4x32 with 10 rounds; the key is bumped after every round but the last.
fn philox4x32_10(mut counter: [u32; 4], mut key: [u32; 2]) -> [u32; 4] {
    for round in 0..ROUNDS {
        let product0 = u64::from(MULTIPLIERS[0]) * u64::from(counter[0]);
        let product1 = u64::from(MULTIPLIERS[1]) * u64::from(counter[2]);
        let (hi0, lo0) = ((product0 >> 32) as u32, product0 as u32);
        let (hi1, lo1) = ((product1 >> 32) as u32, product1 as u32);
        counter = [
            hi1 ^ counter[1] ^ key[0],
            lo1,
            hi0 ^ counter[3] ^ key[1],
            lo0,
        ];
        if round + 1 < ROUNDS {
            key[0] = key[0].wrapping_add(KEY_INCREMENTS[0]);
            key[1] = key[1].wrapping_add(KEY_INCREMENTS[1]);
        }
    }
    counter
}

/// A1111's `box_muller`: float32 constants, arithmetic in float64 (numpy promotes the uint32
/// words with the float32 constants to float64), only the sine value kept.
fn box_muller_first(x: u32, y: u32) -> f32 {
    // 2^-32 and 2^-32 * 2pi as A1111 writes them, rounded to float32.
    const SCALE: f64 = 2.328_306_4e-10_f64 as f32 as f64;
    const SCALE_2PI: f64 = (2.328_306_4e-10_f64 * 6.283_185_5_f64) as f32 as f64;
    let u = f64::from(x) * SCALE + SCALE / 2.0;
    let v = f64::from(y) * SCALE_2PI + SCALE_2PI / 2.0;
    ((-2.0 * u.ln()).sqrt() * v.sin()) as f32
}
