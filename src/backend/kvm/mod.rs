//! kvm-fv and kvm-pv: QEMU guests driven through libvirt, migrated
//! peer-to-peer between the hosts' libvirtds over the migration link.

pub mod accel;
pub mod domain;
mod job;

use super::{span_ms, Backend, BackendInfo, Evacuation};
use crate::case::{Case, Hypervisor, Strategy};
use crate::guest::image::GuestImage;
use crate::inventory::Storage;
use crate::lab::cleanup::{self, OnInterrupt};
use crate::lab::identity::GuestIdentity;
use crate::lab::libvirtd::{self, version, Connection};
use crate::lab::owner::Owner;
use crate::lab::pool;
use crate::lab::{Lab, Place};
use crate::measure::Outcome;
use crate::measure::{Phases, MIB};
use crate::sampler::{Reported, Source};
use anyhow::{Context, Result};
use job::{job_stats, CompletedJob};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};
use virt::domain::{Domain, DomainState, DomainStateEnum};
use virt::sys;

const DISK_BYTES: u64 = 16 << 20;
/// After a cancel, how long the migration call may take to return.
const ABORT_GRACE: Duration = Duration::from_secs(30);
/// Destination may still be "inmigrate" right after completion.
const RESUME_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the source's job-completed event may trail the migration call.
const EVENT_WAIT: Duration = Duration::from_secs(5);
/// Passes after which a pre-copy that has not switched over is judged not
/// to converge.
const PASS_LIMIT: u64 = 12;

/// QEMU under libvirt: pre-copy, post-copy (after one pass) and
/// auto-converge, each with a downtime limit; its stream takes a bandwidth
/// cap, multifd channels and TLS. libvirt refuses a destination that is its
/// source. A real host is reached through its libvirt URI alone.
pub static BACKEND: super::Descriptor = super::Descriptor {
    rows: &[Hypervisor::KvmFv, Hypervisor::KvmPv],
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

/// Polls the destination for the guest running there, from its own thread.
struct ResumeWatch {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Option<Instant>>>,
}

impl ResumeWatch {
    const POLL: Duration = Duration::from_millis(10);

    fn start(conn: Connection, guest: GuestIdentity) -> ResumeWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                if find(&conn, &guest).is_ok_and(|d| is_running(&d)) {
                    return Some(Instant::now());
                }
                std::thread::sleep(Self::POLL);
            }
            None
        });
        ResumeWatch {
            stop,
            thread: Some(thread),
        }
    }

    /// When the guest was seen running on the destination, if it was.
    fn finish(mut self) -> Option<Instant> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take()?.join().ok().flatten()
    }
}

impl Drop for ResumeWatch {
    /// A failed migration: the watcher ends within a poll.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn is_paused(dom: &Domain) -> bool {
    matches!(
        dom.state(),
        Ok((DomainStateEnum::Known(DomainState::Paused), _))
    )
}

/// Pre-copy's convergence, judged from its passes: a migration with margin
/// switches over within a few passes (3 to 5 in the gate suites here); one
/// still copying after PASS_LIMIT passes is judged not to converge, with
/// the dirty rate and the stream's rate as QEMU last saw them, and the
/// least memory a pass of the later half started with (what the guest
/// dirtied during the pass before; mid-pass figures only show what is left
/// of the pass).
#[derive(Default)]
struct Convergence {
    pass: u64,
    least_remaining: Option<u64>,
}

impl Convergence {
    /// Feeds one poll; Some(evidence) once pre-copy is judged not to converge.
    fn observe(&mut self, job: &virt::domain::JobStats, max_downtime_ms: u64) -> Option<String> {
        let (pass, remaining) = (job.mem_iteration?, job.mem_remaining?);
        if pass > self.pass {
            self.pass = pass;
            if pass > PASS_LIMIT / 2 {
                self.least_remaining =
                    Some(self.least_remaining.map_or(remaining, |l| l.min(remaining)));
            }
        }
        (pass > PASS_LIMIT).then(|| {
            let dirty = job.mem_dirty_rate.unwrap_or(0) * job.mem_page_size.unwrap_or(4096);
            let bps = job.mem_bps.unwrap_or(0);
            format!(
                "pre-copy does not converge: {pass} passes, the guest dirties {:.1} MiB/s while the stream carries {:.1} MiB/s; \
                 each of the last {} passes started with at least {:.1} MiB to send; the stream moves {:.1} MiB within the {max_downtime_ms} ms downtime limit",
                dirty as f64 / MIB,
                bps as f64 / MIB,
                PASS_LIMIT - PASS_LIMIT / 2,
                self.least_remaining.unwrap_or(remaining) as f64 / MIB,
                (bps * max_downtime_ms / 1000) as f64 / MIB,
            )
        })
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

    fn try_evacuate(
        &mut self,
        lab: &Lab,
        case: &Case,
        progress: &dyn Fn(&str),
    ) -> Result<Evacuation> {
        let (source, dom) = self.source.as_ref().context("no guest was provisioned")?;
        dom.migrate_set_max_downtime(case.migration.max_downtime_ms, 0)?;
        let dest_uri = lab.destination.uri.clone();
        let mut flags = sys::VIR_MIGRATE_LIVE | sys::VIR_MIGRATE_PEER2PEER;
        let mut params = virt::domain::MigrateParameters {
            uri: Some(lab.destination.migration_uri()),
            ..Default::default()
        };
        match lab.inventory.storage {
            // Both hosts see the disk on one file system: shared storage
            // libvirt cannot recognise as such.
            Storage::Shared => flags |= sys::VIR_MIGRATE_UNSAFE,
            // The disk is mirrored to the destination's pool (libvirt
            // creates the volume there) over the migration link too.
            Storage::Local => {
                flags |= sys::VIR_MIGRATE_NON_SHARED_DISK;
                params.migrate_disks = vec![domain::device_model(self.hypervisor).disk_dev.into()];
                params.disks_uri = Some(lab.destination.migration_uri());
            }
        }
        // QEMU's max-bandwidth (libvirt's unit, MiB/s) and multifd channels.
        params.bandwidth = case.migration.bandwidth_mib_s.map(u64::from);
        if let Some(channels) = case.migration.multifd_channels {
            flags |= sys::VIR_MIGRATE_PARALLEL;
            params.parallel_connections = Some(channels as i32);
        }
        // With the hosts' certificates (a simulated lab's: `lab::tls`).
        if case.migration.tls {
            flags |= sys::VIR_MIGRATE_TLS;
        }
        match case.migration.strategy {
            Strategy::Precopy => {}
            Strategy::AutoConverge => flags |= sys::VIR_MIGRATE_AUTO_CONVERGE,
            Strategy::Postcopy => flags |= sys::VIR_MIGRATE_POSTCOPY,
            // libvirt's offline migration pauses the guest before QEMU's
            // clock starts, so its downtime figure would not be comparable.
            Strategy::StopAndCopy => anyhow::bail!("{}: stop-and-copy is not offered for QEMU guests; use precopy, postcopy or auto-converge", self.hypervisor),
        }

        // The destination is watched on a thread of its own: the guest runs
        // there well before libvirt's closing handshake (Finish, Confirm)
        // returns the call, and while QEMU stops and copies, calls to the
        // source block for a second or more.
        let resume = ResumeWatch::start(lab.connect(&dest_uri)?, self.guest.clone());
        // Where a post-copy's statistics will be (`job`): on the source's
        // connection, opened before the warning.
        let source_job = (case.migration.strategy == Strategy::Postcopy)
            .then(|| CompletedJob::listen(source, &self.guest));

        // The migration call blocks; it runs on its own thread so that this
        // one can watch the clock, inject faults and cancel.
        let started = Instant::now();
        let (done_tx, done_rx) = mpsc::channel();
        let migrating = dom.clone();
        std::thread::spawn(move || {
            let r = migrating.migrate_to_uri3(Some(&dest_uri), params, flags);
            let _ = done_tx.send(r.map_err(|e| e.message().to_string()));
        });

        let timeout = Duration::from_millis(case.migration.timeout_ms);
        let kill_at = case
            .faults
            .kill_destination_after_ms
            .map(Duration::from_millis);
        // Faults count from the start of the memory transfer: before it, the
        // destination QEMU is still starting.
        let mut transfer_started: Option<Instant> = None;
        // The stream's first byte: a disk copied with the guest goes first.
        let mut stream_started: Option<Instant> = None;
        let mut killed_at: Option<Duration> = None;
        let mut postcopy_started = false;
        let mut aborted = false;
        let mut not_converged: Option<String> = None;
        let mut convergence = Convergence::default();
        let mut switchover_at: Option<Instant> = None;
        let mut samples = Vec::new();
        let sample_every = Duration::from_millis(case.sampling.interval_ms);
        let mut last_sample: Option<Instant> = None;
        let mut last_progress = Instant::now();
        let result = loop {
            match done_rx.recv_timeout(Duration::from_millis(50)) {
                Ok(r) => break Some(r),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    break Some(Err("migration thread died".into()))
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            let elapsed = started.elapsed();
            let job = job_stats(dom, 0);
            let processed = job.as_ref().and_then(|j| j.mem_processed).unwrap_or(0);
            let iteration = job.as_ref().and_then(|j| j.mem_iteration).unwrap_or(0);
            if processed > 0 && transfer_started.is_none() {
                transfer_started = Some(Instant::now());
            }
            let streamed = job.as_ref().and_then(|j| j.data_processed).unwrap_or(0);
            if (streamed > 0 || processed > 0) && stream_started.is_none() {
                stream_started = Some(Instant::now());
            }
            if switchover_at.is_none() && transfer_started.is_some() && is_paused(dom) {
                switchover_at = Some(Instant::now());
            }
            if let Some(j) = job
                .as_ref()
                .filter(|_| last_sample.is_none_or(|t| t.elapsed() >= sample_every))
            {
                last_sample = Some(Instant::now());
                samples.push(super::Progress {
                    at: Instant::now(),
                    transferred_bytes: processed,
                    remaining_bytes: j.mem_remaining.unwrap_or(0),
                    pass: iteration,
                    dirty_bytes_s: j
                        .mem_dirty_rate
                        .map(|r| r * j.mem_page_size.unwrap_or(4096)),
                    bytes_s: j.mem_bps,
                    // A running job's downtime is QEMU's expected one: the
                    // limit asked until QEMU has measured a dirty rate (a
                    // second into the migration), an estimate after.
                    // Once the guest is paused, libvirt's figure is how long
                    // it has been.
                    expected_downtime_ms: j.downtime.filter(|_| {
                        j.mem_dirty_rate.is_some_and(|rate| rate > 0) && switchover_at.is_none()
                    }),
                });
            }
            if let (Some(j), Strategy::Precopy, None, false) = (
                job.as_ref(),
                case.migration.strategy,
                &not_converged,
                aborted,
            ) {
                if let Some(evidence) = convergence.observe(j, case.migration.max_downtime_ms) {
                    unsafe { sys::virDomainAbortJob(dom.as_ptr()) };
                    progress(&evidence);
                    not_converged = Some(evidence);
                    aborted = true;
                }
            }
            if processed > 0 && last_progress.elapsed() >= Duration::from_secs(2) {
                let remaining = job.as_ref().and_then(|j| j.mem_remaining).unwrap_or(0);
                progress(&format!(
                    "migrating: {} ms, {} MiB sent, {} MiB remaining, pass {iteration}",
                    elapsed.as_millis(),
                    processed >> 20,
                    remaining >> 20
                ));
                last_progress = Instant::now();
            }
            if let (Some(at), Some(since), None) = (kill_at, transfer_started, killed_at) {
                if since.elapsed() >= at {
                    // Only simulated: a real lab refuses the fault (`lab::cannot_run`).
                    let qemu = lab.destination.simulated().ok();
                    if let Some(pid) = qemu.and_then(|s| s.libvirtd.qemu_pid(&self.guest.name)) {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(pid),
                            nix::sys::signal::SIGKILL,
                        );
                        killed_at = Some(since.elapsed());
                    }
                }
            }
            // Switch to post-copy once the first full pass is done (QEMU
            // counts pass 1 from the start).
            if case.migration.strategy == Strategy::Postcopy && !postcopy_started && iteration >= 2
            {
                postcopy_started =
                    unsafe { sys::virDomainMigrateStartPostCopy(dom.as_ptr(), 0) } == 0;
            }
            if elapsed >= timeout && !aborted {
                unsafe { sys::virDomainAbortJob(dom.as_ptr()) };
                aborted = true;
            }
            if aborted && elapsed >= timeout + ABORT_GRACE {
                break None;
            }
        };
        let survived = |kvm: &Kvm| {
            // The source resumes the guest after a failed migration; give it a moment.
            let deadline = Instant::now() + Duration::from_secs(5);
            while !kvm.running_on_source() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            kvm.running_on_source()
        };
        if let (Some(evidence), Some(Err(_)) | None) = (&not_converged, &result) {
            let source_survived = survived(self);
            return Ok(Evacuation {
                outcome: Outcome::NotConverged {
                    evidence: evidence.clone(),
                    source_survived,
                },
                phases: Phases {
                    preparation_ms: span_ms(Some(started), transfer_started),
                    ..Default::default()
                },
                progress: samples,
                ..Default::default()
            });
        }
        let why = |libvirt: String| {
            let mut reason = if aborted {
                format!(
                    "timed out after {} ms, migration cancelled (libvirt: {libvirt})",
                    case.migration.timeout_ms
                )
            } else {
                format!("libvirt: {libvirt}")
            };
            if let Some(at) = killed_at {
                reason.push_str(&format!(
                    "; the destination QEMU had been killed {} ms into the memory transfer",
                    at.as_millis()
                ));
            }
            reason
        };
        match result {
            None => Ok(Evacuation::failed(
                why(format!(
                    "the migration call did not return {} s after the cancel",
                    ABORT_GRACE.as_secs()
                )),
                self.running_on_source(),
            )),
            Some(Err(e)) => Ok(Evacuation::failed(why(e), survived(self))),
            // Also when it completed despite a fault: reported as it is.
            Some(Ok(())) => {
                let returned_at = Some(Instant::now());
                let mut e = self.completed(lab, source_job.as_ref(), postcopy_started)?;
                // Running on the destination, seen while the call was in
                // flight, or once it returned.
                let resumed_at = resume.finish().or(e.completed_at);
                // A pause shorter than a poll: it began `downtime` before the end.
                let switchover_at = switchover_at.or_else(|| {
                    let downtime =
                        Duration::try_from_secs_f64(e.reported_downtime_ms? / 1000.0).ok()?;
                    resumed_at?.checked_sub(downtime)
                });
                // After a post-copy, when the source's job ended: it ran
                // from this call's start (libvirt's clock starts with its
                // job) for its elapsed time. The event and the call's
                // return come later, after libvirt's closing handshake.
                let job_ended_at = e
                    .reported_total_ms
                    .filter(|_| postcopy_started)
                    .and_then(|ms| Some(started + Duration::try_from_secs_f64(ms / 1000.0).ok()?));
                e.completed_at = resumed_at.max(job_ended_at);
                // All the bytes, disk and memory, over the time they took.
                e.stream_ms = span_ms(stream_started, e.completed_at);
                // After a switch to post-copy, memory moves before the pause
                // and again from the resume until the source's job ends.
                let pulled_ms = span_ms(resumed_at, e.completed_at).filter(|_| postcopy_started);
                e.phases = Phases {
                    preparation_ms: span_ms(Some(started), transfer_started),
                    memory_transfer_ms: span_ms(transfer_started, switchover_at)
                        .map(|before| before + pulled_ms.unwrap_or(0.0)),
                    stop_and_copy_ms: span_ms(switchover_at, resumed_at),
                    // libvirt's Finish and Confirm, after the job ended.
                    resume_ms: span_ms(e.completed_at, returned_at),
                };
                e.progress = samples;
                e.downtime_limit_ms = Some(case.migration.max_downtime_ms as f64);
                Ok(e)
            }
        }
    }

    /// The job's statistics once the guest runs on the destination, and
    /// when it was seen running (`completed_at`): the destination's, or
    /// after a post-copy (whose statistics libvirt keeps only in the
    /// source's job-completed event) the source's.
    fn completed(
        &self,
        lab: &Lab,
        source_job: Option<&Result<CompletedJob>>,
        postcopied: bool,
    ) -> Result<Evacuation> {
        let conn = lab.connect(&lab.destination.uri)?;
        let dom = find(&conn, &self.guest).context("the guest is not on the destination")?;
        let deadline = Instant::now() + RESUME_TIMEOUT;
        while !is_running(&dom) {
            anyhow::ensure!(
                Instant::now() < deadline,
                "the guest did not resume on the destination within {RESUME_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let running_at = Instant::now();
        let stats = match (
            job_stats(&dom, sys::VIR_DOMAIN_JOB_STATS_COMPLETED),
            source_job,
        ) {
            (Some(stats), _) if !postcopied => stats,
            (_, Some(Ok(job))) => job.stats(EVENT_WAIT).with_context(|| {
                format!("libvirt keeps no statistics of a post-copy on the destination, and no job-completed event came from the source within {EVENT_WAIT:?}")
            })?,
            (_, Some(Err(e))) => anyhow::bail!("libvirt keeps no statistics of a post-copy on the destination, and the source's job-completed event could not be listened to: {e:#}"),
            (on_destination, None) => on_destination.context(
                "libvirt has no statistics of the completed migration on the destination",
            )?,
        };
        Ok(Evacuation {
            outcome: Outcome::Completed,
            completed_at: Some(running_at),
            reported_total_ms: stats.time_elapsed.map(|v| v as f64),
            reported_downtime_ms: stats.downtime.map(|v| v as f64),
            setup_time_ms: stats.setup_time.map(|v| v as f64),
            bytes_transferred: stats.data_processed.or(stats.mem_processed),
            memory_iterations: stats.mem_iteration,
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_real_host_runs_the_kvm_rows_through_qemus_driver() {
        assert!(runs_qemu(Hypervisor::KvmPv, Ok("QEMU")).is_ok());
        let err = runs_qemu(Hypervisor::KvmFv, Ok("LXC")).unwrap_err();
        assert!(err.contains("kvm-fv needs libvirt's QEMU driver"), "{err}");
        let down = "connection lost".to_string();
        assert_eq!(runs_qemu(Hypervisor::KvmFv, Err(&down)), Err(down));
    }
}
