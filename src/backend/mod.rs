//! The seam between the runner and the systems under test. A backend puts
//! the workload guest on the source host and evacuates it to the destination;
//! the runner does the rest (lab, failure, observation, sampling, verdict),
//! the same for every backend. A backend is a folder of its own: it
//! implements `Backend`, declares its `Capabilities` (which suites check
//! against before anything runs), and is named here, in `for_hypervisor`
//! and `capabilities`, and nowhere else.

pub mod criu;
pub mod kvm;
pub mod xen;

use crate::case::{Case, Hypervisor, Strategy};
use crate::inventory::Inventory;
use crate::lab::{netns, Lab};
use crate::measure::{Outcome, Phases};
use crate::sampler::{Pids, ProcessProbe, Source};
use anyhow::Result;
use std::time::Instant;

/// One poll of a migration's progress.
#[derive(Clone, Debug)]
pub struct Progress {
    pub at: Instant,
    pub transferred_bytes: u64,
    pub remaining_bytes: u64,
    pub pass: u64,
    pub dirty_bytes_s: Option<u64>,
    pub bytes_s: Option<u64>,
    /// The downtime the hypervisor expects if it switched over now (QEMU's
    /// estimate from its last pass), ms.
    pub expected_downtime_ms: Option<u64>,
}

/// What the backend learnt from one evacuation.
#[derive(Debug, Default)]
pub struct Evacuation {
    pub outcome: Outcome,
    /// When the evacuation was over: the guest known to run on the
    /// destination with all its memory there (after post-copy, later than
    /// its resume).
    pub completed_at: Option<Instant>,
    pub reported_total_ms: Option<f64>,
    pub reported_downtime_ms: Option<f64>,
    /// The downtime limit the hypervisor was given (None: it takes none).
    pub downtime_limit_ms: Option<f64>,
    pub setup_time_ms: Option<f64>,
    pub bytes_transferred: Option<u64>,
    pub memory_iterations: Option<u64>,
    /// Each backend knows its own sequence; counted from the start of the
    /// evacuation, which is the warning.
    pub phases: Phases,
    /// How long the stream was busy moving `bytes_transferred`, ms; needed
    /// only where no counter of a simulated lab's link tells it (a stream
    /// that does not cross the link, a real lab's).
    pub stream_ms: Option<f64>,
    pub progress: Vec<Progress>,
}

/// Milliseconds from `from` to `to`; None unless both are known and in order.
pub fn span_ms(from: Option<Instant>, to: Option<Instant>) -> Option<f64> {
    let (from, to) = (from?, to?);
    (to >= from).then(|| (to - from).as_secs_f64() * 1000.0)
}

impl Evacuation {
    /// A migration that did not complete: nothing measured but why.
    pub fn failed(reason: String, source_survived: bool) -> Evacuation {
        Evacuation {
            outcome: Outcome::Failed {
                reason,
                source_survived,
            },
            ..Default::default()
        }
    }
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

/// The backend for `case` on the lab `inventory` describes, or why this
/// build cannot run it.
pub fn for_hypervisor(case: &Case, inventory: &Inventory) -> Result<Box<dyn Backend>, String> {
    match case.hypervisor {
        Hypervisor::KvmFv | Hypervisor::KvmPv => {
            kvm::Kvm::new(case).map(|k| Box::new(k) as Box<dyn Backend>)
        }
        Hypervisor::XenPv | Hypervisor::XenHvm => {
            xen::Xen::new(case, inventory.simulated).map(|x| Box::new(x) as Box<dyn Backend>)
        }
        // A real lab's hosts run their own CRIU; the runner needs none.
        Hypervisor::Openvz if !inventory.simulated => {
            Ok(Box::new(criu::remote::hosts::OnRealHosts::new()))
        }
        Hypervisor::Openvz => criu::OpenVz::new(case).map(|c| Box::new(c) as Box<dyn Backend>),
    }
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
    /// Whether the nested hosts it boots stay up between its cases (other
    /// backends' cases stop them first).
    pub keeps_hosts_between_cases: bool,
    /// Whether a real host's guest bridge is in a Xen dom0, where the
    /// host's libvirt does not see it.
    pub bridge_in_dom0: bool,
}

impl Capabilities {
    pub fn takes_downtime_limit(&self, strategy: Strategy) -> bool {
        self.downtime_limit.contains(&strategy)
    }
}

/// What the backend of `h` can do.
pub fn capabilities(h: Hypervisor) -> &'static Capabilities {
    match h {
        Hypervisor::KvmFv | Hypervisor::KvmPv => &kvm::CAPABILITIES,
        Hypervisor::Openvz => &criu::CAPABILITIES,
        Hypervisor::XenPv | Hypervisor::XenHvm => &xen::CAPABILITIES,
    }
}

/// Stops what a backend keeps running between its cases on lab pair
/// `pair` (the nested Xen hosts, which busy a core under TCG) when `case`
/// is not one of them, so that no case is measured beside its own pair's.
/// (Another pair's, busy with a case of its own, stays.)
pub fn release_unneeded(case: &Case, pair: usize) {
    if !capabilities(case.hypervisor).keeps_hosts_between_cases {
        xen::shutdown_shared_hosts(Some(pair));
    }
}

/// What backends keep running for other lab pairs than `pair` (nested Xen
/// hosts): other cases' processes, though this one started them.
pub fn kept_for_other_pairs(pair: usize) -> Vec<i32> {
    xen::other_pairs_hosts(pair)
}
