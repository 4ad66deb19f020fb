//! Test data shared by the unit tests of the verdict, statistics and reports.

use crate::case::*;
use crate::measure::{Machine, Outcome, Provenance, RealHost, RunMeasurement, Timeline, Unit};

pub(crate) fn case() -> Case {
    Case {
        suite: "ci".into(),
        file: "suites/ci.yaml".into(),
        tier: Tier::Gate,
        hypervisor: Hypervisor::row("kvm-fv"),
        guest: GuestSpec {
            memory_mib: 256,
            vcpus: 1,
            accel: AccelChoice::Auto,
        },
        workload: Workload {
            name: "game".into(),
            dirty_mib: 180,
            dirty_rate: crate::case::DirtyRate::MibPerSec(20),
            packet_size: PacketSize::Fill,
            packet_rate_pps: 50,
        },
        link: LinkSpec {
            mtu: 128,
            rate_mbit: Some(1000),
            offloads: false,
        },
        failure: FailureSpec { after_ms: 5000 },
        migration: MigrationSpec {
            strategy: Strategy::Precopy,
            max_downtime_ms: 300,
            timeout_ms: 25_000,
            topology: Topology::TwoHosts,
            bandwidth_mib_s: None,
            multifd_channels: None,
            tls: false,
        },
        faults: Faults::default(),
        repeat: 3,
        sampling: SamplingSpec {
            interval_ms: 250,
            settle_ms: 3000,
        },
        bounds: Bounds {
            apply_to: Aggregate::Worst,
            limits: Default::default(),
        },
        expect: Expect::Pass,
        noise: Default::default(),
        variants: vec![],
        compare: Default::default(),
    }
}

pub(crate) fn provenance() -> Provenance {
    Provenance {
        accel: "tcg (kvm_pvm cannot run stock kernels)".into(),
        host_kind: "local: 2 netns hosts on lab1".into(),
        lab: "lab: simulated (built in, no inventory), simulated: network-namespace hosts on one machine".into(),
        storage: "disk on storage both hosts see: not copied".into(),
        hosts: "a and b".into(),
        host_kernel: "6.18.0".into(),
        hypervisor_version: "QEMU 7.2.22".into(),
        toolstack_version: "libvirt 9.0.0".into(),
        guest_kernel: "6.1.0-30-amd64".into(),
        migsuite_version: "0.1.0".into(),
        beside: Default::default(),
        host_cpus: Some(2),
        host_memory_mib: Some(4096.0),
        real_hosts: Vec::new(),
    }
}

/// A real host's machine of 4 AMD EPYC-Rome CPUs.
pub(crate) fn epyc(memory_mib: u64, uuid: &str) -> Machine {
    Machine {
        cpus: 4,
        cpu: "x86_64, AMD EPYC-Rome".into(),
        memory_mib,
        uuid: Some(uuid.into()),
    }
}

/// A run on a real lab of hosts a and b (b's libvirt not telling its
/// machine where None), under KVM, with QEMU 8.2.2.
pub(crate) fn real_lab(a: Machine, b: Option<Machine>) -> Provenance {
    Provenance {
        accel: "kvm (auto: both hosts' libvirt offers KVM)".into(),
        host_cpus: None,
        host_kernel: "host a 6.1.0-50-amd64; host b 6.1.0-50-amd64".into(),
        hypervisor_version: "QEMU 8.2.2".into(),
        real_hosts: vec![
            RealHost {
                name: "a".into(),
                machine: Ok(a),
            },
            RealHost {
                name: "b".into(),
                machine: b.ok_or_else(|| "connection reset".to_string()),
            },
        ],
        ..provenance()
    }
}

/// A real lab of two such machines.
pub(crate) fn rack() -> Provenance {
    real_lab(epyc(7940, "u-a"), Some(epyc(7940, "u-b")))
}

/// A timeline sampled every 250 ms from -2 s: `base` before the warning,
/// `peak` while migrating (`busy_ms`), `end` for 3 s after.
pub(crate) fn step(
    name: &str,
    unit: Unit,
    base: f64,
    peak: f64,
    end: f64,
    busy_ms: i64,
) -> Timeline {
    let points = (-8..=(busy_ms + 3000) / 250)
        .map(|i| i * 250)
        .map(|t| {
            (
                t,
                if t < 0 {
                    base
                } else if t < busy_ms {
                    peak
                } else {
                    end
                },
            )
        })
        .collect();
    Timeline {
        name: name.into(),
        unit,
        points,
    }
}

/// A completed run; the other figures follow from total time and downtime.
pub(crate) fn run(total_ms: f64, downtime_ms: f64) -> RunMeasurement {
    RunMeasurement {
        variant: None,
        outcome: Outcome::Completed,
        total_time_ms: Some(total_ms),
        reported_total_ms: Some(total_ms - 50.0),
        reported_downtime_ms: Some(downtime_ms),
        guest_downtime_ms: Some(downtime_ms + 100.0),
        baseline_gap_ms: Some(20.0),
        setup_time_ms: Some(40.0),
        bytes_transferred: Some(84_400_000),
        memory_iterations: Some(3),
        peak_cpu_pct: Some(95.0),
        peak_memory_mib: Some(310.0),
        timelines: vec![
            step(
                "cpu.source.hypervisor",
                Unit::Percent,
                12.0,
                95.0,
                0.0,
                total_ms as i64,
            ),
            step(
                "memory.source.hypervisor",
                Unit::Mib,
                300.0,
                310.0,
                0.0,
                total_ms as i64,
            ),
        ],
        ..Default::default()
    }
}

pub(crate) fn failed(reason: &str, source_survived: bool) -> RunMeasurement {
    RunMeasurement {
        variant: None,
        outcome: Outcome::Failed {
            reason: reason.into(),
            source_survived,
        },
        ..Default::default()
    }
}
