//! The few distributions the generator draws from, written out so that the
//! output depends only on the seeded RNG and this code.

use rand::Rng;

/// A standard normal variate (Box–Muller, one of the pair).
pub(crate) fn normal(rng: &mut impl Rng) -> f64 {
    // 1 - u is in (0, 1], so the logarithm is finite.
    let u1 = 1.0 - rng.random::<f64>();
    let u2 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// A log-normal variate with the given median and log-space spread.
pub(crate) fn log_normal(rng: &mut impl Rng, median: f64, sigma: f64) -> f64 {
    median * (sigma * normal(rng)).exp()
}

/// An exponential variate with the given mean.
pub(crate) fn exponential(rng: &mut impl Rng, mean: f64) -> f64 {
    -(1.0 - rng.random::<f64>()).ln() * mean
}

/// One of `choices`, with probability proportional to its weight.
pub(crate) fn weighted<T: Copy>(rng: &mut impl Rng, choices: &[(T, f64)]) -> T {
    let total: f64 = choices.iter().map(|c| c.1).sum();
    let mut x = rng.random::<f64>() * total;
    for &(value, weight) in choices {
        if x < weight {
            return value;
        }
        x -= weight;
    }
    choices[choices.len() - 1].0
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn log_normal_median_is_close() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut v: Vec<f64> = (0..20_001)
            .map(|_| log_normal(&mut rng, 300.0, 0.7))
            .collect();
        v.sort_by(f64::total_cmp);
        let median = v[10_000];
        assert!((median - 300.0).abs() < 15.0, "median {median}");
    }

    #[test]
    fn exponential_mean_is_close() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let mean = (0..50_000).map(|_| exponential(&mut rng, 4.0)).sum::<f64>() / 50_000.0;
        assert!((mean - 4.0).abs() < 0.1, "mean {mean}");
    }
}
