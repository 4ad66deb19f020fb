//! The seam between the runner and the systems under test. A backend puts
//! the workload guest on the source host and evacuates it to the destination;
//! the runner does the rest (lab, failure, observation, sampling, verdict),
//! the same for every backend. A backend is a folder of its own: it
//! implements `Backend` and declares its `Descriptor` (the rows it runs,
//! its `Capabilities`, which suites are checked against before anything
//! runs, how it is made, what it asks of a lab's hosts); `REGISTRY` lists
//! the descriptors, and nothing outside a backend's folder names it.

pub mod criu;
pub mod kvm;
pub mod xen;

use crate::case::{Case, Hypervisor, Strategy};
use crate::inventory::{self, Inventory};
use crate::lab::{netns, Lab};
use crate::measure::Evacuation;
use crate::sampler::{Pids, ProcessProbe, Source};
use anyhow::Result;
use std::time::Instant;

/// Milliseconds from `from` to `to`; None unless both are known and in order.
pub fn span_ms(from: Option<Instant>, to: Option<Instant>) -> Option<f64> {
    let (from, to) = (from?, to?);
    (to >= from).then(|| (to - from).as_secs_f64() * 1000.0)
}

/// Versions and accelerator: what produced the numbers.
#[derive(Clone, Debug)]
pub struct BackendInfo {
    pub accel: String,
    pub hypervisor_version: String,
    pub toolstack_version: String,
    /// What a migration does with the guest's storage.
    pub storage: String,
}

pub trait Backend {
    fn info(&self) -> &BackendInfo;

    /// Why this host cannot run `case` (e.g. a kernel feature its strategy
    /// needs); asked once, before the lab is built.
    fn host_refusal(&self, _case: &Case) -> Option<String> {
        None
    }

    /// Makes the hosts ready for `case` before the lab is calibrated, e.g.
    /// nested hosts booted and wired to the lab. Nothing by default.
    fn prepare(&mut self, _lab: &Lab, _case: &Case) -> Result<()> {
        Ok(())
    }

    /// TCP goodput (Mbit/s) of the stream's path from source to
    /// destination where it is more than the lab's link (nested hosts
    /// or a real host's dom0 relay it), measured after `prepare`. None: the
    /// link is the path.
    fn stream_path_goodput(&self, _lab: &Lab) -> Option<Result<f64>> {
        None
    }

    /// Starts the guest on the source host, the agent's configuration in
    /// `agent_args` (kernel command line form). Returns once it is started;
    /// the runner waits for the agent's hello.
    fn provision(&mut self, lab: &Lab, case: &Case, agent_args: &str) -> Result<()>;

    /// Checks the guest the agent describes (`key=value` of its hello) is
    /// the one this backend meant to start, e.g. its device model.
    fn check_guest(&self, hello: &std::collections::BTreeMap<String, String>) -> Result<()>;

    /// Migrates the guest to the destination within the case's timeout,
    /// injecting the case's faults, reporting progress. Never hangs: a stalled migration is
    /// cancelled and reported as failed, leaving the source guest running.
    fn evacuate(&mut self, lab: &Lab, case: &Case, progress: &dyn Fn(&str)) -> Evacuation;

    /// Whether the guest still runs on the source host.
    fn running_on_source(&self) -> bool;

    /// Whether the migration stream crosses the lab's migration link (it
    /// does not when source and destination share one machine).
    fn stream_crosses_link(&self) -> bool {
        true
    }

    /// The guest moved and `lab`'s roles were swapped: its source is where
    /// the guest runs now. Makes ready to evacuate it from there, so that
    /// repeats migrate one booted guest back and forth.
    fn adopt_moved_guest(&mut self, lab: &Lab) -> Result<()>;

    /// What the sampler looks at: by default the processes of the hosts'
    /// namespaces (`namespace_processes`).
    fn sample_source(&self, lab: &Lab) -> Result<Source> {
        Ok(Source::Processes(namespace_processes(lab)?))
    }
}

/// What the sampler calls at every tick to find the guest's hypervisor
/// processes and the toolstack daemon of (source, destination) on simulated
/// hosts: everything running in a host's network namespace but its
/// libvirtd, which for QEMU guests is their QEMU processes.
pub fn namespace_processes(lab: &Lab) -> Result<ProcessProbe> {
    let hosts = [&lab.source, &lab.destination].map(|h| {
        h.simulated()
            .map(|s| (s.netns.name.clone(), s.libvirtd.pid() as i32))
    });
    let [source, destination] = hosts;
    let hosts = [source?, destination?];
    Ok(Box::new(move || {
        let mut pids = Pids::default();
        for (i, (ns, daemon)) in hosts.iter().enumerate() {
            pids.guest[i] = netns::processes(ns)
                .into_iter()
                .filter(|p| p != daemon)
                .collect();
            pids.toolstack[i] = Some(*daemon);
        }
        pids
    }))
}

/// A backend for a case, or why this build cannot run it.
pub type Made = Result<Box<dyn Backend>, String>;
/// What a host was found to offer, or what it lacks.
pub type Found = Result<String, String>;

/// A backend as the rest of migsuite knows it, declared in its folder and
/// listed in `REGISTRY`.
pub struct Descriptor {
    /// The rows it runs, by the names suites and inventories give them.
    pub rows: &'static [Hypervisor],
    pub capabilities: Capabilities,
    /// The backend for a case on the lab an inventory describes, or why
    /// this build cannot run it.
    pub new: fn(&Case, &Inventory) -> Made,
    pub host_needs: HostNeeds,
    /// Stops what it keeps running between its cases on lab pair `pair`
    /// (on every pair: None), when another backend's case comes.
    pub release: fn(Option<usize>),
    /// The processes it keeps running for lab pairs other than `pair`.
    pub kept_for_other_pairs: fn(usize) -> Vec<i32>,
}

/// What a backend asks of a lab's hosts, as `migsuite hosts` and an
/// inventory's `validate` check it.
pub struct HostNeeds {
    /// What a simulated host runs for it.
    pub simulated: &'static str,
    /// Why a real host needs `ssh` for it (None: its libvirt URI is enough).
    pub over_ssh: Option<&'static str>,
    /// Whether a real host runs `row`, asked of the host (whose libvirt
    /// driver is `driver`): what it found, or what is missing.
    pub survey: fn(host: &inventory::Host, row: Hypervisor, driver: Result<&str, &String>) -> Found,
    /// Where a real host's guest bridge is found, if not among libvirt's
    /// devices (a Xen dom0's): what was found, or what is missing.
    pub bridge: Option<fn(&inventory::Host) -> Found>,
}

/// Every backend of this build, in the study's order of rows.
pub static REGISTRY: [&Descriptor; 3] = [&xen::BACKEND, &criu::BACKEND, &kvm::BACKEND];

/// Every row this build runs, in `REGISTRY`'s order.
pub fn rows() -> Vec<Hypervisor> {
    REGISTRY
        .iter()
        .flat_map(|d| d.rows.iter().copied())
        .collect()
}

/// What inventories are checked against: the rows, and why a row needs a
/// real host's `ssh`.
pub fn catalog() -> inventory::Catalog {
    inventory::Catalog {
        rows: rows(),
        over_ssh,
    }
}

/// The backend that runs `row` (one that suites and inventories were
/// checked against: `rows`).
pub fn descriptor(row: Hypervisor) -> &'static Descriptor {
    REGISTRY
        .iter()
        .find(|d| d.rows.contains(&row))
        .unwrap_or_else(|| panic!("no backend runs {row}: add its descriptor to REGISTRY"))
}

/// Why a real host needs `ssh` for `row` (None: its libvirt URI is enough).
fn over_ssh(row: Hypervisor) -> Option<&'static str> {
    descriptor(row).host_needs.over_ssh
}

/// The backend for `case` on the lab `inventory` describes, or why this
/// build cannot run it.
pub fn for_hypervisor(case: &Case, inventory: &Inventory) -> Made {
    (descriptor(case.hypervisor).new)(case, inventory)
}

/// What a backend can do, as suites are checked against it before
/// anything runs; each backend declares its own.
pub struct Capabilities {
    /// The strategies it implements; a suite asking for another is refused
    /// when it is validated.
    pub strategies: &'static [Strategy],
    /// Those of its strategies that take a downtime limit (QEMU's
    /// `downtime-limit`).
    pub downtime_limit: &'static [Strategy],
    /// Whether its stream takes a bandwidth cap, multifd channels and TLS
    /// (QEMU's `max-bandwidth`, `multifd-channels` and `tls-creds`).
    pub stream_settings: bool,
    /// Whether it can migrate a guest to the host it runs on (the study's
    /// set-up).
    pub one_host: bool,
}

impl Capabilities {
    pub fn takes_downtime_limit(&self, strategy: Strategy) -> bool {
        self.downtime_limit.contains(&strategy)
    }
}

/// What the backend of `h` can do.
pub fn capabilities(h: Hypervisor) -> &'static Capabilities {
    &descriptor(h).capabilities
}

/// Stops what other backends keep running between their cases on lab pair
/// `pair` (the nested Xen hosts, which busy a core under TCG), so that no
/// case is measured beside its own pair's. (Another pair's, busy with a
/// case of its own, stays.)
pub fn release_unneeded(case: &Case, pair: usize) {
    for other in REGISTRY
        .iter()
        .filter(|d| !d.rows.contains(&case.hypervisor))
    {
        (other.release)(Some(pair));
    }
}

/// What backends keep running for other lab pairs than `pair`: other
/// cases' processes, though this one started them.
pub fn kept_for_other_pairs(pair: usize) -> Vec<i32> {
    REGISTRY
        .iter()
        .flat_map(|d| (d.kept_for_other_pairs)(pair))
        .collect()
}

/// For a backend that keeps nothing between its cases.
pub fn keeps_nothing(_pair: Option<usize>) {}

/// For a backend that keeps nothing for other pairs.
pub fn keeps_nothing_for_others(_pair: usize) -> Vec<i32> {
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_has_one_backend() {
        let rows = rows();
        for row in &rows {
            let backends = REGISTRY.iter().filter(|d| d.rows.contains(row));
            assert_eq!(backends.count(), 1, "{row}");
        }
        let mut names: Vec<&str> = rows.iter().map(|r| r.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), rows.len(), "a name given to two rows");
    }
}
