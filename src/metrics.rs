//! One definition per metric: its key, label and unit, which way is
//! better, how a run yields it, whether a suite may bound it, and whether
//! (and within what noise) the gate compares it with the stored baseline.
//! Suites, verdicts, tables, snapshots and JSON derive from this list, so
//! a new metric is its entry here and the code that measures it (a gated
//! one is compared once baselines are recorded with it: README, "Adding a
//! metric").

use crate::case::{Bounds, NoiseThresholds};
use crate::measure::{last_expected_downtime, RunMeasurement, Unit, MIB};
use crate::stats::{median, sorted, Summary};
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;

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
    /// How suites (`bounds`, `snapshot.noise`, `compare`), JSON reports
    /// and snapshot lines name it; it stays when its label changes.
    pub key: &'static str,
    /// How tables, verdicts and figures name it.
    pub label: &'static str,
    pub unit: Unit,
    pub better: Better,
    pub value: fn(&RunMeasurement) -> Option<f64>,
    /// Whether a suite may bound it (an upper bound, in its unit).
    pub bounded: bool,
    /// If the gate compares it with the baseline: the smallest change of
    /// its median, a fraction of the baseline's, that counts as one
    /// unless the suite sets another.
    pub default_noise: Option<f64>,
    pub pace: Pace,
}

/// The key of the gap in the guest's own heartbeats, whose bound also
/// sets how long the runner waits to hear the guest again.
pub const GUEST_DOWNTIME: &str = "guest_downtime";
/// The key of the reported downtime against the limit the hypervisor was
/// given, which only some backends take.
pub const DOWNTIME_OVERSHOOT: &str = "downtime_overshoot";
/// The key of what the stream's path carried before each run: the pace
/// the gate brings the other figures to.
pub const PATH_RATE: &str = "path_rate";
/// The key of the hosts' CPU pace before each run (`crate::cpu_pace`).
pub const CPU_PACE: &str = "cpu_pace";

/// Every metric, in the order tables and snapshots show them. The default
/// noise thresholds stand clear of the spread between runs on the CI's
/// machine kind where the link, not the CPU, bounds the stream (MTU 1500);
/// downtimes swing most, since a few scheduling delays make them.
pub const METRICS: &[Metric] = &[
    Metric {
        key: "total_time",
        label: "total time",
        unit: Unit::Ms,
        better: Better::Lower,
        value: |r| r.total_time_ms,
        bounded: true,
        default_noise: Some(0.20),
        pace: Pace::Time,
    },
    Metric {
        key: "downtime",
        label: "downtime (reported)",
        unit: Unit::Ms,
        better: Better::Lower,
        value: |r| r.reported_downtime_ms,
        bounded: true,
        default_noise: Some(0.50),
        pace: Pace::Time,
    },
    Metric {
        key: GUEST_DOWNTIME,
        label: "guest-observed downtime",
        unit: Unit::Ms,
        better: Better::Lower,
        value: |r| r.guest_downtime_ms,
        bounded: true,
        default_noise: Some(0.50),
        pace: Pace::Time,
    },
    // Total time but what waits on the hosts' CPUs alone before the first
    // byte (`preparation`: the destination started, CRIU ready), which
    // swings with the machine while this part follows the link.
    Metric {
        key: "after_first_byte",
        label: "after the first byte",
        unit: Unit::Ms,
        better: Better::Lower,
        value: |r| Some(r.total_time_ms? - r.phases.preparation_ms?),
        bounded: false,
        default_noise: Some(0.10),
        pace: Pace::Time,
    },
    // What the hypervisor expected (its last estimate polled before the
    // switchover) and was asked, beside what it did.
    Metric {
        key: "expected_downtime",
        label: "downtime expected",
        unit: Unit::Ms,
        better: Better::Lower,
        value: |r| last_expected_downtime(&r.progress),
        bounded: false,
        default_noise: None,
        pace: Pace::Own,
    },
    Metric {
        key: DOWNTIME_OVERSHOOT,
        label: "downtime of limit asked",
        unit: Unit::Percent,
        better: Better::Lower,
        value: |r| {
            let (achieved, asked) = (r.reported_downtime_ms?, r.downtime_limit_ms?);
            (asked > 0.0).then(|| achieved / asked * 100.0)
        },
        bounded: true,
        default_noise: None,
        pace: Pace::Own,
    },
    Metric {
        key: "throughput",
        label: "stream throughput",
        unit: Unit::Mbit,
        better: Better::Higher,
        value: |r| r.throughput_mbit,
        bounded: false,
        default_noise: Some(0.08),
        pace: Pace::Rate,
    },
    // Where the link sets it (MTU 1500), a lower one is a slower link;
    // where the machine does (small MTUs, nested hosts), the gate scales
    // the other figures by it instead.
    Metric {
        key: PATH_RATE,
        label: "path rate",
        unit: Unit::Mbit,
        better: Better::Higher,
        value: |r| r.path_rate_mbit,
        bounded: false,
        default_noise: Some(0.08),
        pace: Pace::Own,
    },
    // Beside each run, not gated, and no figure is brought to it yet: a
    // probe busy on every CPU reads a loaded machine as far slower than
    // its migrations are.
    Metric {
        key: CPU_PACE,
        label: "CPU pace",
        unit: Unit::Mops,
        better: Better::Higher,
        value: |r| r.cpu_pace_mops,
        bounded: false,
        default_noise: None,
        pace: Pace::Own,
    },
    Metric {
        key: "efficiency",
        label: "efficiency (of link goodput)",
        unit: Unit::Ratio,
        better: Better::Higher,
        value: |r| r.efficiency,
        bounded: false,
        default_noise: None,
        pace: Pace::Own,
    },
    Metric {
        key: "preparation",
        label: "preparation",
        unit: Unit::Ms,
        better: Better::Lower,
        value: |r| r.phases.preparation_ms,
        bounded: false,
        default_noise: None,
        pace: Pace::Own,
    },
    Metric {
        key: "transferred",
        label: "transferred",
        unit: Unit::Mib,
        better: Better::Lower,
        value: |r| r.bytes_transferred.map(|b| b as f64 / MIB),
        bounded: false,
        default_noise: None,
        pace: Pace::Own,
    },
    Metric {
        key: "passes",
        label: "memory passes",
        unit: Unit::Count,
        better: Better::Lower,
        value: |r| r.memory_iterations.map(|i| i as f64),
        bounded: false,
        default_noise: None,
        pace: Pace::Own,
    },
    Metric {
        key: "peak_cpu",
        label: "peak CPU",
        unit: Unit::Percent,
        better: Better::Lower,
        value: |r| r.peak_cpu_pct,
        bounded: true,
        default_noise: None,
        pace: Pace::Own,
    },
    Metric {
        key: "peak_memory",
        label: "peak memory",
        unit: Unit::Mib,
        better: Better::Lower,
        value: |r| r.peak_memory_mib,
        bounded: true,
        default_noise: Some(0.30),
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

    /// Its upper bound among `bounds`; None: not bounded.
    pub fn bound(&self, bounds: &Bounds) -> Option<f64> {
        bounds
            .limits
            .get(self.key)
            .copied()
            .filter(|_| self.bounded)
    }

    /// Its noise threshold among `noise`, or its default where they set
    /// none; None: the gate does not compare it with the baseline.
    pub fn noise_threshold(&self, noise: &NoiseThresholds) -> Option<f64> {
        let default = self.default_noise?;
        Some(noise.get(self.key).copied().unwrap_or(default))
    }

    /// The metric of `key`.
    pub fn by_key(key: &str) -> Option<&'static Metric> {
        METRICS.iter().find(|m| m.key == key)
    }

    /// The metric a report or snapshot names: by its key, or by the label
    /// it had when they were written before they named metrics by key.
    pub fn named(name: &str) -> Option<&'static Metric> {
        let key = LABELS_BEFORE_KEYS
            .iter()
            .find(|(label, _)| *label == name)
            .map_or(name, |(_, key)| key);
        Metric::by_key(key)
    }
}

/// The labels that reports and snapshots named metrics by before they
/// named them by key: kept as they were, whatever the labels become.
const LABELS_BEFORE_KEYS: [(&str, &str); 12] = [
    ("total time", "total_time"),
    ("downtime (reported)", "downtime"),
    ("guest-observed downtime", "guest_downtime"),
    ("stream throughput", "throughput"),
    ("path rate", "path_rate"),
    ("CPU pace", "cpu_pace"),
    ("efficiency (of link goodput)", "efficiency"),
    ("preparation", "preparation"),
    ("transferred", "transferred"),
    ("memory passes", "passes"),
    ("peak CPU", "peak_cpu"),
    ("peak memory", "peak_memory"),
];

/// A metric as verdicts and reports carry it: JSON reports name it by its
/// key, tables and figures by its label (`Display`).
#[derive(Clone, Copy)]
pub struct MetricRef(pub &'static Metric);

impl MetricRef {
    pub fn key(self) -> &'static str {
        self.0.key
    }

    pub fn label(self) -> &'static str {
        self.0.label
    }
}

impl PartialEq for MetricRef {
    fn eq(&self, other: &Self) -> bool {
        self.0.key == other.0.key
    }
}

impl fmt::Debug for MetricRef {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.0.key)
    }
}

impl fmt::Display for MetricRef {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.pad(self.0.label)
    }
}

impl Serialize for MetricRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.key)
    }
}

impl<'de> Deserialize<'de> for MetricRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Metric::named(&name).map(MetricRef).ok_or_else(|| {
            de::Error::custom(format!(
                "no metric is named \"{name}\"; the metrics are {}",
                METRICS.iter().map(|m| m.key).collect::<Vec<_>>().join(", ")
            ))
        })
    }
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

    /// Bounds are upper bounds (`Summary::worst`, `<=`), written in a unit
    /// a suite has words for (`suite::model::Limit`).
    #[test]
    fn bounded_metrics_are_lower_is_better_in_a_suite_unit() {
        for m in METRICS.iter().filter(|m| m.bounded) {
            assert_eq!(m.better, Better::Lower, "{}", m.key);
            assert!(
                matches!(m.unit, Unit::Ms | Unit::Percent | Unit::Mib),
                "{}",
                m.key
            );
        }
    }

    #[test]
    fn keys_are_unique_and_old_labels_name_metrics() {
        for (i, m) in METRICS.iter().enumerate() {
            assert!(METRICS[..i].iter().all(|o| o.key != m.key), "{}", m.key);
        }
        for (label, key) in LABELS_BEFORE_KEYS {
            assert_eq!(Metric::named(label).map(|m| m.key), Some(key));
        }
    }

    #[test]
    fn a_metric_reads_back_by_key_or_by_its_old_label() {
        let read = |json: &str| serde_json::from_str::<MetricRef>(json).map(MetricRef::key);
        assert_eq!(read("\"total_time\"").unwrap(), "total_time");
        assert_eq!(read("\"downtime (reported)\"").unwrap(), "downtime");
        let unknown = read("\"total\"").unwrap_err().to_string();
        assert!(
            unknown.contains("the metrics are total_time, downtime"),
            "{unknown}"
        );
    }

    /// A backend's downtime held against the limit it was asked to keep
    /// and its last estimate polled.
    #[test]
    fn a_downtime_is_held_against_the_limit_asked_and_the_estimate() {
        let estimate = |ms: Option<f64>| crate::measure::ProgressSample {
            t_ms: 0,
            transferred_mib: 0.0,
            remaining_mib: 0.0,
            pass: 1,
            dirty_rate_mib_s: None,
            throughput_mbit: None,
            expected_downtime_ms: ms,
        };
        let mut r = run(2000.0, 450.0);
        r.downtime_limit_ms = Some(300.0);
        r.progress = vec![estimate(Some(900.0)), estimate(Some(280.0)), estimate(None)];
        let value = |r: &RunMeasurement, key: &str| (Metric::by_key(key).unwrap().value)(r);
        assert_relative_eq!(value(&r, "downtime_overshoot").unwrap(), 150.0);
        assert_eq!(value(&r, "expected_downtime"), Some(280.0));
        r.downtime_limit_ms = None;
        assert_eq!(value(&r, "downtime_overshoot"), None, "nothing asked");
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
