//! What one run of a case measured. Produced by the runner, consumed by the
//! verdict and the reports; plain data only.

use crate::case::Case;
use serde::{Deserialize, Serialize};

/// What produced the numbers: every report carries it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// "tcg" or "kvm", and why (e.g. "tcg (kvm_pvm cannot run stock kernels)").
    pub accel: String,
    /// "local: 2 netns hosts on <hostname>" or the real hosts' URIs.
    pub host_kind: String,
    /// Host kernel release (uname -r).
    pub host_kernel: String,
    /// e.g. "QEMU 7.2.22".
    pub hypervisor_version: String,
    /// e.g. "libvirt 9.0.0".
    pub toolstack_version: String,
    pub guest_kernel: String,
    pub migsuite_version: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unit {
    /// Percent of one CPU (may exceed 100 for several threads).
    Percent,
    Mib,
    Ms,
}

impl Unit {
    pub fn suffix(self) -> &'static str {
        match self {
            Unit::Percent => "%",
            Unit::Mib => "MiB",
            Unit::Ms => "ms",
        }
    }
}

/// One sampled quantity over time. `t_ms` is relative to the failure warning
/// (negative = before it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Timeline {
    /// e.g. "cpu.source.hypervisor", "cpu.machine", "memory.destination.hypervisor".
    pub name: String,
    pub unit: Unit,
    pub points: Vec<(i64, f64)>,
}

/// Landmarks of a timeline, as in the study's tables.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Landmarks {
    /// Mean before the warning.
    pub baseline: f64,
    pub peak: f64,
    pub peak_at_ms: i64,
    /// Value the timeline settled to after the peak, and since when.
    pub settled: f64,
    pub settled_at_ms: i64,
}

/// How a migration ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Outcome {
    Completed,
    /// The migration did not complete; `reason` says why, `source_survived`
    /// whether the guest was still running on the source afterwards.
    Failed { reason: String, source_survived: bool },
}

/// Measurements of one repeat of one case.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunMeasurement {
    pub outcome: Outcome,
    /// Warning -> guest running on the destination, measured by the runner.
    pub total_time_ms: Option<f64>,
    /// Total time as the hypervisor/toolstack reports it.
    pub reported_total_ms: Option<f64>,
    /// Downtime as the hypervisor/toolstack reports it.
    pub reported_downtime_ms: Option<f64>,
    /// Longest gap between heartbeats the observer received.
    pub guest_downtime_ms: Option<f64>,
    /// Longest heartbeat gap in the steady state before the warning (jitter).
    pub baseline_gap_ms: Option<f64>,
    pub setup_time_ms: Option<f64>,
    pub bytes_transferred: Option<u64>,
    pub memory_iterations: Option<u64>,
    /// Peak CPU of the hypervisor processes of either host (percent of one CPU).
    pub peak_cpu_pct: Option<f64>,
    /// Peak memory (RSS) of the hypervisor processes of either host.
    pub peak_memory_mib: Option<f64>,
    pub timelines: Vec<Timeline>,
}

/// Everything measured of one case: its runs and what produced them.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CaseResult {
    pub case: Case,
    pub provenance: Provenance,
    pub runs: Vec<RunMeasurement>,
}
