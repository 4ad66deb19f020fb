//! Change detection against a stored baseline, the way criterion compares a
//! run with a saved one: a metric's baseline is its median with a bootstrap
//! confidence interval and its sample size, not one number; a new sample is
//! flagged only when its change is both statistically significant (the
//! interval of the change excludes zero) and larger than the metric's noise
//! threshold. The bootstrap's random numbers are seeded, so the same data
//! always gives the same verdict and the same snapshot text.

use crate::metrics::Better;
use crate::stats::{median, sorted};
use serde::{Deserialize, Serialize};
use std::fmt;

const RESAMPLES: usize = 10_000;
pub(crate) const SEED: u64 = 0x6d69_6773_7569_7465; // "migsuite"
/// Two-sided 95 %: the interval between these quantiles.
pub(crate) const TAIL: f64 = 0.025;

/// A metric's median and its 95 % bootstrap confidence interval.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    pub median: f64,
    pub lo: f64,
    pub hi: f64,
    pub n: usize,
}

/// The quantile `q` of sorted values (nearest rank).
pub(crate) fn quantile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// Medians of bootstrap resamples of `values`.
pub(crate) fn resampled_medians(values: &[f64], rng: &mut fastrand::Rng) -> Vec<f64> {
    let mut sample = vec![0.0; values.len()];
    (0..RESAMPLES)
        .map(|_| {
            for s in sample.iter_mut() {
                *s = values[rng.usize(..values.len())];
            }
            median(&sorted(sample.clone()))
        })
        .collect()
}

impl Estimate {
    pub fn of(values: &[f64]) -> Option<Estimate> {
        if values.is_empty() {
            return None;
        }
        let medians = sorted(resampled_medians(
            values,
            &mut fastrand::Rng::with_seed(SEED),
        ));
        Some(Estimate {
            median: median(&sorted(values.to_vec())),
            lo: quantile(&medians, TAIL),
            hi: quantile(&medians, 1.0 - TAIL),
            n: values.len(),
        })
    }
}

/// What a change amounts to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    Regression,
    Improvement,
    /// Not significant, or within the noise threshold.
    Noise,
}

/// A new sample of one metric against its baseline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub baseline: Estimate,
    pub new: Estimate,
    /// Change of the median, percent of the baseline's.
    pub change_pct: f64,
    /// 95 % interval of that change, percent.
    pub interval_pct: (f64, f64),
    pub noise_threshold_pct: f64,
    pub change: Change,
}

/// Compares `values` with `baseline`. The baseline's own uncertainty enters
/// as a normal distribution spanning its stored interval, since only its
/// summary is kept.
pub fn compare(
    baseline: Estimate,
    values: &[f64],
    better: Better,
    noise_threshold: f64,
) -> Option<Comparison> {
    let new = Estimate::of(values)?;
    if baseline.median <= 0.0 {
        return None;
    }
    let mut rng = fastrand::Rng::with_seed(SEED);
    let sigma = (baseline.hi - baseline.lo) / (2.0 * 1.96);
    let changes = sorted(
        resampled_medians(values, &mut rng)
            .into_iter()
            .map(|m| {
                // Box-Muller: one standard normal draw.
                let z = (-2.0 * (1.0 - rng.f64()).ln()).sqrt()
                    * (2.0 * std::f64::consts::PI * rng.f64()).cos();
                let base = (baseline.median + sigma * z).max(baseline.median * 0.01);
                (m / base - 1.0) * 100.0
            })
            .collect(),
    );
    let interval_pct = (quantile(&changes, TAIL), quantile(&changes, 1.0 - TAIL));
    let change_pct = (new.median / baseline.median - 1.0) * 100.0;
    let significant = interval_pct.0 > 0.0 || interval_pct.1 < 0.0;
    let threshold_pct = noise_threshold * 100.0;
    let change = Change::of(significant, change_pct, threshold_pct, better);
    Some(Comparison {
        baseline,
        new,
        change_pct,
        interval_pct,
        noise_threshold_pct: threshold_pct,
        change,
    })
}

impl Change {
    /// A change of `change_pct` percent: noise unless `significant` and
    /// larger than `threshold_pct`; else worse or better as `better` says.
    pub(crate) fn of(
        significant: bool,
        change_pct: f64,
        threshold_pct: f64,
        better: Better,
    ) -> Change {
        match (
            significant && change_pct.abs() > threshold_pct,
            change_pct > 0.0,
            better,
        ) {
            (false, _, _) => Change::Noise,
            (true, true, Better::Lower) | (true, false, Better::Higher) => Change::Regression,
            (true, _, _) => Change::Improvement,
        }
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Change::Regression => "REGRESSION",
            Change::Improvement => "improvement",
            Change::Noise => "noise",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_relative_eq;

    const STEADY: [f64; 5] = [1000.0, 1020.0, 990.0, 1010.0, 1005.0];

    #[test]
    fn estimate_brackets_the_median() {
        let e = Estimate::of(&STEADY).unwrap();
        assert_relative_eq!(e.median, 1005.0);
        assert!(e.lo <= e.median && e.median <= e.hi, "{e:?}");
        assert!(e.lo >= 990.0 && e.hi <= 1020.0, "{e:?}");
        assert_eq!(
            Estimate::of(&STEADY),
            Estimate::of(&STEADY),
            "seeded: the same data, the same interval"
        );
        assert_eq!(Estimate::of(&[]), None);
    }

    #[test]
    fn the_same_system_again_is_noise() {
        let base = Estimate::of(&STEADY).unwrap();
        let again = [1012.0, 998.0, 1003.0, 1018.0, 995.0];
        let c = compare(base, &again, Better::Lower, 0.10).unwrap();
        assert_eq!(c.change, Change::Noise, "{c:?}");
    }

    #[test]
    fn a_quarter_slower_is_a_regression() {
        let base = Estimate::of(&STEADY).unwrap();
        let slower: Vec<f64> = STEADY.iter().map(|v| v * 1.25).collect();
        let c = compare(base, &slower, Better::Lower, 0.10).unwrap();
        assert_eq!(c.change, Change::Regression, "{c:?}");
        assert_relative_eq!(c.change_pct, 25.0, epsilon = 0.01);
        assert!(c.interval_pct.0 > 10.0 && c.interval_pct.1 < 40.0, "{c:?}");
        // Throughput falling by a quarter: higher is better.
        let c = compare(base, &STEADY.map(|v| v * 0.75), Better::Higher, 0.10).unwrap();
        assert_eq!(c.change, Change::Regression, "{c:?}");
        let c = compare(base, &slower, Better::Higher, 0.10).unwrap();
        assert_eq!(c.change, Change::Improvement, "{c:?}");
    }

    #[test]
    fn significant_but_below_the_threshold_is_noise() {
        let base = Estimate::of(&STEADY).unwrap();
        let c = compare(base, &STEADY.map(|v| v * 1.05), Better::Lower, 0.10).unwrap();
        assert!(c.interval_pct.0 > 0.0, "{c:?}");
        assert_eq!(c.change, Change::Noise);
    }

    #[test]
    fn a_large_but_noisy_change_is_not_significant() {
        let base = Estimate::of(&STEADY).unwrap();
        let scattered = [600.0, 1900.0, 1050.0, 700.0, 2400.0];
        let c = compare(base, &scattered, Better::Lower, 0.10).unwrap();
        assert!(c.change_pct > 4.0);
        assert_eq!(c.change, Change::Noise, "{c:?}");
    }
}
