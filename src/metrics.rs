//! One definition per metric: its name, unit, which way is better, how a
//! run yields it, its bound in a suite, and whether the gate compares it
//! with the stored baseline. Verdicts, tables, snapshots and JSON derive
//! from this list.

use crate::case::{Bounds, NoiseThresholds};
use crate::measure::{RunMeasurement, Unit, MIB};
use crate::stats::{median, sorted, Summary};
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Better {
    Lower,
    Higher,
}

/// How a run's figure follows the pace of the stream's path (the run's
/// `path_rate_mbit`): the gate brings it to the baseline's pace before
/// comparing, so a slower machine is not a regression.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pace {
    /// A time: twice the path's rate, half the time.
    Time,
    /// A rate: it moves with the path's.
    Rate,
    /// Not the path's (memory; the path's rate itself).
    Own,
}

pub struct Metric {
    /// The key in suites' `bounds` and `snapshot.noise`, and in JSON.
    pub key: &'static str,
    /// How tables and snapshot lines name it.
    pub label: &'static str,
    pub unit: Unit,
    pub better: Better,
    pub value: fn(&RunMeasurement) -> Option<f64>,
    /// Its bound, if the suite may set one.
    pub bound: Option<fn(&Bounds) -> Option<f64>>,
    /// Its noise threshold, if the gate compares it with the baseline.
    pub gated: Option<fn(&NoiseThresholds) -> f64>,
    pub pace: Pace,
}

/// The label of what the stream's path carried before each run: the
/// pace the gate brings the other figures to.
pub const PATH_RATE: &str = "path rate";
/// The label of the hosts' CPU pace before each run (`crate::cpu_pace`).
pub const CPU_PACE: &str = "CPU pace";

/// Every metric, in the order tables and snapshots show them.
pub const METRICS: &[Metric] = &[
    Metric {
        key: "total_time",
        label: "total time",
        unit: Unit::Ms,
        better: Better::Lower,
        value: |r| r.total_time_ms,
        bound: Some(|b| b.total_time_ms),
        gated: Some(|n| n.total_time),
        pace: Pace::Time,
    },
    Metric {
        key: "downtime",
        label: "downtime (reported)",
        unit: Unit::Ms,
        better: Better::Lower,
        value: |r| r.reported_downtime_ms,
        bound: Some(|b| b.downtime_ms),
        gated: Some(|n| n.downtime),
        pace: Pace::Time,
    },
    Metric {
        key: "guest_downtime",
        label: "guest-observed downtime",
        unit: Unit::Ms,
        better: Better::Lower,
        value: |r| r.guest_downtime_ms,
        bound: Some(|b| b.guest_downtime_ms),
        gated: Some(|n| n.guest_downtime),
        pace: Pace::Time,
    },
    Metric {
        key: "throughput",
        label: "stream throughput",
        unit: Unit::Mbit,
        better: Better::Higher,
        value: |r| r.throughput_mbit,
        bound: None,
        gated: Some(|n| n.throughput),
        pace: Pace::Rate,
    },
    Metric {
        key: "path_rate",
        label: PATH_RATE,
        unit: Unit::Mbit,
        better: Better::Higher,
        value: |r| r.path_rate_mbit,
        bound: None,
        gated: Some(|n| n.path_rate),
        pace: Pace::Own,
    },
    // Beside each run, not gated, and no figure is brought to it yet: a
    // probe busy on every CPU reads a loaded machine as far slower than
    // its migrations are.
    Metric {
        key: "cpu_pace",
        label: CPU_PACE,
        unit: Unit::Mops,
        better: Better::Higher,
        value: |r| r.cpu_pace_mops,
        bound: None,
        gated: None,
        pace: Pace::Own,
    },
    Metric {
        key: "efficiency",
        label: "efficiency (of link goodput)",
        unit: Unit::Ratio,
        better: Better::Higher,
        value: |r| r.efficiency,
        bound: None,
        gated: None,
        pace: Pace::Own,
    },
    Metric {
        key: "preparation",
        label: "preparation",
        unit: Unit::Ms,
        better: Better::Lower,
        value: |r| r.phases.preparation_ms,
        bound: None,
        gated: None,
        pace: Pace::Own,
    },
    Metric {
        key: "transferred",
        label: "transferred",
        unit: Unit::Mib,
        better: Better::Lower,
        value: |r| r.bytes_transferred.map(|b| b as f64 / MIB),
        bound: None,
        gated: None,
        pace: Pace::Own,
    },
    Metric {
        key: "passes",
        label: "memory passes",
        unit: Unit::Count,
        better: Better::Lower,
        value: |r| r.memory_iterations.map(|i| i as f64),
        bound: None,
        gated: None,
        pace: Pace::Own,
    },
    Metric {
        key: "peak_cpu",
        label: "peak CPU",
        unit: Unit::Percent,
        better: Better::Lower,
        value: |r| r.peak_cpu_pct,
        bound: Some(|b| b.peak_cpu_pct),
        gated: None,
        pace: Pace::Own,
    },
    Metric {
        key: "peak_memory",
        label: "peak memory",
        unit: Unit::Mib,
        better: Better::Lower,
        value: |r| r.peak_memory_mib,
        bound: Some(|b| b.peak_memory_mib),
        gated: Some(|n| n.peak_memory),
        pace: Pace::Own,
    },
];

/// The runs that completed: the only ones whose figures are compared.
fn completed(runs: &[RunMeasurement]) -> impl Iterator<Item = &RunMeasurement> {
    runs.iter().filter(|r| r.outcome.not_completed().is_none())
}

impl Metric {
    /// Its values over the runs that completed.
    pub fn values(&self, runs: &[RunMeasurement]) -> Vec<f64> {
        completed(runs).filter_map(self.value).collect()
    }

    /// Its values over the runs that completed, brought from the median of
    /// their path rates to `pace_mbit`: None for a metric of its own pace, or
    /// when a run that measured it did not measure its path (a report from
    /// before real labs measured theirs).
    /// One factor for the case, not one per run: a path's rate measured
    /// before each run scatters more than the runs do (nested Xen, a loaded
    /// machine), so its median is the case's pace.
    pub fn values_at_pace(&self, runs: &[RunMeasurement], pace_mbit: f64) -> Option<Vec<f64>> {
        if self.pace == Pace::Own {
            return None;
        }
        let (values, paths): (Vec<f64>, Vec<Option<f64>>) = completed(runs)
            .filter_map(|r| Some(((self.value)(r)?, r.path_rate_mbit)))
            .unzip();
        let paths: Vec<f64> = paths.into_iter().collect::<Option<_>>()?;
        if paths.is_empty() {
            return None;
        }
        let ratio = median(&sorted(paths)) / pace_mbit;
        let scale = if self.pace == Pace::Time {
            ratio
        } else {
            1.0 / ratio
        };
        (ratio > 0.0).then(|| values.iter().map(|v| v * scale).collect())
    }

    pub fn by_label(label: &str) -> Option<&'static Metric> {
        METRICS.iter().find(|m| m.label == label)
    }

    /// The metric of `key`, as suites name it.
    pub fn by_key(key: &str) -> Option<&'static Metric> {
        METRICS.iter().find(|m| m.key == key)
    }
}

/// A metric's label, as verdicts carry it. (Named, so that serde's derive
/// reads it by `label` rather than borrowing it from the input.)
pub type Label = &'static str;

/// A metric's label read back from a report, as the one `METRICS` holds.
pub fn label<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Label, D::Error> {
    let label = <String as serde::Deserialize>::deserialize(d)?;
    Metric::by_label(&label).map(|m| m.label).ok_or_else(|| {
        serde::de::Error::custom(format!(
            "no metric is labelled \"{label}\"; the metrics are {}",
            METRICS
                .iter()
                .map(|m| m.label)
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })
}

/// Summaries of every metric (`METRICS`, by key) over the
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
            completed: completed(runs).count(),
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
