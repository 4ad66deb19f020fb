//! The lab's three networks, each costing what its real counterpart would:
//!
//! - **migration link**: one veth pair straight from host to host, a cable.
//!   It carries the case's MTU, offloads and rate; migration streams, page
//!   servers and the lab's calibration use it. No software bridge sits on
//!   it: a hardware switch puts no per-packet cost on the hosts' CPUs, and
//!   at small MTUs three software bridges cost more than the stream itself.
//! - **guest LAN**: a bridge in the switch namespace and one veth to each
//!   host's `br0`, which the guests' NICs join. A guest keeps its address
//!   when it moves; the observer listens here. Case MTU, unshaped (the
//!   guests' own traffic is a few hundred packets a second).
//! - **management network**: a second bridge in the switch namespace and
//!   one veth per host: libvirtd and the hosts' heartbeats. Hosts have no
//!   address on `br0` and route nothing, so a guest cannot reach a daemon;
//!   the switch drops what enters from the guest LAN with a management
//!   network's source address (reverse-path filter).

use super::netns::Netns;
use crate::case::LinkSpec;
use anyhow::Result;
use std::net::Ipv4Addr;

pub use crate::inventory::simulated::{
    link_addr, management_addr, GUEST_ADDR, HOST_BRIDGE, MANAGEMENT_ADDR, OBSERVER_ADDR, PREFIX_LEN,
};

/// The migration link's device on each host.
pub const LINK_DEV: &str = "mig0";
const MANAGEMENT_MTU: &str = "1500";

/// The network of the nested host behind lab host `index` (a Xen host's
/// dom0): the lab host routes it over the migration link.
pub fn nested_net(index: u8) -> String {
    format!("10.252.{index}.0/{PREFIX_LEN}")
}

/// The lab host's address on `nested_net(index)`: the nested host's gateway.
pub fn nested_gateway(index: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 252, index, 1)
}

/// The nested host's own address on `nested_net(index)`.
pub fn nested_addr(index: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 252, index, 2)
}

/// Makes lab host `index` the router between its nested host (behind
/// `dev`) and the other host's (at `peer_link` across the migration link). Forwarding is on
/// for `dev` and the link only: a host still routes nothing for br0, so a
/// guest reaches neither the hosts nor the nested hosts' dom0s.
pub fn route_nested(host: &Netns, index: u8, dev: &str, peer_link: Ipv4Addr) -> Result<()> {
    address(host, dev, nested_gateway(index))?;
    host.exec(
        "ip",
        &[
            "route",
            "add",
            &nested_net(1 - index),
            "via",
            &peer_link.to_string(),
            "dev",
            LINK_DEV,
        ],
    )?;
    for d in [dev, LINK_DEV] {
        host.exec(
            "sysctl",
            &["-qw", &format!("net.ipv4.conf.{d}.forwarding=1")],
        )?;
    }
    Ok(())
}

/// Builds the three networks between `switch` and the two `hosts`, which
/// take the addresses of their `slots` (their places in the lab's
/// inventory: each pair of a lab has a switch of its own, but every host
/// an address of its own).
pub fn build(switch: &Netns, hosts: [&Netns; 2], slots: [u8; 2], link: &LinkSpec) -> Result<()> {
    let mtu = link.mtu.to_string();
    bridge(switch, "sw0", &mtu, Some(OBSERVER_ADDR))?;
    bridge(switch, "mgmt0", MANAGEMENT_MTU, Some(MANAGEMENT_ADDR))?;
    // Strict reverse-path filtering: a guest on sw0 cannot pass for a host
    // of the management network (the failure monitor heeds a host's address).
    switch.exec("sysctl", &["-qw", "net.ipv4.conf.all.rp_filter=1"])?;
    // The switch has an address on both networks: where the machine
    // forwards (a new namespace takes its setting), a guest could route
    // through it to the hosts' daemons.
    switch.exec("sysctl", &["-qw", "net.ipv4.ip_forward=0"])?;
    if !link.offloads {
        offloads_off(switch, "sw0", false)?;
    }
    for (i, host) in hosts.iter().enumerate() {
        // Guest LAN: switch port p<i> <-> the host's eth0 in its br0.
        let port = format!("p{i}");
        veth(switch, &port, host, "eth0", &mtu)?;
        switch.exec("ip", &["link", "set", &port, "master", "sw0", "up"])?;
        bridge(host, HOST_BRIDGE, &mtu, None)?;
        host.exec("ip", &["link", "set", "eth0", "master", HOST_BRIDGE, "up"])?;
        if !link.offloads {
            offloads_off(switch, &port, true)?;
            offloads_off(host, "eth0", true)?;
            offloads_off(host, HOST_BRIDGE, false)?;
        }
        // Management: switch port m<i> <-> the host's mgmt0.
        let port = format!("m{i}");
        veth(switch, &port, host, "mgmt0", MANAGEMENT_MTU)?;
        switch.exec("ip", &["link", "set", &port, "master", "mgmt0", "up"])?;
        address(host, "mgmt0", management_addr(slots[i]))?;
    }
    cable(hosts, slots, link)
}

/// The migration link: one veth pair from host 0 to host 1, `LINK_DEV` at
/// `link_addr(slot)` on each, with the link's MTU, offloads and rate.
pub fn cable(hosts: [&Netns; 2], slots: [u8; 2], link: &LinkSpec) -> Result<()> {
    veth(
        hosts[0],
        LINK_DEV,
        hosts[1],
        LINK_DEV,
        &link.mtu.to_string(),
    )?;
    for (i, host) in hosts.iter().enumerate() {
        address(host, LINK_DEV, link_addr(slots[i]))?;
        make_wire_like(host, LINK_DEV, link)?;
    }
    Ok(())
}

fn bridge(ns: &Netns, name: &str, mtu: &str, addr: Option<Ipv4Addr>) -> Result<()> {
    ns.exec("ip", &["link", "add", name, "type", "bridge"])?;
    ns.exec("ip", &["link", "set", name, "mtu", mtu, "up"])?;
    if let Some(addr) = addr {
        ns.exec(
            "ip",
            &["addr", "add", &format!("{addr}/{PREFIX_LEN}"), "dev", name],
        )?;
    }
    Ok(())
}

/// A veth pair, `a_dev` in `a` and `b_dev` in `b`.
fn veth(a: &Netns, a_dev: &str, b: &Netns, b_dev: &str, mtu: &str) -> Result<()> {
    a.exec(
        "ip",
        &[
            "link", "add", a_dev, "mtu", mtu, "type", "veth", "peer", "name", b_dev, "mtu", mtu,
            "netns", &b.name,
        ],
    )?;
    Ok(())
}

fn address(ns: &Netns, dev: &str, addr: Ipv4Addr) -> Result<()> {
    ns.exec(
        "ip",
        &["addr", "add", &format!("{addr}/{PREFIX_LEN}"), "dev", dev],
    )?;
    ns.exec("ip", &["link", "set", dev, "up"])?;
    Ok(())
}

/// Offloads off (so the MTU really sets the packet size) and a token bucket
/// at the link rate on `dev`'s egress.
fn make_wire_like(ns: &Netns, dev: &str, link: &LinkSpec) -> Result<()> {
    if !link.offloads {
        offloads_off(ns, dev, true)?;
    }
    if let Some(rate) = link.rate_mbit {
        ns.exec(
            "tc",
            &[
                "qdisc",
                "add",
                "dev",
                dev,
                "root",
                "tbf",
                "rate",
                &format!("{rate}mbit"),
                "burst",
                "256kb",
                "latency",
                "50ms",
            ],
        )?;
    }
    Ok(())
}

/// Segmentation and receive offloads off; checksum offloads too on a veth
/// (bridges lack those features).
fn offloads_off(ns: &Netns, dev: &str, is_veth: bool) -> Result<()> {
    ns.exec("ethtool", &offloads_off_args(dev, is_veth))?;
    Ok(())
}

/// `ethtool`'s arguments that turn `dev`'s offloads off (for a namespace
/// that is not a `Netns`, such as a nested host's).
pub fn offloads_off_args(dev: &str, is_veth: bool) -> Vec<&str> {
    let mut args = vec!["-K", dev, "tso", "off", "gso", "off", "gro", "off"];
    if is_veth {
        args.extend_from_slice(&["tx", "off", "rx", "off"]);
    }
    args
}
