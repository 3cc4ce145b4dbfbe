//! The 32-bit Mersenne Twister (MT19937) exactly as torch's CPU generator (`at::mt19937`) runs it:
//! Knuth's `init_genrand` seeding from a 32-bit seed and the reference tempering.

const STATE_WORDS: usize = 624;
const SHIFT_WORDS: usize = 397;
const MATRIX_A: u32 = 0x9908_b0df;
const UPPER_MASK: u32 = 0x8000_0000;
const LOWER_MASK: u32 = 0x7fff_ffff;

/// MT19937 state. Words are produced one at a time; the state is regenerated ("twisted") in one
/// pass every 624 outputs.
#[derive(Clone)]
pub struct Mt19937 {
    state: [u32; STATE_WORDS],
    next: usize,
}

impl Mt19937 {
    /// `init_genrand(seed)`: torch keeps only the low 32 bits of its 64-bit seed.
    pub fn new(seed: u64) -> Self {
        let mut state = [0u32; STATE_WORDS];
        state[0] = seed as u32;
        for i in 1..STATE_WORDS {
            let previous = state[i - 1];
            state[i] = 1_812_433_253u32
                .wrapping_mul(previous ^ (previous >> 30))
                .wrapping_add(i as u32);
        }
        // The first call twists before producing anything, as the reference does.
        Self {
            state,
            next: STATE_WORDS,
        }
    }

    /// The next tempered 32-bit output (torch's `random()`).
    #[inline]
    pub fn next_u32(&mut self) -> u32 {
        if self.next >= STATE_WORDS {
            self.twist();
        }
        let mut y = self.state[self.next];
        self.next += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// torch's `random64()`: two outputs, the first one in the high half.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        let high = u64::from(self.next_u32());
        let low = u64::from(self.next_u32());
        (high << 32) | low
    }

    fn twist(&mut self) {
        for i in 0..STATE_WORDS {
            let y = (self.state[i] & UPPER_MASK) | (self.state[(i + 1) % STATE_WORDS] & LOWER_MASK);
            let mut mixed = y >> 1;
            if y & 1 != 0 {
                mixed ^= MATRIX_A;
            }
            self.state[i] = self.state[(i + SHIFT_WORDS) % STATE_WORDS] ^ mixed;
        }
        self.next = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_output_for_default_seed() {
        // The MT19937 reference (mt19937ar.c) seeded with init_genrand(5489) starts with these.
        let mut engine = Mt19937::new(5489);
        assert_eq!(engine.next_u32(), 3_499_211_612);
        assert_eq!(engine.next_u32(), 581_869_302);
        assert_eq!(engine.next_u32(), 3_890_346_734);
    }

    #[test]
    fn ten_thousandth_output_matches_cpp_standard() {
        // C++11 [rand.predef]: the 10000th output of a default-constructed std::mt19937.
        let mut engine = Mt19937::new(5489);
        let mut last = 0;
        for _ in 0..10_000 {
            last = engine.next_u32();
        }
        assert_eq!(last, 4_123_659_995);
    }
}
