//! Post-copy (CRIU lazy pages) over the migration link. The dump freezes the
//! container and writes its small images (processes, files, namespaces),
//! but keeps the memory on the source, where it serves it from a page
//! server. The destination restores the container at once; its tasks run
//! and fault their memory in through userfaultfd, each fault answered by a
//! `criu lazy-pages` daemon that fetches the page from the source over the
//! migration link and, meanwhile, pulls the rest in the background.
//!
//! The source's tasks are left stopped (they hold the memory being
//! served) and killed once the last page has moved. If anything fails
//! before that, the destination's copy is killed and the source resumes
//! from its frozen state.
//!
//! Downtime: from the freeze (CRIU's "Seized task" in the dump log) until
//! the restored tasks run; the faults after that are seen only by the
//! guest, in its heartbeats. Total time: until the source's page server
//! has served every page.

use super::binary::Criu;
use super::phases::{self, copy_images, error_lines, errors, ms, read_pid, Clock, POLL};
use super::stats::Stats;
use super::OpenVz;
use crate::backend::span_ms;
use crate::case::Case;
use crate::lab::Lab;
use crate::measure::{Evacuation, Outcome, Phases};
use crate::pidfd::ProcessHandle;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const LAZY_PAGES_PORT: &str = "27028";
/// CRIU serves lazy pages through pipes it sizes to PIPE_MAX_SIZE (1024
/// pages); where it may not, it goes on with no sink and every request
/// fails ("page-pipe: splice: -1: Bad file descriptor").
const LAZY_PIPE_BYTES: i32 = 1024 * 4096;
/// The dump reports on this descriptor once its page server listens.
const STATUS_FD: i32 = 3;

/// Why this host cannot migrate a container by lazy pages; None if it can.
pub(super) fn unavailable(criu: &Criu) -> Option<String> {
    if let Err(said) = criu.feature("uffd-noncoop") {
        return Some(format!(
            "openvz: postcopy (CRIU lazy pages) needs userfaultfd with non-cooperative events (CONFIG_USERFAULTFD), \
             which kernel {} does not offer: `criu check --feature uffd-noncoop`: {said}",
            crate::sh::kernel_release()
        ));
    }
    if let Err(errno) = pipe_of(LAZY_PIPE_BYTES) {
        let max = std::fs::read_to_string("/proc/sys/fs/pipe-max-size").unwrap_or_default();
        return Some(format!(
            "openvz: postcopy (CRIU lazy pages) needs pipes of {} MiB, but F_SETPIPE_SZ fails here ({errno}): \
             fs.pipe-max-size is {} and this process lacks CAP_SYS_RESOURCE. Raise it: \
             `sysctl -w fs.pipe-max-size={LAZY_PIPE_BYTES}` (ci/setup.sh does)",
            LAZY_PIPE_BYTES >> 20,
            max.trim()
        ));
    }
    None
}

/// Whether this process can make a pipe of `bytes`, as CRIU will.
fn pipe_of(bytes: i32) -> nix::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let (read, _write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    fcntl(read.as_raw_fd(), FcntlArg::F_SETPIPE_SZ(bytes)).map(drop)
}

/// Starts `criu dump` of the tree of `pid` into `images`, keeping its
/// memory, which it serves from `address:port` (on the source) until a
/// lazy-pages daemon has pulled it all; the tasks stay stopped. Returns the
/// dump and the pipe on which it says that its page server listens.
pub(super) fn spawn_lazy_dump(
    criu: &Criu,
    ns: Option<&str>,
    pid: i32,
    images: &Path,
    (address, port): (&str, &str),
    extra: &[&str],
) -> Result<(Child, OwnedFd), String> {
    let (ready, ready_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let (pid, images, status_fd) = (
        pid.to_string(),
        images.display().to_string(),
        STATUS_FD.to_string(),
    );
    let mut args = vec![
        "dump",
        "--tree",
        &pid,
        "--images-dir",
        &images,
        "--lazy-pages",
        "--address",
        address,
        "--port",
        port,
        "--leave-stopped",
        "--status-fd",
        &status_fd,
        "-v3",
        "--log-file",
        "dump.log",
    ];
    args.extend(extra);
    let mut command = criu.command(ns, &args);
    let write_end = ready_w.as_raw_fd();
    // dup2 leaves the copy open across exec, unlike the original.
    unsafe {
        command.pre_exec(move || {
            nix::unistd::dup2(write_end, STATUS_FD)
                .map(drop)
                .map_err(std::io::Error::from)
        });
    }
    let dump = command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting criu dump: {e}"))?;
    Ok((dump, ready))
}

/// Starts `criu lazy-pages` on the destination: it fetches the pages of the
/// container restored from `images` from the dump serving them at
/// `address:port`, as its tasks fault and in the background.
pub(super) fn start_lazy_pages(
    criu: &Criu,
    ns: Option<&str>,
    images: &Path,
    (address, port): (&str, &str),
) -> Result<ProcessHandle, String> {
    let pidfile = images.join("lazy-pages.pid");
    let path = |p: &Path| p.display().to_string();
    criu.run(
        ns,
        &[
            "lazy-pages",
            "--page-server",
            "--address",
            address,
            "--port",
            port,
            "--images-dir",
            &path(images),
            "--daemon",
            "--pidfile",
            &path(&pidfile),
            "-v3",
            "--log-file",
            "lazy-pages.log",
        ],
    )
    .map_err(|e| format!("{e:#}"))
    .and_then(|_| read_pid(&pidfile))
    .map_err(|e| format!("starting the lazy-pages daemon on the destination: {e}"))
}

pub(super) fn evacuate(
    vz: &mut OpenVz,
    lab: &Lab,
    case: &Case,
    progress: &dyn Fn(&str),
) -> Result<Evacuation, String> {
    let source = vz.source_pid()?;
    let started = Instant::now();
    let mut clock = Clock::new(case, started);
    let (src, dst) = (
        phases::simulated(&lab.source)?,
        phases::simulated(&lab.destination)?,
    );
    let (src_ns, dst_ns) = (&src.netns.name, &dst.netns.name);
    let src_addr = src.link_addr.to_string();
    let (images, dest) = phases::image_dirs(lab)?;

    progress(&format!(
        "dumping the container; its memory stays on the source, served from {src_addr} (post-copy)"
    ));
    let dump_spawned = clock.start_transfer();
    let (mut dump, ready) = spawn_lazy_dump(
        &vz.criu,
        Some(src_ns),
        source,
        &images,
        (&src_addr, LAZY_PAGES_PORT),
        &["--network-lock", "skip"],
    )?;
    let dump_log = images.join("dump.log");
    let fail = |vz: &mut OpenVz, dump: &mut Child, clock: &Clock, why: String| {
        let _ = dump.kill();
        let _ = dump.wait();
        phases::roll_back(vz);
        clock.reason(why)
    };
    if let Err(why) = wait_ready(ready, &mut dump, &|| clock.expired(), clock.timeout_ms) {
        return Err(fail(
            vz,
            &mut dump,
            &clock,
            format!("{why}: {}", errors(&dump_log)),
        ));
    }

    if let Err(why) = copy_images(&images, &dest) {
        return Err(fail(vz, &mut dump, &clock, why));
    }
    let lazy = match start_lazy_pages(&vz.criu, Some(dst_ns), &dest, (&src_addr, LAZY_PAGES_PORT)) {
        Ok(pid) => pid,
        Err(e) => return Err(fail(vz, &mut dump, &clock, e)),
    };
    let stop_lazy = || lazy.kill();

    progress("restoring the container on the destination; its memory follows on demand");
    let restore_started = Instant::now();
    let restore_stats = match phases::restore(vz, lab, &dest, &["--lazy-pages"], &mut clock) {
        Ok((restored, stats)) => {
            phases::adopt(vz, restored);
            stats
        }
        Err(why) => {
            stop_lazy();
            return Err(fail(vz, &mut dump, &clock, why));
        }
    };
    let restored_at = Instant::now();

    // Until the source has served its last page.
    let served = phases::wait_dump(&mut dump, &mut clock, "lazy-pages daemon", &lazy);
    let done_at = Instant::now();
    let failure = match served {
        Err(e) => Some(e),
        Ok(None) => Some(format!(
            "timed out after {} ms while the memory followed, criu dump killed",
            clock.timeout_ms
        )),
        Ok(Some(s)) if !s.success() => Some(format!(
            "criu dump failed while serving lazy pages ({s}): {}",
            errors(&dump_log)
        )),
        // The source's page server takes the killed daemon's closed
        // connection for the end of the transfer and exits cleanly: the
        // pages it had not yet served are lost to the destination.
        Ok(Some(_)) if clock.killed() => {
            Some("the lazy-pages daemon died before the container's memory had all moved".into())
        }
        Ok(Some(_)) => None,
    };
    stop_lazy();
    if let Some(why) = failure {
        let lazy = error_lines(&dest.join("lazy-pages.log"))
            .into_iter()
            .map(|l| format!("; lazy-pages: {l}"))
            .collect::<String>();
        return Err(fail(vz, &mut dump, &clock, format!("{why}{lazy}; the destination's copy was killed and the source resumed from its freeze")));
    }
    phases::retire_source(vz);

    let dump_text = std::fs::read_to_string(&dump_log).unwrap_or_default();
    let frozen_at = log_offset(&dump_text, "Seized task").map(|t| dump_spawned + t);
    let lazy_pages =
        pages_read(&std::fs::read_to_string(dest.join("lazy-pages.log")).unwrap_or_default());
    let at = Moments {
        started,
        frozen_at,
        restore_started,
        restored_at,
        done_at,
    };
    Ok(completed(
        &at,
        lazy_pages,
        image_bytes(&images, "pages-"),
        &restore_stats,
        progress,
    ))
}

/// When a post-copy's steps came, on the runner's clock.
pub(super) struct Moments {
    pub started: Instant,
    /// CRIU's "Seized task", if its log said.
    pub frozen_at: Option<Instant>,
    pub restore_started: Instant,
    /// The restored tasks run.
    pub restored_at: Instant,
    /// The source has served its last page.
    pub done_at: Instant,
}

/// The evacuation a post-copy made: `pages` pulled after the restore and
/// `image_bytes` of pages sent with the images; says so on `progress`.
pub(super) fn completed(
    at: &Moments,
    pages: u64,
    image_bytes: u64,
    restore: &Stats,
    progress: &dyn Fn(&str),
) -> Evacuation {
    progress(&format!(
        "restored: restore {:.0} ms (CRIU), {pages} pages pulled after it, memory complete {:.0} \
         ms after the restore",
        restore.ms("Restore time").unwrap_or(f64::NAN),
        ms(at.done_at - at.restored_at)
    ));
    Evacuation {
        outcome: Outcome::Completed,
        completed_at: Some(at.done_at),
        reported_total_ms: Some(ms(at.done_at - at.started)),
        reported_downtime_ms: at
            .frozen_at
            .map(|f| ms(at.restored_at.saturating_duration_since(f))),
        setup_time_ms: None,
        bytes_transferred: Some(pages * phases::page_size() + image_bytes),
        memory_iterations: Some(1),
        // Frozen, the small images go; the container resumes on the
        // destination; its memory follows while it runs.
        phases: Phases {
            preparation_ms: span_ms(Some(at.started), at.frozen_at),
            stop_and_copy_ms: span_ms(at.frozen_at, Some(at.restore_started)),
            resume_ms: span_ms(Some(at.restore_started), Some(at.restored_at)),
            memory_transfer_ms: span_ms(Some(at.restored_at), Some(at.done_at)),
        },
        ..Default::default()
    }
}

/// Waits for the dump's word that its images are written and its page
/// server listens; a dump that dies first closes the pipe unsaid. Gives up
/// once `expired` says the `timeout_ms` are over.
pub(super) fn wait_ready(
    ready: OwnedFd,
    dump: &mut Child,
    expired: &dyn Fn() -> bool,
    timeout_ms: u64,
) -> Result<(), String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut byte = [0u8; 1];
        let _ = tx.send(std::fs::File::from(ready).read(&mut byte).unwrap_or(0));
    });
    loop {
        match rx.recv_timeout(POLL) {
            Ok(1) => return Ok(()),
            Ok(_) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = dump.wait().map_err(|e| e.to_string())?;
                return Err(format!("criu dump failed ({status})"));
            }
            Err(mpsc::RecvTimeoutError::Timeout) if expired() => {
                return Err(format!(
                    "timed out after {timeout_ms} ms in the dump, criu dump killed"
                ));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
    }
}

/// When CRIU logged the first line containing `what`, from its start:
/// log lines begin with "(SS.micros)".
pub(super) fn log_offset(log: &str, what: &str) -> Option<Duration> {
    let line = log.lines().find(|l| l.contains(what))?;
    let stamp = line.strip_prefix('(')?.split(')').next()?;
    // A garbled stamp (negative, huge, NaN) is no time at all.
    Duration::try_from_secs_f64(stamp.trim().parse::<f64>().ok()?).ok()
}

/// Pages the lazy-pages daemon fetched from the source: its log has one
/// "pr<pid>-<n> Read <address> <pages> pages" line per request.
pub(super) fn pages_read(log: &str) -> u64 {
    log.lines()
        .filter_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let at = words.iter().position(|w| *w == "Read")?;
            (words.get(at + 3) == Some(&"pages"))
                .then(|| words[at + 2].parse::<u64>().ok())
                .flatten()
        })
        .sum()
}

/// Bytes of the images whose names start with `prefix` (the pages CRIU
/// wrote with the images rather than serving them lazily).
pub(super) fn image_bytes(dir: &Path, prefix: &str) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_when_criu_logged_a_line() {
        let log = "(00.000000) CRIU run id = x\n(00.045175) Seized task 3499, state 1\n(00.045332) Seized task 3521, state 1\n";
        assert_eq!(
            log_offset(log, "Seized task"),
            Some(Duration::from_micros(45175))
        );
        assert_eq!(log_offset(log, "Unfreezing"), None);
    }

    #[test]
    fn counts_the_pages_the_daemon_read() {
        let log = "(00.058567) Connecting to server 10.250.0.1:27028\n\
                   (00.119442) pr1-1 Read 7f46d177e000 1 pages\n\
                   (00.119515) pr23-2 Read 7f46d17bc000 16 pages\n\
                   (00.119807) page-xfer: Disconnect from the page server\n";
        assert_eq!(pages_read(log), 17);
    }

    #[test]
    fn a_pipe_larger_than_allowed_is_refused() {
        // Far beyond any fs.pipe-max-size: fails even with CAP_SYS_RESOURCE
        // (the kernel caps pipes at 2^31 bytes).
        assert!(pipe_of(i32::MAX).is_err());
        assert!(pipe_of(65536).is_ok());
    }
}
