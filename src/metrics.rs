//! One definition per metric: its name, unit, which way is better, how a
//! run yields it, its bound in a suite, and whether the gate compares it
//! with the stored baseline. Verdicts, tables, snapshots and JSON derive
//! from this list.

use crate::case::{Bounds, NoiseThresholds};
use crate::measure::{RunMeasurement, Unit, MIB};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Better {
    Lower,
    Higher,
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
}

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
    },
    Metric {
        key: "downtime",
        label: "downtime (reported)",
        unit: Unit::Ms,
        better: Better::Lower,
        value: |r| r.reported_downtime_ms,
        bound: Some(|b| b.downtime_ms),
        gated: Some(|n| n.downtime),
    },
    Metric {
        key: "guest_downtime",
        label: "guest-observed downtime",
        unit: Unit::Ms,
        better: Better::Lower,
        value: |r| r.guest_downtime_ms,
        bound: Some(|b| b.guest_downtime_ms),
        gated: Some(|n| n.guest_downtime),
    },
    Metric {
        key: "throughput",
        label: "stream throughput",
        unit: Unit::Mbit,
        better: Better::Higher,
        value: |r| r.throughput_mbit,
        bound: None,
        gated: Some(|n| n.throughput),
    },
    Metric {
        key: "efficiency",
        label: "efficiency (of link goodput)",
        unit: Unit::Ratio,
        better: Better::Higher,
        value: |r| r.efficiency,
        bound: None,
        gated: None,
    },
    Metric {
        key: "preparation",
        label: "preparation",
        unit: Unit::Ms,
        better: Better::Lower,
        value: |r| r.phases.preparation_ms,
        bound: None,
        gated: None,
    },
    Metric {
        key: "transferred",
        label: "transferred",
        unit: Unit::Mib,
        better: Better::Lower,
        value: |r| r.bytes_transferred.map(|b| b as f64 / MIB),
        bound: None,
        gated: None,
    },
    Metric {
        key: "passes",
        label: "memory passes",
        unit: Unit::Count,
        better: Better::Lower,
        value: |r| r.memory_iterations.map(|i| i as f64),
        bound: None,
        gated: None,
    },
    Metric {
        key: "peak_cpu",
        label: "peak CPU",
        unit: Unit::Percent,
        better: Better::Lower,
        value: |r| r.peak_cpu_pct,
        bound: Some(|b| b.peak_cpu_pct),
        gated: None,
    },
    Metric {
        key: "peak_memory",
        label: "peak memory",
        unit: Unit::Mib,
        better: Better::Lower,
        value: |r| r.peak_memory_mib,
        bound: Some(|b| b.peak_memory_mib),
        gated: Some(|n| n.peak_memory),
    },
];

impl Metric {
    /// Its values over the runs that completed.
    pub fn values(&self, runs: &[RunMeasurement]) -> Vec<f64> {
        runs.iter()
            .filter(|r| r.outcome.not_completed().is_none())
            .filter_map(self.value)
            .collect()
    }

    pub fn by_label(label: &str) -> Option<&'static Metric> {
        METRICS.iter().find(|m| m.label == label)
    }
}
