//! The simulated lab's plan: what its built-in inventory says (the hosts'
//! names and addresses, the guests' bridge, the daemons' URIs), which
//! `crate::lab` builds on this machine.

use std::net::Ipv4Addr;

/// The hosts' names, by index.
pub const HOST_NAMES: [&str; 2] = ["a", "b"];
pub const PREFIX_LEN: u8 = 24;
/// The runner's address on the guest LAN: the observer listens here.
pub const OBSERVER_ADDR: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 254);
pub const GUEST_ADDR: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 100);
/// The runner's address on the management network: libvirt clients and the
/// failure monitor.
pub const MANAGEMENT_ADDR: Ipv4Addr = Ipv4Addr::new(10, 249, 0, 254);
/// Bridge on every host that the guests' NICs join.
pub const HOST_BRIDGE: &str = "br0";

/// A host's address on the management network (its libvirtd listens there).
pub fn management_addr(index: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 249, 0, 1 + index)
}

/// A host's address on the migration link.
pub fn link_addr(index: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 251, 0, 1 + index)
}

/// The URI of the daemon listening at `addr`.
pub fn uri_at(addr: Ipv4Addr) -> String {
    format!("qemu+tcp://{addr}/system")
}
