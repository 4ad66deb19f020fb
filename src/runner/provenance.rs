//! What produced a case's figures, for its report: the lab and its
//! machines, asked of the hosts where the lab is real.

use crate::backend::BackendInfo;
use crate::host_agent::probe;
use crate::lab::{Lab, Place};
use crate::measure::{Machine, Provenance, RealHost};
use crate::neighbours::Neighbours;
use anyhow::Result;
use std::collections::BTreeMap;

/// What produced a case's figures: the lab and its machine, what the
/// backend ran (`info`), the guest's own report (`hello`), and what ran
/// beside it.
pub(super) fn provenance(
    lab: &Lab,
    info: BackendInfo,
    hello: &BTreeMap<String, String>,
    beside: Neighbours,
) -> Provenance {
    // A real lab's hosts are not this machine: their CPUs, memory and
    // kernel are not the runner's to report.
    let this_machine = matches!(lab.source.place, Place::Simulated(_));
    let real_hosts: Vec<RealHost> = if this_machine {
        Vec::new()
    } else {
        // In the inventory's order, wherever the guest went.
        [lab.host(0), lab.host(1)]
            .map(|host| RealHost {
                name: host.name.clone(),
                machine: real_machine(lab, host),
            })
            .into()
    };
    let host_kind = if this_machine {
        format!(
            "local lab: 2 network-namespace hosts on one machine ({} CPUs)",
            num_cpus()
        )
    } else {
        let hosts: Vec<String> = real_hosts
            .iter()
            .map(|h| match &h.machine {
                Ok(machine) => format!("host {} {machine}", h.name),
                Err(e) => format!(
                    "host {} (its libvirt did not tell its machine: {e})",
                    h.name
                ),
            })
            .collect();
        format!("real lab: {}", hosts.join("; "))
    };
    Provenance {
        accel: info.accel,
        host_kind,
        lab: lab.inventory.describe(),
        storage: info.storage,
        hosts: format!("{} and {}", lab.host(0).name, lab.host(1).name),
        host_kernel: if this_machine {
            crate::sh::kernel_release()
        } else {
            real_kernels(lab)
        },
        hypervisor_version: info.hypervisor_version,
        toolstack_version: info.toolstack_version,
        guest_kernel: hello.get("kernel").cloned().unwrap_or_default(),
        migsuite_version: env!("CARGO_PKG_VERSION").to_string(),
        beside,
        host_cpus: this_machine.then(|| num_cpus() as u32),
        host_memory_mib: crate::procfs::meminfo_mib("MemTotal").filter(|_| this_machine),
        real_hosts,
    }
}

/// Each real host's kernel release as its agent tells it (libvirt does
/// not), in the inventory's order: "host a 6.1.0-50-amd64; host b ...".
fn real_kernels(lab: &Lab) -> String {
    let agents = lab.agents();
    let told = |host: &crate::lab::Host| -> Result<String> {
        let agents = agents.as_ref().map_err(|e| anyhow::anyhow!("{e:#}"))?;
        probe::ask::kernel(agents, &host.peer())
    };
    [lab.host(0), lab.host(1)]
        .map(|host| match told(host) {
            Ok(kernel) => format!("host {} {kernel}", host.name),
            Err(e) => format!("host {} not told ({e:#})", host.name),
        })
        .join("; ")
}

/// A real host's machine as its libvirt tells (`lab::capabilities::machine`), so that
/// figures and baselines say what they were measured on.
pub(super) fn real_machine(lab: &Lab, host: &crate::lab::Host) -> Result<Machine, String> {
    lab.connect(&host.uri)
        .and_then(|conn| {
            let capabilities = conn.capabilities().ok();
            Ok(crate::lab::capabilities::machine(
                &conn,
                capabilities.as_deref(),
            )?)
        })
        .map_err(|e| format!("{e:#}"))
}

fn num_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}
