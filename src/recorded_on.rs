//! What a baseline was recorded on, as its snapshot states it (one fact a
//! line), and what a difference from a run's means. Another machine
//! (accelerator, lab kind, a host's CPUs, CPU model or memory, a replaced
//! host) makes the baseline's figures say nothing of this run's: they are
//! not compared. Another version of the stack (hypervisor, toolstack, host
//! kernel) is what the gate exists to catch: compared, and named beside
//! the figures, so that a regression is laid at its door.
//!
//! A simulated lab is known by its kind, its CPU count, as `host_kind`
//! says it: CI's machines of one kind differ in their CPU's exact model,
//! memory and kernel, and each must read as the same machine.

use crate::measure::{Machine, Provenance};
use serde::Serialize;
use std::fmt;

/// The accelerator, the lab's machines and the stack's versions that
/// produced a case's figures.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordedOn {
    /// As the provenance gives it, "tcg (auto: ...)": its first word is the
    /// accelerator, the rest why (wording that may change).
    pub accel: String,
    pub lab: Machines,
    pub stack: Stack,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Machines {
    /// Network-namespace hosts on one machine of `cpus` CPUs.
    Simulated { cpus: u32 },
    /// Each host in the inventory's order, with its machine (None: its
    /// libvirt did not tell).
    Real(Vec<(String, Option<Machine>)>),
}

/// The stack's versions, where known.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stack {
    pub hypervisor: Option<String>,
    pub toolstack: Option<String>,
    /// This machine's on a simulated lab; each host's, as its agent tells,
    /// on a real one.
    pub host_kernel: Option<String>,
}

impl Stack {
    fn versions(&self) -> [(&'static str, &Option<String>); 3] {
        [
            ("hypervisor", &self.hypervisor),
            ("toolstack", &self.toolstack),
            ("host kernel", &self.host_kernel),
        ]
    }
}

const ACCEL: &str = "accel: ";
const LAB: &str = "lab: ";
const SIMULATED: &str = "simulated, 2 network-namespace hosts on one machine (";
const REAL: &str = "real hosts";
const MACHINE_OF: &str = "machine of host ";
const UUID: &str = ", host UUID ";
const NOT_TOLD: &str = "not told by its libvirt";

/// A host's memory may differ by this share and still be the same
/// machine's: a kernel reserving a few MiB more, not a module added.
const MEMORY_TOLERANCE: f64 = 0.05;

impl RecordedOn {
    /// What `prov`'s figures were measured on.
    pub fn of(prov: &Provenance) -> RecordedOn {
        let known = |v: &str| Some(v.to_string()).filter(|v| !v.is_empty());
        let simulated = prov.real_hosts.is_empty();
        RecordedOn {
            accel: prov.accel.clone(),
            lab: if simulated {
                // Always given on a simulated lab.
                Machines::Simulated {
                    cpus: prov.host_cpus.unwrap_or_default(),
                }
            } else {
                Machines::Real(
                    prov.real_hosts
                        .iter()
                        .map(|h| (h.name.clone(), h.machine.clone().ok()))
                        .collect(),
                )
            },
            stack: Stack {
                hypervisor: known(version(&prov.hypervisor_version)),
                toolstack: known(&prov.toolstack_version),
                host_kernel: known(&prov.host_kernel),
            },
        }
    }

    /// The snapshot's lines, one fact each.
    pub fn lines(&self) -> Vec<String> {
        let mut lines = vec![
            format!("{ACCEL}{}", self.accel),
            format!("{LAB}{}", self.lab),
        ];
        if let Machines::Real(hosts) = &self.lab {
            lines.extend(hosts.iter().map(|(name, machine)| {
                let machine = match machine {
                    Some(m) => match &m.uuid {
                        Some(uuid) => format!("{m}{UUID}{uuid}"),
                        None => m.to_string(),
                    },
                    None => NOT_TOLD.into(),
                };
                format!("{MACHINE_OF}{name}: {machine}")
            }));
        }
        for (what, version) in self.stack.versions() {
            lines.extend(version.as_ref().map(|v| format!("{what}: {v}")));
        }
        lines
    }

    /// What a snapshot's `lines` say it was recorded on; None where they do
    /// not say (a snapshot written before they did).
    pub fn parse(text: &str) -> Option<RecordedOn> {
        let (mut accel, mut lab) = (None, None);
        let mut stack = Stack::default();
        for line in text.lines() {
            if let Some(a) = line.strip_prefix(ACCEL) {
                accel = Some(a.to_string());
            } else if let Some(l) = line.strip_prefix(LAB) {
                lab = Some(parse_lab(l)?);
            } else if let Some(host) = line.strip_prefix(MACHINE_OF) {
                let Some(Machines::Real(hosts)) = &mut lab else {
                    return None;
                };
                let (name, machine) = host.split_once(": ")?;
                hosts.push((name.to_string(), parse_machine(machine)));
            } else if let Some((what, v)) = line.split_once(": ") {
                let slot = match what {
                    "hypervisor" => &mut stack.hypervisor,
                    "toolstack" => &mut stack.toolstack,
                    "host kernel" => &mut stack.host_kernel,
                    _ => continue,
                };
                *slot = Some(v.to_string());
            }
        }
        Some(RecordedOn {
            accel: accel?,
            lab: lab?,
            stack,
        })
    }

    /// What differs in this run's from `baseline`'s (None: its snapshot
    /// does not say what it was recorded on).
    pub fn differences_from(&self, baseline: Option<&RecordedOn>) -> Differences {
        let Some(baseline) = baseline else {
            return Differences {
                machine: vec![Difference::new(
                    "machine",
                    "not stated in its snapshot",
                    &self.lab,
                )],
                versions: vec![],
            };
        };
        let mut machine = Vec::new();
        let accelerator = |accel: &str| accel.split_whitespace().next().map(str::to_string);
        if accelerator(&baseline.accel) != accelerator(&self.accel) {
            machine.push(Difference::new("accelerator", &baseline.accel, &self.accel));
        }
        match (&baseline.lab, &self.lab) {
            (Machines::Simulated { cpus: was }, Machines::Simulated { cpus: is }) if was != is => {
                machine.push(Difference::new("CPUs of the lab's machine", was, is));
            }
            (Machines::Real(was), Machines::Real(is)) => {
                let names = |hosts: &[(String, Option<Machine>)]| {
                    hosts
                        .iter()
                        .map(|(n, _)| n.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                if names(was) != names(is) {
                    machine.push(Difference::new("hosts", names(was), names(is)));
                } else {
                    for ((name, was), (_, is)) in was.iter().zip(is) {
                        machine.extend(host_differences(name, was.as_ref(), is.as_ref()));
                    }
                }
            }
            (Machines::Simulated { .. }, Machines::Simulated { .. }) => {}
            (was, is) => machine.push(Difference::new("lab", was, is)),
        }
        let versions = baseline
            .stack
            .versions()
            .into_iter()
            .zip(self.stack.versions())
            .filter_map(|((what, was), (_, is))| match (was, is) {
                (Some(was), Some(is)) if was != is => Some(Difference::new(what, was, is)),
                _ => None,
            })
            .collect();
        Differences { machine, versions }
    }
}

/// What differs between host `name`'s machine on the baseline and on this
/// run; a machine not told differs from any.
fn host_differences(name: &str, was: Option<&Machine>, is: Option<&Machine>) -> Vec<Difference> {
    let (Some(was), Some(is)) = (was, is) else {
        let told = |m: Option<&Machine>| m.map_or(NOT_TOLD.to_string(), Machine::to_string);
        return vec![Difference::new(
            format!("host {name}'s machine"),
            told(was),
            told(is),
        )];
    };
    let mut differences = Vec::new();
    let show = |uuid: &Option<String>| uuid.clone().unwrap_or_else(|| "none".into());
    if was.uuid != is.uuid {
        differences.push(Difference::new(
            format!("host {name}'s libvirt host UUID (another machine)"),
            show(&was.uuid),
            show(&is.uuid),
        ));
    }
    if was.cpus != is.cpus {
        differences.push(Difference::new(
            format!("host {name}'s CPUs"),
            was.cpus,
            is.cpus,
        ));
    }
    if was.cpu != is.cpu {
        differences.push(Difference::new(
            format!("host {name}'s CPU"),
            &was.cpu,
            &is.cpu,
        ));
    }
    let memory = |m: &Machine| m.memory_mib as f64;
    if (memory(is) / memory(was) - 1.0).abs() > MEMORY_TOLERANCE {
        differences.push(Difference::new(
            format!("host {name}'s memory"),
            format!("{} MiB", was.memory_mib),
            format!("{} MiB", is.memory_mib),
        ));
    }
    differences
}

/// The hypervisor's name and version, without what its backend adds in
/// parentheses (Xen's nested hosts and their boot times, measured anew each
/// case; CRIU's origin).
fn version(hypervisor: &str) -> &str {
    hypervisor.split(" (").next().unwrap_or(hypervisor)
}

fn parse_lab(text: &str) -> Option<Machines> {
    if text == REAL {
        return Some(Machines::Real(Vec::new()));
    }
    let cpus = text.strip_prefix(SIMULATED)?.strip_suffix(" CPUs)")?;
    Some(Machines::Simulated {
        cpus: cpus.parse().ok()?,
    })
}

/// A machine as `RecordedOn::lines` writes it (`Machine`'s Display, then
/// its UUID); None: not told, or not a machine.
fn parse_machine(text: &str) -> Option<Machine> {
    let (text, uuid) = match text.rsplit_once(UUID) {
        Some((machine, uuid)) => (machine, Some(uuid.to_string())),
        None => (text, None),
    };
    let (cpus, rest) = text.split_once(" CPUs (")?;
    let (cpu, memory) = rest.rsplit_once("), ")?;
    Some(Machine {
        cpus: cpus.parse().ok()?,
        cpu: cpu.to_string(),
        memory_mib: memory.strip_suffix(" MiB")?.parse().ok()?,
        uuid,
    })
}

/// `lines`' value of a lab.
impl fmt::Display for Machines {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Machines::Simulated { cpus } => write!(f, "{SIMULATED}{cpus} CPUs)"),
            Machines::Real(_) => f.write_str(REAL),
        }
    }
}

/// What differs between what a baseline and a run were recorded on.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Differences {
    /// The machine's: the baseline's figures are another machine's, not
    /// this run's to be compared with.
    pub machine: Vec<Difference>,
    /// The stack's versions: compared, and named beside the figures.
    pub versions: Vec<Difference>,
}

impl Differences {
    /// Whether the baseline's figures may be compared with the run's.
    pub fn comparable(&self) -> bool {
        self.machine.is_empty()
    }

    /// A line for each kind of difference there is, for the verdict and
    /// the case table.
    pub fn notes(&self) -> Vec<String> {
        let joined = |ds: &[Difference]| {
            ds.iter()
                .map(Difference::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        };
        let mut notes = Vec::new();
        if !self.machine.is_empty() {
            notes.push(format!(
                "not compared with the baseline, recorded on another machine: {}; \
                 this machine needs baselines of its own (README, \"Recording a lab's baselines\")",
                joined(&self.machine)
            ));
        }
        if !self.versions.is_empty() {
            notes.push(format!(
                "versions changed since the baseline (a change of the figures may be theirs): {}",
                joined(&self.versions)
            ));
        }
        notes
    }
}

/// One fact on which a baseline and a run differ.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Difference {
    pub what: String,
    pub baseline: String,
    pub run: String,
}

impl Difference {
    fn new(what: impl Into<String>, baseline: impl fmt::Display, run: impl fmt::Display) -> Self {
        Difference {
            what: what.into(),
            baseline: baseline.to_string(),
            run: run.to_string(),
        }
    }
}

/// "host a's CPU: baseline recorded on `x86_64, AMD EPYC-Rome`, this run on
/// `x86_64, Intel Skylake`".
impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: baseline recorded on `{}`, this run on `{}`",
            self.what, self.baseline, self.run
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::RealHost;
    use crate::report::fixtures::{epyc, provenance, rack, real_lab};
    use rstest::rstest;

    fn differences(baseline: &Provenance, run: &Provenance) -> Differences {
        RecordedOn::of(run).differences_from(Some(&RecordedOn::of(baseline)))
    }

    #[test]
    fn a_simulated_lab_is_its_kind_and_the_stack() {
        let on = RecordedOn::of(&provenance());
        assert_eq!(
            on.lines(),
            [
                "accel: tcg (kvm_pvm cannot run stock kernels)",
                "lab: simulated, 2 network-namespace hosts on one machine (2 CPUs)",
                "hypervisor: QEMU 7.2.22",
                "toolstack: libvirt 9.0.0",
                "host kernel: 6.18.0",
            ]
        );
    }

    #[test]
    fn a_real_lab_is_each_hosts_machine() {
        let on = RecordedOn::of(&real_lab(epyc(7940, "u-a"), None));
        assert_eq!(
            on.lines(),
            [
                "accel: kvm (auto: both hosts' libvirt offers KVM)",
                "lab: real hosts",
                "machine of host a: 4 CPUs (x86_64, AMD EPYC-Rome), 7940 MiB, host UUID u-a",
                "machine of host b: not told by its libvirt",
                "hypervisor: QEMU 8.2.2",
                "toolstack: libvirt 9.0.0",
                "host kernel: host a 6.1.0-50-amd64; host b 6.1.0-50-amd64",
            ]
        );
    }

    #[rstest]
    #[case::simulated(provenance())]
    #[case::real(rack())]
    #[case::not_told(real_lab(Machine { uuid: None, ..epyc(7940, "") }, None))]
    #[case::no_versions(Provenance {
        hypervisor_version: String::new(),
        toolstack_version: String::new(),
        host_kernel: String::new(),
        ..provenance()
    })]
    fn lines_read_back(#[case] prov: Provenance) {
        let on = RecordedOn::of(&prov);
        let text = format!(
            "ci::kvm-fv::mtu128::game\n{}\noutcome: as expected",
            on.lines().join("\n")
        );
        assert_eq!(RecordedOn::parse(&text), Some(on), "{text}");
    }

    #[test]
    fn a_snapshot_that_does_not_say_is_not_compared() {
        let old = "ci::kvm-pv::mtu128::game\n\
                   accel: tcg (auto: ...); host: local lab: 2 network-namespace hosts on one machine (2 CPUs)\n\
                   outcome: as expected";
        assert_eq!(RecordedOn::parse(old), None);
        let d = RecordedOn::of(&provenance()).differences_from(None);
        assert!(!d.comparable());
        assert_eq!(
            d.machine[0].to_string(),
            "machine: baseline recorded on `not stated in its snapshot`, this run on \
             `simulated, 2 network-namespace hosts on one machine (2 CPUs)`"
        );
    }

    /// Another CI machine of the kind: another CPU model, memory and
    /// kernel, and the accelerator's reason reworded.
    #[test]
    fn a_machine_of_the_same_kind_is_the_same_machine() {
        let other = Provenance {
            accel: "tcg (auto: /dev/kvm is missing)".into(),
            host_memory_mib: Some(7900.0),
            host_kernel: "6.18.1".into(),
            ..provenance()
        };
        let d = differences(&provenance(), &other);
        assert!(d.comparable(), "{d:?}");
        assert_eq!(
            d.versions,
            [Difference::new("host kernel", "6.18.0", "6.18.1")]
        );
    }

    #[test]
    fn the_same_real_lab_is_compared() {
        let d = differences(&rack(), &rack());
        assert_eq!(d, Differences::default());
        assert!(d.notes().is_empty());
        // A kernel reserving a little more of a host's memory.
        let d = differences(
            &rack(),
            &real_lab(epyc(7900, "u-a"), Some(epyc(7940, "u-b"))),
        );
        assert!(d.comparable(), "{d:?}");
    }

    #[test]
    fn another_cpu_model_is_not_compared_and_named() {
        let skylake = Machine {
            cpu: "x86_64, Intel Skylake-Server-IBRS".into(),
            ..epyc(7940, "u-b")
        };
        let d = differences(&rack(), &real_lab(epyc(7940, "u-a"), Some(skylake)));
        assert!(!d.comparable());
        assert_eq!(
            d.notes(),
            ["not compared with the baseline, recorded on another machine: host b's CPU: baseline \
              recorded on `x86_64, AMD EPYC-Rome`, this run on `x86_64, Intel Skylake-Server-IBRS`; \
              this machine needs baselines of its own (README, \"Recording a lab's baselines\")"]
        );
    }

    #[rstest]
    #[case::replaced_host(
        real_lab(epyc(7940, "u-a"), Some(epyc(7940, "u-c"))),
        "host b's libvirt host UUID (another machine)"
    )]
    #[case::memory_added(
        real_lab(epyc(15_988, "u-a"), Some(epyc(7940, "u-b"))),
        "host a's memory"
    )]
    #[case::fewer_cpus(real_lab(Machine { cpus: 2, ..epyc(7940, "u-a") }, Some(epyc(7940, "u-b"))), "host a's CPUs")]
    #[case::not_told(real_lab(epyc(7940, "u-a"), None), "host b's machine")]
    #[case::accelerator(Provenance { accel: "tcg (accel: tcg)".into(), ..rack() }, "accelerator")]
    #[case::other_host(Provenance {
        real_hosts: vec![rack().real_hosts[0].clone(), RealHost { name: "c".into(), ..rack().real_hosts[1].clone() }],
        ..rack()
    }, "hosts")]
    fn another_machine_is_not_compared(#[case] run: Provenance, #[case] what: &str) {
        let d = differences(&rack(), &run);
        let named: Vec<&str> = d.machine.iter().map(|d| d.what.as_str()).collect();
        assert_eq!(named, [what], "{d:?}");
    }

    /// The stand-in real lab's runs against a baseline of the simulated lab.
    #[test]
    fn a_simulated_labs_baseline_is_not_a_real_labs() {
        let d = differences(&provenance(), &rack());
        assert_eq!(
            d.machine.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
            [
                "accelerator: baseline recorded on `tcg (kvm_pvm cannot run stock kernels)`, this run on `kvm (auto: both hosts' libvirt offers KVM)`",
                "lab: baseline recorded on `simulated, 2 network-namespace hosts on one machine (2 CPUs)`, this run on `real hosts`",
            ]
        );
    }

    #[test]
    fn a_new_version_is_compared_and_named() {
        let newer = Provenance {
            hypervisor_version: "QEMU 9.0.0".into(),
            ..rack()
        };
        let d = differences(&rack(), &newer);
        assert!(d.comparable());
        assert_eq!(
            d.notes(),
            [
                "versions changed since the baseline (a change of the figures may be theirs): \
              hypervisor: baseline recorded on `QEMU 8.2.2`, this run on `QEMU 9.0.0`"
            ]
        );
    }

    #[rstest]
    #[case::qemu("QEMU 10.0.2", "QEMU 10.0.2")]
    #[case::xen(
        "Xen 4.17.5 (2 nested Xen hosts (two hosts), booted in 51234 ms, 50012 ms)",
        "Xen 4.17.5"
    )]
    #[case::criu(
        "CRIU 4.2.1 (Debian package 4.2.1-1, run from /var/lib/migsuite/criu)",
        "CRIU 4.2.1"
    )]
    fn a_hypervisors_version_leaves_out_what_was_measured(#[case] said: &str, #[case] v: &str) {
        assert_eq!(version(said), v);
    }
}
