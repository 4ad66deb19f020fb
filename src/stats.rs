//! Statistics over the repeats of one case.

use crate::case::Aggregate;
use serde::Serialize;

/// `values` in ascending order.
pub(crate) fn sorted(mut values: Vec<f64>) -> Vec<f64> {
    values.sort_by(f64::total_cmp);
    values
}

/// The median of values already in ascending order (not empty).
pub(crate) fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    pub n: usize,
    pub mean: f64,
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// Sample standard deviation; 0 for a single value.
    pub stddev: f64,
}

impl Summary {
    pub fn of(values: &[f64]) -> Option<Summary> {
        let n = values.len();
        if n == 0 {
            return None;
        }
        let mean = values.iter().sum::<f64>() / n as f64;
        let var = match n {
            1 => 0.0,
            _ => values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64,
        };
        Some(Summary {
            n,
            mean,
            median: median(&sorted(values.to_vec())),
            min: values.iter().copied().fold(f64::INFINITY, f64::min),
            max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            stddev: var.sqrt(),
        })
    }

    /// Bounds are upper bounds, so the worst repeat is the largest.
    pub fn worst(&self) -> f64 {
        self.max
    }

    /// The value bounds are checked against.
    pub fn aggregate(&self, agg: Aggregate) -> f64 {
        match agg {
            Aggregate::Mean => self.mean,
            Aggregate::Worst => self.worst(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_relative_eq;
    use rstest::rstest;

    #[test]
    fn empty_has_no_summary() {
        assert_eq!(Summary::of(&[]), None);
    }

    #[test]
    fn single_value_has_zero_stddev() {
        let s = Summary::of(&[42.0]).unwrap();
        assert_eq!(
            (s.n, s.mean, s.min, s.max, s.stddev),
            (1, 42.0, 42.0, 42.0, 0.0)
        );
    }

    #[test]
    fn sample_stddev() {
        let s = Summary::of(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]).unwrap();
        assert_relative_eq!(s.mean, 5.0);
        assert_relative_eq!(s.stddev, (32.0f64 / 7.0).sqrt());
        assert_eq!((s.min, s.max, s.worst()), (2.0, 9.0, 9.0));
    }

    #[rstest]
    #[case(Aggregate::Mean, 300.0)]
    #[case(Aggregate::Worst, 600.0)]
    fn aggregate(#[case] agg: Aggregate, #[case] expected: f64) {
        let s = Summary::of(&[100.0, 200.0, 600.0]).unwrap();
        assert_relative_eq!(s.aggregate(agg), expected);
    }
}
