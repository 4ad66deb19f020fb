//! Statistics over the repeats of one case.

use crate::case::Aggregate;
use crate::measure::RunMeasurement;
use crate::metrics::METRICS;
use serde::Serialize;
use std::collections::BTreeMap;

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

    /// Every metric here is lower-is-better, so the worst repeat is the max.
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

/// Summaries of every metric (`metrics::METRICS`, by key) over the
/// completed runs of a case; a metric no completed run measured is absent.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CaseSummary {
    /// How many runs completed (and so feed the summaries).
    pub completed: usize,
    pub metrics: BTreeMap<&'static str, Summary>,
}

impl CaseSummary {
    pub fn of(runs: &[RunMeasurement]) -> CaseSummary {
        CaseSummary {
            completed: runs
                .iter()
                .filter(|r| r.outcome.not_completed().is_none())
                .count(),
            metrics: METRICS
                .iter()
                .filter_map(|m| Some((m.key, Summary::of(&m.values(runs))?)))
                .collect(),
        }
    }

    pub fn get(&self, key: &str) -> Option<&Summary> {
        self.metrics.get(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixtures::{failed, run};
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

    #[test]
    fn case_summary_ignores_failed_runs() {
        let mut partial = failed("timed out", true);
        partial.total_time_ms = Some(25_000.0);
        let s = CaseSummary::of(&[run(1000.0, 100.0), partial, run(3000.0, 300.0)]);
        assert_eq!(s.completed, 2);
        assert_relative_eq!(s.get("total_time").unwrap().mean, 2000.0);
        assert_relative_eq!(s.get("downtime").unwrap().worst(), 300.0);
        assert_relative_eq!(s.get("transferred").unwrap().mean, 84_400_000.0 / 1048576.0);
        assert_eq!(s.get("passes").unwrap().n, 2);
    }

    #[test]
    fn unmeasured_metric_has_no_summary() {
        let mut r = run(1000.0, 100.0);
        r.guest_downtime_ms = None;
        assert_eq!(CaseSummary::of(&[r]).get("guest_downtime"), None);
        assert_eq!(
            CaseSummary::of(&[failed("x", true)]).get("total_time"),
            None
        );
    }
}
