//! The observer on the runner's side of the guest LAN: receives the agent's
//! hellos, heartbeats and packet stream, and keeps the arrival time of
//! every heartbeat (`crate::derive` finds the longest gap, the downtime
//! the guest's peers saw). Only the guest's address is heard: on a real LAN any
//! machine could otherwise fill a downtime's gap with heartbeats of its
//! own. What it keeps is bounded, however fast datagrams come.

use crate::lab::Lab;
use crate::wire::{self, Heartbeat};
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::net::{IpAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The most heartbeats kept: minutes of the agent's (one a millisecond),
/// longer than any run; beyond it the oldest half goes.
const KEPT: usize = 1 << 20;

#[derive(Default)]
struct Seen {
    hello: Option<String>,
    heartbeats: Vec<(Instant, Heartbeat)>,
}

impl Seen {
    fn keep(&mut self, at: Instant, heartbeat: Heartbeat) {
        if self.heartbeats.len() >= KEPT {
            self.heartbeats.drain(..KEPT / 2);
        }
        self.heartbeats.push((at, heartbeat));
    }
}

pub struct Observer {
    seen: Arc<Mutex<Seen>>,
    data_bytes: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Observer {
    pub fn start(lab: &Lab) -> Result<Observer> {
        let at = lab.inventory.observer;
        let (hb_sock, data_sock) = lab
            .on_lan(|| -> std::io::Result<_> {
                Ok((
                    UdpSocket::bind((at, wire::OBSERVER_PORT))?,
                    UdpSocket::bind((at, wire::DATA_PORT))?,
                ))
            })?
            .with_context(|| format!("the observer's address {at} (the inventory's `observer`)"))?;
        let seen = Arc::new(Mutex::new(Seen::default()));
        let data_bytes = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        for s in [&hb_sock, &data_sock] {
            s.set_read_timeout(Some(Duration::from_millis(100)))?;
        }
        let guest = IpAddr::V4(lab.inventory.guest.0);
        let (seen2, stop2) = (seen.clone(), stop.clone());
        let heartbeats = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !stop2.load(Ordering::Relaxed) {
                let Ok((n, from)) = hb_sock.recv_from(&mut buf) else {
                    continue;
                };
                if from.ip() != guest {
                    continue;
                }
                let now = Instant::now();
                let mut seen = seen2.lock().unwrap();
                if let Some(hb) = Heartbeat::decode(&buf[..n]) {
                    seen.keep(now, hb);
                } else if let Some(text) = wire::decode_hello(&buf[..n]) {
                    seen.hello = Some(text);
                }
            }
        });
        let (bytes2, stop3) = (data_bytes.clone(), stop.clone());
        let data = std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            while !stop3.load(Ordering::Relaxed) {
                if let Ok((n, from)) = data_sock.recv_from(&mut buf) {
                    if from.ip() == guest {
                        bytes2.fetch_add(n as u64, Ordering::Relaxed);
                    }
                }
            }
        });
        Ok(Observer {
            seen,
            data_bytes,
            stop,
            threads: vec![heartbeats, data],
        })
    }

    /// The agent's hello (`key=value` lines), once it arrives; if it does
    /// not, the error ends with the last lines of the guest's `console`
    /// (a file of this machine; None where the console stays on its host).
    pub fn wait_hello(
        &self,
        timeout: Duration,
        console: Option<&std::path::Path>,
    ) -> Result<BTreeMap<String, String>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(text) = self.seen.lock().unwrap().hello.clone() {
                return Ok(text
                    .lines()
                    .filter_map(|l| l.split_once('='))
                    .map(|(k, v)| (k.into(), v.into()))
                    .collect());
            }
            if Instant::now() > deadline {
                let said = match console {
                    Some(file) => match console_tail(file, 15) {
                        Ok(tail) => format!("last console lines:\n{tail}"),
                        Err(e) => format!("its console log could not be read: {e:#}"),
                    },
                    None => "its console was on its host (a pty there), not kept".into(),
                };
                bail!(
                    "the guest's agent did not say hello within {} s; {said}",
                    timeout.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Arrival times of the heartbeats received since `since`.
    pub fn heartbeats_since(&self, since: Instant) -> Vec<(Instant, Heartbeat)> {
        let seen = self.seen.lock().unwrap();
        let first = seen.heartbeats.partition_point(|(t, _)| *t < since);
        seen.heartbeats[first..].to_vec()
    }

    pub fn last_heartbeat(&self) -> Option<(Instant, Heartbeat)> {
        self.seen.lock().unwrap().heartbeats.last().copied()
    }

    /// Waits for a heartbeat that arrives after `since`.
    pub fn heartbeat_after(&self, since: Instant, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.last_heartbeat().is_some_and(|(t, _)| t > since) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    pub fn data_bytes(&self) -> u64 {
        self.data_bytes.load(Ordering::Relaxed)
    }
}

/// Of a guest's console log, at most this much is read: its end.
const CONSOLE_TAIL: u64 = 64 * 1024;

/// The last `lines` lines of the guest's console log at `path`, read as a
/// hostile guest may have left it: a container owns the file that the
/// lab's link points at, and may have made it a link to a file of this
/// machine's, a FIFO or an endless device. The lab's own link is followed
/// once; the file is opened without following another or waiting, must
/// be a regular file, and only its last `CONSOLE_TAIL` bytes are read.
fn console_tail(path: &std::path::Path, lines: usize) -> Result<String> {
    use std::io::{Read, Seek, SeekFrom};
    use std::os::unix::fs::OpenOptionsExt;
    let target = if std::fs::symlink_metadata(path)?.file_type().is_symlink() {
        let to = std::fs::read_link(path)?;
        match path.parent() {
            Some(dir) if to.is_relative() => dir.join(to),
            _ => to,
        }
    } else {
        path.to_path_buf()
    };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(&target)
        .with_context(|| format!("{} (not followed if a link)", target.display()))?;
    let meta = file.metadata()?;
    anyhow::ensure!(
        meta.file_type().is_file(),
        "{} is not a regular file",
        target.display()
    );
    file.seek(SeekFrom::Start(meta.len().saturating_sub(CONSOLE_TAIL)))?;
    let mut bytes = Vec::new();
    file.take(CONSOLE_TAIL).read_to_end(&mut bytes)?;
    let text = String::from_utf8_lossy(&bytes);
    let mut tail: Vec<&str> = text.lines().rev().take(lines).collect();
    tail.reverse();
    Ok(tail.join("\n"))
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_console_log_made_a_link_fifo_or_device_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("container-root");
        std::fs::create_dir(&root).unwrap();
        // The lab's link to the container's log, as `criu::container` makes it.
        let ours = dir.path().join("console.log");
        std::os::unix::fs::symlink(root.join("console.log"), &ours).unwrap();
        let lines: String = (0..20_000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(root.join("console.log"), &lines).unwrap();
        assert_eq!(console_tail(&ours, 2).unwrap(), "line 19998\nline 19999");
        // What the container can make of its own file.
        let placed = root.join("console.log");
        for made in ["link", "fifo", "device"] {
            std::fs::remove_file(&placed).unwrap();
            match made {
                "link" => std::os::unix::fs::symlink("/etc/hostname", &placed).unwrap(),
                "fifo" => nix::unistd::mkfifo(&placed, nix::sys::stat::Mode::S_IRWXU).unwrap(),
                // /dev/zero's numbers: endless, were it read.
                _ => nix::sys::stat::mknod(
                    &placed,
                    nix::sys::stat::SFlag::S_IFCHR,
                    nix::sys::stat::Mode::S_IRUSR,
                    nix::sys::stat::makedev(1, 5),
                )
                .unwrap(),
            }
            assert!(console_tail(&ours, 2).is_err(), "{made}");
        }
    }

    #[test]
    fn what_is_kept_is_bounded_and_the_newest() {
        let mut seen = Seen::default();
        let t0 = Instant::now();
        for seq in 0..(KEPT as u64 + 10) {
            let hb = Heartbeat {
                seq,
                agent_ns: 0,
                dirty_passes: 0,
                memory_errors: 0,
            };
            seen.keep(t0 + Duration::from_micros(seq), hb);
        }
        assert!(seen.heartbeats.len() <= KEPT);
        assert_eq!(seen.heartbeats.last().unwrap().1.seq, KEPT as u64 + 9);
    }
}
