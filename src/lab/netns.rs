//! Network namespaces: the simulated hosts of the local lab.

use crate::sh;
use anyhow::{Context, Result};
use nix::sched::{setns, CloneFlags};
use std::fs::File;
use std::time::{Duration, Instant};

/// A named network namespace that is deleted, with every process still in
/// it, when dropped.
#[derive(Debug)]
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn create(name: &str) -> Result<Netns> {
        sh::run("ip", &["netns", "add", name])?;
        let ns = Netns {
            name: name.to_string(),
        };
        ns.exec("ip", &["link", "set", "lo", "up"])?;
        // The lab speaks IPv4 only; IPv6's own chatter (router and neighbour
        // solicitations) would be stray frames on the measured links.
        ns.enter(|| {
            for conf in ["all", "default"] {
                std::fs::write(format!("/proc/sys/net/ipv6/conf/{conf}/disable_ipv6"), "1")?;
            }
            std::io::Result::Ok(())
        })?
        .with_context(|| format!("turning IPv6 off in {name}"))?;
        Ok(ns)
    }

    pub fn exec(&self, program: &str, args: &[&str]) -> Result<String> {
        sh::run_in(&self.name, program, args)
    }

    /// Runs `f` on a thread that has entered this namespace, so sockets and
    /// connections it opens live in it (they stay there when used from any
    /// other thread afterwards).
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        enter(&self.name, f)
    }
}

pub fn enter<T: Send>(name: &str, f: impl FnOnce() -> T + Send) -> Result<T> {
    let path = format!("/run/netns/{name}");
    let file = File::open(&path).with_context(|| format!("no network namespace {path}"))?;
    std::thread::scope(|s| {
        s.spawn(move || {
            setns(&file, CloneFlags::CLONE_NEWNET).with_context(|| format!("setns into {path}"))?;
            Ok(f())
        })
        .join()
        .expect("thread inside a network namespace panicked")
    })
}

/// Kills every process inside namespace `name` (SIGTERM, then SIGKILL after
/// `grace`), then deletes the namespace. Used by Drop and by the sweeper of
/// labs left by a killed run.
pub fn destroy(name: &str, grace: Duration) {
    let pids = processes;
    let signal_all = |sig| {
        for pid in pids(name) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
        }
    };
    signal_all(nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while !pids(name).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    signal_all(nix::sys::signal::Signal::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !pids(name).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if let Err(e) = sh::run("ip", &["netns", "del", name]) {
        eprintln!("migsuite: cleanup: {e}");
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        destroy(&self.name, Duration::from_secs(3));
    }
}

/// Pids of the processes whose network namespace is `name`.
pub fn processes(name: &str) -> Vec<i32> {
    use std::os::unix::fs::MetadataExt;
    let Ok(target) = std::fs::metadata(format!("/run/netns/{name}")) else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::metadata(format!("/proc/{pid}/ns/net"))
                .is_ok_and(|m| m.ino() == target.ino() && m.dev() == target.dev())
        })
        .collect()
}
