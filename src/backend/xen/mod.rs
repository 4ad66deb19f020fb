//! xen-pv and xen-hvm: a domU on nested Xen lab hosts (QEMU VMs running Xen
//! 4.17 with a dom0 and the xl toolstack), migrated with real `xl migrate`.
//!
//! Topology `two-hosts` (the default, what every row does): one Xen host
//! behind each lab host; `xl migrate -s "" x0 "migsuite-send-to <dom0 B>"`
//! sends the stream from dom0 A through lab host a, the migration link
//! (the case's MTU and rate) and lab host b to dom0 B's migsuite-listen,
//! which feeds `xl migrate-receive` (no ssh: a TCP connection per
//! migration). Topology `one-host`: both ends in one Xen host, as the study
//! ran them (the stream is a pipe in dom0).
//!
//! Xen hosts boot once per process (tens of seconds under TCG) and are
//! reused by the Xen cases that follow one another: `shared_hosts`; a case
//! of another backend stops them first (`BACKEND.release`). Per
//! case each is wired to its lab host (its dom0 bridge joins the host's br0,
//! with the case's MTU), so the domU's heartbeats reach the observer like a
//! KVM guest's.

mod channel;
pub mod dom0;
pub mod host;
mod hvm;
mod migrate;
pub mod remote;
mod shared;
mod survey;
mod toolstack;

use super::{Backend, BackendInfo};
use crate::case::{AccelChoice, Case, Hypervisor, Strategy, Topology};
use crate::guest::image::GuestImage;
use crate::lab::Lab;
use crate::measure::Evacuation;
use crate::sampler::{Pids, Source};
use anyhow::{bail, Context, Result};
use dom0::RUN;
use migrate::{dom0_goodput, CALIBRATION_MIB, CALIBRATION_SECS};
use remote::RemoteDom0;
use shared::{other_pairs_hosts, shared_hosts, shutdown_shared_hosts};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use toolstack::Dom0;
pub use toolstack::Versions;

pub const DOMAIN_NAME: &str = "x0";
/// The domU's MAC: Xen's OUI.
const GUEST_MAC: &str = "00:16:3e:4d:53:01";
const XL_TIMEOUT: Duration = Duration::from_secs(120);
/// Where a destination dom0's migsuite-listen takes the stream.
const MIGRATION_PORT: u16 = 5500;

/// A paravirtualised domU.
pub const XEN_PV: Hypervisor = Hypervisor::row("xen-pv");
/// A fully virtualised domU (QEMU's device model in dom0).
pub const XEN_HVM: Hypervisor = Hypervisor::row("xen-hvm");

/// `xl migrate`: pre-copy and nothing else, no downtime limit, no stream
/// settings; it can migrate a domU within its host (the study's set-up).
/// The nested hosts stay up between Xen cases; a real host is reached in
/// its dom0 over ssh, where its guest bridge is.
pub static BACKEND: super::Descriptor = super::Descriptor {
    rows: &[XEN_PV, XEN_HVM],
    capabilities: super::Capabilities {
        strategies: &[Strategy::Precopy],
        downtime_limit: &[],
        stream_settings: false,
        one_host: true,
    },
    new: |case, inventory| {
        Xen::new(case, inventory.simulated).map(|x| Box::new(x) as Box<dyn Backend>)
    },
    host_needs: super::HostNeeds {
        simulated: "nested Xen hosts migsuite starts",
        over_ssh: Some("the Xen rows run `xl` in the host's dom0"),
        survey: |host, row, _driver| survey::xen_on(host, row),
        bridge: Some(survey::bridge_in_dom0),
    },
    release: shutdown_shared_hosts,
    kept_for_other_pairs: other_pairs_hosts,
};

pub struct Xen {
    hypervisor: Hypervisor,
    image: GuestImage,
    info: BackendInfo,
    topology: Topology,
    /// The Xen hosts of the case: behind lab hosts a and b (two-hosts), or
    /// the one behind a (one-host); a real lab's hosts themselves.
    hosts: Vec<Arc<dyn Dom0>>,
    /// The domU's UUID: what a real dom0 knows the case's domU by when it
    /// cleans up.
    domu: uuid::Uuid,
    /// Whether the hosts are the simulated lab's nested ones.
    nested: bool,
    /// The lab host whose Xen host runs the domU now.
    on: u8,
    /// The domU's id on the source (before the migration).
    source_domid: Option<u32>,
    migrated: bool,
    /// Where each host's serial console stood when the case began.
    console_from: Vec<usize>,
    console_path: Option<std::path::PathBuf>,
}

impl Xen {
    /// `nested`: the Xen hosts are the simulated lab's own; otherwise a
    /// real lab's, driven in their dom0 over ssh.
    pub fn new(case: &Case, nested: bool) -> Result<Xen, String> {
        if case.guest.accel == AccelChoice::Kvm {
            return Err(format!(
                "{}: the suite forces accel: kvm, but a Xen domU runs under Xen, not KVM",
                case.hypervisor
            ));
        }
        // Xen PV guests get xen-netfront; HVM guests the emulated e1000.
        let image = GuestImage::prepare_with(&["xen_netfront"]).map_err(|e| format!("{e:#}"))?;
        let xen = |accel: &str| Xen {
            hypervisor: case.hypervisor,
            image: image.clone(),
            info: BackendInfo {
                accel: accel.into(),
                hypervisor_version: String::new(),
                toolstack_version: String::new(),
                storage: "no disk: the domU runs from its initramfs".into(),
            },
            topology: case.migration.topology,
            hosts: Vec::new(),
            domu: uuid::Uuid::new_v4(),
            nested,
            on: 0,
            source_domid: None,
            migrated: false,
            console_from: Vec::new(),
            console_path: None,
        };
        if !nested {
            return Ok(xen(
                "xen on the lab's hosts (dom0 over ssh; the stream dom0 to dom0 over TCP, opened with a one-time token)",
            ));
        }
        // One host: both guests (source and incoming) fit next to dom0.
        let (guests, times) = match case.migration.topology {
            Topology::OneHost => (2, "twice"),
            Topology::TwoHosts => (1, "once"),
        };
        let room = (host::HOST_MEMORY_MIB - host::DOM0_MEMORY_MIB - 256) / guests;
        if case.guest.memory_mib > room {
            return Err(format!(
                "{}: guest memory {} MiB does not fit the nested Xen host {times} (at most {room} MiB: {} MiB host, {} MiB dom0)",
                case.hypervisor,
                case.guest.memory_mib,
                host::HOST_MEMORY_MIB,
                host::DOM0_MEMORY_MIB
            ));
        }
        Ok(xen(match case.migration.topology {
            Topology::TwoHosts => "tcg (nested: 2 Xen hosts in QEMU TCG, -cpu qemu64,+svm,+npt; dom0 to dom0 over the migration link)",
            Topology::OneHost => "tcg (nested: 1 Xen host in QEMU TCG, -cpu qemu64,+svm,+npt; both ends on it, as in the study)",
        }))
    }

    /// A session in the dom0 of each of the lab's hosts `behind`, opened
    /// side by side, the domU's files copied there.
    fn open_sessions(&self, lab: &Lab, behind: &[u8]) -> Result<Vec<Arc<dyn Dom0>>> {
        let session = uuid::Uuid::new_v4().simple().to_string();
        let (domu, image) = (&self.domu, &self.image);
        let opened: Vec<Result<RemoteDom0>> = std::thread::scope(|scope| {
            let opens: Vec<_> = behind
                .iter()
                .map(|&i| {
                    let (host, session) = (lab.host(i), &session);
                    scope.spawn(move || {
                        RemoteDom0::open(host, session, domu, &image.kernel, &image.initrd)
                    })
                })
                .collect();
            opens
                .into_iter()
                .map(|o| {
                    o.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("opening a Xen session panicked")))
                })
                .collect()
        });
        let hosts = opened
            .into_iter()
            .map(|o| o.map(|d| Arc::new(d) as Arc<dyn Dom0>))
            .collect::<Result<Vec<_>>>()?;
        for h in &hosts {
            let there = h.sh(&format!("xl list {DOMAIN_NAME}"), Duration::from_secs(20))?;
            anyhow::ensure!(
                there.status != 0,
                "host {} already runs a domain {DOMAIN_NAME}, which this case did not make: remove it (xl destroy {DOMAIN_NAME}) or use another host",
                lab.host(h.index()).name
            );
        }
        Ok(hosts)
    }

    /// The Xen host behind lab host `index` (in one-host, the only one).
    fn host(&self, index: u8) -> Result<&Arc<dyn Dom0>> {
        let i = match self.topology {
            Topology::OneHost => 0,
            Topology::TwoHosts => index as usize,
        };
        self.hosts.get(i).context("no Xen host")
    }

    /// xl's configuration of the domU, with its files where `layout` says.
    fn domain_config(
        &self,
        case: &Case,
        agent_args: &str,
        layout: &toolstack::Layout,
    ) -> Vec<String> {
        let mib = case.guest.memory_mib;
        let mut lines = vec![
            format!("name=\"{DOMAIN_NAME}\""),
            format!("uuid=\"{}\"", self.domu),
            format!("kernel=\"{}\"", layout.kernel),
            format!("ramdisk=\"{}\"", layout.initrd),
            format!("memory={mib}"),
            format!("maxmem={mib}"),
            format!("vcpus={}", case.guest.vcpus),
            "on_crash=\"preserve\"".into(),
        ];
        match self.hypervisor {
            XEN_HVM => lines.extend(hvm::config(agent_args, GUEST_MAC, layout)),
            _ => lines.extend([
                "type=\"pv\"".into(),
                format!("extra=\"console=hvc0 {agent_args}\""),
                format!("vif=[\"{}\"]", vif(GUEST_MAC, layout, None)),
            ]),
        }
        lines
    }

    /// dom0's view of a domU on the Xen host behind lab host `on`: (domid,
    /// state flags) of `name`.
    fn domain(&self, on: u8, name: &str) -> Option<(u32, String)> {
        let a = self
            .host(on)
            .ok()?
            .sh(
                &format!("xl list {name} | tail -n +2"),
                Duration::from_secs(20),
            )
            .ok()?;
        if a.status != 0 {
            return None;
        }
        let f: Vec<&str> = a.output.split_whitespace().collect();
        Some((f.get(1)?.parse().ok()?, f.get(4)?.to_string()))
    }

    /// Removes whatever an earlier case left in the nested hosts, which are
    /// this process's alone. (A real dom0's session removes the case's
    /// domU itself, by its UUID.)
    fn destroy_leftovers(&self) -> Result<()> {
        if !self.nested {
            return Ok(());
        }
        for h in &self.hosts {
            h.sh(
                &format!("migsuite-kill-receiver; for d in {DOMAIN_NAME} {DOMAIN_NAME}--incoming {DOMAIN_NAME}--migratedaway; do xl destroy $d 2>/dev/null; done; true"),
                XL_TIMEOUT,
            )?;
        }
        Ok(())
    }

    /// Copies the domU console (as xenconsoled logged it in each dom0) and
    /// the Xen hosts' serial consoles of this case into the lab's console.log.
    fn save_console(&self) {
        let Some(path) = self.console_path.as_ref() else {
            return;
        };
        let mut text = String::new();
        for (h, from) in self.hosts.iter().zip(&self.console_from) {
            let guest = h
                .sh(
                    &format!(
                        "cat {}/guest-{DOMAIN_NAME}*.log {} 2>/dev/null; true",
                        h.layout().console_logs,
                        h.layout().serial_log
                    ),
                    Duration::from_secs(20),
                )
                .map(|a| a.output)
                .unwrap_or_else(|e| format!("(domU console unavailable: {e:#})"));
            // The last migration's xl logs (dom0 timestamps), debug lines left out.
            let xl = h
                .sh(
                    &format!("cd \"{RUN}\" 2>/dev/null && for f in send.log recv.log recv.err listen.err; do [ -s $f ] && echo \"-- $f\" && grep -v ': debug: ' $f | tail -n 60; done; true"),
                    Duration::from_secs(20),
                )
                .map(|a| a.output)
                .unwrap_or_default();
            text.push_str(&format!(
                "---- domU console on Xen host {i} ----\n{guest}\n\
                 ---- xl on Xen host {i} ----\n{xl}\n",
                i = h.index()
            ));
            if let Some(serial) = h.machine_console() {
                let serial = serial.get((*from).min(serial.len())..).unwrap_or("");
                text.push_str(&format!(
                    "---- Xen host {} serial console (Xen and dom0) during this case ----\n{serial}\n",
                    h.index()
                ));
            }
        }
        let _ = std::fs::write(path, text);
    }
}

/// xl's description of the domU's NIC: on `layout`'s bridge, through its
/// hotplug script, of `model` (HVM's emulated NIC) if given.
fn vif(mac: &str, layout: &toolstack::Layout, model: Option<&str>) -> String {
    let mut spec = format!("mac={mac},bridge={}", layout.bridge);
    if let Some(m) = model {
        spec.push_str(&format!(",model={m}"));
    }
    if let Some(script) = layout.vif_script {
        spec.push_str(&format!(",script={script}"));
    }
    spec
}

fn state_running(flags: &str) -> bool {
    // xl's state column: r b p s c d (running, blocked, paused, shutdown,
    // crashed, dying); blocked is a running guest waiting for an event.
    !flags.contains('p') && !flags.contains('s') && !flags.contains('c') && !flags.contains('d')
}

impl Backend for Xen {
    fn info(&self) -> &BackendInfo {
        &self.info
    }

    fn prepare(&mut self, lab: &Lab, case: &Case) -> Result<()> {
        let behind: &[u8] = match self.topology {
            Topology::OneHost => &[0],
            Topology::TwoHosts => &[0, 1],
        };
        self.hosts = if self.nested {
            let hosts = shared_hosts(&self.image, lab.pair, behind)?;
            for h in &hosts {
                h.attach(lab.host(h.index), &case.link)
                    .with_context(|| format!("wiring Xen host {} to the lab", h.index))?;
            }
            hosts.into_iter().map(|h| h as Arc<dyn Dom0>).collect()
        } else {
            self.open_sessions(lab, behind)?
        };
        self.console_from = self
            .hosts
            .iter()
            .map(|h| h.machine_console().map_or(0, |c| c.len()))
            .collect();
        self.console_path = Some(lab.shared_dir().join("console.log"));
        let came_up: Vec<String> = self.hosts.iter().map(|h| h.came_up()).collect();
        self.info.hypervisor_version = format!(
            "{} ({} Xen host{} ({}): {})",
            self.hosts[0].versions().xen,
            self.hosts.len(),
            if self.hosts.len() > 1 { "s" } else { "" },
            self.topology,
            came_up.join("; ")
        );
        self.info.toolstack_version = self.hosts[0].versions().toolstack.clone();
        self.destroy_leftovers()?;
        Ok(())
    }

    /// What dom0 to dom0 carries, through the relays an `xl migrate`
    /// stream takes: the nested hosts' dom0s carry far less than the link,
    /// and a real lab's may too.
    fn stream_path_goodput(&self, lab: &Lab) -> Option<Result<f64>> {
        (self.topology == Topology::TwoHosts).then(|| {
            let (src, dst) = (
                self.host(lab.source.index)?,
                self.host(lab.destination.index)?,
            );
            let to = self.ready_receiver(lab, src.as_ref(), dst.as_ref(), "migsuite-sink")?;
            dom0_goodput(
                src.as_ref(),
                dst.as_ref(),
                &format!(
                    "migsuite-send-zeros {to} {MIGRATION_PORT} {CALIBRATION_MIB} {CALIBRATION_SECS}"
                ),
            )
            .inspect_err(|_| {
                // Nothing of a cut calibration may listen on into the case.
                let _ = dst.sh("migsuite-kill-receiver", Duration::from_secs(10));
            })
            .context("calibrating the stream's path from dom0 to dom0")
        })
    }

    fn provision(&mut self, lab: &Lab, case: &Case, agent_args: &str) -> Result<()> {
        self.on = lab.source.index;
        let h = self.host(self.on)?.clone();
        let layout = h.layout().clone();
        h.check(
            &format!(
                "rm -f {}/guest-{DOMAIN_NAME}*.log {}",
                layout.console_logs, layout.serial_log
            ),
            Duration::from_secs(10),
        )?;
        let cfg: Vec<String> = self
            .domain_config(case, agent_args, &layout)
            .into_iter()
            .map(|l| format!("'{l}'"))
            .collect();
        h.check(
            &format!("printf '%s\\n' {} > {}", cfg.join(" "), layout.config),
            Duration::from_secs(10),
        )?;
        let created = h.sh(&format!("xl create {}", layout.config), XL_TIMEOUT)?;
        if created.status != 0 {
            self.save_console();
            bail!(
                "xl create of the {} domU failed: {}",
                self.hypervisor,
                created.output.trim()
            );
        }
        let (domid, _) = self
            .domain(self.on, DOMAIN_NAME)
            .context("the domU is not listed after xl create")?;
        self.source_domid = Some(domid);
        if self.hypervisor == XEN_HVM {
            let took = hvm::wait_for_init(h.as_ref(), domid, hvm::INIT_TIMEOUT);
            self.save_console();
            self.info.hypervisor_version +=
                &format!("; HVM domU kernel to init in {} ms", took?.as_millis());
        }
        Ok(())
    }

    fn check_guest(&self, hello: &BTreeMap<String, String>) -> Result<()> {
        let h = self.host(self.on)?;
        let domid = self.source_domid.context("no domU")?;
        let seen = |k: &str| hello.get(k).map(String::as_str).unwrap_or("none");
        let ty = h.check(
            &format!("xl list -l {domid} | grep -m1 '\"type\"'"),
            Duration::from_secs(20),
        )?;
        let want = if self.hypervisor == XEN_HVM {
            "hvm"
        } else {
            "pv"
        };
        anyhow::ensure!(
            ty.contains(&format!("\"{want}\"")),
            "xl says the domU's type is {}, expected {want}",
            ty.trim()
        );
        match self.hypervisor {
            XEN_HVM => anyhow::ensure!(
                seen("nic") == "e1000",
                "the guest's NIC is driven by {}, expected e1000 (emulated) for xen-hvm",
                seen("nic")
            ),
            _ => {
                // netfront's device is no PCI device, which the agent names
                // "unknown"; the back-end must be connected (XenbusStateConnected = 4).
                anyhow::ensure!(
                    !seen("nic").starts_with("e1000") && !seen("nic").starts_with("virtio"),
                    "the guest's NIC is driven by {}, expected xen-netfront for xen-pv",
                    seen("nic")
                );
                let state = h.check(
                    &format!("xenstore-read backend/vif/{domid}/0/state"),
                    Duration::from_secs(20),
                )?;
                anyhow::ensure!(
                    state.trim() == "4",
                    "the domU's vif back-end is in state {} (4 = connected expected)",
                    state.trim()
                );
            }
        }
        Ok(())
    }

    fn evacuate(&mut self, lab: &Lab, case: &Case, progress: &dyn Fn(&str)) -> Evacuation {
        let e = match self.try_evacuate(lab, case, progress) {
            Ok(e) => e,
            Err(e) => Evacuation::failed(format!("{e:#}"), self.running_on_source()),
        };
        self.save_console();
        e
    }

    /// Two hosts: dom0 to dom0 over the migration link. One host: a pipe
    /// in dom0.
    fn stream_crosses_link(&self) -> bool {
        self.topology == Topology::TwoHosts
    }

    /// The received domain is the next run's source (the lab has swapped
    /// roles: its source is where the domU now runs).
    fn adopt_moved_guest(&mut self, lab: &Lab) -> Result<()> {
        self.on = lab.source.index;
        let (domid, _) = self
            .domain(self.on, DOMAIN_NAME)
            .context("no domain x0 after the migration")?;
        self.source_domid = Some(domid);
        self.migrated = false;
        Ok(())
    }

    fn running_on_source(&self) -> bool {
        if self.migrated {
            return false;
        }
        let Some(domid) = self.source_domid else {
            return false;
        };
        self.domain(self.on, &domid.to_string())
            .is_some_and(|(_, flags)| state_running(&flags))
    }

    /// A nested Xen host is one QEMU process (Xen, dom0 and every domU;
    /// its toolstack, xl and xenstored, runs inside it): the source's and
    /// the destination's are sampled as their hypervisors. In one-host
    /// both ends are the same process, counted once, on the source. A real
    /// host is asked (`RemoteDom0::report`).
    fn sample_source(&self, lab: &Lab) -> Result<Source> {
        if !self.nested {
            let ends = [lab.source.index, lab.destination.index].map(|i| self.host(i).cloned());
            let [source, destination] = ends;
            let (source, destination) = (source?, destination?);
            let same = Arc::ptr_eq(&source, &destination);
            return Ok(Source::Reported(Box::new(move || {
                [
                    source.report(),
                    (!same).then(|| destination.report()).flatten(),
                ]
            })));
        }
        let pid = |index| self.host(index).ok().and_then(|h| h.qemu_pid());
        let source = pid(lab.source.index);
        let destination = pid(lab.destination.index).filter(|d| Some(*d) != source);
        Ok(Source::Processes(Box::new(move || {
            let mut pids = Pids::default();
            pids.guest[0] = source.into_iter().collect();
            pids.guest[1] = destination.into_iter().collect();
            pids
        })))
    }
}

impl Drop for Xen {
    fn drop(&mut self) {
        if !self.hosts.is_empty() {
            let _ = self.destroy_leftovers();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xl_states() {
        assert!(state_running("r-----"));
        assert!(state_running("-b----"));
        assert!(state_running("------"));
        assert!(!state_running("--p---"));
        assert!(!state_running("---s--"));
    }

    /// Boots the real Xen host and runs xl in its dom0 (minutes under TCG):
    /// `cargo test --lib xen_host_boots -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn xen_host_boots() {
        let image = GuestImage::prepare_with(&["xen_netfront"]).unwrap();
        for h in shared_hosts(&image, 0, &[0, 1]).unwrap() {
            eprintln!(
                "host {}: boot {} ms, {}, {}",
                h.index,
                h.boot_ms,
                h.versions().xen,
                h.versions().toolstack
            );
            eprintln!("{}", h.check("xl list", Duration::from_secs(30)).unwrap());
            // Each `;;`-separated command of XEN_PROBE_CMDS, on every host.
            for c in std::env::var("XEN_PROBE_CMDS")
                .unwrap_or_default()
                .split(";;")
            {
                if !c.trim().is_empty() {
                    eprintln!("==== {c}\n{:?}", h.sh(c, Duration::from_secs(60)));
                }
            }
        }
        shutdown_shared_hosts(None);
    }
}

#[cfg(test)]
mod probe {
    use super::*;
    use std::time::Instant;

    /// Both Xen hosts wired to a lab at MTU $XEN_PROBE_MTU (1500), then
    /// XEN_PROBE_SRC's `;;`-separated commands on host 0 after XEN_PROBE_DST's
    /// on host 1: `cargo test --lib xen_hosts_on_a_lab -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn xen_hosts_on_a_lab() {
        let image = GuestImage::prepare_with(&["xen_netfront"]).unwrap();
        let link = crate::case::LinkSpec {
            mtu: std::env::var("XEN_PROBE_MTU").map_or(1500, |m| m.parse().unwrap()),
            rate_mbit: Some(1000),
            offloads: false,
        };
        let lab = Lab::start(
            &link,
            &crate::inventory::Inventory::from_env(&crate::backend::catalog()).unwrap(),
            0,
        )
        .unwrap();
        let hosts = shared_hosts(&image, 0, &[0, 1]).unwrap();
        for h in &hosts {
            h.attach(lab.host(h.index), &link).unwrap();
        }
        for (h, var) in [(&hosts[1], "XEN_PROBE_DST"), (&hosts[0], "XEN_PROBE_SRC")] {
            for c in std::env::var(var).unwrap_or_default().split(";;") {
                if !c.trim().is_empty() {
                    let t = Instant::now();
                    let a = h.sh(c, Duration::from_secs(120));
                    eprintln!(
                        "==== host {}: {c} ({} ms)\n{a:?}",
                        h.index,
                        t.elapsed().as_millis()
                    );
                }
            }
        }
        shutdown_shared_hosts(None);
    }

    /// Boots the Xen host, starts a PV domU without a lab and migrates it,
    /// printing what dom0 says: `cargo test --lib xen_pv_migrates_in_dom0 -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn xen_pv_migrates_in_dom0() {
        let _lab_lock = crate::runner::exclusive(
            &crate::inventory::Inventory::simulated(
                "simulated",
                crate::inventory::Storage::Shared,
                &crate::backend::rows(),
            ),
            &[0],
            &|m| eprintln!("{m}"),
        )
        .unwrap();
        let image = GuestImage::prepare_with(&["xen_netfront"]).unwrap();
        let h = shared_hosts(&image, 0, &[0]).unwrap().remove(0);
        let hv = if std::env::var("XEN_PROBE_HVM").is_ok() {
            XEN_HVM
        } else {
            XEN_PV
        };
        let cmd = std::env::var("XEN_PROBE_CMD").unwrap_or_default();
        let text = std::fs::read_to_string("suites/ci.yaml")
            .unwrap()
            .replace("[openvz, kvm-fv, kvm-pv]", "[xen-pv, openvz]");
        let mut case = crate::suite::parse_str(std::path::Path::new("ci.yaml"), &text)
            .unwrap()
            .into_iter()
            .find(|c| c.hypervisor == XEN_PV)
            .unwrap();
        (case.hypervisor, case.migration.topology) = (hv, Topology::OneHost);
        let mut x = Xen::new(&case, true).unwrap();
        x.hosts = vec![h.clone() as Arc<dyn Dom0>];
        let layout = h.layout().clone();
        let cfg: Vec<String> = x.domain_config(&case, &format!("migsuite.ip=10.250.0.100/24 migsuite.observer=10.250.0.254:7000 migsuite.mtu=1500 {} migsuite.pkt_size=100 migsuite.pkt_rate=10", std::env::var("XEN_PROBE_DIRTY").unwrap_or("migsuite.dirty_mib=16 migsuite.dirty_rate=32".into())), &layout).into_iter().map(|l| format!("'{l}'")).collect();
        h.check(
            &format!("printf '%s\\n' {} > {}", cfg.join(" "), layout.config),
            Duration::from_secs(10),
        )
        .unwrap();
        eprintln!(
            "{:?}",
            h.sh(&format!("xl create {}", layout.config), XL_TIMEOUT)
                .unwrap()
        );
        std::thread::sleep(Duration::from_secs(25));
        let skip = std::env::var("XEN_PROBE_NO_MIGRATE").is_ok();
        for c in [
            "xl list",
            if skip { "" } else { "migsuite-migrate 90 -" },
            "grep -v debug: /run/migsuite/send.log",
            "grep -v debug: /run/migsuite/recv.log | tail -30",
            "xl list",
            cmd.as_str(),
        ] {
            if c.is_empty() {
                continue;
            }
            let t = Instant::now();
            let a = match h.sh(c, Duration::from_secs(150)) {
                Ok(a) => a,
                Err(e) => {
                    eprintln!("==== {c}: {e:#}");
                    continue;
                }
            };
            eprintln!(
                "==== {c} ({} ms) -> {}\n{}",
                t.elapsed().as_millis(),
                a.status,
                a.output
            );
        }
        shutdown_shared_hosts(None);
    }
}
