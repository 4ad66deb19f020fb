//! A network interface's byte counters (frames whole, as the kernel counts
//! them), and which interface has an address: what shows that a stream
//! took the network it was meant to, and at what rate on the wire.

use anyhow::{Context, Result};
use nix::ifaddrs::getifaddrs;
use std::net::IpAddr;

/// Bytes an interface received and sent so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub rx: u64,
    pub tx: u64,
}

impl Counters {
    /// What was counted between `earlier` and these.
    pub fn since(self, earlier: Counters) -> Counters {
        Counters {
            rx: self.rx.saturating_sub(earlier.rx),
            tx: self.tx.saturating_sub(earlier.tx),
        }
    }
}

/// `dev`'s counters in the calling thread's network namespace.
pub fn counters(dev: &str) -> Result<Counters> {
    parse(&std::fs::read_to_string("/proc/thread-self/net/dev")?, dev)
}

/// `dev`'s counters in the text of /proc/net/dev.
fn parse(text: &str, dev: &str) -> Result<Counters> {
    let line = text
        .lines()
        .find_map(|l| l.trim_start().strip_prefix(&format!("{dev}:")))
        .with_context(|| format!("no {dev} in this network namespace"))?;
    // Eight receive counters, then the bytes sent.
    let field = |i: usize| line.split_whitespace().nth(i).and_then(|v| v.parse().ok());
    field(0)
        .zip(field(8))
        .map(|(rx, tx)| Counters { rx, tx })
        .with_context(|| format!("{dev} counters: {line}"))
}

/// The interface that has address `addr`.
pub fn interface_of(addr: IpAddr) -> Result<String> {
    getifaddrs()?
        .find(|i| {
            i.address.as_ref().is_some_and(|a| {
                let ip = a
                    .as_sockaddr_in()
                    .map(|v4| IpAddr::from(v4.ip()))
                    .or_else(|| a.as_sockaddr_in6().map(|v6| IpAddr::from(v6.ip())));
                ip == Some(addr)
            })
        })
        .map(|i| i.interface_name)
        .with_context(|| format!("no interface of this host has the address {addr}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_read_by_interface_name() {
        let text = "Inter-|   Receive                            |  Transmit\n \
             face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
             lo:    1000      10    0    0    0     0          0         0     1000      10    0    0    0     0       0          0\n\
             mig0:123456789012 7 0 0 0 0 0 0 42 3 0 0 0 0 0 0\n";
        assert_eq!(
            parse(text, "mig0").unwrap(),
            Counters {
                rx: 123456789012,
                tx: 42
            }
        );
        let err = parse(text, "mig").unwrap_err().to_string();
        assert!(err.contains("no mig in this network namespace"), "{err}");
    }

    #[test]
    fn loopback_has_its_address() {
        assert_eq!(interface_of("127.0.0.1".parse().unwrap()).unwrap(), "lo");
        assert!(counters("lo").is_ok());
        let err = interface_of("192.0.2.77".parse().unwrap()).unwrap_err();
        assert!(err.to_string().contains("192.0.2.77"), "{err}");
    }
}
