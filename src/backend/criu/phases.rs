//! What every CRIU strategy shares: the clock of an evacuation (deadline
//! and destination fault), the restore on the destination, handing the
//! container over or back, and reading CRIU's files.

use super::binary::Criu;
use super::container::Started;
use super::container::{self, VETH};
use super::stats::Stats;
use super::OpenVz;
use crate::case::Case;
use crate::lab::network::HOST_BRIDGE;
use crate::lab::Lab;
use crate::pidfd::ProcessHandle;
use nix::sys::signal::Signal;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub(super) const POLL: Duration = Duration::from_millis(5);
/// After the hand-over, how long the source's anchor may take to go.
const SOURCE_EXIT_TIMEOUT: Duration = Duration::from_secs(5);

/// The clock of one evacuation: its deadline and the destination fault.
pub(super) struct Clock {
    deadline: Instant,
    pub timeout_ms: u64,
    kill_after: Option<Duration>,
    /// When the transfer started (with the dump), once it has.
    transfer_started: Option<Instant>,
    killed: Option<String>,
}

impl Clock {
    pub fn new(case: &Case, started: Instant) -> Clock {
        Clock {
            deadline: started + Duration::from_millis(case.migration.timeout_ms),
            timeout_ms: case.migration.timeout_ms,
            kill_after: case
                .faults
                .kill_destination_after_ms
                .map(Duration::from_millis),
            transfer_started: None,
            killed: None,
        }
    }

    /// The transfer starts now: the fault, if any, counts from here.
    pub fn start_transfer(&mut self) -> Instant {
        let now = Instant::now();
        self.transfer_started = Some(now);
        now
    }

    pub fn expired(&self) -> bool {
        Instant::now() >= self.deadline
    }

    /// Kills the destination's `what` with `kill` if the fault is due; says
    /// so in the failure reason.
    pub fn fault(&mut self, what: &str, kill: impl FnOnce()) {
        let (Some(after), Some(started)) = (self.kill_after, self.transfer_started) else {
            return;
        };
        if self.killed.is_none() && started.elapsed() >= after {
            kill();
            self.killed = Some(format!(
                "the destination's {what} had been killed {} ms into the transfer",
                started.elapsed().as_millis()
            ));
        }
    }

    /// Whether the fault killed a destination process.
    pub fn killed(&self) -> bool {
        self.killed.is_some()
    }

    pub fn reason(&self, what: String) -> String {
        match &self.killed {
            Some(k) => format!("{what}; {k}"),
            None => what,
        }
    }
}

/// Where the dump writes its images (the shared storage) and where the
/// destination restores from (its own copy).
pub(super) fn image_dirs(lab: &Lab) -> Result<(PathBuf, PathBuf), String> {
    let dirs = (
        lab.shared_dir().join("criu-images"),
        lab.dir().join("criu-destination"),
    );
    for d in [&dirs.0, &dirs.1] {
        // A previous run's images (the guest moves back and forth) must not
        // be restored again.
        let _ = std::fs::remove_dir_all(d);
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    Ok(dirs)
}

/// Waits for `criu dump` to exit, meanwhile killing the destination's
/// `what` (`peer`) when the fault is due; None if the deadline came first.
pub(super) fn wait_dump(
    dump: &mut Child,
    clock: &mut Clock,
    what: &str,
    peer: &ProcessHandle,
) -> Result<Option<ExitStatus>, String> {
    loop {
        if let Some(status) = dump.try_wait().map_err(|e| e.to_string())? {
            return Ok(Some(status));
        }
        if clock.expired() {
            return Ok(None);
        }
        if peer.alive() {
            clock.fault(what, || peer.kill());
        }
        std::thread::sleep(POLL);
    }
}

/// Restores the container from the images in `dest` on the destination,
/// in its network namespace with the veth's outer end on its bridge, and
/// waits until the restored tasks run. On failure nothing of it is left
/// (the caller resumes the source).
pub(super) fn restore(
    vz: &OpenVz,
    lab: &Lab,
    dest: &Path,
    extra: &[&str],
    clock: &mut Clock,
) -> Result<(Started, Stats), String> {
    let root = vz.root.as_ref().ok_or("no container root")?;
    let ns = &simulated(&lab.destination)?.netns.name;
    restore_container(
        &vz.criu,
        Some(ns),
        &Restoring {
            images: dest,
            root,
            bridge: HOST_BRIDGE,
            extra,
        },
        |restore| {
            if clock.expired() {
                return Err(format!(
                    "timed out after {} ms in the restore, criu restore killed",
                    clock.timeout_ms
                ));
            }
            // Not yet waited for: its pid cannot have been reused.
            clock.fault("criu restore", || {
                let _ = restore.kill();
            });
            Ok(())
        },
    )
}

/// What a restore restores, and where.
pub(super) struct Restoring<'a> {
    pub images: &'a Path,
    pub root: &'a Path,
    /// The bridge the veth's outer end joins.
    pub bridge: &'a str,
    pub extra: &'a [&'a str],
}

/// `criu restore` of `what` in network namespace `ns` (or the host's own),
/// waiting until the restored tasks run; `tick` is asked at every poll
/// and ends the wait with its error. On failure nothing of it is left.
pub(super) fn restore_container(
    criu: &Criu,
    ns: Option<&str>,
    what: &Restoring,
    tick: impl FnMut(&mut Child) -> Result<(), String>,
) -> Result<(Started, Stats), String> {
    let pidfile = what.images.join("restore.pid");
    let external = format!("veth[eth0]:{VETH}@{}", what.bridge);
    let (images, root, pidfile_arg) = (
        what.images.display().to_string(),
        what.root.display().to_string(),
        pidfile.display().to_string(),
    );
    let mut args = vec![
        "restore",
        "--images-dir",
        &images,
        "--root",
        &root,
        "--external",
        &external,
        "--display-stats",
        "--pidfile",
        &pidfile_arg,
        "--log-file",
        "restore.log",
    ];
    args.extend(what.extra);
    // Not detached: `criu restore` stays the container's parent, in the
    // destination's namespace (see container.rs).
    let mut restore = criu
        .command(ns, &args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting criu restore: {e}"))?;
    let restored =
        wait_restored(&mut restore, tick).and_then(|stats| Ok((stats, read_pid(&pidfile)?)));
    match restored {
        Ok((stats, init)) => Ok((
            Started {
                anchor: restore,
                init,
            },
            stats,
        )),
        Err(why) => {
            // The container's init, while `criu restore` (its parent) has
            // not been reaped and so cannot have lost it.
            if let Ok(init) = read_pid(&pidfile) {
                container::signal_tree(&init, Signal::SIGKILL);
            }
            let _ = restore.kill();
            let _ = restore.wait();
            Err(format!(
                "{why}: {}",
                errors(&what.images.join("restore.log"))
            ))
        }
    }
}

/// Reads `criu restore`'s output until it prints its statistics, which it
/// does once the restored tasks run; the process itself stays.
fn wait_restored(
    restore: &mut Child,
    mut tick: impl FnMut(&mut Child) -> Result<(), String>,
) -> Result<Stats, String> {
    let (tx, rx) = mpsc::channel();
    let stdout = restore.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut text = String::new();
    loop {
        match rx.recv_timeout(POLL) {
            Ok(line) => {
                let done = line.starts_with("Restore time:");
                text.push_str(&line);
                text.push('\n');
                if done {
                    return Ok(Stats::parse(&text));
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = restore.wait().map_err(|e| e.to_string())?;
                return Err(format!("criu restore failed ({status})"));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        tick(restore)?;
    }
}

/// The restored container is the guest now; the sampler follows it.
pub(super) fn adopt(vz: &mut OpenVz, restored: Started) {
    vz.inits.lock().unwrap()[1] = Some(restored.init.pid());
    vz.destination = Some(restored);
}

/// The container runs on the destination for good: the source's goes.
pub(super) fn retire_source(vz: &mut OpenVz) {
    if let Some(mut s) = vz.source.take() {
        container::signal_tree(&s.init, Signal::SIGKILL);
        crate::sh::wait_exit(&mut s.anchor, SOURCE_EXIT_TIMEOUT);
    }
    vz.inits.lock().unwrap()[0] = None;
}

/// A failed evacuation: the destination's copy goes, if there is one, and
/// the source's tasks, stopped since the dump, run again.
pub(super) fn roll_back(vz: &mut OpenVz) {
    if let Some(d) = vz.destination.take() {
        d.kill();
    }
    vz.inits.lock().unwrap()[1] = None;
    if let Some(s) = &vz.source {
        container::signal_tree(&s.init, Signal::SIGCONT);
    }
}

/// The small images reach the destination through the shared storage.
pub(super) fn copy_images(from: &Path, to: &Path) -> Result<(), String> {
    let entries = std::fs::read_dir(from).map_err(|e| format!("{}: {e}", from.display()))?;
    for e in entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".img"))
    {
        std::fs::copy(e.path(), to.join(e.file_name()))
            .map_err(|err| format!("copying {}: {err}", e.path().display()))?;
    }
    Ok(())
}

/// The process a CRIU daemon's pid file names, held by a pidfd from now on.
pub(super) fn read_pid(pidfile: &Path) -> Result<ProcessHandle, String> {
    let text =
        std::fs::read_to_string(pidfile).map_err(|e| format!("{}: {e}", pidfile.display()))?;
    let pid = text
        .trim()
        .parse()
        .map_err(|_| format!("{}: not a pid: {text:?}", pidfile.display()))?;
    ProcessHandle::open(pid).map_err(|e| format!("{} names pid {pid}: {e}", pidfile.display()))
}

/// CRIU's error lines in `log`, the reason a dump or restore failed.
pub(super) fn errors(log: &Path) -> String {
    match error_lines(log) {
        lines if lines.is_empty() => format!("no error in {}", log.display()),
        lines => lines.join("; "),
    }
}

/// The last three error lines of a CRIU log.
pub(super) fn error_lines(log: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    // Missing rlimit privileges and iptables tools are harmless here.
    let harmless = ["RLIMIT_NOFILE", "iptables", "ip6tables"];
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("Error") && !harmless.iter().any(|h| l.contains(h)))
        .collect();
    lines[lines.len().saturating_sub(3)..]
        .iter()
        .map(|l| l.to_string())
        .collect()
}

/// `host`'s namespace and daemon: CRIU runs only on simulated hosts.
pub(super) fn simulated(host: &crate::lab::Host) -> Result<&crate::lab::Simulated, String> {
    host.simulated().map_err(|e| format!("{e:#}"))
}

/// When the dump that ended at `dump_ended` froze the container, from
/// CRIU's frozen time (ms).
pub(super) fn frozen_at(dump_ended: Instant, frozen_ms: Option<f64>) -> Option<Instant> {
    dump_ended.checked_sub(Duration::try_from_secs_f64(frozen_ms? / 1000.0).ok()?)
}

/// What a progress line says once the container runs on the destination.
pub(super) fn restored_line(frozen_ms: Option<f64>, restore: &Stats) -> String {
    format!(
        "restored: frozen {:.0} ms, restore {:.0} ms (CRIU)",
        frozen_ms.unwrap_or(f64::NAN),
        restore.ms("Restore time").unwrap_or(f64::NAN)
    )
}

pub(super) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub(super) fn page_size() -> u64 {
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as u64 }
}
