//! One migration of a QEMU guest, peer to peer between the hosts'
//! libvirtds: started with the case's strategy and stream settings, its
//! progress polled, cancelled when it does not converge or runs out of
//! time, and what libvirt's job statistics say once the guest runs on the
//! destination.

use super::job::{job_stats, CompletedJob};
use super::{domain, find, is_running, Kvm};
use crate::backend::{span_ms, Backend};
use crate::case::{Case, Strategy};
use crate::inventory::Storage;
use crate::lab::identity::GuestIdentity;
use crate::lab::libvirtd::Connection;
use crate::lab::Lab;
use crate::measure::{Evacuation, Outcome, Phases, Progress, MIB};
use anyhow::{Context, Result};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};
use virt::domain::{Domain, DomainState, DomainStateEnum};
use virt::sys;

/// After a cancel, how long the migration call may take to return.
const ABORT_GRACE: Duration = Duration::from_secs(30);
/// Destination may still be "inmigrate" right after completion.
const RESUME_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the source's job-completed event may trail the migration call.
const EVENT_WAIT: Duration = Duration::from_secs(5);
/// Passes after which a pre-copy that has not switched over is judged not
/// to converge.
const PASS_LIMIT: u64 = 12;

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
    pub(super) fn try_evacuate(
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
                samples.push(Progress {
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
