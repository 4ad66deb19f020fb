//! xen-pv and xen-hvm: a domU on a nested Xen lab host (QEMU VM running Xen
//! 4.17 with a dom0 and the xl toolstack), migrated with real `xl migrate`
//! on that same Xen host, as the study did (`xl migrate -s "" x0 <receiver>`:
//! the stream goes through a local pipe, not ssh).
//!
//! The Xen host boots once per process (it takes minutes under TCG) and is
//! reused by the Xen cases that follow one another: `shared_host`; a case
//! of another backend stops it first (`backend::release_unneeded`). Per case it is wired to the
//! case's lab (its dom0 bridge joins the lab source host's br0, with the
//! case's MTU), so the domU's heartbeats reach the observer like a KVM
//! guest's.

pub mod dom0;
pub mod host;
mod hvm;

use super::{span_ms, Backend, BackendInfo, Evacuation, ProcessProbe};
use crate::case::{AccelChoice, Case, Hypervisor};
use crate::guest::image::GuestImage;
use crate::lab::Lab;
use crate::measure::{Outcome, Phases};
use crate::sampler::Pids;
use anyhow::{bail, Context, Result};
use host::XenHost;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const DOMAIN_NAME: &str = "x0";
const DOMAIN_CFG: &str = "/run/x0.cfg";
/// The domU's MAC: Xen's OUI.
const GUEST_MAC: &str = "00:16:3e:4d:53:01";
const XL_TIMEOUT: Duration = Duration::from_secs(120);

/// The Xen host of this process, and the dom0 initramfs it booted (what
/// decides whether it can be reused).
static HOST: Mutex<Option<(std::path::PathBuf, Arc<XenHost>)>> = Mutex::new(None);

/// The booted Xen host for `guest`, booting it if there is none yet (or it
/// died, or it carries another guest image).
pub fn shared_host(guest: &GuestImage, progress: &dyn Fn(&str)) -> Result<Arc<XenHost>> {
    let mut slot = HOST.lock().unwrap_or_else(|p| p.into_inner());
    let key = dom0::initramfs(guest)?;
    if let Some((k, h)) = slot.as_ref() {
        if *k == key && h.alive() {
            return Ok(h.clone());
        }
        h.shutdown();
        *slot = None;
    }
    let h = Arc::new(XenHost::boot(guest, progress)?);
    *slot = Some((key, h.clone()));
    Ok(h)
}

/// Stops the process's Xen host, if any (the kernel also kills it when the
/// process ends, whichever way).
pub fn shutdown_shared_host() {
    if let Some((_, h)) = HOST.lock().unwrap_or_else(|p| p.into_inner()).take() {
        h.shutdown();
    }
}

pub struct Xen {
    hypervisor: Hypervisor,
    image: GuestImage,
    info: BackendInfo,
    host: Option<Arc<XenHost>>,
    /// The domU's id on the source (before the migration).
    source_domid: Option<u32>,
    migrated: bool,
    console_from: usize,
    console_path: Option<std::path::PathBuf>,
}

impl Xen {
    pub fn new(case: &Case) -> Result<Xen, String> {
        if case.guest.accel == AccelChoice::Kvm {
            return Err(format!(
                "{}: the suite forces accel: kvm, but the nested Xen host runs under QEMU TCG here (Xen needs a CPU with SVM/VT-x exposed to it)",
                case.hypervisor
            ));
        }
        // Both guests (source and incoming) fit next to dom0 in the host.
        let room = (host::HOST_MEMORY_MIB - host::DOM0_MEMORY_MIB - 256) / 2;
        if case.guest.memory_mib > room {
            return Err(format!(
                "{}: guest memory {} MiB does not fit the nested Xen host twice (at most {room} MiB: {} MiB host, {} MiB dom0)",
                case.hypervisor,
                case.guest.memory_mib,
                host::HOST_MEMORY_MIB,
                host::DOM0_MEMORY_MIB
            ));
        }
        // Xen PV guests get xen-netfront; HVM guests the emulated e1000.
        let image = GuestImage::prepare_with(&["xen_netfront"]).map_err(|e| format!("{e:#}"))?;
        let info = BackendInfo {
            accel: "tcg (nested: Xen host in QEMU TCG, -cpu qemu64,+svm,+npt)".into(),
            hypervisor_version: String::new(),
            toolstack_version: String::new(),
        };
        Ok(Xen {
            hypervisor: case.hypervisor,
            image,
            info,
            host: None,
            source_domid: None,
            migrated: false,
            console_from: 0,
            console_path: None,
        })
    }

    fn host(&self) -> Result<&Arc<XenHost>> {
        self.host.as_ref().context("no Xen host")
    }

    fn domain_config(&self, case: &Case, agent_args: &str) -> Vec<String> {
        let mib = case.guest.memory_mib;
        let mut lines = vec![
            format!("name=\"{DOMAIN_NAME}\""),
            format!("kernel=\"{}\"", dom0::DOMU_KERNEL),
            format!("ramdisk=\"{}\"", dom0::DOMU_INITRD),
            format!("memory={mib}"),
            format!("maxmem={mib}"),
            format!("vcpus={}", case.guest.vcpus),
            "on_crash=\"preserve\"".into(),
        ];
        match self.hypervisor {
            Hypervisor::XenHvm => lines.extend(hvm::config(agent_args, GUEST_MAC)),
            _ => lines.extend([
                "type=\"pv\"".into(),
                format!("extra=\"console=hvc0 {agent_args}\""),
                format!(
                    "vif=[\"mac={GUEST_MAC},bridge={},script=vif-migsuite\"]",
                    dom0::BRIDGE
                ),
            ]),
        }
        lines
    }

    /// dom0's view of the domU: (domid, state flags) of `name`.
    fn domain(&self, name: &str) -> Option<(u32, String)> {
        let a = self
            .host
            .as_ref()?
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

    fn destroy_leftovers(&self) -> Result<()> {
        let h = self.host()?;
        h.sh(
            &format!("for d in {DOMAIN_NAME} {DOMAIN_NAME}--incoming {DOMAIN_NAME}--migratedaway; do xl destroy $d 2>/dev/null; done; true"),
            XL_TIMEOUT,
        )?;
        Ok(())
    }

    /// Copies the domU console (as xenconsoled logged it in dom0) and the
    /// Xen host's serial console of this case into the lab's console.log.
    fn save_console(&self) {
        let (Some(h), Some(path)) = (self.host.as_ref(), self.console_path.as_ref()) else {
            return;
        };
        let guest = h
            .sh(
                &format!("cat /var/log/xen/console/guest-{DOMAIN_NAME}*.log 2>/dev/null; true"),
                Duration::from_secs(20),
            )
            .map(|a| a.output)
            .unwrap_or_else(|e| format!("(domU console unavailable: {e:#})"));
        let serial = h.console();
        let serial = serial
            .get(self.console_from.min(serial.len())..)
            .unwrap_or("");
        let text = format!(
            "{guest}\n---- Xen host serial console (Xen and dom0) during this case ----\n{serial}"
        );
        let _ = std::fs::write(path, text);
    }
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

    fn provision(&mut self, lab: &Lab, case: &Case, agent_args: &str) -> Result<()> {
        let quiet = |_: &str| {};
        let h = shared_host(&self.image, &quiet)?;
        self.console_from = h.console_len();
        self.console_path = Some(lab.shared_dir().join("console.log"));
        self.info.hypervisor_version = format!(
            "{} (nested Xen host booted in {} ms)",
            h.xen_version, h.boot_ms
        );
        self.info.toolstack_version = h.tools_version.clone();
        self.host = Some(h.clone());
        self.destroy_leftovers()?;
        h.attach(&lab.source.netns.name, &case.link)
            .context("wiring the Xen host to the lab")?;
        h.check(
            "rm -f /var/log/xen/console/guest-*.log",
            Duration::from_secs(10),
        )?;
        let cfg: Vec<String> = self
            .domain_config(case, agent_args)
            .into_iter()
            .map(|l| format!("'{l}'"))
            .collect();
        h.check(
            &format!("printf '%s\\n' {} > {DOMAIN_CFG}", cfg.join(" ")),
            Duration::from_secs(10),
        )?;
        let created = h.sh(&format!("xl create {DOMAIN_CFG}"), XL_TIMEOUT)?;
        if created.status != 0 {
            self.save_console();
            bail!(
                "xl create of the {} domU failed: {}",
                self.hypervisor,
                created.output.trim()
            );
        }
        let (domid, _) = self
            .domain(DOMAIN_NAME)
            .context("the domU is not listed after xl create")?;
        self.source_domid = Some(domid);
        if self.hypervisor == Hypervisor::XenHvm {
            let took = hvm::wait_for_init(h.as_ref(), domid, hvm::INIT_TIMEOUT);
            self.save_console();
            self.info.hypervisor_version +=
                &format!("; HVM domU kernel to init in {} ms", took?.as_millis());
        }
        Ok(())
    }

    fn check_guest(&self, hello: &BTreeMap<String, String>) -> Result<()> {
        let h = self.host()?;
        let domid = self.source_domid.context("no domU")?;
        let seen = |k: &str| hello.get(k).map(String::as_str).unwrap_or("none");
        let ty = h.check(
            &format!("xl list -l {domid} | grep -m1 '\"type\"'"),
            Duration::from_secs(20),
        )?;
        let want = if self.hypervisor == Hypervisor::XenHvm {
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
            Hypervisor::XenHvm => anyhow::ensure!(
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

    fn evacuate(&mut self, _lab: &Lab, case: &Case, progress: &dyn Fn(&str)) -> Evacuation {
        let e = match self.try_evacuate(case, progress) {
            Ok(e) => e,
            Err(e) => Evacuation::failed(format!("{e:#}"), self.running_on_source()),
        };
        self.save_console();
        e
    }

    /// `xl migrate` within one Xen host: the stream is a pipe in dom0.
    fn stream_crosses_link(&self) -> bool {
        false
    }

    /// Same Xen host: the received domain is the next run's source.
    fn adopt_moved_guest(&mut self, _lab: &Lab) -> Result<()> {
        let (domid, _) = self
            .domain(DOMAIN_NAME)
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
        self.domain(&domid.to_string())
            .is_some_and(|(_, flags)| state_running(&flags))
    }

    /// The Xen host is one QEMU process (Xen, dom0 and every domU): it is
    /// the hypervisor of both source and destination here, counted once, on
    /// the source. Its toolstack (xl, xenstored) runs inside it.
    fn process_probe(&self, _lab: &Lab) -> ProcessProbe {
        let pid = self.host.as_ref().map(|h| h.qemu_pid());
        Box::new(move || {
            let mut pids = Pids::default();
            pids.guest[0] = pid.into_iter().collect();
            pids
        })
    }
}

/// What dom0's migsuite-migrate printed.
fn parse_kv(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

impl Xen {
    fn try_evacuate(&mut self, case: &Case, progress: &dyn Fn(&str)) -> Result<Evacuation> {
        let h = self.host()?.clone();
        let source = self.source_domid.context("no guest was provisioned")?;
        let timeout_s = case.migration.timeout_ms.div_ceil(1000);
        let kill = case
            .faults
            .kill_destination_after_ms
            .map_or("-".to_string(), |ms| ms.to_string());
        progress(&format!(
            "xl migrate -s \"\" {DOMAIN_NAME} <receiver> (same Xen host), timeout {timeout_s} s"
        ));
        let started = Instant::now();
        let a = h.sh(
            &format!("/usr/local/sbin/migsuite-migrate {timeout_s} {kill}"),
            Duration::from_secs(timeout_s + 60),
        )?;
        let returned = Instant::now();
        let kv = parse_kv(&a.output);
        anyhow::ensure!(
            kv.contains_key("rc"),
            "dom0's migsuite-migrate said: {}",
            a.output.trim()
        );
        let rc: i32 = kv.get("rc").and_then(|v| v.parse().ok()).unwrap_or(-1);
        let secs = |k: &str| kv.get(k).and_then(|v| v.parse::<f64>().ok());
        let elapsed_ms = secs("start")
            .zip(secs("end"))
            .map(|(s, e)| (e - s) * 1000.0);
        let bytes: Option<u64> = kv.get("bytes").and_then(|v| v.parse().ok());
        let send = h
            .sh("cat /run/migsuite/send.log", Duration::from_secs(20))
            .map(|a| a.output)
            .unwrap_or_default();
        let recv = h
            .sh("cat /run/migsuite/recv.log", Duration::from_secs(20))
            .map(|a| a.output)
            .unwrap_or_default();
        let log = send.clone();
        let stats = stream_stats(&send, &recv);
        progress(&format!(
            "xl migrate returned {rc} after {} ms (dom0 clock: {:.0} ms), {} MiB in the stream",
            started.elapsed().as_millis(),
            elapsed_ms.unwrap_or(f64::NAN),
            bytes.unwrap_or(0) >> 20
        ));
        if rc != 0 {
            let mut reason = format!("xl migrate failed (exit {rc}): {}", xl_error(&log));
            if kv.contains_key("timedout") {
                reason = format!(
                    "timed out after {} ms, migration cancelled (receiver killed); {reason}",
                    case.migration.timeout_ms
                );
            }
            if kv.contains_key("fault") {
                reason.push_str(&format!("; the destination (xl migrate-receive) had been killed {kill} ms into the migration"));
            }
            // The sender resumes the domain after a failed migration.
            let deadline = Instant::now() + Duration::from_secs(10);
            while !self.running_on_source() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            return Ok(Evacuation::failed(reason, self.running_on_source()));
        }
        // Same host: the received domain took the name; the source is gone.
        let (domid, flags) = self
            .domain(DOMAIN_NAME)
            .context("after xl migrate, no domain x0 on the destination")?;
        anyhow::ensure!(
            domid != source,
            "after xl migrate, x0 is still the source domain {source}"
        );
        self.migrated = true;
        anyhow::ensure!(
            state_running(&flags),
            "the migrated domU {domid} is not running (xl state {flags})"
        );
        Ok(Evacuation {
            outcome: Outcome::Completed,
            completed_at: Some(returned),
            reported_total_ms: elapsed_ms,
            reported_downtime_ms: stats.downtime_ms,
            setup_time_ms: None,
            bytes_transferred: bytes,
            memory_iterations: stats.iterations,
            // From xl's own clock in dom0: the stream, then the suspended
            // guest's last pages; what the runner waited beyond is getting
            // the command to dom0 and back.
            phases: Phases {
                preparation_ms: elapsed_ms
                    .zip(span_ms(Some(started), Some(returned)))
                    .map(|(e, wall)| (wall - e).max(0.0)),
                memory_transfer_ms: elapsed_ms
                    .zip(stats.downtime_ms)
                    .map(|(e, d)| (e - d).max(0.0)),
                stop_and_copy_ms: stats.downtime_ms,
                resume_ms: None,
            },
            stream_ms: elapsed_ms,
            ..Default::default()
        })
    }
}

#[derive(Debug, Default)]
struct StreamStats {
    iterations: Option<u64>,
    downtime_ms: Option<f64>,
}

/// dom0 timestamp of the first line of a stamped log containing `text`.
fn stamped(log: &str, text: &str) -> Option<f64> {
    log.lines()
        .find(|l| l.contains(text))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// What xl -vvv's logs say about the migration. The downtime is what the
/// toolstack's own messages bracket, on dom0's clock: from the sender's
/// "guest has suspended" to the receiver's "Domain started successfully"
/// (after the unpause). xl reports no iteration count (libxc's progress
/// reports are dropped by libxl: "progress report: ignored").
fn stream_stats(send: &str, recv: &str) -> StreamStats {
    let suspended = stamped(send, "guest has suspended");
    let started = stamped(recv, "Domain started succ");
    StreamStats {
        iterations: None,
        downtime_ms: suspended
            .zip(started)
            .map(|(s, e)| (e - s) * 1000.0)
            .filter(|d| *d >= 0.0),
    }
}

/// The lines of xl's log that say what went wrong.
fn xl_error(log: &str) -> String {
    // Lines carry dom0's timestamp first (see dom0::MIGRATE): drop it.
    let lines: Vec<&str> = log
        .lines()
        .map(|l| match l.split_once(' ') {
            Some((stamp, rest)) if stamp.parse::<f64>().is_ok() => rest,
            _ => l,
        })
        .filter(|l| !l.contains(": debug: ") && !l.contains(": detail: ") && !l.trim().is_empty())
        .collect();
    let tail = &lines[lines.len().saturating_sub(6)..];
    if tail.is_empty() {
        "(no log)".into()
    } else {
        tail.join(" | ")
    }
}

impl Drop for Xen {
    fn drop(&mut self) {
        if self.host.is_some() {
            let _ = self.destroy_leftovers();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downtime_is_bracketed_by_xl_messages_on_dom0s_clock() {
        let send = "1795619339.836882 Saving to migration stream\n1795619356.000100 libxl: debug: libxl_dom_suspend.c:358:suspend_common_wait_guest_check: Domain 1:guest has suspended\n";
        let recv = "1795619356.100000 xc: info: Restore successful\n1795619356.672600 migration target: Domain started successsfully.\n";
        let s = stream_stats(send, recv);
        assert!((s.downtime_ms.unwrap() - 672.5).abs() < 0.01);
        assert_eq!(s.iterations, None);
        assert_eq!(stream_stats(send, "").downtime_ms, None);
    }

    #[test]
    fn xl_states_and_migrate_output() {
        assert!(state_running("r-----"));
        assert!(state_running("-b----"));
        assert!(state_running("------"));
        assert!(!state_running("--p---"));
        assert!(!state_running("---s--"));
        let kv = parse_kv("rc=0\nstart=1.5\nend=2.25\nbytes=353438693\n");
        assert_eq!(kv["rc"], "0");
        assert_eq!(kv["bytes"], "353438693");
    }

    #[test]
    fn xl_error_keeps_the_last_meaningful_lines() {
        let log = "1 libxl: debug: x\n2 xc: error: Dom 1 not suspended\n3 Migration failed, resuming at sender.\n";
        assert_eq!(
            xl_error(log),
            "xc: error: Dom 1 not suspended | Migration failed, resuming at sender."
        );
    }

    /// Boots the real Xen host and runs xl in its dom0 (minutes under TCG):
    /// `cargo test --lib xen_host_boots -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn xen_host_boots() {
        let image = GuestImage::prepare_with(&["xen_netfront"]).unwrap();
        let h = shared_host(&image, &|m| eprintln!("{m}")).unwrap();
        eprintln!(
            "boot: {} ms, {}, {}",
            h.boot_ms, h.xen_version, h.tools_version
        );
        eprintln!("{}", h.check("xl list", Duration::from_secs(30)).unwrap());
        shutdown_shared_host();
    }
}

#[cfg(test)]
mod probe {
    use super::*;

    /// Boots the Xen host, starts a PV domU without a lab and migrates it,
    /// printing what dom0 says: `cargo test --lib xen_pv_migrates_in_dom0 -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn xen_pv_migrates_in_dom0() {
        let _lab_lock = crate::runner::exclusive(&|m| eprintln!("{m}")).unwrap();
        let image = GuestImage::prepare_with(&["xen_netfront"]).unwrap();
        let h = shared_host(&image, &|m| eprintln!("{m}")).unwrap();
        let hv = if std::env::var("XEN_PROBE_HVM").is_ok() {
            Hypervisor::XenHvm
        } else {
            Hypervisor::XenPv
        };
        let x = Xen {
            hypervisor: hv,
            image,
            info: BackendInfo {
                accel: String::new(),
                hypervisor_version: String::new(),
                toolstack_version: String::new(),
            },
            host: Some(h.clone()),
            source_domid: None,
            migrated: false,
            console_from: 0,
            console_path: None,
        };
        let cmd = std::env::var("XEN_PROBE_CMD").unwrap_or_default();
        let text = std::fs::read_to_string("suites/ci.yaml")
            .unwrap()
            .replace("[openvz, kvm-fv, kvm-pv]", "[xen-pv, openvz]");
        let case = crate::suite::parse_str(std::path::Path::new("ci.yaml"), &text)
            .unwrap()
            .into_iter()
            .find(|c| c.hypervisor == Hypervisor::XenPv)
            .unwrap();
        let cfg: Vec<String> = x.domain_config(&case, &format!("migsuite.ip=10.250.0.100/24 migsuite.observer=10.250.0.254:7000 migsuite.mtu=1500 {} migsuite.pkt_size=100 migsuite.pkt_rate=10", std::env::var("XEN_PROBE_DIRTY").unwrap_or("migsuite.dirty_mib=16 migsuite.dirty_rate=32".into()))).into_iter().map(|l| format!("'{l}'")).collect();
        h.check(
            &format!("printf '%s\\n' {} > {DOMAIN_CFG}", cfg.join(" ")),
            Duration::from_secs(10),
        )
        .unwrap();
        eprintln!(
            "{:?}",
            h.sh(&format!("xl create {DOMAIN_CFG}"), XL_TIMEOUT)
                .unwrap()
        );
        std::thread::sleep(Duration::from_secs(25));
        let skip = std::env::var("XEN_PROBE_NO_MIGRATE").is_ok();
        for c in [
            "xl list",
            if skip {
                ""
            } else {
                "/usr/local/sbin/migsuite-migrate 90 -"
            },
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
        shutdown_shared_host();
    }
}
