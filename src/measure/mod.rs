//! What one run of a case measured. Produced by the runner, consumed by the
//! verdict and the reports; plain data only.

use crate::case::Case;
use serde::{Deserialize, Serialize};
use std::fmt;

mod observed;
pub use observed::{micros_since, Arrivals, Evacuation, NetworkSent, Observed, Progress};

/// Bytes in a MiB, for the figures reported in MiB.
pub const MIB: f64 = (1u64 << 20) as f64;

/// What produced the numbers: every report carries it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// "tcg" or "kvm", and why (e.g. "tcg (kvm_pvm cannot run stock kernels)").
    pub accel: String,
    /// "local: 2 netns hosts on <hostname>" or the real hosts' URIs.
    pub host_kind: String,
    /// Which lab, from which inventory, and its storage (`Inventory::describe`);
    /// empty in reports written before labs had inventories.
    #[serde(default)]
    pub lab: String,
    /// What a migration did with the guest's storage (e.g. its disk copied
    /// with it); empty in older reports.
    #[serde(default)]
    pub storage: String,
    /// The lab's hosts it ran between, e.g. "a and b"; empty in older reports.
    #[serde(default)]
    pub hosts: String,
    /// Host kernel release (uname -r).
    pub host_kernel: String,
    /// e.g. "QEMU 7.2.22": its name and version, then in parentheses what
    /// the backend adds (Xen's nested hosts and their boot times).
    pub hypervisor_version: String,
    /// e.g. "libvirt 9.0.0".
    pub toolstack_version: String,
    pub guest_kernel: String,
    pub migsuite_version: String,
    /// What else used the machine's CPUs while the case was measured.
    #[serde(default)]
    pub beside: crate::neighbours::Neighbours,
    /// The machine's CPUs and memory, that CPU and memory timelines can be
    /// read as shares of the host (as the study gives them); None in
    /// reports written before they were recorded.
    #[serde(default)]
    pub host_cpus: Option<u32>,
    #[serde(default)]
    pub host_memory_mib: Option<f64>,
    /// A real lab's hosts in the inventory's order, each with its machine;
    /// empty on a simulated lab, whose hosts are this machine
    /// (`host_cpus`), and in reports written before they were recorded.
    #[serde(default)]
    pub real_hosts: Vec<RealHost>,
}

/// A real lab's host and its machine as its libvirt told it (Err: why it
/// did not).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RealHost {
    pub name: String,
    pub machine: Result<Machine, String>,
}

/// A host's machine as its libvirt tells (`lab::capabilities::machine`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    pub cpus: u32,
    /// The architecture, then the host CPU's vendor and model where
    /// libvirt's capabilities give them: "x86_64, AMD EPYC-Rome".
    pub cpu: String,
    pub memory_mib: u64,
    /// libvirt's host UUID (the SMBIOS system UUID unless libvirtd.conf's
    /// `host_uuid` says otherwise), which tells a host replaced by a machine
    /// of the same make; None where libvirt gives none.
    pub uuid: Option<String>,
}

/// "2 CPUs (x86_64, AMD EPYC-Rome), 2971 MiB".
impl fmt::Display for Machine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} CPUs ({}), {} MiB",
            self.cpus, self.cpu, self.memory_mib
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unit {
    /// Percent of one CPU (may exceed 100 for several threads).
    Percent,
    Mib,
    Ms,
    Mbit,
    /// Million rounds of `crate::cpu_pace`'s work per second.
    Mops,
    /// A fraction (1.0 = all of it).
    Ratio,
    Count,
}

impl Unit {
    pub fn suffix(self) -> &'static str {
        match self {
            Unit::Percent => "%",
            Unit::Mib => "MiB",
            Unit::Ms => "ms",
            Unit::Mbit => "Mbit/s",
            Unit::Mops => "Mop/s",
            Unit::Ratio | Unit::Count => "",
        }
    }

    /// `value` with its unit, as tables and snapshots print it.
    pub fn format(self, value: f64) -> String {
        match self {
            Unit::Ratio => format!("{value:.2}"),
            Unit::Count => format!("{value:.0}"),
            _ => format!("{value:.1} {}", self.suffix()),
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

/// What the lab measured of itself before the case, and what the case's
/// workload was set to from it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
// Reports written before a field existed read it as not measured.
#[serde(default)]
pub struct Calibration {
    pub mtu: u32,
    /// TCP goodput from source to destination over the migration link (a
    /// real lab's as its hosts' agents measure it; None in a real lab's
    /// reports from before they did).
    pub goodput_mbit: Option<f64>,
    /// The rate on the wire that goodput makes (frames, headers included):
    /// what a migration stream's wire rate is compared with.
    pub wire_mbit: Option<f64>,
    /// The same two from the destination back to the source, which the
    /// runs going back take: measured on a real lab, whose network may
    /// carry less one way; None on a simulated lab, whose cable is the
    /// same both ways.
    pub return_goodput_mbit: Option<f64>,
    pub return_wire_mbit: Option<f64>,
    /// TCP goodput of the stream's own path where it is more than the link
    /// (Xen: dom0 to dom0, through dom0's relays, nested or real); None
    /// where the link is the path.
    pub stream_path_goodput_mbit: Option<f64>,
    /// The workload's dirty rate, resolved against the least goodput.
    pub workload_dirty_rate_mib_s: u32,
    /// The most the guest could dirty, measured by its agent at boot.
    pub guest_dirty_capacity_mib_s: Option<f64>,
}

/// The phases of one migration, in order, on the runner's clock (ms).
/// Post-copy moves memory after the resume; its transfer is then counted
/// from the resume to the last page.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Phases {
    /// Warning -> the first byte of guest memory moves.
    pub preparation_ms: Option<f64>,
    /// Memory moving while the guest runs (pre-copy passes, or post-copy's
    /// background fetch).
    pub memory_transfer_ms: Option<f64>,
    /// The guest stopped: the last memory and device state move.
    pub stop_and_copy_ms: Option<f64>,
    /// Until the guest runs on the destination.
    pub resume_ms: Option<f64>,
}

/// One sample of the migration's progress, as the toolstack reports it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProgressSample {
    /// Since the warning.
    pub t_ms: i64,
    pub transferred_mib: f64,
    pub remaining_mib: f64,
    /// Pre-copy pass (1 = the first full pass).
    pub pass: u64,
    /// The guest's dirty rate as the hypervisor sees it.
    pub dirty_rate_mib_s: Option<f64>,
    pub throughput_mbit: Option<f64>,
    /// The downtime the hypervisor expected had it switched over then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_downtime_ms: Option<f64>,
}

/// The hypervisor's last estimate of the downtime in `progress`: the last
/// one polled before the switchover.
pub fn last_expected_downtime(progress: &[ProgressSample]) -> Option<f64> {
    progress.iter().rev().find_map(|p| p.expected_downtime_ms)
}

/// One pre-copy pass as the progress timeline shows it: what it sent and
/// for how long (to the sample where the next pass was first seen).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Pass {
    pub pass: u64,
    pub transferred_mib: f64,
    pub duration_ms: i64,
}

impl Pass {
    /// The passes of a progress timeline.
    pub fn of(progress: &[ProgressSample]) -> Vec<Pass> {
        let mut passes: Vec<Pass> = Vec::new();
        let mut start: Option<&ProgressSample> = None;
        for s in progress.iter().filter(|s| s.pass > 0) {
            match start {
                Some(b) if b.pass == s.pass => continue,
                Some(b) => passes.push(Pass {
                    pass: b.pass,
                    transferred_mib: s.transferred_mib - b.transferred_mib,
                    duration_ms: s.t_ms - b.t_ms,
                }),
                None => {}
            }
            start = Some(s);
        }
        passes
    }
}

/// How a migration ended.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Outcome {
    #[default]
    Completed,
    /// Pre-copy could not converge: the guest dirtied memory as fast as the
    /// stream carried it. Cancelled on purpose, the guest kept on the
    /// source; the evidence is in `evidence` and the progress timeline.
    NotConverged {
        evidence: String,
        source_survived: bool,
    },
    /// The migration did not complete; `reason` says why, `source_survived`
    /// whether the guest was still running on the source afterwards.
    Failed {
        reason: String,
        source_survived: bool,
    },
}

impl Outcome {
    /// Why the migration did not complete, and whether the source guest
    /// survived; None when it completed.
    pub fn not_completed(&self) -> Option<(&str, bool)> {
        match self {
            Outcome::Completed => None,
            Outcome::NotConverged {
                evidence,
                source_survived,
            } => Some((evidence, *source_survived)),
            Outcome::Failed {
                reason,
                source_survived,
            } => Some((reason, *source_survived)),
        }
    }
}

/// The sequence numbers of a run's warning: that its time zero is the
/// source host's going-down sent in answer to this run's own order. Each is
/// its sender's clock, ns since the epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WarningSeq {
    /// The runner's first order to go down in this run.
    pub first_order: u64,
    /// The order the going-down answered: the first, or one sent again
    /// since (never below the first).
    pub answered_order: u64,
    /// The going-down heartbeat's own.
    pub going_down: u64,
}

/// Measurements of one repeat of one case.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
// Reports written before a field existed read it as not measured.
#[serde(default)]
pub struct RunMeasurement {
    pub outcome: Outcome,
    /// Which way the guest went, e.g. "a->b" (repeats go back and forth).
    pub direction: String,
    /// Which of the case's variants ran (`Case::variants`); None: the case
    /// has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// Warning -> guest running on the destination, measured by the runner.
    pub total_time_ms: Option<f64>,
    /// Total time as the hypervisor/toolstack reports it.
    pub reported_total_ms: Option<f64>,
    /// Downtime as the hypervisor/toolstack reports it.
    pub reported_downtime_ms: Option<f64>,
    /// The downtime limit the hypervisor was given: what was asked.
    #[serde(default)]
    pub downtime_limit_ms: Option<f64>,
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
    pub phases: Phases,
    /// Bytes the source sent on the migration link during the evacuation
    /// (frames whole), as the link counted them; on a real lab, as the
    /// source's migration interface counted them from before the warning
    /// to the end of the evacuation.
    pub link_bytes: Option<u64>,
    /// The stream's rate while it moved memory, Mbit/s: on the wire of the
    /// migration link, or, for a stream that does not cross it (xen-pv, in
    /// one Xen host), its own byte count.
    pub throughput_mbit: Option<f64>,
    /// `throughput_mbit` over the calibrated wire rate of the link.
    pub efficiency: Option<f64>,
    /// What the stream's path (the link, or nested hosts' relay where that
    /// carries less) carried just before this run, Mbit/s of TCP payload:
    /// the machine's pace that the gate scales this run's figures by (on a
    /// real lab, as its hosts' agents measure it). None in one host (no path
    /// to measure).
    #[serde(default)]
    pub path_rate_mbit: Option<f64>,
    /// The hosts' CPU pace just before this run, million rounds per second
    /// (`crate::cpu_pace`); on a real lab the slower host's. None in older
    /// reports.
    #[serde(default)]
    pub cpu_pace_mops: Option<f64>,
    /// Which heartbeat was time zero, and which order it answered; None in
    /// older reports.
    #[serde(default)]
    pub warning_seq: Option<WarningSeq>,
    pub progress: Vec<ProgressSample>,
    /// Per pass, from `progress` (the last, cut short by the switch-over,
    /// is left out).
    pub passes: Vec<Pass>,
    pub timelines: Vec<Timeline>,
    /// What the run observed, which the figures above are derived from;
    /// None in older reports and for a run that failed before it observed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed: Option<Observed>,
}

/// The runs of variant `v` of `case` (`Case::variants`), in the order
/// they ran; all of them for a case without variants.
pub fn runs_of_variant(
    case: &crate::case::Case,
    runs: &[RunMeasurement],
    v: usize,
) -> Vec<RunMeasurement> {
    let name = case.variants.get(v).map(|variant| &variant.name);
    runs.iter()
        .filter(|r| name.is_none() || r.variant.as_ref() == name)
        .cloned()
        .collect()
}

/// Everything measured of one case: its runs and what produced them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CaseResult {
    pub case: Case,
    pub provenance: Provenance,
    pub calibration: Calibration,
    pub runs: Vec<RunMeasurement>,
    /// When the case took its pair of hosts, and when it gave it back
    /// (Unix ms): which cases overlapped, with several pairs. None in older
    /// reports.
    #[serde(default)]
    pub held_unix_ms: Option<[u64; 2]>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t_ms: i64, transferred_mib: f64, pass: u64) -> ProgressSample {
        ProgressSample {
            t_ms,
            transferred_mib,
            remaining_mib: 0.0,
            pass,
            dirty_rate_mib_s: None,
            throughput_mbit: None,
            expected_downtime_ms: None,
        }
    }

    #[test]
    fn passes_from_progress() {
        let progress = [
            at(0, 0.0, 0),
            at(100, 5.0, 1),
            at(200, 60.0, 1),
            at(300, 110.0, 2),
            at(400, 118.0, 3),
            at(500, 120.0, 3),
        ];
        assert_eq!(
            Pass::of(&progress),
            [
                Pass {
                    pass: 1,
                    transferred_mib: 105.0,
                    duration_ms: 200
                },
                Pass {
                    pass: 2,
                    transferred_mib: 8.0,
                    duration_ms: 100
                }
            ]
        );
    }
}
