//! Seeded initialisation of fresh variables (LoRA adapters, heads), independent of
//! libtorch's process-global RNG: the values depend only on the seed and the variable's
//! name, so concurrent work in the same process cannot change them.

use sha2::{Digest, Sha256};
use tch::Tensor;

/// A splitmix64 stream.
pub(crate) struct SplitMix(u64);

impl SplitMix {
    /// A stream for variable `name` under `seed`.
    pub fn for_variable(seed: u64, name: &str) -> Self {
        let digest = Sha256::new()
            .chain_update(seed.to_le_bytes())
            .chain_update(name.as_bytes())
            .finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        Self(u64::from_le_bytes(first))
    }

    /// A stream from a plain seed.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn numel(shape: &[i64]) -> usize {
    shape.iter().product::<i64>().max(0) as usize
}

/// U(lo, hi) values of `shape` (fp32, CPU).
pub(crate) fn uniform(seed: u64, name: &str, shape: &[i64], lo: f64, hi: f64) -> Tensor {
    let mut rng = SplitMix::for_variable(seed, name);
    let values: Vec<f32> = (0..numel(shape))
        .map(|_| (lo + (hi - lo) * rng.next_f64()) as f32)
        .collect();
    Tensor::from_slice(&values).reshape(shape)
}

/// N(0, std²) values of `shape` (fp32, CPU), by Box-Muller.
pub(crate) fn normal(seed: u64, name: &str, shape: &[i64], std: f64) -> Tensor {
    let mut rng = SplitMix::for_variable(seed, name);
    let values: Vec<f32> = (0..numel(shape))
        .map(|_| {
            let u1 = rng.next_f64().max(f64::MIN_POSITIVE);
            let u2 = rng.next_f64();
            (std * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
        })
        .collect();
    Tensor::from_slice(&values).reshape(shape)
}
