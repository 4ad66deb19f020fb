//! The warned failure. Every lab host sends a heartbeat, over the
//! management network, to the monitor on the runner's side; the injected failure makes the source host announce
//! that it is going down (the study's heartbeat warning). The monitor's
//! reception of that warning is time zero of every timeline, and what
//! triggers the evacuation.

use crate::lab::network::MANAGEMENT_ADDR;
use crate::lab::Lab;
use crate::wire::{HOST_ALIVE, HOST_GOING_DOWN, MONITOR_PORT};
use anyhow::{bail, Result};
use std::collections::BTreeSet;
use std::net::{IpAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const HOST_HEARTBEAT: Duration = Duration::from_millis(100);

pub struct FailureMonitor {
    socket: UdpSocket,
    /// The source host's address: the only one whose warning is heeded
    /// (anyone on the guest LAN can send a datagram to the monitor).
    source: IpAddr,
    warn_source: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    senders: Vec<JoinHandle<()>>,
}

impl FailureMonitor {
    pub fn start(lab: &Lab) -> Result<FailureMonitor> {
        let socket = lab.on_lan(|| UdpSocket::bind((MANAGEMENT_ADDR, MONITOR_PORT)))??;
        socket.set_read_timeout(Some(Duration::from_millis(50)))?;
        let warn_source = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let mut senders = Vec::new();
        for (host, warns) in [
            (&lab.source, Some(warn_source.clone())),
            (&lab.destination, None),
        ] {
            let sock = host
                .netns
                .enter(|| UdpSocket::bind((host.libvirtd.addr, 0)))??;
            let stop = stop.clone();
            senders.push(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let going_down = warns.as_ref().is_some_and(|w| w.load(Ordering::Relaxed));
                    let _ = sock.send_to(
                        if going_down {
                            HOST_GOING_DOWN
                        } else {
                            HOST_ALIVE
                        },
                        (MANAGEMENT_ADDR, MONITOR_PORT),
                    );
                    std::thread::sleep(HOST_HEARTBEAT);
                }
            }));
        }
        Ok(FailureMonitor {
            socket,
            source: lab.source.libvirtd.addr.into(),
            warn_source,
            stop,
            senders,
        })
    }

    /// Injects the failure: the source host starts announcing it goes down.
    pub fn inject(&self) {
        self.warn_source.store(true, Ordering::Relaxed);
    }

    /// Blocks until the monitor hears the source host's warning.
    pub fn wait_warning(&self, timeout: Duration) -> Result<Warning> {
        let deadline = Instant::now() + timeout;
        let mut ignored = BTreeSet::new();
        let mut buf = [0u8; 64];
        while Instant::now() < deadline {
            if let Ok((n, from)) = self.socket.recv_from(&mut buf) {
                if &buf[..n] == HOST_GOING_DOWN {
                    if from.ip() == self.source {
                        return Ok(Warning {
                            heard_at: Instant::now(),
                            ignored_from: ignored,
                        });
                    }
                    ignored.insert(from.ip());
                }
            }
        }
        bail!("no failure warning reached the monitor within {timeout:?}")
    }
}

/// The source host's warning, and the warnings from elsewhere that the
/// monitor did not heed before it.
pub struct Warning {
    pub heard_at: Instant,
    pub ignored_from: BTreeSet<IpAddr>,
}

impl Drop for FailureMonitor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.senders.drain(..) {
            let _ = t.join();
        }
    }
}
