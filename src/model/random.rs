//! Seeded normal tensors. candle's CPU `randn` draws from an unseeded thread RNG, so a
//! tiny checkpoint or a test built on it could not be reproduced from its seed.

use candle_core::{Device, Shape, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::error::Result;

/// A stream of Normal(mean, std) f32 values, deterministic in its seed.
pub struct SeededNormal {
    rng: StdRng,
}

impl SeededNormal {
    /// A stream seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// The next `n` values (Box-Muller, one value per pair of uniforms, on rand's stable
    /// core API so the stream does not change with a distribution crate's version).
    pub fn values(&mut self, n: usize, mean: f64, std: f64) -> Vec<f32> {
        (0..n)
            .map(|_| {
                let (u1, u2): (f64, f64) = (self.rng.random::<f64>().max(1e-12), self.rng.random());
                let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
                (z * std + mean) as f32
            })
            .collect()
    }

    /// The next tensor of `shape` on `device`.
    pub fn tensor(
        &mut self,
        mean: f64,
        std: f64,
        shape: impl Into<Shape>,
        device: &Device,
    ) -> Result<Tensor> {
        let shape = shape.into();
        let v = self.values(shape.elem_count(), mean, std);
        Ok(Tensor::from_vec(v, shape, device)?)
    }
}

/// One f32 tensor of Normal(mean, std) values, deterministic in `seed`.
pub fn seeded_randn(
    seed: u64,
    mean: f64,
    std: f64,
    shape: impl Into<Shape>,
    device: &Device,
) -> Result<Tensor> {
    SeededNormal::new(seed).tensor(mean, std, shape, device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_values_and_the_moments_fit() {
        let a = seeded_randn(5, 1.0, 2.0, (100, 100), &Device::Cpu).unwrap();
        let b = seeded_randn(5, 1.0, 2.0, (100, 100), &Device::Cpu).unwrap();
        let c = seeded_randn(6, 1.0, 2.0, (100, 100), &Device::Cpu).unwrap();
        let (a, b, c): (Vec<f32>, Vec<f32>, Vec<f32>) = (
            a.flatten_all().unwrap().to_vec1().unwrap(),
            b.flatten_all().unwrap().to_vec1().unwrap(),
            c.flatten_all().unwrap().to_vec1().unwrap(),
        );
        assert_eq!(a, b);
        assert_ne!(a, c);
        let n = a.len() as f64;
        let mean = a.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = a.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
        // 10k samples: the standard error of the mean is 0.02, of the variance ~0.06.
        assert!((mean - 1.0).abs() < 0.08, "mean {mean}");
        assert!((var - 4.0).abs() < 0.25, "variance {var}");
    }
}
