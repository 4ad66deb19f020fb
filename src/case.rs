//! One expanded test case: everything the lab and the runner need, with every
//! default already applied. Suites (`crate::suite`) produce these; nothing
//! downstream ever looks at YAML again.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;
use std::sync::Mutex;

/// A system a backend runs, by its row's name (`kvm-pv`). Which rows exist
/// is the backend registry's to say (`crate::backend::REGISTRY`), not the
/// suite language's: suites and inventories are checked against it when
/// they are validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hypervisor(&'static str);

impl Hypervisor {
    /// The row a backend declares.
    pub const fn row(name: &'static str) -> Hypervisor {
        Hypervisor(name)
    }

    /// The row named `name` as read from a file: each name is kept once,
    /// for the process's life, so that rows stay `Copy`.
    pub fn named(name: &str) -> Hypervisor {
        static NAMES: Mutex<BTreeSet<&'static str>> = Mutex::new(BTreeSet::new());
        let mut names = NAMES.lock().unwrap_or_else(|e| e.into_inner());
        match names.get(name) {
            Some(kept) => Hypervisor(kept),
            None => {
                let kept: &'static str = Box::leak(name.into());
                names.insert(kept);
                Hypervisor(kept)
            }
        }
    }

    pub fn name(self) -> &'static str {
        self.0
    }
}

impl fmt::Display for Hypervisor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl Serialize for Hypervisor {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0)
    }
}

impl<'de> Deserialize<'de> for Hypervisor {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Hypervisor::named(&String::deserialize(d)?))
    }
}

/// Which accelerator the guest should run under.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccelChoice {
    /// KVM when the host can really run a stock guest kernel with it, else TCG.
    Auto,
    Kvm,
    Tcg,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    Precopy,
    Postcopy,
    AutoConverge,
    /// Freeze, copy everything once, resume on the destination: what a
    /// system without dirty-page tracking can still do.
    StopAndCopy,
}

impl Strategy {
    /// As suites write it.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Precopy => "precopy",
            Strategy::Postcopy => "postcopy",
            Strategy::AutoConverge => "auto-converge",
            Strategy::StopAndCopy => "stop-and-copy",
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Payload size of the workload's packet stream (UDP payload bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PacketSize {
    /// As large as the MTU allows (MTU - 28 bytes of IPv4 and UDP headers).
    Fill,
    Bytes(u32),
}

impl PacketSize {
    pub fn payload(self, mtu: u32) -> u32 {
        match self {
            PacketSize::Fill => mtu.saturating_sub(28),
            PacketSize::Bytes(b) => b,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GuestSpec {
    pub memory_mib: u32,
    pub vcpus: u32,
    pub accel: AccelChoice,
}

/// The study's "180 MB game": memory kept dirty plus a packet stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Workload {
    pub name: String,
    pub dirty_mib: u32,
    /// How fast `dirty_mib` is rewritten.
    pub dirty_rate: DirtyRate,
    pub packet_size: PacketSize,
    /// Packets per second sent to the observer.
    pub packet_rate_pps: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DirtyRate {
    MibPerSec(u32),
    /// A share of what the migration stream can carry (the link's goodput,
    /// or its nested hosts' path if less), as calibrated before the case:
    /// a gate case keeps the same convergence margin on any lab.
    OfLink(f64),
}

impl DirtyRate {
    /// MiB/s, given the link's measured goodput in Mbit/s.
    pub fn mib_s(self, goodput_mbit: f64) -> u32 {
        match self {
            DirtyRate::MibPerSec(m) => m,
            DirtyRate::OfLink(share) => (share * goodput_mbit * 1e6 / 8.0 / (1u64 << 20) as f64)
                .round()
                .max(1.0) as u32,
        }
    }
}

impl std::fmt::Display for DirtyRate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DirtyRate::MibPerSec(m) => write!(f, "{m}MiB/s"),
            DirtyRate::OfLink(share) => write!(f, "{}% of link", share * 100.0),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LinkSpec {
    pub mtu: u32,
    /// Egress shaping of every lab link, Mbit/s; None = unshaped.
    pub rate_mbit: Option<u64>,
    /// false = wire-like: TSO/GSO/GRO and checksum offloads off, so the MTU
    /// really sets the packet size on the link.
    pub offloads: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FailureSpec {
    /// Seconds of steady state before the source host announces it goes down.
    pub after_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MigrationSpec {
    pub strategy: Strategy,
    pub max_downtime_ms: u64,
    pub timeout_ms: u64,
    /// Reports written before Xen ran on two hosts lack it: every row but
    /// Xen's was two-hosts then.
    #[serde(default)]
    pub topology: Topology,
    /// A cap on the stream, MiB/s (QEMU's `max-bandwidth`); None: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth_mib_s: Option<u32>,
    /// Channels of a multifd stream; None: one plain stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multifd_channels: Option<u32>,
    /// The stream (and a copied disk's) over TLS with the hosts'
    /// certificates; false: plain TCP.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tls: bool,
}

/// One version of a case, run interleaved with the others on the same lab.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Variant {
    pub name: String,
    pub migration: MigrationSpec,
}

/// Where the guest goes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Topology {
    /// From the source lab host to the destination lab host, over the
    /// migration link: what every row can do.
    #[default]
    TwoHosts,
    /// Source and destination VM on one host, as the study ran them; the
    /// stream never leaves that host.
    OneHost,
}

impl Topology {
    /// As suites write it.
    pub fn name(self) -> &'static str {
        match self {
            Topology::TwoHosts => "two-hosts",
            Topology::OneHost => "one-host",
        }
    }
}

impl fmt::Display for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Sabotage injected during the migration, for the failure paths.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Faults {
    /// Kill the destination's hypervisor process this long after the
    /// migration started.
    pub kill_destination_after_ms: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SamplingSpec {
    pub interval_ms: u64,
    /// Longest time to keep sampling after the migration ended, waiting for
    /// the values to settle.
    pub settle_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Aggregate {
    Mean,
    Worst,
}

/// Upper bounds on a case's figures, applied to the worst or the mean of
/// its runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Bounds {
    pub apply_to: Aggregate,
    /// Per bounded metric (its key in `crate::metrics::METRICS`), in the
    /// metric's unit; a metric left out is not bounded.
    #[serde(flatten, deserialize_with = "read_limits")]
    pub limits: BTreeMap<String, f64>,
}

/// Bounds as reports name them now (by metric key) and as reports written
/// before did (with their unit, and null where not bounded).
fn read_limits<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BTreeMap<String, f64>, D::Error> {
    const BEFORE_KEYS: [(&str, &str); 5] = [
        ("downtime_ms", "downtime"),
        ("guest_downtime_ms", "guest_downtime"),
        ("total_time_ms", "total_time"),
        ("peak_cpu_pct", "peak_cpu"),
        ("peak_memory_mib", "peak_memory"),
    ];
    let written = BTreeMap::<String, Option<f64>>::deserialize(d)?;
    Ok(written
        .into_iter()
        .filter_map(|(key, limit)| {
            let key = BEFORE_KEYS
                .iter()
                .find(|(before, _)| *before == key)
                .map_or(key, |(_, now)| now.to_string());
            Some((key, limit?))
        })
        .collect())
}

/// What the case is expected to end with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Expect {
    /// The migration completes and every bound holds.
    Pass,
    /// The migration fails; the verdict's reason must contain this text.
    Fail { reason_contains: String },
}

/// Per gated metric (its key in `crate::metrics::METRICS`), the smallest
/// change of its median (a fraction of the baseline's) that the gate
/// reports as a regression or an improvement, when it is also
/// statistically significant (`baseline`). A gated metric left out has
/// its default (`Metric::noise_threshold`).
pub type NoiseThresholds = BTreeMap<String, f64>;

/// `gate` suites run in `cargo test`; `lab` suites are listed but run only
/// when asked (`--include-ignored`, or `migsuite run`), or on a lab whose
/// inventory names them in its `gate` (`crate::runner::left_out`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Gate,
    Lab,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Case {
    /// Suite name (from the file).
    pub suite: String,
    pub file: PathBuf,
    pub tier: Tier,
    pub hypervisor: Hypervisor,
    pub guest: GuestSpec,
    pub workload: Workload,
    pub link: LinkSpec,
    pub failure: FailureSpec,
    pub migration: MigrationSpec,
    pub faults: Faults,
    pub repeat: u32,
    pub sampling: SamplingSpec,
    pub bounds: Bounds,
    pub expect: Expect,
    /// Reports written before noise thresholds existed read the defaults.
    #[serde(default)]
    pub noise: NoiseThresholds,
    /// Versions of the case run side by side, their runs interleaved
    /// (`variant_order`), `repeat` runs each; the first is the reference. None: the
    /// case alone, as `migration` says.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub variants: Vec<Variant>,
    /// Per compared metric (its key in `crate::metrics::METRICS`), how much
    /// worse than the reference another variant may be, a fraction.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub compare: BTreeMap<String, f64>,
}

impl Case {
    /// Stable test name: `suite::hypervisor::mtuN::workload`.
    pub fn name(&self) -> String {
        format!(
            "{}::{}::mtu{}::{}",
            self.suite, self.hypervisor, self.link.mtu, self.workload.name
        )
    }

    /// File-system safe form of the name (snapshots, reports).
    pub fn slug(&self) -> String {
        self.name().replace("::", "__")
    }

    /// The case as its variant `v` runs it.
    pub fn as_variant(&self, v: usize) -> Case {
        Case {
            migration: self.variants[v].migration.clone(),
            ..self.clone()
        }
    }

    /// Which variant each run is, in the order they run: A B, then B A,
    /// and so on (for more, in turn and back), `repeat` runs of each.
    /// Runs go back and forth between the hosts, so each variant goes
    /// both ways alike, and a drift of the machine over the case touches
    /// every variant alike. Empty for a case without variants.
    pub fn variant_order(&self) -> Vec<usize> {
        let n = self.variants.len();
        (0..self.repeat as usize)
            .flat_map(|round| {
                let order: Vec<usize> = if round % 2 == 0 {
                    (0..n).collect()
                } else {
                    (0..n).rev().collect()
                };
                order
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reports written before bounds were keyed by metric read back.
    #[test]
    fn bounds_read_back_as_written_now_and_before() {
        let before: Bounds = serde_json::from_str(
            r#"{"apply_to":"worst","downtime_ms":5000.0,"guest_downtime_ms":null,"peak_cpu_pct":400.0}"#,
        )
        .unwrap();
        let now = Bounds {
            apply_to: Aggregate::Worst,
            limits: [("downtime", 5000.0), ("peak_cpu", 400.0)]
                .map(|(k, v)| (k.to_string(), v))
                .into(),
        };
        assert_eq!(before, now);
        let json = serde_json::to_string(&now).unwrap();
        assert_eq!(
            json,
            r#"{"apply_to":"worst","downtime":5000.0,"peak_cpu":400.0}"#
        );
        assert_eq!(serde_json::from_str::<Bounds>(&json).unwrap(), now);
    }

    #[test]
    fn a_row_read_from_a_file_is_the_row_declared() {
        let read: Hypervisor = serde_json::from_str(r#""kvm-pv""#).unwrap();
        assert_eq!(read, Hypervisor::row("kvm-pv"));
        assert_eq!(serde_json::to_string(&read).unwrap(), r#""kvm-pv""#);
        // Kept once, however often it is read.
        assert!(std::ptr::eq(
            Hypervisor::named("kvm-pv").name(),
            Hypervisor::named(&String::from("kvm-pv")).name()
        ));
    }
}
