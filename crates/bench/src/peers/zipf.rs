//! Zipf(θ) over ranks `0..n` by inverse CDF over a precomputed table: one
//! binary search per draw. The Node.js driver uses the same construction.

use crate::report::Rng;

pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    /// `P(rank k) ∝ 1 / (k + 1)^theta` for `k` in `0..n`.
    pub fn new(n: u64, theta: f64) -> Self {
        let mut cdf = Vec::with_capacity(n as usize);
        let mut sum = 0.0;
        for k in 0..n {
            sum += 1.0 / ((k + 1) as f64).powf(theta);
            cdf.push(sum);
        }
        for c in &mut cdf {
            *c /= sum;
        }
        Self { cdf }
    }

    pub fn sample(&self, rng: &mut Rng) -> u64 {
        // 53 random bits → a uniform float in [0, 1).
        let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        let rank = self.cdf.partition_point(|&c| c < u);
        rank.min(self.cdf.len().saturating_sub(1)) as u64
    }

    /// The share of draws that fall on the `top` most popular ranks.
    pub fn mass_of_top(&self, top: usize) -> f64 {
        match top {
            0 => 0.0,
            t => self.cdf[t.min(self.cdf.len()) - 1],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_follow_the_distribution() {
        let zipf = Zipf::new(100_000, 0.99);
        let mut rng = Rng::new(7);
        let draws = 200_000;
        let top10 = (0..draws).filter(|_| zipf.sample(&mut rng) < 10).count();
        let expected = zipf.mass_of_top(10);
        let seen = top10 as f64 / draws as f64;
        assert!(
            (seen - expected).abs() < 0.01,
            "top-10 share {seen} vs {expected}"
        );
        assert!((0..1_000).all(|_| zipf.sample(&mut rng) < 100_000));
    }
}
