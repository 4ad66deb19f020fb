//! kvm-fv and kvm-pv: QEMU guests driven through libvirt, migrated
//! peer-to-peer between the hosts' libvirtds over the migration link.

pub mod accel;
pub mod domain;
mod job;
mod migrate;

use super::{Backend, BackendInfo};
use crate::case::{Case, Hypervisor, Strategy};
use crate::guest::image::GuestImage;
use crate::inventory::Storage;
use crate::lab::cleanup::{self, OnInterrupt};
use crate::lab::identity::GuestIdentity;
use crate::lab::libvirtd::{self, version, Connection};
use crate::lab::owner::Owner;
use crate::lab::pool;
use crate::lab::{Lab, Place};
use crate::measure::Evacuation;
use crate::sampler::{Reported, Source};
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::time::Instant;
use virt::domain::{Domain, DomainState, DomainStateEnum};
use virt::sys;

const DISK_BYTES: u64 = 16 << 20;

/// Full virtualization: emulated e1000 and IDE devices.
pub const KVM_FV: Hypervisor = Hypervisor::row("kvm-fv");
/// Paravirtual devices: virtio NIC and disk.
pub const KVM_PV: Hypervisor = Hypervisor::row("kvm-pv");

/// QEMU under libvirt: pre-copy, post-copy (after one pass) and
/// auto-converge, each with a downtime limit; its stream takes a bandwidth
/// cap, multifd channels and TLS. libvirt refuses a destination that is its
/// source. A real host is reached through its libvirt URI alone.
pub static BACKEND: super::Descriptor = super::Descriptor {
    rows: &[KVM_FV, KVM_PV],
    capabilities: super::Capabilities {
        strategies: &[
            Strategy::Precopy,
            Strategy::Postcopy,
            Strategy::AutoConverge,
        ],
        downtime_limit: &[
            Strategy::Precopy,
            Strategy::Postcopy,
            Strategy::AutoConverge,
        ],
        stream_settings: true,
        one_host: false,
    },
    new: |case, _inventory| Kvm::new(case).map(|k| Box::new(k) as Box<dyn Backend>),
    host_needs: super::HostNeeds {
        simulated: "QEMU guests of this host's libvirtd",
        over_ssh: None,
        survey: |_host, row, driver| runs_qemu(row, driver),
        bridge: None,
    },
    release: super::keeps_nothing,
    kept_for_other_pairs: super::keeps_nothing_for_others,
};

/// Whether a real host runs `row`, given its libvirt driver: the KVM rows
/// need QEMU's.
fn runs_qemu(row: Hypervisor, driver: Result<&str, &String>) -> Result<String, String> {
    let driver = driver.map_err(|e| e.clone())?;
    if driver.eq_ignore_ascii_case("QEMU") {
        Ok(format!("libvirt's {driver} driver"))
    } else {
        Err(format!(
            "{row} needs libvirt's QEMU driver, and the URI reaches its {driver} driver"
        ))
    }
}

pub struct Kvm {
    hypervisor: Hypervisor,
    /// The guest's UUID, name, MAC and maker, new for each case.
    guest: GuestIdentity,
    image: GuestImage,
    info: BackendInfo,
    source: Option<(Connection, Domain)>,
    /// Both hosts' daemons, once the guest is started: where it is
    /// destroyed when the case ends, wherever it went.
    hosts: Vec<Connection>,
    /// On a real lab, what destroys it if the run is interrupted (a
    /// simulated host's daemon goes with its namespace, and the guest with it).
    _undo: Option<OnInterrupt>,
}

/// The guest's QEMU as the daemon behind `conn` reports it, if it runs
/// one (also while a migration comes in). Asked with NOWAIT: a figure that
/// would wait for the migration's job (the resident memory, at times) is
/// left out, rather than holding the sampler up until the job ends.
fn reported_by(conn: &Connection, guest: &GuestIdentity) -> Option<Reported> {
    let dom = find(conn, guest).ok()?;
    let mut doms = [unsafe { dom.as_ptr() }, std::ptr::null_mut()];
    let asked = Instant::now();
    let mut records: *mut sys::virDomainStatsRecordPtr = std::ptr::null_mut();
    let n = unsafe {
        sys::virDomainListGetStats(
            doms.as_mut_ptr(),
            sys::VIR_DOMAIN_STATS_CPU_TOTAL | sys::VIR_DOMAIN_STATS_BALLOON,
            &mut records,
            sys::VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT,
        )
    };
    let at = Instant::now();
    if records.is_null() {
        return None;
    }
    let get = |name: &std::ffi::CStr| -> Option<u64> {
        let first = unsafe { *records };
        if n < 1 || first.is_null() {
            return None;
        }
        let (params, nparams) = unsafe { ((*first).params, (*first).nparams) };
        let mut value = 0;
        let found =
            unsafe { sys::virTypedParamsGetULLong(params, nparams, name.as_ptr(), &mut value) };
        (found == 1).then_some(value)
    };
    let (cpu_ns, rss_kib) = (get(c"cpu.time"), get(c"balloon.rss"));
    unsafe { sys::virDomainStatsRecordListFree(records) };
    // An incoming QEMU reads 0 until libvirt knows its process.
    Some(Reported {
        cpu_ns: cpu_ns.filter(|&ns| ns > 0)?,
        rss_mib: rss_kib.map(|kib| kib as f64 / 1024.0),
        asked,
        at,
    })
}

/// The guest's domain on the host behind `conn`, found by its UUID.
fn find(conn: &Connection, guest: &GuestIdentity) -> Result<Domain, virt::error::Error> {
    conn.lookup_domain_by_uuid(guest.uuid)
}

impl Kvm {
    pub fn new(case: &Case) -> Result<Kvm, String> {
        // Before the source's connection, which a post-copy's event comes on.
        job::serve_events();
        let image = GuestImage::prepare().map_err(|e| format!("{e:#}"))?;
        let owner = Owner::this().map_err(|e| format!("{e:#}"))?;
        let info = BackendInfo {
            // Chosen with the hosts (`provision`).
            accel: String::new(),
            hypervisor_version: String::new(),
            toolstack_version: String::new(),
            storage: String::new(),
        };
        Ok(Kvm {
            hypervisor: case.hypervisor,
            guest: GuestIdentity::new(owner),
            image,
            info,
            source: None,
            hosts: Vec::new(),
            _undo: None,
        })
    }
}

fn is_running(dom: &Domain) -> bool {
    matches!(
        dom.state(),
        Ok((DomainStateEnum::Known(DomainState::Running), _))
    )
}

impl Backend for Kvm {
    fn info(&self) -> &BackendInfo {
        &self.info
    }

    fn provision(&mut self, lab: &Lab, case: &Case, agent_args: &str) -> Result<()> {
        for host in [&lab.source, &lab.destination] {
            self.hosts.push(lab.connect(&host.uri)?);
        }
        // KVM where the hosts can run it: this machine, whose namespaces
        // the simulated hosts are, or a real lab's machines, as their
        // libvirt says.
        let accel = match lab.source.place {
            Place::Simulated(_) => accel::choose(case.guest.accel)?,
            Place::Real => accel::choose_on(case.guest.accel, &self.hosts)?,
        };
        self.info.accel = accel.description.clone();
        let files = self.put_guest_files(lab)?;
        let conn = lab.connect(&lab.source.uri)?;
        self.info.hypervisor_version = format!("QEMU {}", version(conn.hyp_version()?));
        self.info.toolstack_version = format!("libvirt {}", version(conn.lib_version()?));
        let console = lab.shared_dir().join("console.log");
        let at = domain::Attachments {
            bridge: &lab.source.bridge,
            console: lab.inventory.simulated.then_some(console.as_path()),
        };
        let xml = domain::xml(&self.guest, case, &accel, &files, &at, agent_args);
        let dom = conn
            .create_domain_xml(&xml, 0)
            .context("starting the guest on the source host")?;
        if !lab.inventory.simulated {
            let uris = [&lab.source, &lab.destination].map(|h| h.uri.clone());
            let guest = self.guest.clone();
            self._undo = Some(cleanup::on_interrupt(move || {
                for uri in uris {
                    let conn = libvirtd::connect_within(&uri, pool::INTERRUPTED_WAIT);
                    let dom = conn.and_then(|c| Ok(find(&c, &guest)?));
                    if let Ok(dom) = dom {
                        let _ = dom.destroy();
                    }
                }
            }));
        }
        self.source = Some((conn, dom));
        Ok(())
    }

    fn check_guest(&self, hello: &BTreeMap<String, String>) -> Result<()> {
        let model = domain::device_model(self.hypervisor);
        let seen = |k: &str| hello.get(k).map(String::as_str).unwrap_or("none");
        anyhow::ensure!(
            seen("nic") == model.guest_nic_driver,
            "the guest's NIC is driven by {}, expected {} for {}",
            seen("nic"),
            model.guest_nic_driver,
            self.hypervisor
        );
        anyhow::ensure!(
            seen("disks").contains(&format!(":{}", model.guest_disk_driver)),
            "the guest's disks are {}, expected one on {} for {}",
            seen("disks"),
            model.guest_disk_driver,
            self.hypervisor
        );
        Ok(())
    }

    fn evacuate(&mut self, lab: &Lab, case: &Case, progress: &dyn Fn(&str)) -> Evacuation {
        match self.try_evacuate(lab, case, progress) {
            Ok(e) => e,
            Err(e) => Evacuation::failed(format!("{e:#}"), self.running_on_source()),
        }
    }

    fn running_on_source(&self) -> bool {
        self.source.as_ref().is_some_and(|(_, d)| is_running(d))
    }

    /// On a simulated lab, the QEMU processes of the hosts' namespaces; on
    /// a real one, what each host's libvirt reports of the guest's QEMU
    /// (its CPU time and resident memory).
    fn sample_source(&self, lab: &Lab) -> Result<Source> {
        if lab.inventory.simulated {
            return Ok(Source::Processes(super::namespace_processes(lab)?));
        }
        let hosts = [
            lab.connect(&lab.source.uri)?,
            lab.connect(&lab.destination.uri)?,
        ];
        let guest = self.guest.clone();
        Ok(Source::Reported(Box::new(move || {
            hosts.each_ref().map(|h| reported_by(h, &guest))
        })))
    }

    fn adopt_moved_guest(&mut self, lab: &Lab) -> Result<()> {
        let conn = lab.connect(&lab.source.uri)?;
        let dom = find(&conn, &self.guest).context("the migrated guest is not on its new host")?;
        self.source = Some((conn, dom));
        Ok(())
    }
}

impl Drop for Kvm {
    /// The guest goes with its case, from whichever host it is on (a
    /// simulated host's would also go with its daemon; a real one's would not).
    fn drop(&mut self) {
        self.source = None;
        for conn in &self.hosts {
            if let Ok(dom) = find(conn, &self.guest) {
                if let Err(e) = dom.destroy() {
                    eprintln!(
                        "migsuite: cannot destroy the guest {}: {e}",
                        self.guest.name
                    );
                }
            }
        }
    }
}

impl Kvm {
    /// The guest's kernel and initramfs in both hosts' pools (uploaded where
    /// missing), its disk a new volume in the source's. With local storage
    /// the destination gets the disk when the guest moves.
    fn put_guest_files(&mut self, lab: &Lab) -> Result<domain::GuestFiles> {
        let mut paths = Vec::new();
        for host in [&lab.source, &lab.destination] {
            let pool = lab.pool(host)?;
            let mut uploaded = Vec::new();
            let mut put = |what: &str, file: &std::path::Path| -> Result<String> {
                let (path, now) = pool.upload(what, file)?;
                if now {
                    uploaded.push(what.to_string());
                }
                Ok(path)
            };
            let kernel = put("kernel", &self.image.kernel)?;
            let initrd = put("initrd", &self.image.initrd)?;
            if !uploaded.is_empty() {
                eprintln!(
                    "migsuite: uploaded the guest's {} to host {}'s pool `{}`",
                    uploaded.join(" and "),
                    host.name,
                    host.pool
                );
            }
            paths.push((kernel, initrd));
        }
        // One domain definition serves both hosts: the volumes must sit at
        // one path on each.
        anyhow::ensure!(
            paths[0] == paths[1],
            "the guest's files are at {:?} on host {} and {:?} on host {}: migsuite needs the \
             hosts' pools at one path",
            paths[0],
            lab.source.name,
            paths[1],
            lab.destination.name
        );
        let disk = lab.create_disk(DISK_BYTES)?;
        self.info.storage = match lab.inventory.storage {
            Storage::Local => format!(
                "disk ({} MiB) copied with the guest (copy-storage migration, NBD over the migration link)",
                DISK_BYTES >> 20
            ),
            Storage::Shared => "disk on storage both hosts see: not copied".into(),
        };
        let (kernel, initrd) = paths.swap_remove(0);
        Ok(domain::GuestFiles {
            kernel,
            initrd,
            disk,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_real_host_runs_the_kvm_rows_through_qemus_driver() {
        assert!(runs_qemu(KVM_PV, Ok("QEMU")).is_ok());
        let err = runs_qemu(KVM_FV, Ok("LXC")).unwrap_err();
        assert!(err.contains("kvm-fv needs libvirt's QEMU driver"), "{err}");
        let down = "connection lost".to_string();
        assert_eq!(runs_qemu(KVM_FV, Err(&down)), Err(down));
    }
}
