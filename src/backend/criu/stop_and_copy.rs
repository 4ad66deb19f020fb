//! Stop-and-copy over the lab LAN. CRIU freezes the container on the
//! source and sends its memory pages to a page server on the destination
//! host, while the rest of its state (small images: processes, files,
//! namespaces) goes to the shared storage; the destination restores it in
//! its own network namespace, the veth's outer end on its bridge.
//!
//! The source's tasks are left stopped, not killed, by the dump: they are
//! killed once the destination runs the container, and resumed if the
//! restore fails, times out or is killed, so a failed evacuation leaves the
//! container running on the source.
//!
//! Downtime: the container runs nowhere from its freeze until the restored
//! tasks resume, which is CRIU's frozen time of the dump plus the time from
//! the dump's end until `criu restore` reports its statistics (copying the
//! small images and the restore itself).

use super::container::{self, VETH};
use super::stats::Stats;
use super::{OpenVz, Restored};
use crate::backend::Evacuation;
use crate::case::Case;
use crate::lab::network::HOST_BRIDGE;
use crate::lab::Lab;
use crate::measure::Outcome;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const PAGE_SERVER_PORT: &str = "27027";
const POLL: Duration = Duration::from_millis(5);
/// After the restore, how long the source's anchor may take to go.
const SOURCE_EXIT_TIMEOUT: Duration = Duration::from_secs(5);

/// The clock of one evacuation: its deadline and the destination fault.
struct Clock {
    deadline: Instant,
    timeout_ms: u64,
    /// When to kill the destination's CRIU: `kill_destination_after` into
    /// the transfer, which starts with the dump.
    kill_at: Option<Instant>,
    killed: Option<String>,
}

impl Clock {
    fn expired(&self) -> bool {
        Instant::now() >= self.deadline
    }

    /// Kills `pid` (the destination's page server or restore) if the fault
    /// is due; says so in the failure reason.
    fn fault(&mut self, what: &str, pid: i32, transfer_started: Instant) {
        if self.killed.is_none() && self.kill_at.is_some_and(|t| Instant::now() >= t) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            self.killed = Some(format!("the destination's {what} had been killed {} ms into the transfer", transfer_started.elapsed().as_millis()));
        }
    }

    fn reason(&self, what: String) -> String {
        match &self.killed {
            Some(k) => format!("{what}; {k}"),
            None => what,
        }
    }
}

pub(super) fn evacuate(vz: &mut OpenVz, lab: &Lab, case: &Case, progress: &dyn Fn(&str)) -> Result<Evacuation, String> {
    let source = vz.source.as_ref().map(|s| s.init).ok_or("no container was provisioned")?;
    let root = vz.root.clone().ok_or("no container root")?;
    let started = Instant::now();
    let mut clock = Clock {
        deadline: started + Duration::from_millis(case.migration.timeout_ms),
        timeout_ms: case.migration.timeout_ms,
        kill_at: None,
        killed: None,
    };
    let (src_ns, dst_ns) = (&lab.source.netns.name, &lab.destination.netns.name);
    let dst_addr = lab.destination.libvirtd.addr.to_string();
    let images = lab.shared_dir().join("criu-images");
    let dest = lab.dir().join("criu-destination");
    for d in [&images, &dest] {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    let path = |p: &Path| p.display().to_string();

    // The page server daemonizes once it listens.
    let ps_pidfile = dest.join("page-server.pid");
    vz.criu
        .run_in(dst_ns, &["page-server", "--daemon", "--images-dir", &path(&dest), "--address", &dst_addr, "--port", PAGE_SERVER_PORT,
            "--pidfile", &path(&ps_pidfile), "--log-file", "page-server.log"])
        .map_err(|e| format!("starting the page server on the destination: {e:#}"))?;
    let page_server = read_pid(&ps_pidfile)?;
    let setup_ms = ms(started.elapsed());

    let transfer_started = Instant::now();
    clock.kill_at = case.faults.kill_destination_after_ms.map(|ms| transfer_started + Duration::from_millis(ms));
    progress(&format!("dumping the container to the page server on {dst_addr} (stop-and-copy)"));
    let mut dump = vz
        .criu
        .command_in(src_ns, &["dump", "--tree", &source.to_string(), "--images-dir", &path(&images), "--page-server", "--address", &dst_addr,
            "--port", PAGE_SERVER_PORT, "--leave-stopped", "--network-lock", "skip", "--display-stats", "--log-file", "dump.log"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting criu dump: {e}"))?;
    let dumped = loop {
        if let Some(status) = dump.try_wait().map_err(|e| e.to_string())? {
            break Some(status);
        }
        if clock.expired() {
            break None;
        }
        if alive(page_server) {
            clock.fault("page server", page_server, transfer_started);
        }
        std::thread::sleep(POLL);
    };
    let dump_ended = Instant::now();
    let failure = match dumped {
        None => Some(format!("timed out after {} ms in the dump, criu dump killed", clock.timeout_ms)),
        Some(s) if !s.success() => Some(format!("criu dump failed ({s}): {}", errors(&images.join("dump.log")))),
        Some(_) => None,
    };
    if let Some(why) = failure {
        let _ = dump.kill();
        let _ = dump.wait();
        let _ = kill(Pid::from_raw(page_server), Signal::SIGKILL);
        // CRIU resumes the tasks of a failed dump; a killed one cannot.
        container::signal_tree(source, Signal::SIGCONT);
        return Err(clock.reason(why));
    }
    let mut out = String::new();
    std::io::Read::read_to_string(&mut dump.stdout.take().unwrap(), &mut out).map_err(|e| e.to_string())?;
    let dump_stats = Stats::parse(&out);

    // The small images reach the destination through the shared storage.
    copy_images(&images, &dest)?;
    progress("restoring the container on the destination");
    let pidfile = dest.join("restore.pid");
    let external = format!("veth[eth0]:{VETH}@{HOST_BRIDGE}");
    // Not detached: `criu restore` stays the container's parent, in the
    // destination's namespace (see container.rs).
    let mut restore = vz
        .criu
        .command_in(dst_ns, &["restore", "--images-dir", &path(&dest), "--root", &path(&root), "--external", &external, "--display-stats",
            "--pidfile", &path(&pidfile), "--log-file", "restore.log"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting criu restore: {e}"))?;
    let restore_stats = wait_restored(&mut restore, &mut clock, transfer_started);
    let restored_at = Instant::now();
    let restored = restore_stats.and_then(|stats| Ok((stats, read_pid(&pidfile)?)));
    let (restore_stats, init) = match restored {
        Ok(r) => r,
        Err(why) => {
            let _ = restore.kill();
            let _ = restore.wait();
            if let Ok(pid) = read_pid(&pidfile) {
                container::signal_tree(pid, Signal::SIGKILL);
            }
            container::signal_tree(source, Signal::SIGCONT);
            return Err(clock.reason(format!("{why}: {}", errors(&dest.join("restore.log")))));
        }
    };

    // The container runs on the destination: the source's goes.
    vz.destination = Some(Restored { restore, init });
    if let Some(mut s) = vz.source.take() {
        container::signal_tree(s.init, Signal::SIGKILL);
        crate::sh::wait_exit(&mut s.anchor, SOURCE_EXIT_TIMEOUT);
    }
    vz.inits.lock().unwrap().clone_from(&[None, Some(init)]);

    let frozen_ms = dump_stats.ms("Frozen time");
    let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
    progress(&format!(
        "restored: frozen {:.0} ms (CRIU), restore {:.0} ms (CRIU)",
        frozen_ms.unwrap_or(f64::NAN),
        restore_stats.ms("Restore time").unwrap_or(f64::NAN)
    ));
    Ok(Evacuation {
        outcome: Outcome::Completed,
        running_on_destination_at: Some(restored_at),
        reported_total_ms: Some(ms(restored_at - started)),
        reported_downtime_ms: frozen_ms.map(|f| f + ms(restored_at - dump_ended)),
        setup_time_ms: Some(setup_ms),
        bytes_transferred: dump_stats.get("Memory pages written").map(|p| p * page_size),
        memory_iterations: Some(1),
    })
}

/// Reads `criu restore`'s output until it prints its statistics, which it
/// does once the restored tasks run; the process itself stays.
fn wait_restored(restore: &mut Child, clock: &mut Clock, transfer_started: Instant) -> Result<Stats, String> {
    let (tx, rx) = mpsc::channel();
    let stdout = restore.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
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
        if clock.expired() {
            return Err(format!("timed out after {} ms in the restore, criu restore killed", clock.timeout_ms));
        }
        clock.fault("criu restore", restore.id() as i32, transfer_started);
    }
}

fn copy_images(from: &Path, to: &Path) -> Result<(), String> {
    let entries = std::fs::read_dir(from).map_err(|e| format!("{}: {e}", from.display()))?;
    for e in entries.flatten().filter(|e| e.file_name().to_string_lossy().ends_with(".img")) {
        std::fs::copy(e.path(), to.join(e.file_name())).map_err(|err| format!("copying {}: {err}", e.path().display()))?;
    }
    Ok(())
}

fn read_pid(pidfile: &Path) -> Result<i32, String> {
    let text = std::fs::read_to_string(pidfile).map_err(|e| format!("{}: {e}", pidfile.display()))?;
    text.trim().parse().map_err(|_| format!("{}: not a pid: {text:?}", pidfile.display()))
}

fn alive(pid: i32) -> bool {
    kill(Pid::from_raw(pid), None).is_ok()
}


/// CRIU's error lines in `log`, the reason a dump or restore failed.
fn errors(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    // Missing rlimit privileges and iptables tools are harmless here.
    let harmless = ["RLIMIT_NOFILE", "iptables", "ip6tables"];
    let lines: Vec<&str> = text.lines().filter(|l| l.contains("Error") && !harmless.iter().any(|h| l.contains(h))).collect();
    match lines.len() {
        0 => format!("no error in {}", log.display()),
        n => lines[n.saturating_sub(3)..].join("; "),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
